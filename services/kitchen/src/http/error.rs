//! The kitchen's one error type for HTTP answers, and how each variant becomes a problem+json body.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use pizza_contracts::kitchen::{TicketStatus, problems};
use pizza_servicekit::Problem;
use pizza_servicekit::problem::Rejection;
use uuid::Uuid;

use crate::store::StoreError;

/// Everything a kitchen route can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or the path could not be read (an order id that is not a UUID).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// An item names a pizza that is not on the menu.
    #[error("items[{index}] is not on the menu")]
    UnknownPizza {
        /// The position of the item.
        index: usize,
        /// What it asked for.
        pizza: String,
    },
    /// The items break a rule (none, a zero quantity, over the limits).
    #[error("{field}: {message}")]
    InvalidTicket {
        /// The offending field, as a JSON pointer.
        field: String,
        /// The rule it breaks.
        message: String,
    },
    /// The order has a ticket with other items.
    #[error("order {0} already has a ticket with other items")]
    Conflict(Uuid),
    /// The order has no ticket.
    #[error("order {0} has no ticket")]
    NotFound(Uuid),
    /// Pickup of a ticket that is still queued or cooking.
    #[error("ticket of order {0} is {1:?}, not ready")]
    NotReady(Uuid, TicketStatus),
    /// The ticket is closed for this action (pickup of a cancelled ticket, cancel after pickup).
    #[error("ticket of order {0} is {1:?}")]
    Closed(Uuid, TicketStatus),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Rejected(rejection) => rejection.into(),
            ApiError::UnknownPizza { index, pizza } => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                problems::UNKNOWN_PIZZA,
                "Unknown pizza",
                format!("{pizza:?} is not on the menu"),
            )
            .with_field_error(format!("/items/{index}/pizza"), "not on the menu"),
            ApiError::InvalidTicket { field, message } => {
                Problem::invalid(problems::INVALID_TICKET, "Invalid ticket", field, message)
            }
            ApiError::Conflict(_) => Problem::typed(
                StatusCode::CONFLICT,
                problems::TICKET_CONFLICT,
                "Ticket conflict",
                self.to_string(),
            ),
            ApiError::NotFound(_) => Problem::typed(
                StatusCode::NOT_FOUND,
                problems::UNKNOWN_TICKET,
                "Unknown ticket",
                self.to_string(),
            ),
            ApiError::NotReady(order, status) => Problem::typed(
                StatusCode::CONFLICT,
                problems::NOT_READY,
                "Ticket not ready",
                format!(
                    "the ticket of order {order} is {}; try again later",
                    status.as_str()
                ),
            ),
            ApiError::Closed(order, status) => Problem::typed(
                StatusCode::CONFLICT,
                problems::TICKET_CLOSED,
                "Ticket closed",
                format!("the ticket of order {order} is {}", status.as_str()),
            ),
            ApiError::Store(error) => Problem::unavailable(
                error,
                "kitchen database failure",
                "the kitchen's database is unavailable; try again",
            ),
        };
        problem.into_response()
    }
}
