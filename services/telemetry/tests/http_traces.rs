//! HTTP spans end to end: axum servers and a reqwest client instrumented by this crate, exported by
//! `pizza_telemetry::init` over OTLP/gRPC to the real Collector, read back from the real Jaeger.

mod common;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use pizza_retry::Backoff;
use pizza_retry::http::{Retry, RetryPolicy};
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::http_client::{Tracing, UrlTemplate};
use pizza_telemetry::http_server::HttpServerLayer;
use pizza_testkit::conventions::{Registry, unknown_attributes};
use pizza_testkit::{SpanKind, Trace};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The current span's trace id: what a handler answers, so the test knows which trace to read.
fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

/// A backend that fails `failures` times with 500, then answers 201.
async fn start_backend(failures: u32) -> String {
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(failures));
    let app = Router::new()
        .route(
            "/tickets",
            post(
                |State(left): State<std::sync::Arc<std::sync::atomic::AtomicU32>>| async move {
                    let fail = left
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                    if fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::CREATED
                    }
                },
            ),
        )
        .with_state(remaining)
        .layer(HttpServerLayer::new(true));
    common::serve(app).await
}

/// A frontend whose `GET /orders/{id}` calls the backend with retries and answers its trace id.
async fn start_frontend(backend: String, trust_inbound: bool) -> String {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(Retry::new(RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_millis(10),
                ..RetryPolicy::default().backoff
            },
            ..RetryPolicy::default()
        }))
        .with(Tracing::new("backend"))
        .build();
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<String>| {
                let client = client.clone();
                let backend = backend.clone();
                async move {
                    tracing::Span::current().set_attribute(pizza::ORDER_ID, id);
                    let status = client
                        .post(format!("{backend}/tickets"))
                        .with_extension(UrlTemplate("/tickets"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    format!("{} {status}", current_trace_id())
                }
            }),
        )
        .layer(HttpServerLayer::new(trust_inbound));
    common::serve(app).await
}

async fn get_order(frontend: &str, traceparent: Option<&str>) -> (String, u16) {
    let mut req = reqwest::Client::new().get(format!("{frontend}/orders/o-42"));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let body = req.send().await.unwrap().text().await.unwrap();
    let (trace_id, status) = body.split_once(' ').unwrap();
    (trace_id.to_owned(), status.parse().unwrap())
}

async fn read_trace(trace_id: &str, spans: usize) -> Trace {
    common::flush().await;
    common::jaeger()
        .wait_for_trace(trace_id, Duration::from_secs(30), |t| t.spans.len() >= spans)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_call_between_two_services_is_one_trace_server_client_server_with_http_conventions() {
    common::telemetry();
    let frontend = start_frontend(start_backend(0).await, true).await;
    let (trace_id, status) = get_order(&frontend, None).await;
    assert_eq!(status, 201);
    let trace = read_trace(&trace_id, 3).await;

    let server = trace.span("GET /orders/{id}").expect("frontend SERVER span");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.attr_str(semconv::HTTP_ROUTE), Some("/orders/{id}"));
    assert_eq!(server.attr_str(semconv::URL_PATH), Some("/orders/o-42"));
    assert_eq!(server.attr_str(semconv::HTTP_REQUEST_METHOD), Some("GET"));
    assert_eq!(server.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE), Some(200));
    assert_eq!(server.attr_str(pizza::ORDER_ID), Some("o-42"));

    let client = trace
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .expect("CLIENT span");
    assert_eq!(client.name, "POST /tickets");
    assert!(client.is_child_of(server));
    assert_eq!(client.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE), Some(201));
    assert!(client.attr_str(semconv::URL_FULL).unwrap().ends_with("/tickets"));
    assert_eq!(client.attr_str(semconv::SERVER_ADDRESS), Some("127.0.0.1"));
    assert_eq!(
        client.attr_i64(semconv::HTTP_REQUEST_RESEND_COUNT),
        None,
        "first try has no resend count"
    );

    let backend = trace
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.name == "POST /tickets")
        .unwrap();
    assert!(
        backend.is_child_of(client),
        "the injected traceparent made the backend a child of the client"
    );

    let registry = Registry::load().unwrap();
    assert_eq!(unknown_attributes(&trace, &registry), Vec::<String>::new());
}

#[tokio::test]
async fn retries_show_as_one_client_span_per_attempt_with_the_resend_count() {
    common::telemetry();
    let frontend = start_frontend(start_backend(2).await, true).await;
    let (trace_id, status) = get_order(&frontend, None).await;
    assert_eq!(status, 201, "the third try succeeds");
    let trace = read_trace(&trace_id, 7).await;

    let mut clients: Vec<_> = trace
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    clients.sort_by_key(|s| s.start_unix_nano);
    let resends: Vec<Option<i64>> = clients
        .iter()
        .map(|s| s.attr_i64(semconv::HTTP_REQUEST_RESEND_COUNT))
        .collect();
    assert_eq!(resends, vec![None, Some(1), Some(2)]);
    let statuses: Vec<Option<i64>> = clients
        .iter()
        .map(|s| s.attr_i64(semconv::HTTP_RESPONSE_STATUS_CODE))
        .collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(201)]);
    assert!(clients[0].is_error() && clients[1].is_error() && !clients[2].is_error());
    assert_eq!(clients[0].attr_str(semconv::ERROR_TYPE), Some("500"));
    // Each attempt reached the backend with its own context.
    let backends: Vec<_> = trace
        .spans
        .iter()
        .filter(|s| s.name == "POST /tickets" && s.kind == SpanKind::Server)
        .collect();
    assert_eq!(backends.len(), 3);
    for client in &clients {
        assert!(
            backends.iter().any(|b| b.is_child_of(client)),
            "attempt {} reached the backend",
            client.span_id
        );
    }
    assert!(
        backends.iter().filter(|b| b.is_error()).count() == 2,
        "backend 500s are server errors"
    );
}

#[tokio::test]
async fn a_trusted_inbound_traceparent_is_continued_and_a_malformed_one_starts_a_fresh_trace() {
    common::telemetry();
    let frontend = start_frontend(start_backend(0).await, true).await;

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (trace_id, _) = get_order(&frontend, Some(&format!("00-{caller_trace}-{caller_span}-01"))).await;
    assert_eq!(trace_id, caller_trace, "the caller's trace is continued");
    let trace = read_trace(&trace_id, 3).await;
    assert_eq!(
        trace.span("GET /orders/{id}").unwrap().parent_span_id.as_deref(),
        Some(caller_span)
    );

    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-zz-yy-01",
        "not a traceparent",
    ] {
        let (trace_id, status) = get_order(&frontend, Some(bad)).await;
        assert_eq!(status, 201, "a bad header never costs the request");
        assert_ne!(trace_id, caller_trace);
        let trace = read_trace(&trace_id, 3).await;
        let server = trace.span("GET /orders/{id}").unwrap();
        assert_eq!(server.parent_span_id, None, "{bad}: a fresh root");
        assert!(server.links.is_empty());
    }
}

#[tokio::test]
async fn an_untrusted_edge_starts_a_new_trace_and_links_the_callers_context() {
    common::telemetry();
    let frontend = start_frontend(start_backend(0).await, false).await;
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let (trace_id, _) = get_order(&frontend, Some(&format!("00-{caller_trace}-{caller_span}-01"))).await;
    assert_ne!(trace_id, caller_trace, "the caller does not choose our trace id");
    let trace = read_trace(&trace_id, 3).await;
    let server = trace.span("GET /orders/{id}").unwrap();
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.links.len(), 1);
    assert_eq!(
        (
            server.links[0].trace_id.as_str(),
            server.links[0].span_id.as_str()
        ),
        (caller_trace, caller_span)
    );
    assert_eq!(
        server.links[0].attributes[pizza::LINK_REASON],
        "inbound_untrusted"
    );
}
