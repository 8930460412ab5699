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
}
