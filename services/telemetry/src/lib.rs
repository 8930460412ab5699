//! OpenTelemetry for the pizza services.
//!
//! Telemetry is this platform's product: the spans are what people come to see. This crate makes
//! every service draw them the same way, after the OpenTelemetry semantic conventions and the span
//! model in the project's TELEMETRY design: HTTP servers and clients, Kafka producers and consumers,
//! with context carried in W3C headers across both, and one switch for how asynchronous edges look.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A service flattens `TelemetryArgs` into its `clap` settings; a tool may read the environment.
//! let config = pizza_telemetry::TelemetryArgs::from_env()?.config("kitchen", env!("CARGO_PKG_VERSION"))?;
//! let guard = pizza_telemetry::init(&config)?;
//! // ... serve until stopped ...
//! tokio::task::spawn_blocking(move || guard.shutdown()).await?; // flushes what is buffered
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: settings from `OTEL_*` and `PIZZA_*` variables ([`TelemetryArgs`], read by `clap`);
//!   [`Topology`].
//! - [`init`](mod@init): providers, exporters and the `tracing` subscriber; [`TelemetryGuard`].
//! - [`propagation`]: W3C context over HTTP headers, Kafka headers and stored carriers; the switch
//!   that drops context at an edge on purpose.
//! - [`http_server`]: SERVER spans for axum, `{method} {route}`.
//! - [`http_client`]: CLIENT spans for reqwest (retries are `pizza-retry`'s).
//! - [`kafka`]: `send`/`process` spans and the topology rule for asynchronous edges.
//! - [`sampler`]: the link-aware sampler.
//! - [`export`]: bounded, counted span export.
//! - [`logs`]: JSON log lines with `trace_id`/`span_id`.
//! - [`attributes`], [`metrics`]: every attribute and metric name.

pub mod attributes;
pub mod config;
pub mod export;
pub mod http_client;
pub mod http_server;
pub mod init;
pub mod kafka;
pub mod logs;
pub mod metrics;
pub mod propagation;
pub mod sampler;

pub use config::{ConfigError, TelemetryArgs, TelemetryConfig, Topology};
pub use init::{InitError, TelemetryGuard, init};
