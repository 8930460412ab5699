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
//! - [`OrderService`]: the service as `pizza_servicekit`'s host runs it (settings, schema, routes,
//!   what it consumes, the workflow worker and the reconciler); `main.rs` is
//!   `pizza_servicekit::host::main::<OrderService>()`.
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

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use pizza_messaging::Outbox;
use pizza_servicekit::background::{self, Stop};
use pizza_servicekit::host::BoxError;
use pizza_servicekit::http::AppState;
use pizza_servicekit::{Consumes, Context, Faults, Service, ServiceConfig};
use pizza_workflow::{Engine, Source, WorkerConfig, Workflows};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;

/// The order service: its settings, the workflow engine on its database and the workflows it runs.
/// See the crate docs.
#[derive(Debug)]
pub struct OrderService {
    config: Config,
    pool: PgPool,
    faults: Faults,
    outbox: Outbox,
    engine: Engine,
    workflows: Workflows,
}

impl OrderService {
    /// The workflow engine on this service's database.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Service for OrderService {
    const NAME: &'static str = "order";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const SCHEMA: &'static str = "orders";
    /// The edge: customers call it, so `PIZZA_TRUST_INBOUND_TRACEPARENT` decides whether their
    /// `traceparent` is continued.
    const EDGE: bool = true;
    const MAX_BODY_BYTES: usize = http::MAX_BODY_BYTES;
    /// Only the order service writes its outbox: the placing of an order, the workflow's steps
    /// (after their commit, `StepTx::after_commit`) and the reconciler announce their rows.
    const WAKES: pizza_messaging::Source = pizza_messaging::Source::Process;
    type Config = Config;
    type Handler = events::Progress;

    fn common(config: &Config) -> &ServiceConfig {
        &config.common
    }

    fn addr(config: &Config) -> SocketAddr {
        config.addr
    }

    /// Sized for the work, not for the worst case: eight for the HTTP handlers, the relay and the
    /// consumer, and one for every four workflow slots. An execution holds one connection at a
    /// time (its step's transaction or the engine's statement; a running step's record and the
    /// heartbeats go through the worker's own few, `pizza_workflow`'s side pool), and only while it
    /// writes: a slot spends most of its time on the payment provider, the kitchen or a signal,
    /// holding none. So a smaller pool only queues, it cannot deadlock. Twice the slots (before)
    /// let the pool grow to 180 connections at 80 orders/s on two cores, each a PostgreSQL backend
    /// planning its statements anew and taking its turn on the cores; at a quarter of the slots
    /// that load ran with 40 (see `docs/decisions.md`).
    fn max_connections(config: &Config) -> u32 {
        8 + config.workflow_concurrency / 4
    }

    fn migrations() -> Migrator {
        sqlx::migrate!("./migrations")
    }

    /// Migrates the workflow engine's schema (`workflow`) too, and builds the engine: after
    /// telemetry has started, as its instruments need (see `pizza_servicekit::host`).
    async fn build(config: &Config, context: Context) -> Result<Self, BoxError> {
        pizza_workflow::migrate(&context.pool).await?;
        // Every replica runs workers for the workflows it starts and signals, so a run is always
        // taken by the process that made it due: no `NOTIFY`, no listening connection (see
        // `EngineBuilder::wakes`).
        let engine = Engine::builder(context.pool.clone())
            .topology(context.topology)
            .wakes(Source::Process)
            .build();
        let workflows = fulfillment::workflows(fulfillment::Deps {
            pool: context.pool.clone(),
            kitchen: kitchen::KitchenClient::new(&config.kitchen_url)?,
            outbox: context.outbox.clone(),
            faults: context.faults.clone(),
            timings: config.timings(),
            delivery_requests_topic: config.delivery_requests_topic.clone(),
            orders_events_topic: config.orders_events_topic.clone(),
        });
        Ok(Self {
            config: config.clone(),
            pool: context.pool,
            faults: context.faults,
            outbox: context.outbox,
            engine,
            workflows,
        })
    }

    fn routes(&self) -> Router<AppState> {
        http::routes(http::OrderState {
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            engine: self.engine.clone(),
            outbox: self.outbox.clone(),
            settings: Arc::new(http::Settings {
                jaeger_ui_url: self.config.jaeger_ui_url.clone(),
                orders_events_topic: self.config.orders_events_topic.clone(),
                kitchen_url: self.config.kitchen_url.clone(),
                delivery_url: self.config.delivery_url.clone(),
                admin_token: self.config.common.admin_token.clone(),
            }),
        })
    }

    fn consumes(&self) -> Consumes<events::Progress> {
        Consumes {
            group: self.config.consumer_group.clone(),
            topics: vec![
                self.config.kitchen_events_topic.clone(),
                self.config.delivery_events_topic.clone(),
            ],
            handler: events::Progress::new(self.engine.clone()),
        }
    }

    /// The workflow worker (executions in flight finish their step on stop) and the reconciler.
    async fn background(self, stop: Stop) {
        tracing::info!(timings = ?self.config.timings(), "order service running");
        let worker = self.engine.worker(
            self.workflows,
            WorkerConfig {
                // A replica with a stable name takes back, when it restarts, the runs its previous
                // life leased; without one, each start is a stranger and they wait out their leases.
                id: match &self.config.common.instance_id {
                    Some(instance) => instance.clone(),
                    None => format!(
                        "order-{}-{}",
                        std::process::id(),
                        &uuid::Uuid::new_v4().simple().to_string()[..6]
                    ),
                },
                lease: self.config.lease(),
                concurrency: self.config.workflow_concurrency as usize,
                // The safety net: this process's starts, signals and child ends wake the worker in
                // memory, and it sleeps only until the next timer or lease falls due.
                poll_interval: self.config.worker_poll(),
            },
        );
        let (stop_worker, stop_reconciler) = stop.split();
        let worker = async {
            if let Err(error) = worker.run(stop_worker.wait()).await {
                tracing::error!(%error, "workflow worker stopped with an error");
            }
        };
        let (pool, outbox, topic) = (&self.pool, &self.outbox, &self.config.orders_events_topic);
        let reconciler = background::rounds("reconciler", reconcile::EVERY, stop_reconciler.wait(), || {
            reconcile::round(pool, outbox, topic)
        });
        tokio::join!(worker, reconciler);
    }
}
