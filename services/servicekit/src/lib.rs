//! What every pizza service shares, written once.
//!
//! The order, kitchen and delivery services differ in what they do, not in how they fail, how they
//! are told to fail, how they are configured, probed, migrated, or how they stop. Those parts live
//! here so a fix or a lesson applies to all of them.
//!
//! # Layout
//! - [`problem`]: RFC 9457 `application/problem+json` error bodies; every 4xx and 5xx uses them.
//! - [`faults`]: the seeded fault plan (HTTP errors and latency, Kafka publish failures, consumer
//!   crashes, database latency, business failures, dropped trace context), the token-protected admin
//!   API that changes it at run time, and the axum middleware that applies the HTTP part.
//! - [`config`]: the settings every service has ([`ServiceConfig`], flattened into each service's
//!   own `clap` struct).
//! - [`http`]: the state every service's handlers share, and the whole router around a service's
//!   own routes (health probes, faults, admin API, fallbacks, body limit, SERVER span).
//! - [`health`]: `/healthz` and `/readyz` checking PostgreSQL and Kafka.
//! - [`store`]: migrations into the service's own schema with its own history table, and
//!   transactions that honour the fault plan's database latency.
//! - [`background`]: the round-every-tick loop of background work, and running it with the outbox
//!   relay and the consumer beside the HTTP API until shutdown.
//! - [`serve`]: run a router on a listener until a shutdown signal, with connection info for spans.

pub mod background;
pub mod config;
pub mod faults;
pub mod health;
pub mod http;
pub mod problem;
pub mod serve;
pub mod store;

pub use config::ServiceConfig;
pub use faults::{FaultPlan, Faults};
pub use problem::Problem;
