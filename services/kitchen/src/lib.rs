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
//! - [`config`]: the one settings struct ([`Config`]).
//! - [`http`]: the router and the ticket handlers, [`ApiError`](http::ApiError); the health probes
//!   and the common layers come from `pizza_servicekit`.
//! - [`store`]: the tickets table and the migrations.
//! - [`ovens`]: the background loop that starts and finishes tickets.
//! - [`events`]: the consumer handler for `orders.events`.

pub mod config;
pub mod events;
pub mod http;
pub mod ovens;
pub mod store;

use std::future::Future;

use axum::Router;
use pizza_messaging::{ConsumerConfig, Outbox};
use pizza_servicekit::Faults;
use pizza_servicekit::background::{self, Messaging, RunError};
use pizza_servicekit::faults::FaultError;
use pizza_telemetry::Topology;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::Config;

/// Why the kitchen could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL could not be reached.
    #[error("connecting to PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The initial fault plan is invalid.
    #[error("invalid fault plan: {0}")]
    Faults(#[from] FaultError),
    /// A Kafka client could not be created.
    #[error("creating a Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The relay or the consumer could not be created, serving HTTP failed, or a background task
    /// panicked.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A kitchen ready to run: migrated database, fault plan, settings.
#[derive(Debug)]
pub struct Kitchen {
    config: Config,
    pool: PgPool,
    faults: Faults,
    topology: Topology,
}

impl Kitchen {
    /// Connects to `config.database_url` and prepares the kitchen (see [`Kitchen::with_pool`]).
    pub async fn connect(config: Config) -> Result<Self, StartError> {
        let pool = config.common.connect().await?;
        Self::with_pool(config, pool).await
    }

    /// Prepares the kitchen on `pool`: applies the migrations (schema `kitchen`, with its outbox and
    /// inbox) and sets the initial fault plan.
    pub async fn with_pool(config: Config, pool: PgPool) -> Result<Self, StartError> {
        store::migrate(&pool).await?;
        let faults = config.common.initial_faults()?;
        Ok(Self {
            config,
            pool,
            faults,
            topology: Topology::default(),
        })
    }

    /// How the `process orders.events` spans relate to the producer's trace (from
    /// `TelemetryConfig::topology`; continuous by default).
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The live fault plan (the admin API changes the same one).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The HTTP API alone (no background work), for handler tests.
    pub fn router(&self) -> Result<Router, StartError> {
        let state = http::AppState::new(self.pool.clone(), self.faults.clone(), &self.config.common)?;
        Ok(http::router(state, self.config.common.admin_token.clone()))
    }

    /// The oven loop of this kitchen.
    pub fn ovens(&self) -> ovens::Ovens {
        ovens::Ovens {
            pool: self.pool.clone(),
            outbox: Outbox::new(store::messaging_schema()),
            topic: self.config.kitchen_events_topic.clone(),
            faults: self.faults.clone(),
            capacity: self.config.ovens,
            cook_time: self.config.cook_time(),
            tick: self.config.tick(),
        }
    }

    /// Serves the API on `listener` and runs the ovens, the outbox relay and the `orders.events`
    /// consumer until `shutdown` completes; then lets in-flight requests finish, stops the background
    /// work (the relay finishes its round, the consumer commits its offsets) and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let router = self.router()?;
        let ovens = self.ovens();
        let messaging = Messaging {
            pool: self.pool.clone(),
            schema: store::messaging_schema(),
            kafka: self.config.common.kafka(),
            relay_poll: self.config.tick(),
            consumer: ConsumerConfig::new(
                self.config.consumer_group.clone(),
                vec![self.config.orders_events_topic.clone()],
                self.topology,
            ),
            handler: events::Cancellations,
            faults: self.faults.clone(),
        };
        tracing::info!(ovens = self.config.ovens, cook_time = ?self.config.cook_time(), "kitchen running");
        let stats = background::run(listener, router, shutdown, messaging, |stop| {
            ovens.run(stop.wait())
        })
        .await?;
        tracing::info!(relay_stats = ?stats.relay, consumer_stats = ?stats.consumer, "kitchen stopped");
        Ok(())
    }
}
