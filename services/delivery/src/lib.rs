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
//! - [`config`]: the one settings struct ([`Config`]).
//! - [`http`]: the router and the status handlers, [`ApiError`](http::ApiError); the health probes
//!   and the common layers come from `pizza_servicekit`.
//! - [`store`]: the deliveries table and the migrations.
//! - [`requests`]: the consumer handler for `delivery.requests`.
//! - [`drivers`]: the background loop that picks up, drives and hands over.
//! - [`kitchen_client`]: the traced, retrying HTTP client for the kitchen's pickup.

pub mod config;
pub mod drivers;
pub mod http;
pub mod kitchen_client;
pub mod requests;
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

/// Why the service could not start, or stopped with an error.
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
    /// The HTTP client for the kitchen could not be built.
    #[error("building the kitchen client: {0}")]
    Http(#[from] reqwest::Error),
    /// The relay or the consumer could not be created, serving HTTP failed, or a background task
    /// panicked.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A delivery service ready to run: migrated database, fault plan, settings.
#[derive(Debug)]
pub struct Delivery {
    config: Config,
    pool: PgPool,
    faults: Faults,
    topology: Topology,
}

impl Delivery {
    /// Connects to `config.database_url` and prepares the service (see [`Delivery::with_pool`]).
    pub async fn connect(config: Config) -> Result<Self, StartError> {
        let pool = config.common.connect().await?;
        Self::with_pool(config, pool).await
    }

    /// Prepares the service on `pool`: migrations (schema `delivery`, with its outbox and inbox) and
    /// the initial fault plan.
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

    /// How the `process delivery.requests` spans relate to the producer's trace.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The live fault plan (the admin API changes the same one).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The HTTP API alone (no background work), for handler tests.
    pub fn router(&self) -> Result<Router, StartError> {
        let state = http::AppState::new(self.pool.clone(), self.faults.clone(), &self.config.common)?;
        Ok(http::router(state, self.config.common.admin_token.clone()))
    }

    /// The driver loop of this service.
    pub fn drivers(&self) -> Result<drivers::Drivers, StartError> {
        Ok(drivers::Drivers {
            pool: self.pool.clone(),
            outbox: Outbox::new(store::messaging_schema()),
            topic: self.config.events_topic.clone(),
            faults: self.faults.clone(),
            kitchen: kitchen_client::KitchenClient::new(&self.config.kitchen_url)?,
            updates: self.config.updates,
            leg_time: self.config.leg_time(),
            pickup_retry: self.config.pickup_retry(),
            pickup_attempts: self.config.pickup_attempts,
            tick: self.config.tick(),
        })
    }

    /// Serves the API on `listener` and runs the drivers, the outbox relay and the
    /// `delivery.requests` consumer until `shutdown` completes; then lets in-flight requests finish,
    /// stops the background work and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let router = self.router()?;
        let drivers = self.drivers()?;
        let messaging = Messaging {
            pool: self.pool.clone(),
            schema: store::messaging_schema(),
            kafka: self.config.common.kafka(),
            relay_poll: self.config.tick(),
            consumer: ConsumerConfig::new(
                self.config.consumer_group.clone(),
                vec![self.config.requests_topic.clone()],
                self.topology,
            ),
            handler: requests::Requests,
            faults: self.faults.clone(),
        };
        tracing::info!(leg_time = ?self.config.leg_time(), updates = self.config.updates, "delivery running");
        let stats = background::run(listener, router, shutdown, messaging, |stop| {
            drivers.run(stop.wait())
        })
        .await?;
        tracing::info!(relay_stats = ?stats.relay, consumer_stats = ?stats.consumer, "delivery stopped");
        Ok(())
    }
}
