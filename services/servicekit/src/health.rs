//! Liveness and readiness probes, the same for every service with a database and a broker.
//!
//! `/healthz` answers as long as the process serves, so an outage of a dependency never gets a
//! healthy process restarted; `/readyz` says whether PostgreSQL and Kafka answer, so a load balancer
//! stops sending work to a replica that could not do it.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use rdkafka::consumer::Consumer as _;
use serde_json::json;

use crate::http::AppState;
use crate::problem::Problem;

/// How long a probe waits for PostgreSQL or Kafka before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz` and `GET /readyz` of the service named `service` (the name goes in the log line
/// of a failed probe).
pub fn routes(service: &'static str) -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route(
        "/readyz",
        get(move |state: State<AppState>| readyz(service, state)),
    )
}

/// The process is up and serving: nothing else is checked.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when PostgreSQL answers a query and the Kafka broker answers a metadata request.
async fn readyz(service: &str, State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("select 1").execute(&state.pool))
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let kafka_client = state.kafka.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        kafka_client
            .fetch_metadata(None, PROBE_TIMEOUT)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match (&database, &kafka) {
        (Ok(()), Ok(())) => {
            Json(json!({ "status": "ready", "postgres": "ok", "kafka": "ok" })).into_response()
        }
        _ => {
            let describe = |r: &Result<(), String>| match r {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.clone(),
            };
            tracing::warn!(postgres = %describe(&database), kafka = %describe(&kafka), "{service} not ready");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("postgres: {}; kafka: {}", describe(&database), describe(&kafka)),
            )
            .into_response()
        }
    }
}
