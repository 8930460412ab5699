//! The pizza shop's delivery service.
//!
//! The order workflow asks for a delivery with `delivery-requested` on `delivery.requests`. The
//! service records it, sends a driver to the kitchen (`POST /tickets/{order_id}/pickup`, asking again
//! while the order is not ready), drives with position updates, and reports on `delivery.events`:
//! `order-out-for-delivery`, several `order-on-its-way`, then `order-completed`, or `delivery-issue`
//! when the driver fails or the kitchen will never hand the order over.
//!
//! Everything is durable: deliveries live in PostgreSQL (schema `delivery`), requests arrive through
//! the idempotent consumer of `pizza-messaging` (inbox, dead letters), events leave through its
//! transactional outbox. The context of the `process delivery.requests` span is stored with the
//! delivery, so the pickup call and every event join the order's trace, even after a restart.
//!
//! # Layout
//! - [`Delivery`]: the service as `pizza_servicekit`'s host runs it (settings, schema, routes, what
//!   it consumes, the drivers); `main.rs` is `pizza_servicekit::host::main::<Delivery>()`.
//! - [`config`]: the one settings struct ([`Config`]).
//! - [`http`]: the status routes and handlers, [`ApiError`](http::ApiError); the health probes and
//!   the common layers come from `pizza_servicekit`.
//! - [`store`]: the deliveries table.
//! - [`requests`]: the consumer handler for `delivery.requests`.
//! - [`drivers`]: the background loop that picks up, drives and hands over.
//! - [`kitchen_client`]: the traced, retrying HTTP client for the kitchen's pickup.

pub mod config;
pub mod drivers;
pub mod http;
pub mod kitchen_client;
pub mod requests;
pub mod store;

use std::net::SocketAddr;

use axum::Router;
use pizza_servicekit::background::Stop;
use pizza_servicekit::host::BoxError;
use pizza_servicekit::http::AppState;
use pizza_servicekit::{Consumes, Context, Service, ServiceConfig};
use sqlx::migrate::Migrator;

pub use config::Config;

/// The delivery service: its settings and its drivers. See the crate docs.
#[derive(Debug)]
pub struct Delivery {
    config: Config,
    drivers: drivers::Drivers,
}

impl Service for Delivery {
    const NAME: &'static str = "delivery";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const SCHEMA: &'static str = "delivery";
    /// Internal: it always continues its caller's `traceparent`.
    const EDGE: bool = false;
    const MAX_BODY_BYTES: usize = http::MAX_BODY_BYTES;
    /// Only this service writes its deliveries and outbox rows: see `drivers`, "Rounds and waking
    /// up".
    const WAKES: pizza_messaging::Source = pizza_messaging::Source::Process;
    type Config = Config;
    type Handler = requests::Requests;

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
        let drivers = drivers::Drivers {
            effects: context.effects(&config.events_topic, drivers::EVENT_SOURCE),
            kitchen: kitchen_client::KitchenClient::new(&config.kitchen_url)?,
            updates: config.updates,
            leg_time: config.leg_time(),
            pickup_retry: config.pickup_retry(),
            pickup_attempts: config.pickup_attempts,
            safety_net: config.safety_net(),
        };
        Ok(Self {
            config: config.clone(),
            drivers,
        })
    }

    fn routes(&self) -> Router<AppState> {
        http::routes()
    }

    fn consumes(&self) -> Consumes<requests::Requests> {
        Consumes {
            group: self.config.consumer_group.clone(),
            topics: vec![self.config.requests_topic.clone()],
            handler: requests::Requests {
                pool: self.drivers.effects.pool.clone(),
            },
        }
    }

    async fn background(self, stop: Stop) {
        tracing::info!(leg_time = ?self.config.leg_time(), updates = self.config.updates, "delivery running");
        self.drivers.run(stop).await;
    }
}
