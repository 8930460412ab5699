//! The web UI and the OpenAPI document, compiled into the binary: the shop works offline, from one
//! file, and a container needs nothing beside it.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header;

use super::OrderState;

/// The OpenAPI 3.1 document of the public API (schemathesis fuzzes the API from it in `make test`).
pub const OPENAPI: &str = include_str!("openapi.json");

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

pub(super) fn routes() -> Router<OrderState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/openapi.json",
            get(|| async { asset("application/json", OPENAPI) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_documents_every_public_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/menu",
            "/orders",
            "/orders/{order_id}",
            "/orders/{order_id}/events",
            "/orders/{order_id}/cancel",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
        }
    }

    /// Every operation of the document, as `(path, method, operation)`.
    fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((path.clone(), method.clone(), operation.clone()));
            }
        }
        all
    }

    /// A validator for the schema at `pointer` inside the document: the document itself, with a
    /// `$ref` to that schema, so the schema's own `$ref`s to `#/components/...` resolve.
    fn schema_at(doc: &serde_json::Value, pointer: &str) -> jsonschema::Validator {
        let mut root = doc.clone();
        // A URI fragment: the braces of path templates are percent-encoded.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = format!("#{fragment}").into();
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{pointer}: {e}"))
    }

    /// `/` and `~` escaped for a JSON pointer.
    fn escape(token: &str) -> String {
        token.replace('~', "~0").replace('/', "~1")
    }

    /// Checks that every media type under `content` (at `pointer`) has examples and that each one
    /// validates against the media type's schema; adds what is wrong to `problems`.
    fn check_examples(
        doc: &serde_json::Value,
        pointer: &str,
        content: &serde_json::Value,
        problems: &mut Vec<String>,
    ) {
        for (media, body) in content.as_object().unwrap() {
            let at = format!("{pointer}/{}", escape(media));
            let examples = body["examples"].as_object().filter(|e| !e.is_empty());
            let Some(examples) = examples else {
                problems.push(format!("{at}: no examples"));
                continue;
            };
            let schema = schema_at(doc, &format!("{at}/schema"));
            for (name, example) in examples {
                for error in schema.iter_errors(&example["value"]) {
                    problems.push(format!("{at} example {name}: {}: {error}", error.instance_path()));
                }
            }
        }
    }

    #[test]
    fn every_operation_has_request_and_response_examples_that_match_their_schemas() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut problems = Vec::new();
        let operations = operations(&doc);
        assert!(operations.len() >= 8, "{} operations", operations.len());
        for (path, method, operation) in operations {
            let at = format!("/paths/{}/{method}", escape(&path));
            if let Some(body) = operation.get("requestBody") {
                check_examples(
                    &doc,
                    &format!("{at}/requestBody/content"),
                    &body["content"],
                    &mut problems,
                );
            }
            for (index, parameter) in operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Some(example) = parameter.get("example") else {
                    problems.push(format!("{at} parameter {}: no example", parameter["name"]));
                    continue;
                };
                let schema = schema_at(&doc, &format!("{at}/parameters/{index}/schema"));
                for error in schema.iter_errors(example) {
                    problems.push(format!("{at} parameter {}: {error}", parameter["name"]));
                }
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let content = &response["content"];
                if content.is_object() {
                    check_examples(
                        &doc,
                        &format!("{at}/responses/{status}/content"),
                        content,
                        &mut problems,
                    );
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_missing_example_or_one_that_breaks_its_schema_is_caught() {
        let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let examples =
            &mut doc["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["examples"];
        let (_, first) = examples.as_object_mut().unwrap().iter_mut().next().unwrap();
        first["value"]["items"][0]["pizza"] = "hawaii".into();
        let mut problems = Vec::new();
        let content = doc["paths"]["/orders"]["post"]["requestBody"]["content"].clone();
        check_examples(
            &doc,
            "/paths/~1orders/post/requestBody/content",
            &content,
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("/items/0/pizza"), "{problems:#?}");

        let accepted = "/paths/~1orders/post/responses/202/content";
        let mut content = doc.pointer(accepted).unwrap().clone();
        content["application/json"]["examples"] = serde_json::json!({});
        let mut problems = Vec::new();
        check_examples(&doc, accepted, &content, &mut problems);
        assert_eq!(problems, [format!("{accepted}/application~1json: no examples")]);
    }
}
