//! The kitchen's HTTP API: tickets, health, and the admin API of the fault plan.
//!
//! Every answer that is not a success is `application/problem+json`, including unknown routes,
//! unknown methods and bodies that are too large.

mod error;
mod tickets;

use axum::Router;

pub use error::ApiError;
pub use pizza_servicekit::http::AppState;

/// The largest request body the kitchen reads. A ticket of 50 lines fits many times over.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The whole API: ticket routes and health probes (behind the HTTP faults), the admin API,
/// problem+json fallbacks, a body limit, and the SERVER span around all of it (the kitchen is
/// internal, so it continues its caller's `traceparent`); see `pizza_servicekit::http`.
pub fn router(state: AppState, admin_token: Option<String>) -> Router {
    pizza_servicekit::http::service_router("kitchen", tickets::routes(), state, admin_token, MAX_BODY_BYTES)
}
