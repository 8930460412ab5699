//! The order API's one error type, and how each variant becomes a problem+json body.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use pizza_servicekit::Problem;
use pizza_servicekit::problem::Rejection;
use uuid::Uuid;

use crate::store::{Status, StoreError};

/// The `type` URIs of the order API's problems.
pub mod problems {
    /// 422: the order breaks a rule (a field error says which).
    pub const INVALID_ORDER: &str = "/problems/invalid-order";
    /// 404: no such order.
    pub const UNKNOWN_ORDER: &str = "/problems/unknown-order";
    /// 403: the cancel token is not the order's.
    pub const CANCEL_TOKEN_INVALID: &str = "/problems/cancel-token-invalid";
    /// 409: the order can no longer be cancelled.
    pub const NOT_CANCELLABLE: &str = "/problems/order-not-cancellable";
    /// 422: an Idempotency-Key sent again with another request.
    pub const IDEMPOTENCY_CONFLICT: &str = "/problems/idempotency-key-reused";
}

/// Everything an order route can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body, the path, the query or a header could not be read.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The order breaks a rule.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, as a JSON pointer.
        field: String,
        /// The rule it breaks.
        message: String,
    },
    /// The Idempotency-Key came with another request before.
    #[error("the Idempotency-Key was used for another request")]
    IdempotencyConflict,
    /// No such order.
    #[error("no order {0}")]
    NotFound(Uuid),
    /// The cancel token presented is not the one `POST /orders` handed out for this order.
    #[error("this cancel token does not cancel order {0}")]
    NotYourOrder(Uuid),
    /// The order cannot be cancelled any more.
    #[error("order {0} is {1} and can no longer be cancelled")]
    NotCancellable(Uuid, Status),
    /// A driver has picked the order up (the kitchen says so): it can no longer be cancelled.
    #[error("a driver has picked up order {0}: it is on its way and can no longer be cancelled")]
    PickedUp(Uuid),
    /// A peer the answer depends on did not answer; nothing was changed.
    #[error("{0}")]
    PeerUnavailable(String),
    /// The process serves as many event streams as it may.
    #[error("this order service follows {0} orders already; try again shortly")]
    TooManyStreams(usize),
    /// The request took longer than the service allows.
    #[error("the request took longer than {0:?}; try again")]
    TimedOut(std::time::Duration),
    /// The database or the workflow engine failed.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A path, query or header the route cannot read (400).
    pub fn bad_request(detail: String) -> Self {
        Rejection::Malformed(detail).into()
    }
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

impl From<crate::fulfillment::cancel::CancelError> for ApiError {
    fn from(error: crate::fulfillment::cancel::CancelError) -> Self {
        use crate::fulfillment::cancel::CancelError;
        match error {
            CancelError::NotFound(order_id) => ApiError::NotFound(order_id),
            CancelError::WrongToken(order_id) => ApiError::NotYourOrder(order_id),
            CancelError::TooLate(order_id, status) => ApiError::NotCancellable(order_id, status),
            CancelError::PickedUp(order_id) => ApiError::PickedUp(order_id),
            CancelError::KitchenUnavailable(_) => ApiError::PeerUnavailable(
                "the kitchen did not answer whether a driver has the order; nothing was changed, try again"
                    .into(),
            ),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<pizza_workflow::Error> for ApiError {
    fn from(error: pizza_workflow::Error) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<crate::store::placing::PlaceError> for ApiError {
    fn from(error: crate::store::placing::PlaceError) -> Self {
        use crate::store::placing::PlaceError;
        match error {
            PlaceError::KeyReused => ApiError::IdempotencyConflict,
            PlaceError::Vanished(order_id) => ApiError::NotFound(order_id),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// How long a client waits before retrying a 429 or a 503 that says so.
const RETRY_AFTER_SECONDS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_later = |status: StatusCode, detail: String| {
            let mut response = Problem::new(status, detail).into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        };
        let problem = match &self {
            ApiError::Rejected(rejection) => rejection.into(),
            ApiError::Invalid { field, message } => {
                Problem::invalid(problems::INVALID_ORDER, "Invalid order", field, message)
            }
            ApiError::IdempotencyConflict => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                problems::IDEMPOTENCY_CONFLICT,
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with another request (other pizzas or another customer)",
            ),
            ApiError::NotFound(_) => Problem::typed(
                StatusCode::NOT_FOUND,
                problems::UNKNOWN_ORDER,
                "Unknown order",
                self.to_string(),
            ),
            ApiError::NotYourOrder(_) => Problem::typed(
                StatusCode::FORBIDDEN,
                problems::CANCEL_TOKEN_INVALID,
                "Not your order to cancel",
                "only the cancel token that POST /orders answered with cancels this order",
            ),
            ApiError::NotCancellable(..) | ApiError::PickedUp(_) => Problem::typed(
                StatusCode::CONFLICT,
                problems::NOT_CANCELLABLE,
                "Order not cancellable",
                self.to_string(),
            ),
            ApiError::PeerUnavailable(detail) => {
                tracing::warn!(%detail, "a peer did not answer; asked the client to retry");
                return retry_later(StatusCode::SERVICE_UNAVAILABLE, detail.clone());
            }
            ApiError::TooManyStreams(_) => {
                tracing::warn!("event stream refused: every slot is taken");
                return retry_later(StatusCode::TOO_MANY_REQUESTS, self.to_string());
            }
            ApiError::TimedOut(_) => {
                tracing::warn!("request timed out");
                return retry_later(StatusCode::SERVICE_UNAVAILABLE, self.to_string());
            }
            ApiError::Unavailable(error) => Problem::unavailable(
                error,
                "order service dependency failure",
                "the order service cannot reach its database; try again",
            ),
        };
        problem.into_response()
    }
}
