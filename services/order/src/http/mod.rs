//! The order service's HTTP API: the public order API, the web UI, the OpenAPI document, health, and
//! the admin API of the fault plan (with a proxy to the kitchen's and the delivery's, for the UI's
//! faults panel).
//!
//! Every answer that is not a success is `application/problem+json`, including unknown routes,
//! unknown methods, unreadable and oversize bodies, and requests that outlive [`REQUEST_TIMEOUT`].
//!
//! # Layout
//! - `orders`: the public routes and their thin handlers.
//! - `input`: what `POST /orders` accepts and the rules it must meet.
//! - `follow`: the event stream of an order; `feed`: the one `LISTEN/NOTIFY` listener that wakes them.
//! - `error`: [`ApiError`] and its problem+json answers.
//! - `admin`: the faults proxy for the UI's panel; `ui`: the web UI and the OpenAPI document.

mod admin;
mod error;
mod feed;
mod follow;
mod input;
mod orders;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use pizza_messaging::Outbox;
use pizza_servicekit::http::AppState;
use pizza_workflow::Engine;
use sqlx::PgPool;

pub use error::{ApiError, problems};
pub use ui::OPENAPI;

/// The largest request body the service reads. An order of 20 lines with a long address fits
/// several times over.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long the order API may take to answer before it answers 503 with `Retry-After` instead: a
/// request stuck on a slow database or a slow kitchen (whose client gives up after 5 s) must not hold
/// its connection and its task for ever. An event stream answers at once; its body is not bounded
/// by this (it has its own lifetime).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the order handlers share.
#[derive(Clone, Debug)]
pub struct OrderState {
    /// The database.
    pub pool: PgPool,
    /// The live fault plan (database latency).
    pub faults: pizza_servicekit::Faults,
    /// The workflow engine.
    pub engine: Engine,
    /// The outbox (`order-placed`).
    pub outbox: Outbox,
    /// Settings the handlers read.
    pub settings: Arc<Settings>,
}

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the Jaeger UI.
    pub jaeger_ui_url: String,
    /// Topic of `order-placed`.
    pub orders_events_topic: String,
    /// The kitchen's base URL (faults proxy).
    pub kitchen_url: String,
    /// The delivery service's base URL (faults proxy).
    pub delivery_url: String,
    /// The admin token (the proxy's own answers use the same rules as `/admin/faults`).
    pub admin_token: Option<String>,
}

/// The service's routes: orders, the UI and the faults proxy. The service host puts them behind the
/// HTTP faults with the health probes, and adds the admin API, problem+json fallbacks, the body limit
/// and the SERVER span (which continues a caller's `traceparent` only when
/// `PIZZA_TRUST_INBOUND_TRACEPARENT` says so: this is the edge); see `pizza_servicekit::http`.
pub fn routes(order: OrderState) -> Router<AppState> {
    let settings = order.settings.clone();
    let admin = pizza_servicekit::faults::admin_router(order.faults.clone(), settings.admin_token.clone());
    let kitchen = crate::kitchen::KitchenClient::new(&settings.kitchen_url)
        .expect("a reqwest client with a timeout builds");
    let feed = feed::TimelineFeed::new(&order.pool, feed::FeedConfig::default());
    Router::new()
        .merge(orders::routes(kitchen, feed))
        .merge(ui::routes())
        .layer(axum::middleware::from_fn_with_state(REQUEST_TIMEOUT, time_limit))
        .with_state(order)
        .merge(admin::routes(admin, &settings))
}

/// Answers 503 with `Retry-After` when the inner service takes longer than `limit` (the request's
/// work is dropped: a transaction in flight rolls back).
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut(limit).into_response(),
    }
}
