//! The HTTP part of the plan, applied by an axum middleware around a service's own routes.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::live::Faults;
use crate::problem::Problem;

/// Paths the HTTP faults never touch: the admin API (so a workshop can always turn faults off) and
/// health probes (so a fault scenario does not get the process restarted by its supervisor).
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/admin") || path == "/healthz" || path == "/readyz"
}

/// axum middleware applying the HTTP part of the plan. Add it with
/// `axum::middleware::from_fn_with_state(faults, pizza_servicekit::faults::inject_http_faults)`,
/// inside the telemetry layer so injected failures show on the SERVER span.
pub async fn inject_http_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let latency = faults.http_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if faults.http_error() {
        tracing::warn!(path = request.uri().path(), "injected HTTP 500 (fault plan)");
        return Problem::typed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/injected-fault",
            "Injected fault",
            "this failure was injected by the service's fault plan",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;
    use crate::faults::FaultPlan;

    #[tokio::test]
    async fn http_faults_fail_business_routes_but_never_health_or_admin() {
        let faults = Faults::new(FaultPlan::from_json(r#"{"http_error_rate":1.0}"#).unwrap()).unwrap();
        let app = Router::new()
            .route("/orders", get(|| async { "ok" }))
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(faults, inject_http_faults));
        let status = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(http::Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(status("/orders").await, 500);
        assert_eq!(status("/healthz").await, 200);
    }
}
