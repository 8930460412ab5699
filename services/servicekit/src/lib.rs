//! What every pizza service shares, written once.
//!
//! The order, kitchen and delivery services differ in what they do, not in how they fail, how they
//! are told to fail, how they are configured, started, probed, migrated, or how they stop. Those
//! parts live here so a fix or a lesson applies to all of them. A service implements
//! [`Service`] once (its name, schema, settings, routes, what it consumes, its loops) and the
//! [`host`] runs it; its `main.rs` is one call, `pizza_servicekit::host::main::<TheService>()`.
//!
//! # Layout
//! - [`host`]: the [`Service`] trait and the host that connects, migrates, starts telemetry, serves,
//!   runs the relay, the consumer and the loops, and stops, the same way for every service.
//! - [`problem`]: RFC 9457 `application/problem+json` error bodies; every 4xx and 5xx uses them.
//! - [`faults`]: the seeded fault plan (HTTP errors and latency, Kafka publish failures, consumer
//!   crashes, database latency, business failures, dropped trace context), one module per concern:
//!   the plan, its generator, the live plan services ask, the axum middleware that applies the HTTP
//!   part, and the token-protected admin API that changes it at run time (off without a token; a
//!   published or short token refused on a service reachable beyond loopback).
//! - [`config`]: the settings every service has ([`ServiceConfig`], flattened into each service's
//!   own `clap` struct).
//! - [`http`]: the state every service's handlers share, and the whole router around a service's
//!   own routes (health probes, faults, admin API, fallbacks, body limit, SERVER span).
//! - [`health`]: `/healthz` and `/readyz` checking PostgreSQL and Kafka.
//! - [`store`]: migrations into the service's own schema with its own history table, and
//!   transactions that honour the fault plan's database latency.
//! - [`effects`]: one step of a background loop: a transaction after the fault plan's latency, its
//!   event through the outbox, inside a span continuing the trace stored with the row.
//! - [`background`]: the round-every-tick loop of background work, and running it with the outbox
//!   relay and the consumer beside the HTTP API until shutdown (what the host runs).
//! - [`peer`]: the HTTP client for another pizza service (CLIENT spans, order id, optional retries).
//! - [`serve`]: run a router on a listener until a shutdown signal, with connection info for spans.

pub mod background;
pub mod config;
pub mod effects;
pub mod faults;
pub mod health;
pub mod host;
pub mod http;
pub mod peer;
pub mod problem;
pub mod serve;
pub mod store;

pub use config::ServiceConfig;
pub use faults::{FaultPlan, Faults, WORKSHOP_ADMIN_TOKEN};
pub use host::{Consumes, Context, Host, Service};
pub use problem::Problem;
