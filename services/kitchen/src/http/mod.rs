//! The kitchen's HTTP API: tickets (health and the admin API of the fault plan come with the host).
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

/// The ticket routes; the service host puts them behind the HTTP faults with the health probes, and
/// adds the admin API, problem+json fallbacks, the body limit and the SERVER span (the kitchen is
/// internal, so it continues its caller's `traceparent`); see `pizza_servicekit::http`.
pub fn routes() -> Router<AppState> {
    tickets::routes()
}
