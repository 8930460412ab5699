//! The delivery service's HTTP API: delivery status (health and the admin API of the fault plan come
//! with the host).
//!
//! Every answer that is not a success is `application/problem+json`.

mod deliveries;

use axum::Router;

pub use deliveries::{ApiError, DeliveryView};
pub use pizza_servicekit::http::AppState;

/// The largest request body the service reads (only the admin API takes one; a fault plan fits
/// many times over).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The status routes; the service host puts them behind the HTTP faults with the health probes, and
/// adds the admin API, problem+json fallbacks and the SERVER span (see `pizza_servicekit::http`).
pub fn routes() -> Router<AppState> {
    deliveries::routes()
}
