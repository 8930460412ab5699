//! The kitchen, as the order workflow sees it: place a ticket, cancel a ticket.
//!
//! No retries here on purpose: the workflow step that calls the kitchen is the retry, durably, with
//! its own back-off. So a kitchen answering 500 shows in the trace as step attempts (each with its
//! CLIENT span and the kitchen's SERVER span), the back-off survives a restart of this service, and
//! the idempotency key (the order id) makes a repeated ticket harmless.

use pizza_contracts::events::OrderItem;
use pizza_contracts::kitchen::{CreateTicket, Ticket, problems};
use pizza_servicekit::peer::{Peer, problem_type};
use pizza_workflow::StepError;
use uuid::Uuid;

/// An HTTP client for the kitchen.
#[derive(Debug, Clone)]
pub struct KitchenClient(Peer);

impl KitchenClient {
    /// A client for the kitchen at `base` (`http://127.0.0.1:8081`); it makes one attempt per call
    /// (see the module docs).
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        Ok(Self(Peer::new("kitchen", base, None)?))
    }

    /// `POST /tickets`: the ticket's id. 5xx, 429 and transport errors are retryable; any other
    /// refusal (an item the kitchen does not make, a conflicting ticket) is permanent.
    pub async fn place_ticket(&self, order_id: Uuid, items: &[OrderItem]) -> Result<Uuid, StepError> {
        let response = self
            .0
            .post("/tickets", "/tickets", order_id)
            .json(&CreateTicket {
                order_id,
                items: items.to_vec(),
            })
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            let ticket: Ticket = response
                .json()
                .await
                .map_err(|e| StepError::retryable("kitchen_bad_response", e.to_string()))?;
            return Ok(ticket.ticket_id);
        }
        Err(refusal(status, problem_type(response).await))
    }

    /// `POST /tickets/{order_id}/cancel`. The kitchen cancels any ticket a driver has not picked up
    /// (a cancelled one again, a failed one too) and refuses a picked-up one with 409 `ticket-closed`:
    /// that answer is the kitchen's word that a driver has the pizza, not "nothing to do". 5xx and
    /// transport errors are retryable.
    pub async fn cancel_ticket(&self, order_id: Uuid) -> Result<CancelOutcome, StepError> {
        let response = self
            .0
            .post(
                &format!("/tickets/{order_id}/cancel"),
                "/tickets/{order_id}/cancel",
                order_id,
            )
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(CancelOutcome::Cancelled);
        }
        let kind = problem_type(response).await;
        match status.as_u16() {
            404 => Ok(CancelOutcome::NoTicket),
            409 if kind == problems::TICKET_CLOSED => Ok(CancelOutcome::PickedUp),
            _ => Err(refusal(status, kind)),
        }
    }
}

/// What cancelling a ticket achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The kitchen stopped it (or had stopped it before): no driver can pick it up.
    Cancelled,
    /// A driver picked it up: the pizza is on its way, and nothing calls it back. (`closed` in the
    /// history of runs recorded before the name said what it means.)
    #[serde(alias = "closed")]
    PickedUp,
    /// The kitchen never had it.
    NoTicket,
}

fn transport(error: reqwest_middleware::Error) -> StepError {
    let kind = match &error {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "kitchen_timeout",
        _ => "kitchen_unreachable",
    };
    StepError::retryable(kind, error.to_string())
}

fn refusal(status: http::StatusCode, kind: String) -> StepError {
    let code = status.as_u16();
    let error_type = format!("http_{code}");
    let message = format!("kitchen answered {status} {kind}");
    if status.is_server_error() || code == 429 || code == 408 {
        StepError::retryable(error_type, message)
    } else {
        StepError::permanent(error_type, message)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn server_errors_are_retried_and_refusals_are_not() {
        assert!(refusal(StatusCode::INTERNAL_SERVER_ERROR, String::new()).retryable);
        assert!(refusal(StatusCode::SERVICE_UNAVAILABLE, String::new()).retryable);
        assert!(refusal(StatusCode::TOO_MANY_REQUESTS, String::new()).retryable);
        let e = refusal(StatusCode::UNPROCESSABLE_ENTITY, problems::UNKNOWN_PIZZA.into());
        assert!(!e.retryable);
        assert_eq!(e.error_type, "http_422");
        assert!(!refusal(StatusCode::CONFLICT, problems::TICKET_CONFLICT.into()).retryable);
    }
}
