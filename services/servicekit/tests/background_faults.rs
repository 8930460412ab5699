//! The Kafka faults of the fault plan, through `background::run` as a service runs it, on the real
//! Kafka and PostgreSQL of the native stack: a plan set through the admin API makes the relay fail
//! publishes (sent again, none lost) and the consumer crash before storing offsets (restarted by
//! `run`, the crashed records delivered again without a second effect), and a stop while the
//! consumer is crashed or restarting still ends `run`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pizza_contracts::events::{OrderItem, OrderPlaced};
use pizza_messaging::{ConsumerConfig, Envelope, Handler, HandlerError, Outbox, Schema};
use pizza_servicekit::Faults;
use pizza_servicekit::background::{self, Messaging, RunStats};
use pizza_servicekit::faults::admin_router;
use pizza_telemetry::Topology;
use pizza_testkit::Stack;
use pizza_testkit::records::eventually;
use rdkafka::ClientConfig;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

const TOKEN: &str = "faults-test-token";

/// The effect: one row per application (no key, so a second application would show), and a count
/// of the handler's calls.
#[derive(Debug)]
struct Record {
    table: String,
    calls: Arc<AtomicU32>,
}

impl Handler for Record {
    type Event = OrderPlaced;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (order_id) values ($1)",
            self.table
        )))
        .bind(event.data.order_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// A service's messaging side on a schema and topic of its own, run by `background::run` beside the
/// admin API of its fault plan.
struct Service {
    pool: PgPool,
    schema: Schema,
    topic: String,
    base_url: String,
    calls: Arc<AtomicU32>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<RunStats, background::RunError>>,
}

impl Service {
    async fn start() -> Self {
        Self::start_on(&Stack::from_env().kafka_bootstrap, |_, _| {}).await
    }

    /// A service whose Kafka is at `bootstrap` (a private broker, say), with its client settings and
    /// consumer configuration changed by `setup`.
    async fn start_on(bootstrap: &str, setup: impl FnOnce(&mut ClientConfig, &mut ConsumerConfig)) -> Self {
        let stack = Stack::from_env();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&stack.database_url)
            .await
            .expect("connect to the native PostgreSQL (is deploy/local/infra.sh up?)");
        let schema = Schema::new(&format!("sk_{}", Uuid::new_v4().simple())).unwrap();
        pizza_messaging::migrate(&pool, &schema).await.unwrap();
        let table = format!("\"{schema}\".applied");
        sqlx::query(AssertSqlSafe(format!(
            "create table {table} (order_id uuid not null)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let topic = pizza_testkit::kafka::unique_topic("skfaults");
        pizza_testkit::kafka::create_topics(
            bootstrap,
            &[(&topic, 1), (&pizza_contracts::topics::dead_letter(&topic), 1)],
        )
        .await
        .unwrap();
        let mut kafka = ClientConfig::new();
        kafka.set("bootstrap.servers", bootstrap);
        let mut consumer =
            ConsumerConfig::new(format!("{topic}-g"), vec![topic.clone()], Topology::Continuous);
        setup(&mut kafka, &mut consumer);

        // The service starts without faults; the test sets them through the admin API.
        let faults = Faults::none();
        let router = admin_router(faults.clone(), Some(TOKEN.to_owned()));
        let calls = Arc::new(AtomicU32::new(0));
        let messaging = Messaging {
            pool: pool.clone(),
            schema: schema.clone(),
            kafka,
            relay_poll: Duration::from_millis(20),
            wakes: pizza_messaging::Source::Database,
            consumer,
            handler: Record {
                table,
                calls: calls.clone(),
            },
            faults,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(background::run(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            messaging,
            |stop| stop.wait(),
        ));
        Self {
            pool,
            schema,
            topic,
            base_url,
            calls,
            shutdown,
            task,
        }
    }

    async fn put_plan(&self, plan: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/admin/faults", self.base_url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(plan.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Writes one event for each of `orders` to the outbox, as a request would.
    async fn enqueue(&self, orders: &[Uuid]) {
        let outbox = Outbox::new(self.schema.clone());
        let mut tx = self.pool.begin().await.unwrap();
        for (seq, order) in orders.iter().enumerate() {
            let event = Envelope::new(
                "/pizza/order",
                OrderPlaced {
                    order_id: *order,
                    items: vec![OrderItem {
                        pizza: "margherita".into(),
                        quantity: 1,
                    }],
                    total_cents: seq as u64,
                },
            );
            outbox.enqueue_to(&mut tx, &self.topic, &event).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(
            sql.replace("{schema}", &format!("\"{}\"", self.schema)),
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until the inbox holds `n` events.
    async fn wait_applied(&self, n: i64) {
        eventually(Duration::from_secs(120), "events applied", || async {
            Ok((self.count("select count(*) from {schema}.inbox").await == n).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Stops the service; `run` must return within 30 s.
    async fn stop(self) -> (RunStats, PgPool, Schema) {
        let _ = self.shutdown.send(());
        let stats = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("background::run returns after the stop")
            .unwrap()
            .unwrap();
        (stats, self.pool, self.schema)
    }
}

async fn drop_schema(pool: &PgPool, schema: &Schema) {
    let _ = sqlx::query(AssertSqlSafe(format!("drop schema \"{schema}\" cascade")))
        .execute(pool)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_apis_kafka_faults_fail_publishes_and_crash_the_consumer_which_run_restarts() {
    let started = Instant::now();
    let service = Service::start().await;

    // Without a plan: nothing fails, nothing crashes.
    let before: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    service.enqueue(&before).await;
    service.wait_applied(5).await;

    // The plan, through the admin API: half the publishes fail, the consumer crashes twice.
    service
        .put_plan(r#"{"seed":11,"kafka_publish_failure_rate":0.5,"consumer_crash_before_commit":2}"#)
        .await;
    let after: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    service.enqueue(&after).await;
    service.wait_applied(25).await;
    let calls = service.calls.load(Ordering::SeqCst);
    let rows = service.count("select count(*) from {schema}.applied").await;
    let distinct = service
        .count("select count(distinct order_id) from {schema}.applied")
        .await;
    let attempts = service
        .count("select sum(attempts)::bigint from {schema}.outbox")
        .await;
    let (stats, pool, schema) = service.stop().await;
    eprintln!(
        "background::run with the admin API's Kafka faults: 25 events; relay {} published, {} injected \
         failures ({attempts} attempts); consumer {} effects, {} duplicates, {} restarts; {:?}",
        stats.relay.published,
        stats.relay.injected,
        stats.consumer.processed,
        stats.consumer.duplicates,
        stats.consumer_restarts,
        started.elapsed()
    );
    assert_eq!(calls, 25, "the handler ran once per event");
    assert_eq!((rows, distinct), (25, 25), "one effect per event");
    assert_eq!(
        stats.consumer_restarts, 2,
        "one restart per crash of the plan: {stats:?}"
    );
    assert_eq!(stats.consumer.processed, 25, "{stats:?}");
    assert_eq!(
        stats.consumer.duplicates, 2,
        "each crashed record was delivered again and absorbed by the inbox: {stats:?}"
    );
    assert!(!stats.consumer.crashed, "the last consumer stopped cleanly");
    assert!(stats.relay.injected > 0, "the plan failed publishes: {stats:?}");
    assert_eq!(stats.relay.published, 25, "each event published once: {stats:?}");
    assert_eq!(
        attempts,
        25 + stats.relay.injected as i64,
        "each injected failure cost its row one more attempt"
    );
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_consumer_is_crashed_or_restarting_still_ends_run() {
    let service = Service::start().await;
    // Every applied record crashes the consumer: it is always crashed, pausing, or starting again.
    service.put_plan(r#"{"consumer_crash_before_commit":1000}"#).await;
    service.enqueue(&[Uuid::now_v7()]).await;
    service.wait_applied(1).await;
    let stopping = Instant::now();
    let (stats, pool, schema) = service.stop().await;
    eprintln!("stopped {:?} after the crash: {stats:?}", stopping.elapsed());
    assert_eq!(stats.consumer.processed, 1, "{stats:?}");
    // Stopped during the pause: the last consumer is the crashed one. Stopped later: one restart.
    assert_eq!(
        stats.consumer_restarts,
        u32::from(!stats.consumer.crashed),
        "{stats:?}"
    );
    drop_schema(&pool, &schema).await;
}

/// A consumer stalled outside its group (its broker away for longer than `stall_after`; see
/// `pizza_messaging::consumer`) is replaced by `run` like a crashed one, and the replica reads on
/// once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stalled_outside_its_group_is_replaced_and_the_next_one_reads_on() {
    let mut broker = pizza_testkit::broker::PrivateBroker::start().await.unwrap();
    let service = Service::start_on(&broker.bootstrap(), |kafka, consumer| {
        // Statistics often, so the bound can be short.
        kafka.set("statistics.interval.ms", "250");
        consumer.stall_after = Duration::from_secs(4);
        consumer.instance_id = Some("replica-0".to_owned());
    })
    .await;
    service.enqueue(&[Uuid::now_v7()]).await;
    service.wait_applied(1).await;
    broker.stop().await.unwrap();
    // Two bounds and more without a broker.
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.up().await.unwrap();
    service.enqueue(&[Uuid::now_v7()]).await;
    service.wait_applied(2).await;
    let (stats, pool, schema) = service.stop().await;
    assert!(
        stats.consumer_restarts >= 1,
        "the stalled consumer was replaced: {stats:?}"
    );
    assert_eq!(stats.consumer.processed, 2, "each event applied once: {stats:?}");
    drop_schema(&pool, &schema).await;
}
