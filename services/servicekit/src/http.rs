//! The router every service serves: its own routes inside the layers they all need, in the one
//! order that works.
//!
//! The order matters and is easy to get wrong: the HTTP faults wrap only the service's own routes
//! (the admin API must keep working while a plan breaks everything else); the problem+json fallbacks
//! and the body limit apply to every route; and the SERVER span is outermost, so it also covers
//! the 404s, the 413s and the injected 500s a workshop wants to see in Jaeger.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use http::StatusCode;
use pizza_telemetry::http_server::HttpServerLayer;
use rdkafka::consumer::BaseConsumer;
use sqlx::PgPool;

use crate::config::ServiceConfig;
use crate::faults::{Faults, admin_router, inject_http_faults};
use crate::health;
use crate::problem::Problem;

/// What the handlers of a service share.
#[derive(Clone)]
pub struct AppState {
    /// The service's database.
    pub pool: PgPool,
    /// The live fault plan.
    pub faults: Faults,
    /// A Kafka client used only to ask the broker for metadata in `/readyz`.
    pub kafka: Arc<BaseConsumer>,
}

impl AppState {
    /// The state of a service on `pool` with `faults`, with a metadata client for the broker of
    /// `config`.
    pub fn new(
        pool: PgPool,
        faults: Faults,
        config: &ServiceConfig,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let kafka: BaseConsumer = config.kafka().create()?;
        Ok(Self {
            pool,
            faults,
            kafka: Arc::new(kafka),
        })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// The whole API of the service named `service`: its `routes` and the health probes (behind the
/// HTTP faults) on `state`, the admin API of the fault plan beside them, problem+json answers for
/// unknown routes and methods, a limit of `max_body_bytes` on request bodies, and the SERVER span
/// around everything, which continues a caller's `traceparent` when `trust_inbound`, and otherwise
/// starts a new trace linked to it. The service host builds it (`crate::host::Host::router`).
pub fn router(
    service: &'static str,
    routes: Router<AppState>,
    state: AppState,
    admin_token: Option<String>,
    max_body_bytes: usize,
    trust_inbound: bool,
) -> Router {
    let faults = state.faults.clone();
    routes
        .merge(health::routes(service))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            inject_http_faults,
        ))
        .merge(admin_router(faults, admin_token))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(HttpServerLayer::new(trust_inbound))
}

async fn not_found() -> impl IntoResponse {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> impl IntoResponse {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
}
