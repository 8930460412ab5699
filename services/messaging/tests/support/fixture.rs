//! A messaging pipeline of its own for one test or benchmark: a fresh schema with the outbox and
//! inbox, a fresh topic (and its dead-letter topic), and the relay and consumer started on demand.
//!
//! Shared by `tests/chain_traces.rs` and `benches/throughput.rs` (through `#[path]`), so both measure
//! and trace the same set-up.

#![allow(dead_code, unreachable_pub)] // each user takes a different part

use std::time::Duration;

use pizza_contracts::events::{OrderItem, OrderPlaced};
use pizza_messaging::{
    Consumer, ConsumerConfig, ConsumerStats, Envelope, Handler, HandlerError, Outbox, Relay, RelayConfig,
    RelayStats, Schema, migrate,
};
use pizza_telemetry::Topology;
use pizza_testkit::Stack;
use rdkafka::ClientConfig;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Logs to the test's captured output (shown when a test fails; `RUST_LOG` filters, default `info`).
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// An `order-placed` of `order` for one `pizza`, `seq` in `total_cents` (so the events of one order
/// differ).
pub fn order_placed_with(order: Uuid, seq: u64, pizza: &str) -> Envelope<OrderPlaced> {
    Envelope::new(
        "/pizza/order",
        OrderPlaced {
            order_id: order,
            items: vec![OrderItem {
                pizza: pizza.to_owned(),
                quantity: 1,
            }],
            total_cents: seq,
        },
    )
}

/// [`order_placed_with`] a margherita.
pub fn order_placed(order: Uuid, seq: u64) -> Envelope<OrderPlaced> {
    order_placed_with(order, seq, "margherita")
}

/// See the module docs.
pub struct Fixture {
    pub pool: PgPool,
    pub schema: Schema,
    pub topic: String,
    pub kafka: ClientConfig,
    stop: watch::Sender<bool>,
}

impl Fixture {
    /// A fresh schema named `<prefix>_<uuid>` and a topic `<prefix>-<unique>` with `partitions`.
    pub async fn new(prefix: &str, partitions: i32) -> Self {
        let stack = Stack::from_env();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&stack.database_url)
            .await
            .expect("connect to the native PostgreSQL (is deploy/local/infra.sh up?)");
        let schema = Schema::new(&format!("{prefix}_{}", Uuid::new_v4().simple())).expect("schema name");
        migrate(&pool, &schema).await.expect("messaging migrations");
        let topic = pizza_testkit::kafka::unique_topic(prefix);
        pizza_testkit::kafka::create_topics(
            &stack.kafka_bootstrap,
            &[(&topic, partitions), (&format!("{topic}.dlq"), 1)],
        )
        .await
        .expect("create topics");
        let mut kafka = ClientConfig::new();
        kafka.set("bootstrap.servers", &stack.kafka_bootstrap);
        let (stop, _) = watch::channel(false);
        Self {
            pool,
            schema,
            topic,
            kafka,
            stop,
        }
    }

    /// A table of the fixture's schema, quoted for SQL.
    pub fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }

    /// Creates a table in the fixture's schema (`columns` as in `create table`).
    pub async fn create_table(&self, name: &str, columns: &str) -> String {
        let table = self.table(name);
        sqlx::query(AssertSqlSafe(format!("create table {table} ({columns})")))
            .execute(&self.pool)
            .await
            .expect("create table");
        table
    }

    /// The fixture's outbox.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.schema.clone())
    }

    fn until_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stop.subscribe();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Starts a relay polling every `poll`.
    pub fn spawn_relay(&self, poll: Duration) -> JoinHandle<RelayStats> {
        let relay = Relay::new(
            self.pool.clone(),
            self.outbox(),
            &self.kafka,
            RelayConfig {
                poll_interval: poll,
                ..RelayConfig::default()
            },
        )
        .expect("relay");
        tokio::spawn(relay.run(self.until_stopped()))
    }

    /// Starts a consumer of the fixture's topic in group `<topic>-<group>`.
    pub fn spawn_consumer<H: Handler>(
        &self,
        group: &str,
        topology: Topology,
        handler: H,
    ) -> JoinHandle<ConsumerStats> {
        let consumer = Consumer::new(
            self.pool.clone(),
            self.schema.clone(),
            &self.kafka,
            ConsumerConfig::new(
                format!("{}-{group}", self.topic),
                vec![self.topic.clone()],
                topology,
            ),
            handler,
        )
        .expect("consumer");
        tokio::spawn(consumer.run(self.until_stopped()))
    }

    /// Stops the relay and consumers, and drops the schema.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = sqlx::query(AssertSqlSafe(format!("drop schema \"{}\" cascade", self.schema)))
            .execute(&self.pool)
            .await;
    }
}

/// A consumer's effect: one SQL statement, run in the consumer's transaction with the event's order
/// id bound as `$1`.
#[derive(Clone)]
pub struct Effect {
    pub sql: String,
}

impl Handler for Effect {
    type Event = OrderPlaced;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), HandlerError> {
        sqlx::query(AssertSqlSafe(self.sql.clone()))
            .bind(event.data.order_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
