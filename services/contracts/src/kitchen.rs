//! The kitchen's HTTP API: the bodies of `POST /tickets` and of every ticket answer.
//!
//! Errors are `application/problem+json` (RFC 9457); the `type` of each is one of [`problems`], so a
//! client can tell "not ready yet, try again" from "this ticket will never be ready".

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::OrderItem;

/// Most pizzas of one kind on one ticket.
pub const MAX_QUANTITY_PER_LINE: u32 = 20;
/// Most pizzas on one ticket.
pub const MAX_PIZZAS_PER_TICKET: u32 = 50;

/// `POST /tickets`: make this order. Idempotent on `order_id`: the same body again returns the ticket
/// already made; a different body for the same order is a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTicket {
    /// The order (the idempotency key).
    pub order_id: Uuid,
    /// What to make: menu ids and quantities.
    pub items: Vec<OrderItem>,
}

/// Where a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TicketStatus {
    /// Waiting for a free oven.
    Queued,
    /// In an oven.
    Cooking,
    /// Out of the oven, waiting for a driver.
    Ready,
    /// Taken by a driver (terminal).
    PickedUp,
    /// Cancelled before pickup (terminal).
    Cancelled,
    /// The oven failed; the kitchen published `kitchen-issue` (terminal unless cancelled).
    Failed,
}

impl TicketStatus {
    /// The spelling on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A ticket as the kitchen reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The kitchen's id.
    pub ticket_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Where it is.
    pub status: TicketStatus,
    /// What is being made.
    pub items: Vec<OrderItem>,
}

/// The `type` URIs of the kitchen's problem answers.
pub mod problems {
    /// 422: a pizza that is not on the menu.
    pub const UNKNOWN_PIZZA: &str = "/problems/unknown-pizza";
    /// 422: empty items, a zero quantity, or more than the limits allow.
    pub const INVALID_TICKET: &str = "/problems/invalid-ticket";
    /// 409: a ticket for this order exists with other items.
    pub const TICKET_CONFLICT: &str = "/problems/ticket-conflict";
    /// 409 on pickup: queued or cooking; try again later.
    pub const NOT_READY: &str = "/problems/ticket-not-ready";
    /// 409: cancelled, failed or picked up; it will never be ready (pickup) or cannot be cancelled.
    pub const TICKET_CLOSED: &str = "/problems/ticket-closed";
    /// 404: no ticket for this order.
    pub const UNKNOWN_TICKET: &str = "/problems/unknown-ticket";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_spelling() {
        for s in ["queued", "cooking", "ready", "picked_up", "cancelled", "failed"] {
            let status = TicketStatus::parse(s).unwrap();
            assert_eq!(status.as_str(), s);
            assert_eq!(serde_json::to_value(status).unwrap(), s);
        }
        assert_eq!(TicketStatus::parse("burnt"), None);
    }
}
