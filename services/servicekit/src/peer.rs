//! Calling another pizza service over HTTP: one client per peer, built the same way everywhere.
//!
//! Each request gets a CLIENT span named after the peer and the route template (never the concrete
//! path: the order id would make every span name unique), `pizza.order.id`, and the caller's trace
//! context in its headers (`pizza_telemetry::http_client`). Retries are the caller's choice: a
//! client whose caller is already a durable retry (a workflow step) makes one attempt, and a client
//! without one retries transient failures in place.

use std::time::Duration;

use pizza_retry::http::{Retry, RetryPolicy};
use pizza_telemetry::http_client::{OrderId, Tracing, UrlTemplate};
use reqwest_middleware::{ClientWithMiddleware, RequestBuilder};

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for one peer service.
#[derive(Debug, Clone)]
pub struct Peer {
    base: String,
    http: ClientWithMiddleware,
}

impl Peer {
    /// A client for the peer `name` (`kitchen`, the `server.address`-like name its CLIENT spans
    /// carry) at `base` (`http://127.0.0.1:8081`), retrying transient failures by `retry` if given.
    pub fn new(name: &'static str, base: &str, retry: Option<RetryPolicy>) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let mut http = reqwest_middleware::ClientBuilder::new(inner);
        if let Some(policy) = retry {
            http = http.with(Retry::new(policy));
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: http.with(Tracing::new(name)).build(),
        })
    }

    /// `POST {base}{path}` for the order `order_id`, its CLIENT span named by `template` (the route
    /// as the peer declares it, `/tickets/{order_id}/pickup`).
    pub fn post(&self, path: &str, template: &'static str, order_id: impl ToString) -> RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .with_extension(UrlTemplate(template))
            .with_extension(OrderId(order_id.to_string()))
    }
}

/// The `type` of a problem+json answer (`/problems/ticket-not-ready`), or empty if the body is not
/// one.
pub async fn problem_type(response: reqwest::Response) -> String {
    response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default()
}
