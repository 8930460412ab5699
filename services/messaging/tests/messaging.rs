//! The messaging guarantees, proven against the real Kafka and PostgreSQL of the native stack.
//!
//! Every test makes its own topics (the shared broker has auto-creation off) and its own schema, so
//! the tests run in parallel without seeing each other's records or rows. The outage test runs its
//! own broker, because stopping the shared one would break every other test running at that moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use pizza_contracts::events::{DeliveryEvent, OrderItem, OrderOnItsWay, OrderPlaced};
use pizza_contracts::types;
use pizza_messaging::cloudevents::headers as ce;
use pizza_messaging::dead_letter::headers as dlq;
use pizza_messaging::{
    Backoff, BatchError, Batched, Consumer, ConsumerConfig, ConsumerStats, Envelope, Handler, HandlerError,
    Outbox, Relay, RelayConfig, RelayStats, Schema, migrate,
};
use pizza_telemetry::Topology;
use pizza_testkit::broker::PrivateBroker;
use pizza_testkit::records::{eventually, header, read_topic};
use pizza_testkit::{Stack, kafka};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

#[path = "support/fixture.rs"]
mod fixture;

use fixture::logs;

// ---- helpers ---------------------------------------------------------------------------------------

/// A pool and a schema of the test's own, with the messaging tables and a `deliveries` table that
/// handlers use as their effect.
struct Db {
    pool: PgPool,
    schema: Schema,
}

impl Db {
    async fn fresh() -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&Stack::from_env().database_url)
            .await
            .context("connect to the native PostgreSQL (is deploy/local/infra.sh up?)")?;
        let schema = Schema::new(&format!("t_{}", Uuid::new_v4().simple()))?;
        migrate(&pool, &schema).await?;
        sqlx::query(AssertSqlSafe(format!(
            "create table {} (order_id uuid primary key, updates integer not null, progress integer not null)",
            Self::deliveries(&schema)
        )))
        .execute(&pool)
        .await?;
        Ok(Self { pool, schema })
    }

    fn deliveries(schema: &Schema) -> String {
        format!("\"{schema}\".deliveries")
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }

    /// A log of applied events, each row with the id of the transaction that wrote it (for
    /// `LogWithTransaction` and `BatchLog`); its name.
    async fn log_table(&self) -> anyhow::Result<String> {
        let log = self.table("log");
        sqlx::query(AssertSqlSafe(format!(
            "create table {log} (seq bigserial primary key, order_id uuid not null, progress integer not null, \
             txid bigint not null)"
        )))
        .execute(&self.pool)
        .await?;
        Ok(log)
    }

    /// `(updates, progress)` of an order, if any effect reached it.
    async fn effect(&self, order: Uuid) -> anyhow::Result<Option<(i32, i32)>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "select updates, progress from {} where order_id = $1",
            self.table("deliveries")
        )))
        .bind(order)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn in_inbox(&self, event_id: Uuid) -> anyhow::Result<bool> {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "select count(*) from {} where event_id = $1",
            self.table("inbox")
        )))
        .bind(event_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Waits (at most `limit`) until `event_id` is in the inbox, failing with `what` otherwise.
    async fn until_applied(&self, event_id: Uuid, limit: Duration, what: &str) -> anyhow::Result<()> {
        eventually(limit, what, || async {
            Ok(self.in_inbox(event_id).await?.then_some(()))
        })
        .await
    }

    async fn unpublished(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "select count(*) from {} where published_at is null",
            self.table("outbox")
        )))
        .fetch_one(&self.pool)
        .await?)
    }

    async fn drop_schema(self) {
        let _ = sqlx::query(AssertSqlSafe(format!("drop schema \"{}\" cascade", self.schema)))
            .execute(&self.pool)
            .await;
    }
}

fn kafka_base(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// A topic and its dead-letter topic on `bootstrap`.
async fn topic_with_dlq(bootstrap: &str, prefix: &str, partitions: i32) -> anyhow::Result<(String, String)> {
    let topic = kafka::unique_topic(prefix);
    let dead = pizza_contracts::topics::dead_letter(&topic);
    kafka::create_topics(bootstrap, &[(&topic, partitions), (&dead, 1)]).await?;
    Ok((topic, dead))
}

/// How long reading a topic back to its end may take.
const READ_LIMIT: Duration = Duration::from_secs(60);

/// Runs a future in the background until the returned sender fires.
fn spawn_until_stopped<T, F>(
    run: impl FnOnce(oneshot::Receiver<()>) -> F,
) -> (oneshot::Sender<()>, JoinHandle<T>)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (stop, stopped) = oneshot::channel();
    (stop, tokio::spawn(run(stopped)))
}

async fn until(stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
}

async fn stop<T>(stop: oneshot::Sender<()>, task: JoinHandle<T>) -> anyhow::Result<T> {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .context("did not stop within 30 s")?
        .context("task panicked")
}

/// Sends records straight to Kafka (bypassing the outbox), as another service or a broken producer
/// would.
struct RawProducer(FutureProducer);

impl RawProducer {
    fn new() -> anyhow::Result<Self> {
        Self::on(&Stack::from_env().kafka_bootstrap)
    }

    /// One that sends to the broker at `bootstrap` (a private one).
    fn on(bootstrap: &str) -> anyhow::Result<Self> {
        let mut config = kafka::producer_config(&Stack::from_env());
        config.set("bootstrap.servers", bootstrap);
        Ok(Self(config.create()?))
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        headers: OwnedHeaders,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        logs();
        self.0
            .send(
                FutureRecord::to(topic).key(key).headers(headers).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    async fn send_event<T: pizza_contracts::EventData>(
        &self,
        topic: &str,
        event: &Envelope<T>,
    ) -> anyhow::Result<()> {
        logs();
        let encoded = event.encode()?;
        self.send(topic, &encoded.key, encoded.headers, &encoded.payload)
            .await
    }
}

fn on_its_way(order: Uuid, progress: u8) -> Envelope<DeliveryEvent> {
    Envelope::new(
        "/pizza/delivery",
        DeliveryEvent::OnItsWay(OrderOnItsWay {
            order_id: order,
            delivery_id: Uuid::now_v7(),
            progress_percent: progress,
        }),
    )
}

/// The effect under test: one more update and the progress added, for the order. Applied twice, the
/// counters show it. Fails (retryably) for the orders in `failing`, counting its attempts.
#[derive(Clone)]
struct RecordProgress {
    table: String,
    failing: HashSet<Uuid>,
    attempts: Arc<AtomicU32>,
}

impl RecordProgress {
    fn new(db: &Db) -> Self {
        Self {
            table: db.table("deliveries"),
            failing: HashSet::new(),
            attempts: Arc::default(),
        }
    }
}

impl Handler for RecordProgress {
    type Event = DeliveryEvent;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<DeliveryEvent>,
    ) -> Result<(), HandlerError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let DeliveryEvent::OnItsWay(update) = &event.data else {
            return Err(HandlerError::reject(format!(
                "unexpected {}",
                event.attributes.event_type
            )));
        };
        if self.failing.contains(&update.order_id) {
            return Err(HandlerError::retry("the delivery ledger is unavailable"));
        }
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (order_id, updates, progress) values ($1, 1, $2) \
             on conflict (order_id) do update set updates = {0}.updates + 1, progress = {0}.progress + excluded.progress",
            self.table
        )))
        .bind(update.order_id)
        .bind(i32::from(update.progress_percent))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn consumer_config(topic: &str, group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group, vec![topic.to_owned()], Topology::Continuous);
    config.max_attempts = 3;
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        multiplier: 2.0,
    };
    config
}

fn start_consumer(
    db: &Db,
    config: ConsumerConfig,
    handler: RecordProgress,
) -> anyhow::Result<(oneshot::Sender<()>, JoinHandle<ConsumerStats>)> {
    let consumer = Consumer::new(
        db.pool.clone(),
        db.schema.clone(),
        &kafka_base(&Stack::from_env().kafka_bootstrap),
        config,
        handler,
    )?;
    Ok(spawn_until_stopped(move |stopped| consumer.run(until(stopped))))
}

// ---- the outbox through a Kafka outage ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_during_a_kafka_outage_are_published_once_each_in_order_per_order()
-> anyhow::Result<()> {
    logs();
    let started = Instant::now();
    let mut broker = PrivateBroker::start().await?;
    let bootstrap = broker.bootstrap();
    let topic = kafka::unique_topic("outage");
    kafka::create_topics(&bootstrap, &[(&topic, 3)]).await?;
    let db = Db::fresh().await?;
    let outbox = Outbox::new(db.schema.clone());
    let config = RelayConfig {
        poll_interval: Duration::from_millis(50),
        batch_size: 25,
        ..RelayConfig::default()
    };
    let relay = Relay::new(db.pool.clone(), outbox.clone(), &kafka_base(&bootstrap), config)?;
    let (stop_relay, relay_task) = spawn_until_stopped(move |stopped| relay.run(until(stopped)));

    // Five orders; each transaction writes one event of one order, as a state change would. The
    // writer keeps going, before, during and after the outage.
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let expected: Arc<std::sync::Mutex<HashMap<Uuid, Vec<Uuid>>>> = Arc::default();
    let (stop_writer, writer) = {
        let (pool, outbox, topic, orders, expected) = (
            db.pool.clone(),
            outbox.clone(),
            topic.clone(),
            orders.clone(),
            expected.clone(),
        );
        spawn_until_stopped(move |mut stopped| async move {
            let mut round = 0u64;
            loop {
                for order in &orders {
                    let event = Envelope::new(
                        "/pizza/order",
                        OrderPlaced {
                            order_id: *order,
                            items: vec![OrderItem {
                                pizza: "margherita".into(),
                                quantity: 1,
                            }],
                            total_cents: round,
                        },
                    );
                    let mut tx = pool.begin().await?;
                    outbox.enqueue_to(&mut tx, &topic, &event).await?;
                    tx.commit().await?;
                    expected
                        .lock()
                        .unwrap()
                        .entry(*order)
                        .or_default()
                        .push(event.id());
                }
                round += 1;
                if stopped.try_recv().is_ok() {
                    return anyhow::Ok(round);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    // Let some events through, then take the broker away with records in flight.
    eventually(Duration::from_secs(30), "first events published", || async {
        let published: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "select count(*) from {} where published_at is not null",
            db.table("outbox")
        )))
        .fetch_one(&db.pool)
        .await?;
        Ok((published >= 20).then_some(()))
    })
    .await?;
    let before_outage = expected.lock().unwrap().values().map(Vec::len).sum::<usize>();
    broker.stop().await?;
    let outage_started = Instant::now();
    let at_stop = expected.lock().unwrap().values().map(Vec::len).sum::<usize>();
    // While Kafka is down, events keep being accepted and wait in the outbox.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = expected.lock().unwrap().values().map(Vec::len).sum::<usize>();
    ensure!(
        during > at_stop,
        "the writer kept committing while Kafka was down"
    );
    let pending_while_down = db.unpublished().await?;
    ensure!(
        pending_while_down > 0,
        "events written during the outage wait in the outbox"
    );
    broker.up().await?;
    let outage = outage_started.elapsed();
    let rounds = stop(stop_writer, writer).await??;

    eventually(
        Duration::from_secs(120),
        "outbox drained after the outage",
        || async { Ok((db.unpublished().await? == 0).then_some(())) },
    )
    .await?;
    let relay_stats: RelayStats = stop(stop_relay, relay_task).await?;

    let records = read_topic(&bootstrap, &topic, READ_LIMIT).await?;
    let expected = expected.lock().unwrap().clone();
    let total: usize = expected.values().map(Vec::len).sum();
    let mut seen: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut ids = HashSet::new();
    for record in &records {
        let event = Envelope::<OrderPlaced>::decode(record).context("a relayed record decodes")?;
        ensure!(ids.insert(event.id()), "event {} was published twice", event.id());
        ensure!(
            record.key() == Some(event.key().as_bytes()),
            "the record key is the order id"
        );
        seen.entry(event.order_id()).or_default().push(event.id());
    }
    // Per key, one partition: reading partitions in offset order gives each order's publication order.
    ensure!(
        records.len() == total,
        "published {} records for {total} events",
        records.len()
    );
    for (order, ids) in &expected {
        ensure!(
            seen.get(order) == Some(ids),
            "order {order}: events out of order or missing"
        );
    }
    ensure!(db.unpublished().await? == 0, "no outbox row is left unpublished");
    eprintln!(
        "outage test: {total} events over {rounds} write rounds ({before_outage} before the outage, {} written while \
         Kafka was down, {pending_while_down} pending at the check); outage {outage:?}; relay published {} in {} \
         rounds with {} failures; whole test {:?}",
        during - at_stop,
        relay_stats.published,
        relay_stats.rounds,
        relay_stats.failures,
        started.elapsed()
    );
    ensure!(
        relay_stats.published as usize == total,
        "the relay counted every row once"
    );
    db.drop_schema().await;
    Ok(())
}

// ---- redelivery ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_delivered_twice_has_its_effect_once() -> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    let (topic, _) = topic_with_dlq(&stack.kafka_bootstrap, "redelivery", 3).await?;
    let db = Db::fresh().await?;
    let order = Uuid::now_v7();
    let first = on_its_way(order, 10);
    let next = on_its_way(order, 30);
    let producer = RawProducer::new()?;
    // The same CloudEvent twice (a producer retry, a relay resend), then another event of the order.
    // Same key, same partition: when `next` is applied, both copies of `first` were handled.
    producer.send_event(&topic, &first).await?;
    producer.send_event(&topic, &first).await?;
    producer.send_event(&topic, &next).await?;

    let handler = RecordProgress::new(&db);
    let attempts = handler.attempts.clone();
    let (stop_consumer, task) = start_consumer(
        &db,
        consumer_config(&topic, &format!("g-{}", Uuid::new_v4())),
        handler,
    )?;
    db.until_applied(next.id(), Duration::from_secs(60), "the later event applied")
        .await?;
    let stats = stop(stop_consumer, task).await?;

    assert_eq!(
        db.effect(order).await?,
        Some((2, 40)),
        "two events, two updates: the copy changed nothing"
    );
    assert_eq!(stats.processed, 2);
    assert_eq!(stats.duplicates, 1);
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "the handler never saw the copy"
    );
    db.drop_schema().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_crashes_after_its_effect_committed_leaves_the_redelivery_without_effect()
-> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    let (topic, _) = topic_with_dlq(&stack.kafka_bootstrap, "crash", 1).await?;
    let db = Db::fresh().await?;
    let group = format!("g-{}", Uuid::new_v4());
    let order = Uuid::now_v7();
    let first = on_its_way(order, 25);
    let producer = RawProducer::new()?;
    producer.send_event(&topic, &first).await?;

    // The first consumer applies the effect, commits it, and dies before storing the offset.
    let mut crashing = consumer_config(&topic, &group);
    crashing.crash_before_storing_offset = true;
    let (_never, task) = start_consumer(&db, crashing, RecordProgress::new(&db))?;
    let crashed = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .context("the first consumer ran")??;
    assert!(crashed.crashed && crashed.processed == 1, "{crashed:?}");
    assert_eq!(db.effect(order).await?, Some((1, 25)));

    // Its successor in the group gets the record again, sees it in the inbox, and moves on.
    let handler = RecordProgress::new(&db);
    let attempts = handler.attempts.clone();
    let (stop_consumer, task) = start_consumer(&db, consumer_config(&topic, &group), handler)?;
    let next = on_its_way(order, 5);
    producer.send_event(&topic, &next).await?;
    db.until_applied(
        next.id(),
        Duration::from_secs(60),
        "the successor applied the next event",
    )
    .await?;
    let stats = stop(stop_consumer, task).await?;
    assert_eq!(
        stats.duplicates, 1,
        "the redelivered record was recognised: {stats:?}"
    );
    assert_eq!(stats.processed, 1, "{stats:?}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "the handler ran only for the new event"
    );
    assert_eq!(
        db.effect(order).await?,
        Some((2, 30)),
        "the crashed record's effect exists once"
    );

    // The successor committed its offsets when it stopped: a third consumer would start after `next`.
    let committed = tokio::task::spawn_blocking({
        let (bootstrap, topic, group) = (stack.kafka_bootstrap.clone(), topic.clone(), group.clone());
        move || -> anyhow::Result<Offset> {
            let reader: BaseConsumer = kafka_base(&bootstrap).set("group.id", &group).create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let committed = reader.committed_offsets(tpl, Duration::from_secs(10))?;
            Ok(committed
                .find_partition(&topic, 0)
                .map(|p| p.offset())
                .unwrap_or(Offset::Invalid))
        }
    })
    .await??;
    assert_eq!(
        committed,
        Offset::Offset(2),
        "both records are committed after a graceful stop"
    );
    db.drop_schema().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_that_stops_gracefully_hands_its_partitions_over_at_once() -> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    let (topic, _) = topic_with_dlq(&stack.kafka_bootstrap, "leave", 1).await?;
    let db = Db::fresh().await?;
    let group = format!("g-{}", Uuid::new_v4());
    // A session far longer than the test's limit: only an explicit leave can move the partition.
    let mut kafka = kafka_base(&stack.kafka_bootstrap);
    kafka.set("session.timeout.ms", "180000");
    let start = |instance: &str| {
        let mut config = consumer_config(&topic, &group);
        config.instance_id = Some(instance.to_owned());
        let consumer = Consumer::new(
            db.pool.clone(),
            db.schema.clone(),
            &kafka,
            config,
            RecordProgress::new(&db),
        )?;
        anyhow::Ok(spawn_until_stopped(move |stopped| consumer.run(until(stopped))))
    };
    let producer = RawProducer::new()?;
    let order = Uuid::now_v7();
    let first = on_its_way(order, 10);
    producer.send_event(&topic, &first).await?;
    let (stop_a, a) = start("replica-a")?;
    db.until_applied(
        first.id(),
        Duration::from_secs(60),
        "replica a applied its record",
    )
    .await?;
    stop(stop_a, a).await?;

    // Replica b, another instance, gets the partition now, not when a's session would expire.
    let (stop_b, b) = start("replica-b")?;
    let next = on_its_way(order, 20);
    producer.send_event(&topic, &next).await?;
    db.until_applied(
        next.id(),
        Duration::from_secs(90),
        "replica b applied the next record",
    )
    .await?;
    let stats = stop(stop_b, b).await?;
    assert_eq!(
        (stats.processed, stats.duplicates),
        (1, 0),
        "a committed before leaving: {stats:?}"
    );
    assert_eq!(db.effect(order).await?, Some((2, 30)));
    db.drop_schema().await;
    Ok(())
}

/// The fatal case met after a broker outage, made on purpose: a second live member joining under the
/// same instance id fences the first (`FencedInstanceId`, fatal in librdkafka). The fenced consumer
/// must end its run as fatal, so its service starts a new one, instead of polling a dead client for
/// ever while its partitions go unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_ends_its_run_as_fatal_instead_of_polling_a_dead_client() -> anyhow::Result<()>
{
    logs();
    let stack = Stack::from_env();
    let (topic, _) = topic_with_dlq(&stack.kafka_bootstrap, "fenced", 1).await?;
    let db = Db::fresh().await?;
    let group = format!("g-{}", Uuid::new_v4());
    let kafka = kafka_base(&stack.kafka_bootstrap);
    let start = || {
        let mut config = consumer_config(&topic, &group);
        config.instance_id = Some("replica-0".to_owned());
        let consumer = Consumer::new(
            db.pool.clone(),
            db.schema.clone(),
            &kafka,
            config,
            RecordProgress::new(&db),
        )?;
        anyhow::Ok(spawn_until_stopped(move |stopped| consumer.run(until(stopped))))
    };
    let producer = RawProducer::new()?;
    let order = Uuid::now_v7();
    let first = on_its_way(order, 10);
    producer.send_event(&topic, &first).await?;
    // Kept until the end: dropping it would stop the first member, which is to be fenced instead.
    let (stop_a, a) = start()?;
    db.until_applied(
        first.id(),
        Duration::from_secs(60),
        "the first member applied its record",
    )
    .await?;

    // The same name joins while the first still lives: the broker fences the first.
    let (stop_b, b) = start()?;
    let fenced = tokio::time::timeout(Duration::from_secs(90), a)
        .await
        .context("the fenced consumer never ended its run")??;
    assert!(fenced.fatal, "ended as fatal: {fenced:?}");
    assert_eq!(fenced.processed, 1, "{fenced:?}");

    // The member that took the name over reads on.
    let next = on_its_way(order, 20);
    producer.send_event(&topic, &next).await?;
    db.until_applied(
        next.id(),
        Duration::from_secs(90),
        "the new member applied the next record",
    )
    .await?;
    let stats = stop(stop_b, b).await?;
    assert!(!stats.fatal, "{stats:?}");
    drop(stop_a);
    db.drop_schema().await;
    Ok(())
}

/// The stall seen once in CI after a broker outage (see the consumer's module docs, "Stalled
/// membership"), made on purpose with a broker that stays away longer than `stall_after`: the
/// consumer ends its run as stalled, so its service starts a new one, which reads on once the broker
/// is back. Before that, the same consumer idle for longer than `stall_after` as a steady member
/// does not end: no traffic is no stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_outside_its_group_for_too_long_ends_its_run_as_stalled_and_an_idle_member_does_not()
-> anyhow::Result<()> {
    logs();
    let mut broker = PrivateBroker::start().await?;
    let bootstrap = broker.bootstrap();
    let (topic, _) = topic_with_dlq(&bootstrap, "stall", 1).await?;
    let db = Db::fresh().await?;
    let group = format!("g-{}", Uuid::new_v4());
    let mut kafka = kafka_base(&bootstrap);
    // Statistics often, and the broker's shortest session, so the test's bounds stay short.
    kafka.set("statistics.interval.ms", "250");
    kafka.set("session.timeout.ms", "6000");
    let stall_after = Duration::from_secs(3);
    let start = |stall_after: Duration| {
        let mut config = consumer_config(&topic, &group);
        config.instance_id = Some("replica-0".to_owned());
        config.stall_after = stall_after;
        let consumer = Consumer::new(
            db.pool.clone(),
            db.schema.clone(),
            &kafka,
            config,
            RecordProgress::new(&db),
        )?;
        anyhow::Ok(spawn_until_stopped(move |stopped| consumer.run(until(stopped))))
    };
    let producer = RawProducer::on(&bootstrap)?;
    let order = Uuid::now_v7();
    let first = on_its_way(order, 10);
    producer.send_event(&topic, &first).await?;
    let (stop_a, mut a) = start(stall_after)?;
    db.until_applied(
        first.id(),
        Duration::from_secs(60),
        "the consumer applied its record",
    )
    .await?;

    // Idle, and a steady member: three bounds go by and the run goes on.
    assert!(
        tokio::time::timeout(stall_after * 3, &mut a).await.is_err(),
        "an idle member in its group ended its run"
    );

    broker.stop().await?;
    let stalled = tokio::time::timeout(Duration::from_secs(60), a)
        .await
        .context("a consumer without its group never ended its run")??;
    assert!(stalled.stalled && !stalled.fatal, "ended as stalled: {stalled:?}");
    assert_eq!(stalled.processed, 1, "{stalled:?}");
    drop(stop_a);

    // What the service does next: a new consumer under the same name (one every `stall_after`
    // while the broker is away), which reads on when the broker is back. The last one, given the
    // default bound to join in.
    broker.up().await?;
    let (stop_b, b) = start(ConsumerConfig::new("g", vec![], Topology::Continuous).stall_after)?;
    let next = on_its_way(order, 20);
    producer.send_event(&topic, &next).await?;
    db.until_applied(
        next.id(),
        Duration::from_secs(90),
        "the new consumer applied the next record",
    )
    .await?;
    let stats = stop(stop_b, b).await?;
    assert!(!stats.stalled, "{stats:?}");
    assert_eq!(db.effect(order).await?, Some((2, 30)));
    db.drop_schema().await;
    Ok(())
}

/// Appends each applied event to a log with the id of the transaction that applied it.
#[derive(Clone)]
struct LogWithTransaction {
    table: String,
}

impl Handler for LogWithTransaction {
    type Event = DeliveryEvent;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<DeliveryEvent>,
    ) -> Result<(), HandlerError> {
        let DeliveryEvent::OnItsWay(update) = &event.data else {
            return Err(HandlerError::reject("unexpected event"));
        };
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (order_id, progress, txid) values ($1, $2, txid_current())",
            self.table
        )))
        .bind(update.order_id)
        .bind(i32::from(update.progress_percent))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_already_fetched_are_applied_together_in_few_transactions_in_order_each_once()
-> anyhow::Result<()> {
    logs();
    const ORDERS: usize = 3;
    const PER_ORDER: u8 = 20;
    let stack = Stack::from_env();
    let (topic, _) = topic_with_dlq(&stack.kafka_bootstrap, "batches", 1).await?;
    let db = Db::fresh().await?;
    let log = db.log_table().await?;
    // All records are in the topic before the consumer starts, one event sent twice among them.
    let producer = RawProducer::new()?;
    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let mut last = None;
    for progress in 1..=PER_ORDER {
        for order in &orders {
            let event = on_its_way(*order, progress);
            producer.send_event(&topic, &event).await?;
            last = Some(event);
        }
    }
    let last = last.context("events sent")?;
    producer.send_event(&topic, &last).await?;

    let consumer = Consumer::new(
        db.pool.clone(),
        db.schema.clone(),
        &kafka_base(&stack.kafka_bootstrap),
        consumer_config(&topic, &format!("g-{}", Uuid::new_v4())),
        LogWithTransaction { table: log.clone() },
    )?;
    let (stop_consumer, task) = spawn_until_stopped(move |stopped| consumer.run(until(stopped)));
    db.until_applied(last.id(), Duration::from_secs(60), "the last event applied")
        .await?;
    let stats = stop(stop_consumer, task).await?;
    let total = ORDERS * usize::from(PER_ORDER);
    assert_eq!(
        (stats.processed, stats.duplicates),
        (total as u64, 1),
        "{stats:?}"
    );

    let rows: Vec<(Uuid, i32, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "select order_id, progress, txid from {log} order by seq"
    )))
    .fetch_all(&db.pool)
    .await?;
    assert_eq!(rows.len(), total, "each event applied once");
    for order in &orders {
        let progress: Vec<i32> = rows.iter().filter(|r| r.0 == *order).map(|r| r.1).collect();
        assert_eq!(
            progress,
            (1..=i32::from(PER_ORDER)).collect::<Vec<_>>(),
            "in partition order"
        );
    }
    let transactions: HashSet<i64> = rows.iter().map(|r| r.2).collect();
    eprintln!(
        "batches: {total} events applied in {} transactions",
        transactions.len()
    );
    assert!(
        transactions.len() * 4 <= total,
        "{total} events took {} transactions",
        transactions.len()
    );
    db.drop_schema().await;
    Ok(())
}

/// Applies a batch in one statement, remembering each batch's size; a record whose progress is
/// `refuse` fails every time, in a batch and alone.
#[derive(Clone)]
struct BatchLog {
    table: String,
    refuse: i32,
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
    alone: Arc<AtomicU32>,
}

impl BatchLog {
    fn progress(event: &Envelope<DeliveryEvent>) -> Result<(Uuid, i32), HandlerError> {
        match &event.data {
            DeliveryEvent::OnItsWay(update) => Ok((update.order_id, i32::from(update.progress_percent))),
            _ => Err(HandlerError::reject("unexpected event")),
        }
    }

    async fn log(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[(Uuid, i32)],
    ) -> Result<(), HandlerError> {
        let (orders, progress): (Vec<Uuid>, Vec<i32>) = rows.iter().copied().unzip();
        sqlx::query(AssertSqlSafe(format!(
            "insert into {} (order_id, progress, txid) \
             select o, p, txid_current() from unnest($1::uuid[], $2::int[]) with ordinality as r(o, p, n) order by n",
            self.table
        )))
        .bind(&orders)
        .bind(&progress)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl Handler for BatchLog {
    type Event = DeliveryEvent;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<DeliveryEvent>,
    ) -> Result<(), HandlerError> {
        let row = Self::progress(event)?;
        if row.1 == self.refuse {
            self.alone.fetch_add(1, Ordering::SeqCst);
            return Err(HandlerError::retry("refused"));
        }
        self.log(tx, &[row]).await
    }

    async fn handle_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[Batched<'_, DeliveryEvent>],
    ) -> Result<(), BatchError> {
        self.batches.lock().unwrap().push(records.len());
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let row = Self::progress(record.event).map_err(|error| BatchError { index, error })?;
            if row.1 == self.refuse {
                return Err(BatchError {
                    index,
                    error: HandlerError::retry("refused"),
                });
            }
            rows.push(row);
        }
        self.log(tx, &rows)
            .await
            .map_err(|error| BatchError { index: 0, error })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_gets_a_partitions_new_records_together_and_the_record_its_batch_names_failed_has_used_an_attempt()
-> anyhow::Result<()> {
    logs();
    const PER_ORDER: u8 = 30;
    const REFUSED: u8 = 17;
    let stack = Stack::from_env();
    let (topic, dead) = topic_with_dlq(&stack.kafka_bootstrap, "handle-batch", 1).await?;
    let db = Db::fresh().await?;
    let log = db.log_table().await?;
    let producer = RawProducer::new()?;
    let order = Uuid::now_v7();
    let mut last = None;
    for progress in 1..=PER_ORDER {
        let event = on_its_way(order, progress);
        producer.send_event(&topic, &event).await?;
        last = Some(event);
    }
    let last = last.context("events sent")?;
    let handler = BatchLog {
        table: log.clone(),
        refuse: i32::from(REFUSED),
        batches: Arc::default(),
        alone: Arc::default(),
    };
    let mut config = consumer_config(&topic, &format!("g-{}", Uuid::new_v4()));
    config.max_attempts = 2;
    let consumer = Consumer::new(
        db.pool.clone(),
        db.schema.clone(),
        &kafka_base(&stack.kafka_bootstrap),
        config,
        handler.clone(),
    )?;
    let (stop_consumer, task) = spawn_until_stopped(move |stopped| consumer.run(until(stopped)));
    db.until_applied(last.id(), Duration::from_secs(60), "the last event applied")
        .await?;
    let letters = eventually(
        Duration::from_secs(30),
        "the refused record dead-lettered",
        || async {
            let letters = read_topic(&stack.kafka_bootstrap, &dead, Duration::from_secs(5)).await?;
            Ok((!letters.is_empty()).then_some(letters))
        },
    )
    .await?;
    let stats = stop(stop_consumer, task).await?;

    let progress: Vec<i32> =
        sqlx::query_scalar(AssertSqlSafe(format!("select progress from {log} order by seq")))
            .fetch_all(&db.pool)
            .await?;
    let expected: Vec<i32> = (1..=i32::from(PER_ORDER))
        .filter(|p| *p != i32::from(REFUSED))
        .collect();
    assert_eq!(
        progress, expected,
        "each applied once, in partition order, the refused one never"
    );
    assert_eq!(letters.len(), 1, "the refused record is dead-lettered");
    assert_eq!(
        (stats.processed, stats.dead_lettered),
        (u64::from(PER_ORDER) - 1, 1),
        "{stats:?}"
    );
    let batches = handler.batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|n| *n > 1),
        "records fetched together reach the handler together: {batches:?}"
    );
    // Two attempts allowed: the batch that named it was its first, so it was handled alone once.
    assert_eq!(handler.alone.load(Ordering::SeqCst), 1, "batches {batches:?}");
    db.drop_schema().await;
    Ok(())
}

// ---- poison messages -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_decode_go_to_the_dead_letter_topic_and_the_next_one_is_processed()
-> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    let (topic, dead) = topic_with_dlq(&stack.kafka_bootstrap, "poison", 1).await?;
    let db = Db::fresh().await?;
    let producer = RawProducer::new()?;
    let order = Uuid::now_v7();

    // Offset 0: valid headers, broken JSON. Offset 1: a body without any CloudEvents header.
    // Offset 2: a good event.
    let bad_json = on_its_way(order, 10).encode()?;
    producer
        .send(&topic, &bad_json.key, bad_json.headers.clone(), b"{not json}")
        .await?;
    let plain = OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    });
    producer
        .send(&topic, &order.to_string(), plain, &bad_json.payload)
        .await?;
    let good = on_its_way(order, 50);
    producer.send_event(&topic, &good).await?;

    let (stop_consumer, task) = start_consumer(
        &db,
        consumer_config(&topic, &format!("g-{}", Uuid::new_v4())),
        RecordProgress::new(&db),
    )?;
    db.until_applied(good.id(), Duration::from_secs(60), "the good event applied")
        .await?;
    let stats = stop(stop_consumer, task).await?;
    assert_eq!(db.effect(order).await?, Some((1, 50)));
    assert_eq!((stats.processed, stats.dead_lettered), (1, 2), "{stats:?}");

    let letters = read_topic(&stack.kafka_bootstrap, &dead, READ_LIMIT).await?;
    assert_eq!(letters.len(), 2, "both poison records are dead-lettered");
    let (json, headerless) = (&letters[0], &letters[1]);
    assert_eq!(header(json, dlq::ERROR_TYPE), Some("invalid_body"));
    assert!(
        header(json, dlq::ERROR).is_some_and(|e| e.contains("syntax")),
        "{:?}",
        header(json, dlq::ERROR)
    );
    assert_eq!(header(json, dlq::ORIGIN_OFFSET), Some("0"));
    assert_eq!(
        header(json, ce::ID),
        Some(bad_json_id(&bad_json).as_str()),
        "the event's own headers are kept"
    );
    assert_eq!(
        json.payload(),
        Some(&b"{not json}"[..]),
        "the body is kept as it was"
    );
    assert_eq!(header(headerless, dlq::ERROR_TYPE), Some("missing_header"));
    assert_eq!(
        header(headerless, dlq::ERROR),
        Some("missing header ce_specversion")
    );
    assert_eq!(header(headerless, dlq::ORIGIN_OFFSET), Some("1"));
    for letter in &letters {
        assert_eq!(header(letter, dlq::ORIGIN_TOPIC), Some(topic.as_str()));
        assert_eq!(header(letter, dlq::ORIGIN_PARTITION), Some("0"));
        assert_eq!(
            header(letter, dlq::ATTEMPTS),
            Some("0"),
            "nothing to retry in a record that does not decode"
        );
        assert_eq!(letter.key(), Some(order.to_string().as_bytes()));
    }
    db.drop_schema().await;
    Ok(())
}

fn bad_json_id(encoded: &pizza_messaging::Encoded) -> String {
    encoded
        .headers
        .iter()
        .find(|h| h.key == ce::ID)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_keeps_failing_dead_letters_after_the_last_attempt_and_the_partition_moves_on()
-> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    let (topic, dead) = topic_with_dlq(&stack.kafka_bootstrap, "failing", 1).await?;
    let db = Db::fresh().await?;
    let producer = RawProducer::new()?;
    let (doomed, fine) = (Uuid::now_v7(), Uuid::now_v7());
    let doomed_event = on_its_way(doomed, 10);
    let fine_event = on_its_way(fine, 20);
    producer.send_event(&topic, &doomed_event).await?;
    producer.send_event(&topic, &fine_event).await?;

    let mut handler = RecordProgress::new(&db);
    handler.failing.insert(doomed);
    let attempts = handler.attempts.clone();
    let (stop_consumer, task) = start_consumer(
        &db,
        consumer_config(&topic, &format!("g-{}", Uuid::new_v4())),
        handler,
    )?;
    db.until_applied(
        fine_event.id(),
        Duration::from_secs(60),
        "the event after the failing one applied",
    )
    .await?;
    let stats = stop(stop_consumer, task).await?;

    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3 + 1,
        "three attempts for the failing event, one for the next"
    );
    assert_eq!(
        (stats.retries, stats.dead_lettered, stats.processed),
        (2, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        db.effect(doomed).await?,
        None,
        "a failed attempt leaves no effect"
    );
    assert!(
        !db.in_inbox(doomed_event.id()).await?,
        "nor an inbox row: replaying the dead letter will apply it"
    );
    assert_eq!(db.effect(fine).await?, Some((1, 20)));

    let letters = read_topic(&stack.kafka_bootstrap, &dead, READ_LIMIT).await?;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(header(letter, dlq::ATTEMPTS), Some("3"));
    assert_eq!(header(letter, dlq::ERROR_TYPE), Some("handler_failed"));
    assert_eq!(
        header(letter, dlq::ERROR),
        Some("the delivery ledger is unavailable")
    );
    assert_eq!(header(letter, ce::TYPE), Some(types::ORDER_ON_ITS_WAY));
    assert_eq!(
        header(letter, ce::ID),
        Some(doomed_event.id().to_string().as_str())
    );
    // The record came in without trace context and this test process exports no spans, so the
    // dead letter carries none either: nothing is invented.
    assert_eq!(header(letter, "traceparent"), None);
    let replay = Envelope::<DeliveryEvent>::decode(letter)?;
    assert_eq!(
        replay, doomed_event,
        "the dead letter still decodes to the original event"
    );
    db.drop_schema().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_its_topic_refuses_is_parked_in_the_database_and_the_partition_moves_on()
-> anyhow::Result<()> {
    logs();
    let stack = Stack::from_env();
    // No dead-letter topic: the broker has auto-creation off, so every dead-letter publish fails.
    let topic = kafka::unique_topic("nodlq");
    kafka::create_topics(&stack.kafka_bootstrap, &[(&topic, 1)]).await?;
    let db = Db::fresh().await?;
    let producer = RawProducer::new()?;
    let order = Uuid::now_v7();
    let broken = on_its_way(order, 10).encode()?;
    producer
        .send(&topic, &broken.key, broken.headers.clone(), b"{not json}")
        .await?;
    let good = on_its_way(order, 50);
    producer.send_event(&topic, &good).await?;

    let mut config = consumer_config(&topic, &format!("g-{}", Uuid::new_v4()));
    config.dead_letter_attempts = 2;
    let mut kafka = kafka_base(&stack.kafka_bootstrap);
    // An unknown topic fails a publish after the metadata propagation wait: half a second here.
    kafka.set("topic.metadata.propagation.max.ms", "500");
    let consumer = Consumer::new(
        db.pool.clone(),
        db.schema.clone(),
        &kafka,
        config,
        RecordProgress::new(&db),
    )?;
    let (stop_consumer, task) = spawn_until_stopped(move |stopped| consumer.run(until(stopped)));
    db.until_applied(
        good.id(),
        Duration::from_secs(120),
        "the record after the poison one applied",
    )
    .await?;
    let stats = stop(stop_consumer, task).await?;
    assert_eq!(
        (stats.parked, stats.dead_lettered, stats.processed),
        (1, 0, 1),
        "{stats:?}"
    );
    assert_eq!(db.effect(order).await?, Some((1, 50)));

    #[derive(Debug, sqlx::FromRow)]
    struct Parked {
        topic: String,
        kafka_partition: i32,
        kafka_offset: i64,
        payload: Vec<u8>,
        error_type: String,
        error: String,
        publish_error: String,
        headers: serde_json::Value,
    }
    let parked: Vec<Parked> = sqlx::query_as(AssertSqlSafe(format!(
            "select topic, kafka_partition, kafka_offset, payload, error_type, error, publish_error, headers from {}",
            db.table("parked_dead_letters")
        )))
        .fetch_all(&db.pool)
        .await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let Parked {
        topic: from,
        kafka_partition: partition,
        kafka_offset: offset,
        payload,
        error_type,
        error,
        publish_error,
        headers,
    } = &parked[0];
    assert_eq!((from.as_str(), *partition, *offset), (topic.as_str(), 0, 0));
    assert_eq!(payload.as_slice(), b"{not json}", "the body is kept as it was");
    assert_eq!(error_type, "invalid_body");
    assert!(error.contains("syntax"), "{error}");
    assert!(
        publish_error.to_lowercase().contains("unknown"),
        "{publish_error}"
    );
    let header = |name: &str| {
        headers
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h[0] == name)
            .map(|h| h[1].clone())
    };
    assert_eq!(
        header(ce::ID),
        Some(serde_json::Value::String(bad_json_id(&broken))),
        "the event's own headers are kept"
    );
    assert_eq!(header(dlq::ERROR_TYPE), Some(serde_json::json!("invalid_body")));
    assert_eq!(header(dlq::ORIGIN_OFFSET), Some(serde_json::json!("0")));
    db.drop_schema().await;
    Ok(())
}

// ---- schema ownership ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_schema_gets_its_own_tables_and_migrating_twice_changes_nothing() -> anyhow::Result<()> {
    logs();
    let db = Db::fresh().await?;
    migrate(&db.pool, &db.schema).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = $1 order by 1",
    )
    .bind(db.schema.as_str())
    .fetch_all(&db.pool)
    .await?;
    assert_eq!(
        tables,
        vec![
            "_sqlx_migrations",
            "deliveries",
            "inbox",
            "outbox",
            "parked_dead_letters"
        ]
    );
    let applied: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) from {}",
        db.table("_sqlx_migrations")
    )))
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(applied, 5);

    // An event enqueued in a rolled-back transaction never exists; a committed one does, with the
    // columns the relay needs.
    let outbox = Outbox::new(db.schema.clone());
    let order = Uuid::now_v7();
    let event = Envelope::new(
        "/pizza/order",
        OrderPlaced {
            order_id: order,
            items: vec![],
            total_cents: 0,
        },
    );
    let mut tx = db.pool.begin().await?;
    outbox.enqueue(&mut tx, &event).await?;
    tx.rollback().await?;
    assert_eq!(db.unpublished().await?, 0);
    let mut tx = db.pool.begin().await?;
    outbox.enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    let (topic, key, event_type): (String, String, String) = sqlx::query_as(AssertSqlSafe(format!(
        "select topic, message_key, event_type from {}",
        db.table("outbox")
    )))
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(
        (topic.as_str(), key, event_type.as_str()),
        ("orders.events", order.to_string(), types::ORDER_PLACED)
    );
    // A pooled connection was not left with the migration's search path.
    let path: String = sqlx::query_scalar("show search_path").fetch_one(&db.pool).await?;
    assert!(!path.contains(db.schema.as_str()), "{path}");
    db.drop_schema().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_enqueued_in_one_statement_keeps_its_order_and_each_events_own_context() -> anyhow::Result<()>
{
    logs();
    let db = Db::fresh().await?;
    migrate(&db.pool, &db.schema).await?;
    let outbox = Outbox::new(db.schema.clone());
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // Two orders, one of them twice; each event with the context of the step it reports.
    let batch: Vec<_> = [(a, "01"), (b, "02"), (a, "03")]
        .into_iter()
        .map(|(order, span)| {
            let event = fixture::order_placed(order, 1);
            let traceparent = format!("00-{}-00000000000000{span}-01", "ab".repeat(16));
            (event, BTreeMap::from([("traceparent".to_owned(), traceparent)]))
        })
        .collect();
    let mut tx = db.pool.begin().await?;
    outbox.enqueue_all_to(&mut tx, "orders.events", &batch).await?;
    outbox
        .enqueue_all_to::<OrderPlaced>(&mut tx, "orders.events", &[])
        .await?;
    tx.commit().await?;
    let rows: Vec<(Uuid, String, String, serde_json::Value)> = sqlx::query_as(AssertSqlSafe(format!(
        "select event_id, message_key, topic, trace_carrier from {} order by id",
        db.table("outbox")
    )))
    .fetch_all(&db.pool)
    .await?;
    let expected: Vec<(Uuid, String, String, serde_json::Value)> = batch
        .iter()
        .map(|(event, carrier)| {
            (
                event.attributes.id,
                event.data.order_id.to_string(),
                "orders.events".to_owned(),
                serde_json::to_value(carrier).unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, expected, "in the order given, each with its own context");
    db.drop_schema().await;
    Ok(())
}
