//! Helpers for tests that run against the real native stack (`deploy/local`): PostgreSQL, Apache Kafka,
//! the OpenTelemetry Collector and Jaeger v2, all on 127.0.0.1.
//!
//! Integration and end-to-end tests in this workspace never mock those four: they talk to the processes
//! `make test` starts. This crate keeps what every such test needs in one place, so each test says only
//! what it checks.
//!
//! # Layout
//! - [`stack`]: where the stack listens, from the environment with the native defaults.
//! - [`jaeger`]: a client for Jaeger's query API v3 that reads whole traces back, waiting for them to
//!   arrive, and exposes spans with their parents, attributes and links.
//! - [`kafka`]: producer and consumer configurations for the test broker.

pub mod jaeger;
pub mod kafka;
pub mod stack;

pub use jaeger::{Jaeger, JaegerError, Link, Span, SpanKind, Trace};
pub use stack::Stack;
