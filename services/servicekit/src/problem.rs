//! Problem details for HTTP APIs (RFC 9457): the one error body every service answers with.
//!
//! A client of the pizza API never sees an HTML error page or a bare string: every 4xx and 5xx is a
//! JSON object with `type`, `title`, `status` and usually `detail`, served as
//! `application/problem+json`, so tools (and the schema fuzzer in the tests) can rely on it.

use std::fmt::Display;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};

/// The media type of a problem body.
pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";

/// An RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per-field errors, for validation problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON pointer or field name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// A problem of type `about:blank` whose title is the status's reason phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            errors: Vec::new(),
        }
    }

    /// A problem with a specific type URI (for example `/problems/unknown-pizza`) and title.
    pub fn typed(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            title: title.to_owned(),
            ..Self::new(status, detail)
        }
    }

    /// 422 for a request that breaks a rule: typed, with the offending field (a JSON pointer) and
    /// the rule as a field error and as the detail.
    pub fn invalid(kind: &str, title: &str, field: &str, message: &str) -> Self {
        Self::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            title,
            format!("{field}: {message}"),
        )
        .with_field_error(field, message)
    }

    /// 503 for a dependency that failed (`error`): the one answer an operator must look at, so it
    /// is logged as an error (`what`); the client learns only `detail`, that it may retry.
    pub fn unavailable(error: &dyn Display, what: &str, detail: &str) -> Self {
        tracing::error!(%error, "{what}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Adds a field error.
    pub fn with_field_error(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
        response
    }
}

/// A request its handler could not read, answered the same way by every service.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The body could not be read (not JSON, wrong shape, wrong content type, too large).
    #[error("unreadable request body: {detail}")]
    Body {
        /// The status the rejection calls for (400, 413, 415, 422).
        status: StatusCode,
        /// What was wrong, for the client.
        detail: String,
    },
    /// A path, query or header is not what the route expects (400).
    #[error("bad request: {0}")]
    Malformed(String),
}

impl From<JsonRejection> for Rejection {
    fn from(rejection: JsonRejection) -> Self {
        Rejection::Body {
            status: rejection.status(),
            detail: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for Rejection {
    fn from(rejection: PathRejection) -> Self {
        Rejection::Malformed(rejection.body_text())
    }
}

impl From<QueryRejection> for Rejection {
    fn from(rejection: QueryRejection) -> Self {
        Rejection::Malformed(rejection.body_text())
    }
}

impl From<&Rejection> for Problem {
    fn from(rejection: &Rejection) -> Self {
        match rejection {
            Rejection::Body { status, detail } => Problem::new(*status, detail.clone()),
            Rejection::Malformed(detail) => Problem::new(StatusCode::BAD_REQUEST, detail.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_serializes_to_rfc_9457_fields() {
        let p = Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/unknown-pizza",
            "Unknown pizza",
            "no hawaii",
        )
        .with_field_error("/items/0/pizza", "not on the menu");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], "/problems/unknown-pizza");
        assert_eq!(json["status"], 422);
        assert_eq!(json["errors"][0]["field"], "/items/0/pizza");
        let response = p.into_response();
        assert_eq!(response.status(), 422);
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);
    }
}
