//! The pizza shop's wire contract, written once.
//!
//! Every service that publishes or consumes an event agrees on three things: the topic it travels on,
//! its CloudEvents `type`, and the JSON body. They live here and nowhere else, so a rename is one
//! change that the compiler carries to every producer and consumer.
//!
//! The event types keep the names the Dapr pizza demo used (`order-placed`, `order-ready`, ...), so
//! its workshop material carries over. How an event travels (CloudEvents binary mode over Kafka, the
//! outbox, the inbox) is `pizza-messaging`'s business; this crate knows nothing of Kafka or SQL.
//!
//! # Privacy
//! Payloads may hold customer data where a service needs it (the delivery request carries the
//! address). Headers, record keys, span attributes and metric labels never do: the order id is the join
//! key. Types that hold customer data redact it from their `Debug` output, so a stray `{:?}` in a log
//! line does not leak it.
//!
//! # Layout
//! - [`topics`]: topic names and the dead-letter naming rule.
//! - [`types`]: the CloudEvents `type` of every event.
//! - [`events`]: the payloads, the [`Event`] and [`EventData`] traits, and one enum per topic for
//!   consumers that handle everything a topic carries.
//! - [`menu`]: the pizzas the shop sells (the order service prices from it, the kitchen checks it).
//! - [`kitchen`]: the kitchen's HTTP API bodies, limits and problem types.

pub mod events;
pub mod kitchen;
pub mod menu;
pub mod topics;
pub mod types;

pub use events::{DataError, Event, EventData};
