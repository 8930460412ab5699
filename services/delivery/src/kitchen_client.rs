//! The kitchen, as the drivers see it: one call, pickup.
//!
//! Transient trouble (5xx, 429, connection errors, timeouts) is retried right away by the `Retry`
//! middleware, a few times with backoff; each attempt gets its own CLIENT span. "Not ready yet"
//! (409 `ticket-not-ready`) is not retried here: the driver loop asks again later, durably.

use std::time::Duration;

use pizza_contracts::kitchen::problems;
use pizza_retry::http::{Retry, RetryPolicy};
use pizza_telemetry::http_client::{OrderId, Tracing, UrlTemplate};
use reqwest_middleware::ClientWithMiddleware;
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
pub struct KitchenClient {
    base: String,
    http: ClientWithMiddleware,
}

impl KitchenClient {
    /// A client for the kitchen at `base` (`http://127.0.0.1:8081`).
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let http = reqwest_middleware::ClientBuilder::new(inner)
            .with(Retry::new(RetryPolicy::default()))
            .with(Tracing::new("kitchen"))
            .build();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// `POST /tickets/{order_id}/pickup`.
    pub async fn pickup(&self, order_id: Uuid) -> Pickup {
        let response = self
            .http
            .post(format!("{}/tickets/{order_id}/pickup", self.base))
            .with_extension(UrlTemplate("/tickets/{order_id}/pickup"))
            .with_extension(OrderId(order_id.to_string()))
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
        let kind = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default();
        match status.as_u16() {
            409 if kind == problems::NOT_READY => Pickup::NotYet("not ready".to_owned()),
            409 | 404 => Pickup::Unavailable(format!("kitchen answered {status} {kind}")),
            _ => Pickup::NotYet(format!("kitchen answered {status}")),
        }
    }
}
