//! The delivery service's HTTP API: delivery status, health, and the admin API of the fault plan.
//! Every answer that is not a success is `application/problem+json`.

mod deliveries;

use axum::Router;

pub use deliveries::{ApiError, DeliveryView};
pub use pizza_servicekit::http::AppState;

/// The largest request body the service reads (only the admin API takes one; a fault plan fits
/// many times over).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The whole API, with HTTP faults on the business routes and health probes, problem+json
/// fallbacks and the SERVER span around everything (see `pizza_servicekit::http`).
pub fn router(state: AppState, admin_token: Option<String>) -> Router {
    pizza_servicekit::http::service_router(
        "delivery",
        deliveries::routes(),
        state,
        admin_token,
        MAX_BODY_BYTES,
    )
}
