//! Helpers for tests that run against the real native stack (`deploy/local`): PostgreSQL, Apache Kafka,
//! the OpenTelemetry Collector and Jaeger v2, all on 127.0.0.1.
//!
//! Integration and end-to-end tests in this workspace never mock those four: they talk to the processes
//! `make test` starts. This crate keeps what every such test needs in one place, so each test says only
//! what it checks.
//!
//! # Layout
//! - [`stack`]: where the stack listens, from the environment with the native defaults.
//! - Jaeger and the span model are [`pizza_traces`]'s, re-exported here so a test names one crate.
//! - [`kafka`]: producer and consumer configurations for the test broker, uniquely named topics.
//! - [`app`]: one service running in-process on port 0 until the test stops it (a crate's own
//!   integration tests).
//! - [`records`]: reading a topic back to its end (or until N records), decoding event types, and
//!   polling until a condition holds within a bounded deadline.
//! - [`collector`]: a private OpenTelemetry Collector a run may stop and start, with its own metrics.
//! - [`broker`]: a private Kafka broker a test may stop and start without disturbing the others.
//! - [`shop`]: the three services as real processes (started, killed, restarted; on a database,
//!   topics and optionally a broker of their own): the one launcher of the shop for the tests and the
//!   load tester.
//! - [`telemetry`]: `pizza_telemetry::init` once per test process, and flushing before reading
//!   Jaeger.
//! - [`conventions`]: checks that exported spans use only registered or semantic-convention
//!   attributes and carry no customer personal data.

pub mod app;
pub mod broker;
pub mod collector;
pub mod conventions;
pub mod kafka;
pub mod ports;
pub mod records;
pub mod shop;
pub mod stack;
pub mod telemetry;

pub use pizza_traces::{
    Event, Jaeger, JaegerError, Link, Settle, Span, SpanGraph, SpanKind, SpanSearch, Trace,
};
pub use records::{Seen, eventually, read_topic, types_of};
pub use stack::Stack;
