//! CLIENT spans for reqwest, as a `reqwest-middleware` layer.
//!
//! Retries are `pizza-retry`'s ([`pizza_retry::http::Retry`]): stack them retry-outermost, so every
//! attempt gets its own CLIENT span and its own injected `traceparent`, and the retries are visible
//! as `http.request.resend_count` 1, 2, ... (read from the [`ResendCount`] the retry layer sets):
//!
//! ```no_run
//! use pizza_retry::http::{Retry, RetryPolicy};
//! use pizza_telemetry::http_client::Tracing;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(Retry::new(RetryPolicy::default()))
//!     .with(Tracing::new("kitchen"))
//!     .build();
//! ```
//!
//! The peer name ("kitchen") names the edge `http:kitchen` for the broken-trace switch.

use std::time::Instant;

use http::Extensions;
use opentelemetry::KeyValue;
use pizza_retry::http::ResendCount;
use reqwest_middleware::{Middleware, Next, Result};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::attributes::semconv;
use crate::http_server::known_method;
use crate::metrics;
use crate::propagation;

/// A route template for the span name (`POST /tickets`), put in the request's extensions by the
/// caller via `reqwest_middleware::RequestBuilder::with_extension`. Without one the span is named by
/// the method alone, as the convention says.
#[derive(Debug, Clone)]
pub struct UrlTemplate(pub &'static str);

/// The order a request serves, put in the request's extensions like [`UrlTemplate`]: the CLIENT span
/// gets `pizza.order.id`, as every span of an order must (the callee's SERVER span learns it from the
/// request itself).
#[derive(Debug, Clone)]
pub struct OrderId(pub String);

/// Opens a CLIENT span per attempt and injects its context into the request headers.
#[derive(Debug, Clone)]
pub struct Tracing {
    edge: String,
}

impl Tracing {
    /// `peer` names the service called, for the edge `http:{peer}`.
    pub fn new(peer: &str) -> Self {
        Self {
            edge: propagation::http_edge(peer),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for Tracing {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let method = known_method(req.method());
        let name = match extensions.get::<UrlTemplate>() {
            Some(t) => format!("{method} {}", t.0),
            None => method.to_owned(),
        };
        let span = tracing::info_span!(
            target: "pizza_telemetry::http",
            "http.client",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        span.set_attribute(semconv::HTTP_REQUEST_METHOD, method);
        span.set_attribute(semconv::URL_FULL, redact(req.url()));
        if let Some(host) = req.url().host_str() {
            span.set_attribute(semconv::SERVER_ADDRESS, host.to_owned());
        }
        if let Some(port) = req.url().port_or_known_default() {
            span.set_attribute(semconv::SERVER_PORT, i64::from(port));
        }
        if let Some(ResendCount(n)) = extensions.get::<ResendCount>().copied().filter(|r| r.0 > 0) {
            span.set_attribute(semconv::HTTP_REQUEST_RESEND_COUNT, i64::from(n));
        }
        if let Some(OrderId(id)) = extensions.get::<OrderId>() {
            span.set_attribute(crate::attributes::pizza::ORDER_ID, id.clone());
        }
        if !propagation::inject_http(&span.context(), &self.edge, req.headers_mut()) {
            span.set_attribute(crate::attributes::pizza::CONTEXT_DROPPED, true);
            span.set_attribute(crate::attributes::pizza::FAULT_EDGE, self.edge.clone());
        }
        let mut labels = vec![KeyValue::new(semconv::HTTP_REQUEST_METHOD, method)];
        if let Some(host) = req.url().host_str() {
            labels.push(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
        }
        let started = Instant::now();
        let result = next.run(req, extensions).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                span.set_attribute(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
                labels.push(KeyValue::new(
                    semconv::HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status),
                ));
                // Client spans are errors for 4xx and 5xx: the call did not do what was asked.
                if status >= 400 {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", status.to_string());
                    labels.push(KeyValue::new(semconv::ERROR_TYPE, status.to_string()));
                }
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error_type(e));
                labels.push(KeyValue::new(semconv::ERROR_TYPE, error_type(e)));
            }
        }
        metrics::http_client_duration().record(started.elapsed().as_secs_f64(), &labels);
        result
    }
}

/// `url.full` without credentials (the convention requires redacting them).
fn redact(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("REDACTED");
        let _ = url.set_password(Some("REDACTED"));
    }
    url.to_string()
}

fn error_type(e: &reqwest_middleware::Error) -> &'static str {
    match e {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(_) => "request",
        reqwest_middleware::Error::Middleware(_) => "middleware",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_url_full() {
        let url = reqwest::Url::parse("http://user:secret@kitchen:8081/tickets").unwrap();
        assert_eq!(redact(&url), "http://REDACTED:REDACTED@kitchen:8081/tickets");
    }
}
