//! The pizza shop's kitchen.
//!
//! The order workflow sends a ticket (`POST /tickets`, idempotent on the order id); the kitchen queues
//! it, cooks it when an oven is free, and reports through `kitchen.events`: `order-in-preparation`
//! when cooking starts, `order-ready` when it is done, `kitchen-issue` when the oven fails. A driver
//! then picks the ticket up (`POST /tickets/{order_id}/pickup`). A cancelled order
//! (`order-cancelled` on `orders.events`, or `POST /tickets/{order_id}/cancel`) cancels its ticket.
//!
//! Everything is durable: tickets and the ovens' state live in PostgreSQL (schema `kitchen`), events
//! go through the transactional outbox of `pizza-messaging`, and cancellations come through its
//! idempotent consumer. The trace context of `POST /tickets` is stored with the ticket, so the ovens'
//! work and the events it publishes join the order's trace even after a restart.
//!
//! ```text
//!  POST /tickets ──► tickets (queued, trace carrier)
//!                      │  oven loop: start while ovens are free ─► order-in-preparation ─┐
//!                      │             finish when cooked         ─► order-ready / issue ──┤ outbox
//!                      ▼                                                                  ▼
//!  POST .../pickup ─► picked_up                                     relay ─► kitchen.events
//!  orders.events (order-cancelled) ─► consumer ─► cancelled
//! ```
//!
//! # Layout
//! - [`Kitchen`]: the kitchen as `pizza_servicekit`'s host runs it (settings, schema, routes, what
//!   it consumes, the ovens); `main.rs` is `pizza_servicekit::host::main::<Kitchen>()`.
//! - [`config`]: the one settings struct ([`Config`]).
//! - [`http`]: the ticket routes and handlers, [`ApiError`](http::ApiError); the health probes and
//!   the common layers come from `pizza_servicekit`.
//! - [`store`]: the tickets table.
//! - [`ovens`]: the background loop that starts and finishes tickets.
//! - [`events`]: the consumer handler for `orders.events`.

pub mod config;
pub mod events;
pub mod http;
pub mod ovens;
pub mod store;

use std::net::SocketAddr;

use axum::Router;
use pizza_servicekit::background::Stop;
use pizza_servicekit::host::BoxError;
use pizza_servicekit::http::AppState;
use pizza_servicekit::{Consumes, Context, Service, ServiceConfig};
use sqlx::migrate::Migrator;

pub use config::Config;

/// The kitchen: its settings and its ovens. See the crate docs.
#[derive(Debug)]
pub struct Kitchen {
    config: Config,
    ovens: ovens::Ovens,
}

impl Service for Kitchen {
    const NAME: &'static str = "kitchen";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const SCHEMA: &'static str = "kitchen";
    /// Internal: it always continues its caller's `traceparent`.
    const EDGE: bool = false;
    const MAX_BODY_BYTES: usize = http::MAX_BODY_BYTES;
    /// Only the kitchen writes its tickets and outbox rows: see `ovens`, "Waking up".
    const WAKES: pizza_messaging::Source = pizza_messaging::Source::Process;
    type Config = Config;
    type Handler = events::Cancellations;

    fn common(config: &Config) -> &ServiceConfig {
        &config.common
    }

    fn addr(config: &Config) -> SocketAddr {
        config.addr
    }

    fn migrations() -> Migrator {
        sqlx::migrate!("./migrations")
    }

    async fn build(config: &Config, context: Context) -> Result<Self, BoxError> {
        let ovens = ovens::Ovens {
            effects: context.effects(&config.kitchen_events_topic, ovens::EVENT_SOURCE),
            capacity: config.ovens,
            cook_time: config.cook_time(),
            safety_net: config.safety_net(),
        };
        Ok(Self {
            config: config.clone(),
            ovens,
        })
    }

    fn routes(&self) -> Router<AppState> {
        http::routes()
    }

    fn consumes(&self) -> Consumes<events::Cancellations> {
        Consumes {
            group: self.config.consumer_group.clone(),
            topics: vec![self.config.orders_events_topic.clone()],
            handler: events::Cancellations {
                pool: self.ovens.effects.pool.clone(),
            },
        }
    }

    async fn background(self, stop: Stop) {
        tracing::info!(ovens = self.config.ovens, cook_time = ?self.config.cook_time(), "kitchen running");
        self.ovens.run(stop.wait()).await;
    }
}
