//! SERVER spans for axum: one per request, named `{method} {route}` after the matched route template
//! (never the raw path, which would explode span-name cardinality), with the stable HTTP semantic
//! conventions.
//!
//! Whether the caller's `traceparent` is trusted is a setting. A service behind the public edge
//! continues the caller's trace (it is our own client). At a public edge that must not let strangers
//! choose trace ids or sampling, `trust_inbound = false` starts a new trace and links the inbound
//! context instead (`pizza.link.reason=inbound_untrusted`), so nothing is lost for debugging.
//!
//! Add it with `Router::layer`, so the matched route is known when the span is named:
//! ```no_run
//! # use axum::{Router, routing::get};
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "ok" }))
//!     .layer(pizza_telemetry::http_server::HttpServerLayer::new(true));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath};
use http::{Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, KeyValue};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::attributes::{pizza, semconv};
use crate::{metrics, propagation};

/// A tower layer that opens a SERVER span around each request.
#[derive(Debug, Clone, Copy)]
pub struct HttpServerLayer {
    trust_inbound: bool,
}

impl HttpServerLayer {
    /// `trust_inbound`: continue an inbound `traceparent` (true) or start a new trace linked to it.
    pub fn new(trust_inbound: bool) -> Self {
        Self { trust_inbound }
    }
}

impl<S> Layer<S> for HttpServerLayer {
    type Service = HttpServerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpServerService {
            inner,
            trust_inbound: self.trust_inbound,
        }
    }
}

/// The service [`HttpServerLayer`] wraps around a router.
#[derive(Debug, Clone)]
pub struct HttpServerService<S> {
    inner: S,
    trust_inbound: bool,
}

impl<S, B, ResB> Service<Request<B>> for HttpServerService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let span = server_span(&req, self.trust_inbound);
        let started = Instant::now();
        let mut labels = vec![KeyValue::new(
            semconv::HTTP_REQUEST_METHOD,
            known_method(req.method()),
        )];
        if let Some(route) = req.extensions().get::<MatchedPath>() {
            labels.push(KeyValue::new(semconv::HTTP_ROUTE, route.as_str().to_owned()));
        }
        // The clone that was polled ready is the one to call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(req);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    let status = response.status().as_u16();
                    record_status(&recorded, status);
                    labels.push(KeyValue::new(
                        semconv::HTTP_RESPONSE_STATUS_CODE,
                        i64::from(status),
                    ));
                    if status >= 500 {
                        labels.push(KeyValue::new(semconv::ERROR_TYPE, status.to_string()));
                    }
                }
                metrics::http_server_duration().record(started.elapsed().as_secs_f64(), &labels);
                result
            }
            .instrument(span),
        )
    }
}

fn server_span<B>(req: &Request<B>, trust_inbound: bool) -> tracing::Span {
    let method = known_method(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        target: "pizza_telemetry::http",
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );

    let inbound = propagation::extract_http(req.headers());
    let inbound_sc = inbound.span().span_context().clone();
    if trust_inbound {
        // A valid inbound context becomes the parent; an invalid one leaves an empty context: new trace.
        let _ = span.set_parent(inbound);
    } else {
        let _ = span.set_parent(Context::new());
        if inbound_sc.is_valid() {
            span.add_link_with_attributes(
                inbound_sc,
                vec![KeyValue::new(pizza::LINK_REASON, "inbound_untrusted")],
            );
        }
    }

    span.set_attribute(semconv::HTTP_REQUEST_METHOD, method);
    if method == "_OTHER" {
        span.set_attribute(
            semconv::HTTP_REQUEST_METHOD_ORIGINAL,
            req.method().as_str().to_owned(),
        );
    }
    if let Some(r) = route {
        span.set_attribute(semconv::HTTP_ROUTE, r);
    }
    span.set_attribute(semconv::URL_PATH, req.uri().path().to_owned());
    span.set_attribute(
        semconv::URL_SCHEME,
        req.uri().scheme_str().unwrap_or("http").to_owned(),
    );
    span.set_attribute(semconv::NETWORK_PROTOCOL_VERSION, protocol_version(req.version()));
    if let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let (address, port) = split_host(host);
        span.set_attribute(semconv::SERVER_ADDRESS, address.to_owned());
        if let Some(p) = port {
            span.set_attribute(semconv::SERVER_PORT, i64::from(p));
        }
    }
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        span.set_attribute(semconv::CLIENT_ADDRESS, addr.ip().to_string());
    }
    if let Some(ua) = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
    {
        span.set_attribute(semconv::USER_AGENT_ORIGINAL, ua.to_owned());
    }
    span
}

/// Server spans are errors only for 5xx: a 4xx is the caller's mistake, answered correctly.
fn record_status(span: &tracing::Span, status: u16) {
    span.set_attribute(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.to_string());
    }
}

/// The method as the convention spells it: known methods as they are, anything else `_OTHER`.
pub(crate) fn known_method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_become_other() {
        assert_eq!(known_method(&http::Method::POST), "POST");
        assert_eq!(
            known_method(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("127.0.0.1:8080"), ("127.0.0.1", Some(8080)));
        assert_eq!(split_host("order"), ("order", None));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", Some(8080)));
    }
}
