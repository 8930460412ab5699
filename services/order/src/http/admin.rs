//! `/admin/services/{service}/faults`: the fault plans of all three services behind one origin, for
//! the web UI's faults panel (a browser page may only call the origin it came from).
//!
//! `order` is answered by this service's own admin API; `kitchen` and `delivery` are forwarded with
//! the caller's `Authorization` header, so each service still checks its own token and nothing
//! here can widen access.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{Method, StatusCode, header};
use pizza_servicekit::Problem;
use tower::ServiceExt as _;

use super::Settings;

#[derive(Clone)]
struct Proxy {
    local: Router,
    kitchen: String,
    delivery: String,
    http: reqwest::Client,
}

pub(super) fn routes<S: Clone + Send + Sync + 'static>(local: Router, settings: &Settings) -> Router<S> {
    let proxy = Proxy {
        local,
        kitchen: settings.kitchen_url.trim_end_matches('/').to_owned(),
        delivery: settings.delivery_url.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a reqwest client with a timeout builds"),
    };
    Router::new()
        .route("/admin/services/{service}/faults", any(forward))
        .with_state(proxy)
}

async fn forward(State(proxy): State<Proxy>, Path(service): Path<String>, request: Request) -> Response {
    let method = request.method().clone();
    if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
        return Problem::new(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE").into_response();
    }
    let base = match service.as_str() {
        "order" => {
            let (mut parts, body) = request.into_parts();
            parts.uri = http::Uri::from_static("/admin/faults");
            return match proxy.local.oneshot(Request::from_parts(parts, body)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        "kitchen" => proxy.kitchen,
        "delivery" => proxy.delivery,
        _ => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "service must be order, kitchen or delivery",
            )
            .into_response();
        }
    };
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let body = match axum::body::to_bytes(request.into_body(), super::MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "fault plan too large").into_response(),
    };
    let mut outgoing = proxy
        .http
        .request(method, format!("{base}/admin/faults"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        outgoing = outgoing.header(header::AUTHORIZATION, value);
    }
    if !body.is_empty() {
        outgoing = outgoing.body(body);
    }
    match outgoing.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer
                .headers()
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(header::HeaderValue::from_static("application/json"));
            let bytes: Bytes = answer.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(error) => Problem::new(
            StatusCode::BAD_GATEWAY,
            format!("{service} did not answer: {}", without_url(&error)),
        )
        .into_response(),
    }
}

/// reqwest's message without the URL it names (the caller knows which service it asked).
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection refused".into()
    } else {
        "request failed".into()
    }
}
