//! The kitchen, as the drivers see it: one call, pickup.
//!
//! Transient trouble (5xx, 429, connection errors, timeouts) is retried right away by the `Retry`
//! middleware, a few times with backoff; each attempt gets its own CLIENT span. "Not ready yet"
//! (409 `ticket-not-ready`) is not retried here: the driver loop asks again later, durably.

use pizza_contracts::kitchen::problems;
use pizza_retry::http::RetryPolicy;
use pizza_servicekit::peer::{Peer, problem_type};
use uuid::Uuid;

/// What the kitchen said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pickup {
    /// The driver has the order.
    PickedUp,
    /// Not ready, or the kitchen did not answer usefully: ask again later. The text says why.
    NotYet(String),
    /// The ticket will never be ready (cancelled, failed, unknown).
    Unavailable(String),
}

/// An HTTP client for the kitchen.
#[derive(Debug, Clone)]
pub struct KitchenClient(Peer);

impl KitchenClient {
    /// A client for the kitchen at `base` (`http://127.0.0.1:8081`).
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        Ok(Self(Peer::new("kitchen", base, Some(RetryPolicy::default()))?))
    }

    /// `POST /tickets/{order_id}/pickup`.
    pub async fn pickup(&self, order_id: Uuid) -> Pickup {
        let response = self
            .0
            .post(
                &format!("/tickets/{order_id}/pickup"),
                "/tickets/{order_id}/pickup",
                order_id,
            )
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(error) => return Pickup::NotYet(format!("kitchen unreachable: {error}")),
        };
        let status = response.status();
        if status.is_success() {
            return Pickup::PickedUp;
        }
        let kind = problem_type(response).await;
        match status.as_u16() {
            409 if kind == problems::NOT_READY => Pickup::NotYet("not ready".to_owned()),
            409 | 404 => Pickup::Unavailable(format!("kitchen answered {status} {kind}")),
            _ => Pickup::NotYet(format!("kitchen answered {status}")),
        }
    }
}
