//! CloudEvents over Kafka for the pizza services, with the guarantees the order story relies on:
//! nothing published is lost when Kafka is down, and nothing delivered twice has two effects.
//!
//! ```text
//!  request ──► [ state change + outbox row ]  one transaction      (Outbox::enqueue)
//!                          │
//!                          ▼  relay: lock rows, send, wait for acks, mark published (Relay)
//!                  Kafka topic  ──  CloudEvents binary mode, key = order id, traceparent
//!                          │
//!                          ▼  consumer: decode, [ inbox claim + effect ] one transaction,
//!                             then store the offset; poison → <topic>.dlq    (Consumer)
//! ```
//!
//! Tracing follows the project's span model: the relay's `send {topic}` span continues the context
//! stored with the outbox row (so a publish that happens seconds later still joins the request's
//! trace), and the consumer's `process {topic}` span is parented or linked per the
//! [`Topology`](pizza_telemetry::Topology).
//!
//! Each service owns its messaging tables: [`migrate`] creates `outbox` and `inbox` in the service's
//! schema.
//!
//! # Layout
//! - [`cloudevents`]: the envelope, its headers, encode and decode.
//! - [`schema`]: [`Schema`] names and [`migrate`].
//! - [`outbox`]: [`Outbox::enqueue`] in the caller's transaction.
//! - [`relay`]: the [`Relay`] that publishes the outbox.
//! - [`inbox`]: the [`Inbox`] of applied event ids.
//! - [`consumer`]: the [`Consumer`] and the [`Handler`] trait.
//! - [`dead_letter`]: what a dead letter carries.
//! - [`faults`]: [`FaultHooks`], how a fault plan fails the relay's publishes and crashes the
//!   consumer.
//! - [`kafka`]: client settings that encode the guarantees.
//! - [`metrics`]: the crate's instruments.

pub mod cloudevents;
pub mod consumer;
pub mod dead_letter;
pub mod faults;
pub mod inbox;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod schema;

pub use cloudevents::{Attributes, DecodeError, EncodeError, Encoded, Envelope};
pub use consumer::{BoxError, Consumer, ConsumerConfig, ConsumerError, ConsumerStats, Handler, HandlerError};
pub use faults::{FaultHooks, SharedFaultHooks};
pub use inbox::Inbox;
pub use outbox::{Outbox, OutboxError};
/// The relay's and the consumer's retry delays: the platform's one back-off, from `pizza-retry`.
pub use pizza_retry::Backoff;
pub use relay::{Relay, RelayConfig, RelayError, RelayStats, Round};
pub use schema::{MigrateError, Schema, SchemaError, migrate};
