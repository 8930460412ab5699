//! The order API's one error type, and how each variant becomes a problem+json body.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use pizza_servicekit::Problem;
use uuid::Uuid;

use crate::store::{Status, StoreError};

/// The `type` URIs of the order API's problems.
pub mod problems {
    /// 422: the order breaks a rule (a field error says which).
    pub const INVALID_ORDER: &str = "/problems/invalid-order";
    /// 404: no such order.
    pub const UNKNOWN_ORDER: &str = "/problems/unknown-order";
    /// 409: the order can no longer be cancelled.
    pub const NOT_CANCELLABLE: &str = "/problems/order-not-cancellable";
    /// 422: an Idempotency-Key sent again with another order.
    pub const IDEMPOTENCY_CONFLICT: &str = "/problems/idempotency-key-reused";
}

/// Everything an order route can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read (not JSON, wrong shape, wrong content type, too large).
    #[error("unreadable request body: {detail}")]
    Body {
        /// The status the rejection calls for (400, 413, 415, 422).
        status: StatusCode,
        /// What was wrong, for the client.
        detail: String,
    },
    /// A path, query or header is not what the route expects.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The order breaks a rule.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, as a JSON pointer.
        field: String,
        /// The rule it breaks.
        message: String,
    },
    /// The Idempotency-Key names an order with other items.
    #[error("the Idempotency-Key was used for another order")]
    IdempotencyConflict,
    /// No such order.
    #[error("no order {0}")]
    NotFound(Uuid),
    /// The order cannot be cancelled any more.
    #[error("order {0} is {1} and can no longer be cancelled")]
    NotCancellable(Uuid, Status),
    /// The database or the workflow engine failed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<pizza_workflow::Error> for ApiError {
    fn from(error: pizza_workflow::Error) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<pizza_messaging::OutboxError> for ApiError {
    fn from(error: pizza_messaging::OutboxError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Body { status, detail } => Problem::new(*status, detail.clone()),
            ApiError::BadRequest(detail) => Problem::new(StatusCode::BAD_REQUEST, detail.clone()),
            ApiError::Invalid { field, message } => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                problems::INVALID_ORDER,
                "Invalid order",
                format!("{field}: {message}"),
            )
            .with_field_error(field.clone(), message.clone()),
            ApiError::IdempotencyConflict => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                problems::IDEMPOTENCY_CONFLICT,
                "Idempotency-Key reused",
                "this Idempotency-Key was already used for an order with other items",
            ),
            ApiError::NotFound(_) => Problem::typed(
                StatusCode::NOT_FOUND,
                problems::UNKNOWN_ORDER,
                "Unknown order",
                self.to_string(),
            ),
            ApiError::NotCancellable(..) => Problem::typed(
                StatusCode::CONFLICT,
                problems::NOT_CANCELLABLE,
                "Order not cancellable",
                self.to_string(),
            ),
            ApiError::Unavailable(error) => {
                // The one variant an operator must look at; the client learns only that it may retry.
                tracing::error!(%error, "order service dependency failure");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the order service cannot reach its database; try again",
                )
            }
        };
        problem.into_response()
    }
}
