//! The order service's HTTP API: the public order API, the web UI, the OpenAPI document, health, and
//! the admin API of the fault plan (with a proxy to the kitchen's and the delivery's, for the UI's
//! faults panel).
//!
//! Every answer that is not a success is `application/problem+json`, including unknown routes,
//! unknown methods, unreadable and oversize bodies.

mod admin;
mod error;
mod orders;
mod ui;

use std::sync::Arc;

use axum::Router;
use pizza_messaging::Outbox;
use pizza_servicekit::http::AppState;
use pizza_workflow::Engine;
use sqlx::PgPool;

pub use error::{ApiError, problems};
pub use ui::OPENAPI;

/// The largest request body the service reads. An order of 20 lines with a long address fits
/// several times over.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

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
    /// Whether a caller's `traceparent` is continued.
    pub trust_inbound: bool,
}

/// The whole API.
pub fn router(state: AppState, order: OrderState) -> Router {
    let settings = order.settings.clone();
    let admin = pizza_servicekit::faults::admin_router(order.faults.clone(), settings.admin_token.clone());
    let routes = Router::new()
        .merge(orders::routes())
        .merge(ui::routes())
        .with_state(order)
        .merge(admin::routes(admin, &settings));
    pizza_servicekit::http::edge_router(
        "order",
        routes,
        state,
        settings.admin_token.clone(),
        MAX_BODY_BYTES,
        settings.trust_inbound,
    )
}
