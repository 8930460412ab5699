//! CloudEvents over Kafka for the pizza services, with the guarantees the order story relies on:
//! nothing published is lost when Kafka is down, and nothing delivered twice has two effects.
//!
//! ```text
//!  request ──► [ state change + outbox row ]  one transaction      (Outbox::enqueue)
//!                          │
//!                          ▼  relay: claim rows, commit, send, mark published      (Relay)
//!                  Kafka topic  ──  CloudEvents binary mode, key = order id, traceparent
//!                          │
//!                          ▼  consumer: decode, [ inbox claim + effect ] one transaction,
//!                             then store the offset; poison → <topic>.dlq    (Consumer)
//!                             (or, if that topic refuses it, a table: Parking)
//! ```
//!
//! Tracing follows the project's span model: the relay's `send {topic}` span continues the context
//! stored with the outbox row (so a publish that happens seconds later still joins the request's
//! trace), and the consumer's `process {topic}` span is parented or linked per the
//! [`Topology`](pizza_telemetry::Topology).
//!
//! Each service owns its messaging tables: [`migrate`] creates `outbox`, `inbox` and
//! `parked_dead_letters` in the service's schema.
//!
//! # Replicas and restarts
//! A service may run several replicas. Relays share the outbox through claims that keep order per
//! key; consumers share partitions through their group. Both take an *instance id*, a replica's
//! stable name across restarts (`PIZZA_INSTANCE_ID`): with it a replica that comes back after
//! `kill -9` resumes at once, its relay taking back its own claims and its consumer its own
//! partitions, instead of waiting for a lease or a session to expire.
//!
//! # Layout
//! - [`cloudevents`]: the envelope, its headers, encode and decode.
//! - [`schema`]: [`Schema`] names and [`migrate`].
//! - [`outbox`]: [`Outbox::enqueue`] in the caller's transaction; dead rows for operators.
//! - [`relay`]: the [`Relay`] that publishes the outbox.
//! - [`inbox`]: the [`Inbox`] of applied event ids.
//! - [`consumer`]: the [`Consumer`] and the [`Handler`] trait.
//! - [`dead_letter`]: what a dead letter carries, and [`Parking`] for those `<topic>.dlq` refuses.
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
pub use consumer::{
    BatchError, Batched, BoxError, Consumer, ConsumerConfig, ConsumerError, ConsumerStats, Handler,
    HandlerError,
};
pub use dead_letter::Parking;
pub use faults::{FaultHooks, SharedFaultHooks};
pub use inbox::Inbox;
pub use outbox::{Backlog, DeadRow, Outbox, OutboxError};
pub use pizza_notify::Source;
/// The relay's and the consumer's retry delays: the platform's one back-off, from `pizza-retry`.
pub use pizza_retry::Backoff;
pub use relay::{Relay, RelayConfig, RelayError, RelayStats, outbox_wake};
pub use schema::{MigrateError, Schema, SchemaError, migrate};
