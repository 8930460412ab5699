//! The pizza shop's order service: the public API and the web UI, the durable order workflow, and
//! the consumers that move orders along.
//!
//! ```text
//!  browser ─► POST /orders ─► orders + workflow run + order-placed (one transaction)
//!                               │
//!         workflow worker ◄─────┘  order-fulfillment: validate, charge-payment (child),
//!              │                   place-kitchen-ticket (HTTP) ─► kitchen
//!              │                   wait kitchen-ready ◄── signal ◄── consumer ◄── kitchen.events
//!              │                   request-delivery (outbox) ─► delivery.requests ─► delivery
//!              │                   wait delivered     ◄── signal ◄── consumer ◄── delivery.events
//!              ▼                   feedback-delay, request-feedback │ or compensation
//!          orders.timeline ─► GET /orders/{id}/events (SSE) ─► browser
//! ```
//!
//! Everything is durable in PostgreSQL: the orders (schema `orders`), the workflow runs (schema
//! `workflow`, `pizza-workflow`), the outbox and inbox (`pizza-messaging`). A killed process loses
//! nothing: another replica, or the restarted one, takes over the runs once their lease expires, and
//! their traces continue from the stored carriers.
//!
//! # Layout
//! - [`config`]: the settings ([`Config`]).
//! - [`http`]: the API, the UI, the OpenAPI document, the faults proxy.
//! - [`store`]: orders, timeline, payments; the status rules.
//! - [`fulfillment`]: the workflows.
//! - [`kitchen`]: the kitchen's HTTP client.
//! - [`events`]: the consumer of `kitchen.events` and `delivery.events`.
//! - [`reconcile`]: ends orders whose workflow ended without ending them.

pub mod config;
pub mod events;
pub mod fulfillment;
pub mod http;
pub mod kitchen;
pub mod reconcile;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use pizza_messaging::{ConsumerConfig, Outbox};
use pizza_servicekit::Faults;
use pizza_servicekit::background::{self, Messaging, RunError};
use pizza_servicekit::faults::FaultError;
use pizza_telemetry::Topology;
use pizza_workflow::{Engine, WorkerConfig};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

pub use config::Config;

/// Why the order service could not start, or stopped with an error.
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
    /// The HTTP client could not be created.
    #[error("creating the kitchen client: {0}")]
    Http(#[from] reqwest::Error),
    /// The relay or the consumer could not be created, serving HTTP failed, or a background task
    /// panicked.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// An order service ready to run: migrated database, fault plan, settings.
#[derive(Debug)]
pub struct OrderService {
    config: Config,
    pool: PgPool,
    faults: Faults,
    topology: Topology,
    trust_inbound: bool,
}

impl OrderService {
    /// Connects to `config.database_url` with a pool sized for the HTTP handlers, the relay, the
    /// consumer and the workflow executions (each may hold two connections: its step's and the
    /// engine's), and prepares the service (see [`OrderService::with_pool`]).
    pub async fn connect(config: Config) -> Result<Self, StartError> {
        let pool = PgPoolOptions::new()
            .max_connections(8 + 2 * config.workflow_concurrency)
            .connect(&config.common.database_url)
            .await?;
        Self::with_pool(config, pool).await
    }

    /// Prepares the service on `pool`: migrations (schemas `orders` and `workflow`) and the initial
    /// fault plan.
    pub async fn with_pool(config: Config, pool: PgPool) -> Result<Self, StartError> {
        store::migrate(&pool).await?;
        let faults = config.common.initial_faults()?;
        Ok(Self {
            config,
            pool,
            faults,
            topology: Topology::default(),
            trust_inbound: true,
        })
    }

    /// How async edges are drawn (from `TelemetryConfig::topology`; continuous by default): the
    /// consumer's `process` spans and the workflow's executions.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Whether a caller's `traceparent` is continued (`TelemetryConfig::trust_inbound_traceparent`)
    /// or starts a new trace linked to it.
    pub fn with_trust_inbound(mut self, trust: bool) -> Self {
        self.trust_inbound = trust;
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

    /// The workflow engine on this service's database.
    pub fn engine(&self) -> Engine {
        Engine::builder(self.pool.clone()).topology(self.topology).build()
    }

    fn outbox() -> Outbox {
        Outbox::new(store::messaging_schema())
    }

    /// The HTTP API alone (no background work), for handler tests.
    pub fn router(&self) -> Result<Router, StartError> {
        self.router_with(self.engine())
    }

    fn router_with(&self, engine: Engine) -> Result<Router, StartError> {
        let common = &self.config.common;
        let state = pizza_servicekit::http::AppState::new(self.pool.clone(), self.faults.clone(), common)?;
        let order = http::OrderState {
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            engine,
            outbox: Self::outbox(),
            settings: Arc::new(http::Settings {
                jaeger_ui_url: self.config.jaeger_ui_url.clone(),
                orders_events_topic: self.config.orders_events_topic.clone(),
                kitchen_url: self.config.kitchen_url.clone(),
                delivery_url: self.config.delivery_url.clone(),
                admin_token: common.admin_token.clone(),
                trust_inbound: self.trust_inbound,
            }),
        };
        Ok(http::router(state, order))
    }

    /// The workflows with their dependencies.
    pub fn workflows(&self) -> Result<pizza_workflow::Workflows, StartError> {
        Ok(fulfillment::workflows(fulfillment::Deps {
            pool: self.pool.clone(),
            kitchen: kitchen::KitchenClient::new(&self.config.kitchen_url)?,
            outbox: Self::outbox(),
            faults: self.faults.clone(),
            timings: self.config.timings(),
            delivery_requests_topic: self.config.delivery_requests_topic.clone(),
            orders_events_topic: self.config.orders_events_topic.clone(),
        }))
    }

    /// Serves the API on `listener` and runs the workflow worker, the outbox relay and the consumer
    /// of `kitchen.events` and `delivery.events` until `shutdown` completes; then lets in-flight
    /// requests finish, stops the background work (executions in flight finish their step, the relay
    /// its round, the consumer commits its offsets) and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let engine = self.engine();
        let router = self.router_with(engine.clone())?;
        let worker = engine.worker(
            self.workflows()?,
            WorkerConfig {
                id: format!(
                    "order-{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().simple().to_string()[..6]
                ),
                lease: self.config.lease(),
                poll_interval: std::time::Duration::from_millis(250),
                concurrency: self.config.workflow_concurrency as usize,
            },
        );
        let messaging = Messaging {
            pool: self.pool.clone(),
            schema: store::messaging_schema(),
            kafka: self.config.common.kafka(),
            relay_poll: std::time::Duration::from_millis(100),
            consumer: ConsumerConfig::new(
                self.config.consumer_group.clone(),
                vec![
                    self.config.kitchen_events_topic.clone(),
                    self.config.delivery_events_topic.clone(),
                ],
                self.topology,
            ),
            handler: events::Progress { engine },
            faults: self.faults.clone(),
        };
        tracing::info!(timings = ?self.config.timings(), "order service running");
        let (pool, outbox, topic) = (
            self.pool.clone(),
            Self::outbox(),
            self.config.orders_events_topic.clone(),
        );
        let stats = background::run(listener, router, shutdown, messaging, |stop| async move {
            let (stop_worker, stop_reconciler) = stop.split();
            let worker = async {
                if let Err(error) = worker.run(stop_worker.wait()).await {
                    tracing::error!(%error, "workflow worker stopped with an error");
                }
            };
            let reconciler =
                background::rounds("reconciler", reconcile::EVERY, stop_reconciler.wait(), || {
                    reconcile::round(&pool, &outbox, &topic)
                });
            tokio::join!(worker, reconciler);
        })
        .await?;
        tracing::info!(relay_stats = ?stats.relay, consumer_stats = ?stats.consumer, "order service stopped");
        Ok(())
    }
}
