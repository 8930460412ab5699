//! Failure injection: one seeded plan per service, set at start from the environment and changed at
//! run time through a token-protected admin API.
//!
//! A workshop or a load scenario says *what* should go wrong (half the kitchen's requests fail; the
//! oven breaks one time in five; the Kafka edge loses its trace context) and the service decides *when*
//! with a pseudo-random sequence seeded by the plan. The same plan and the same sequence of calls give
//! the same failures, so a scenario replays the same way.
//!
//! The generator is SplitMix64, written out here rather than taken from a crate: its output for a seed
//! is fixed forever, whereas a library's default generator may change between versions and silently
//! change what a recorded scenario does.
//!
//! Process-level faults (kill, restart, broker outage) are not here: the load tester drives them.
//!
//! # Layout
//! - [`plan`]: what should go wrong ([`FaultPlan`]) and the domain of each field.
//! - `rng`: the seeded generator behind every decision ([`SplitMix64`], public for the load
//!   tester's seeded kill schedules).
//! - [`live`]: a service's live plan ([`Faults`]), the decisions its code asks for, and the Kafka
//!   hooks of `pizza-messaging`.
//! - [`middleware`]: the axum middleware that applies the HTTP part.
//! - [`admin`]: the token-protected admin API that replaces the plan at run time, and the rule that
//!   refuses a published or short token on a service reachable beyond loopback.

pub mod admin;
pub mod live;
pub mod middleware;
pub mod plan;
mod rng;

pub use rng::SplitMix64;

pub use admin::{
    AdminAccess, AdminTokenError, MIN_TOKEN_CHARS_BEYOND_LOOPBACK, WORKSHOP_ADMIN_TOKEN, admin_access,
    admin_router, configured_token,
};
pub use live::Faults;
pub use middleware::{inject_http_faults, is_exempt};
pub use plan::{FaultError, FaultPlan, MAX_LATENCY_MS};
