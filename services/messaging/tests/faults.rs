//! The fault hooks, on the real Kafka and PostgreSQL of the native stack: injected publish failures
//! lose, duplicate and reorder nothing, and are visible as such in the metrics' and the spans'
//! `error.type`; injected consumer crashes leave every effect applied once while the crashed records
//! come again.
//!
//! Each test has its own schema, topic and consumer group ([`Fixture`]). The traces of this binary go
//! to the stack's Collector and are read back from Jaeger.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt as _;
use pizza_contracts::events::OrderPlaced;
use pizza_messaging::{
    Backoff, Consumer, ConsumerConfig, ConsumerStats, Envelope, FaultHooks, Relay, RelayConfig,
};
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::semconv;
use pizza_testkit::records::{eventually, read_topic};
use pizza_testkit::{Jaeger, Stack};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::AssertSqlSafe;
use tokio::sync::watch;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Effect, Fixture, order_placed};

const SERVICE: &str = "pizza-messaging-faults-test";

/// Publish failures at a fixed rate from a seeded SplitMix64 sequence (the generator of the service
/// kit's fault plan), counting what it was asked and what it failed.
#[derive(Debug)]
struct SeededPublishFailures {
    state: Mutex<u64>,
    rate: f64,
    asked: AtomicU64,
    failed: AtomicU64,
}

impl SeededPublishFailures {
    fn new(seed: u64, rate: f64) -> Self {
        Self {
            state: Mutex::new(seed),
            rate,
            asked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn next_f64(&self) -> f64 {
        let mut state = self.state.lock().unwrap();
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl FaultHooks for SeededPublishFailures {
    fn fail_publish(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let fail = self.next_f64() < self.rate;
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }
}

/// Crashes the consumer after the next `left` applied records, counting how often it was asked.
#[derive(Debug)]
struct Crashes {
    left: AtomicU32,
    asked: AtomicU32,
}

impl FaultHooks for Crashes {
    fn crash_before_commit(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

async fn count(fixture: &Fixture, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&fixture.pool)
        .await
        .expect("count query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_publish_failures_are_retried_and_every_event_arrives_once_in_order_per_key() {
    pizza_testkit::telemetry::init_once(SERVICE);
    const KEYS: usize = 20;
    const PER_KEY: u64 = 15;
    let started = Instant::now();
    let fixture = Fixture::new("pubfail", 3).await;
    let outbox = fixture.outbox();

    // 300 events, 15 per order, written as a request would: inside a span, whose context each outbox
    // row keeps, so every `send` span of the relay joins this one trace.
    let orders: Vec<Uuid> = (0..KEYS).map(|_| Uuid::now_v7()).collect();
    let mut expected: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let request = tracing::info_span!("write events");
    let trace_id = request.context().span().span_context().trace_id().to_string();
    async {
        for seq in 0..PER_KEY {
            let mut tx = fixture.pool.begin().await.unwrap();
            for order in &orders {
                let event = order_placed(*order, seq);
                outbox.enqueue_to(&mut tx, &fixture.topic, &event).await.unwrap();
                expected.entry(*order).or_default().push(event.id());
            }
            tx.commit().await.unwrap();
        }
    }
    .instrument(request)
    .await;
    let total = KEYS * PER_KEY as usize;

    let hooks = Arc::new(SeededPublishFailures::new(42, 0.5));
    let relay = Relay::new(
        fixture.pool.clone(),
        outbox,
        &fixture.kafka,
        RelayConfig {
            batch_size: 50,
            poll_interval: Duration::from_millis(20),
            backoff: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(50),
                multiplier: 2.0,
            },
            faults: Some(hooks.clone()),
            ..RelayConfig::default()
        },
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(relay.run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let outbox_table = fixture.table("outbox");
    eventually(Duration::from_secs(120), "outbox drained", || async {
        let pending = count(
            &fixture,
            &format!("select count(*) from {outbox_table} where published_at is null"),
        )
        .await;
        Ok((pending == 0).then_some(()))
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the relay stops")
        .unwrap();

    // Every event once, in order per order.
    let records = read_topic(
        &Stack::from_env().kafka_bootstrap,
        &fixture.topic,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(records.len(), total, "one record per event");
    let mut seen: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut ids = HashSet::new();
    for record in &records {
        let event = Envelope::<OrderPlaced>::decode(record).unwrap();
        assert!(ids.insert(event.id()), "event {} published twice", event.id());
        assert_eq!(record.key(), Some(event.key().as_bytes()));
        seen.entry(event.order_id()).or_default().push(event.id());
    }
    for (order, ids) in &expected {
        assert_eq!(
            seen.get(order),
            Some(ids),
            "order {order}: out of order or missing"
        );
    }

    // The failures were injected, counted as injected, and each cost one more attempt of its row.
    let injected = hooks.failed.load(Ordering::SeqCst);
    let asked = hooks.asked.load(Ordering::SeqCst);
    let attempts: i64 = count(
        &fixture,
        &format!("select sum(attempts)::bigint from {outbox_table}"),
    )
    .await;
    let retried_rows = count(
        &fixture,
        &format!("select count(*) from {outbox_table} where attempts > 1"),
    )
    .await;
    eprintln!(
        "publish failures: {total} events over {KEYS} orders; {asked} publishes asked, {injected} failed by \
         the plan ({:.0}%), {retried_rows} rows needed more than one attempt; relay: {} published, {} \
         failures ({} injected) in {} rounds; {:?}",
        100.0 * injected as f64 / asked as f64,
        stats.published,
        stats.failures,
        stats.injected,
        stats.rounds,
        started.elapsed()
    );
    assert!(injected > 0, "the plan failed some publishes");
    assert_eq!(asked, total as u64 + injected, "asked once per publish attempt");
    assert!(
        (0.35..=0.65).contains(&(injected as f64 / asked as f64)),
        "about half the publishes failed: {injected} of {asked}"
    );
    assert_eq!(
        stats.injected, injected,
        "the relay counted each injected failure"
    );
    assert_eq!(stats.failures, injected, "and no other failure");
    assert_eq!(stats.published, total as u64, "each row published once");
    assert_eq!(
        attempts,
        total as i64 + injected as i64,
        "every injected failure left the row for another attempt"
    );
    assert!(retried_rows > 0);
    let last_errors = count(
        &fixture,
        &format!("select count(*) from {outbox_table} where last_error is not null"),
    )
    .await;
    assert_eq!(last_errors, 0, "a published row keeps no error");

    // In the trace: one `send` span per attempt, the injected ones failed with `error.type=injected`.
    let name = format!("send {}", fixture.topic);
    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ok, failed) = loop {
        pizza_testkit::telemetry::flush().await;
        let sends: Vec<_> = match jaeger.trace(&trace_id).await.unwrap() {
            Some(trace) => trace.spans.into_iter().filter(|s| s.name == name).collect(),
            None => Vec::new(),
        };
        let failed = sends
            .iter()
            .filter(|s| s.is_error() && s.attr_str(semconv::ERROR_TYPE) == Some("injected"))
            .count();
        let ok = sends
            .iter()
            .filter(|s| !s.is_error() && s.attr_str(semconv::ERROR_TYPE).is_none())
            .count();
        if sends.len() as u64 >= asked || Instant::now() > deadline {
            assert_eq!(
                sends.len(),
                ok + failed,
                "every send span either succeeded or was injected"
            );
            break (ok, failed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(ok, total, "one successful send span per event");
    assert_eq!(
        failed as u64, injected,
        "one failed send span per injected failure"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_consumer_crashes_redeliver_the_crashed_records_and_apply_every_effect_once() {
    const EVENTS: usize = 20;
    let started = Instant::now();
    let fixture = Fixture::new("crashes", 1).await;
    // No key: a second application of an event would add a second row.
    let applied = fixture.create_table("applied", "order_id uuid not null").await;
    let outbox = fixture.outbox();
    let orders: Vec<Uuid> = (0..EVENTS).map(|_| Uuid::now_v7()).collect();
    let mut tx = fixture.pool.begin().await.unwrap();
    for (seq, order) in orders.iter().enumerate() {
        outbox
            .enqueue_to(&mut tx, &fixture.topic, &order_placed(*order, seq as u64))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    fixture.spawn_relay(Duration::from_millis(20));

    // A supervisor as a service would be: a consumer that crashed is replaced by a new one in the
    // same group, until the stop.
    let hooks = Arc::new(Crashes {
        left: AtomicU32::new(2),
        asked: AtomicU32::new(0),
    });
    let group = format!("{}-g", fixture.topic);
    let mut config = ConsumerConfig::new(&group, vec![fixture.topic.clone()], Topology::Continuous);
    config.faults = Some(hooks.clone());
    let handler = Arc::new(Effect {
        sql: format!("insert into {applied} (order_id) values ($1)"),
    });
    let (stop, stopped) = watch::channel(false);
    let supervisor = {
        let (pool, schema, kafka) = (
            fixture.pool.clone(),
            fixture.schema.clone(),
            fixture.kafka.clone(),
        );
        tokio::spawn(async move {
            let mut runs: Vec<ConsumerStats> = Vec::new();
            loop {
                let consumer = Consumer::new(
                    pool.clone(),
                    schema.clone(),
                    &kafka,
                    config.clone(),
                    handler.clone(),
                )
                .unwrap();
                let mut stopped = stopped.clone();
                let stats = consumer
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
                runs.push(stats);
                if !stats.crashed {
                    return runs;
                }
            }
        })
    };

    let inbox = fixture.table("inbox");
    eventually(Duration::from_secs(120), "every event applied", || async {
        let n = count(&fixture, &format!("select count(*) from {inbox}")).await;
        Ok((n == EVENTS as i64).then_some(()))
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(60), supervisor)
        .await
        .expect("the consumers stop")
        .unwrap();

    let processed: u64 = runs.iter().map(|r| r.processed).sum();
    let duplicates: u64 = runs.iter().map(|r| r.duplicates).sum();
    eprintln!(
        "consumer crashes: {EVENTS} events; {} consumer runs ({} crashed), {processed} effects, {duplicates} \
         redeliveries absorbed by the inbox; {:?}",
        runs.len(),
        runs.iter().filter(|r| r.crashed).count(),
        started.elapsed()
    );
    assert_eq!(runs.len(), 3, "two crashes, three consumers: {runs:?}");
    assert!(runs[0].crashed && runs[1].crashed && !runs[2].crashed, "{runs:?}");
    assert_eq!(
        (runs[0].processed, runs[1].processed),
        (1, 1),
        "each crash came right after an applied record: {runs:?}"
    );
    assert_eq!(processed, EVENTS as u64, "every effect applied once");
    assert_eq!(duplicates, 2, "each crashed record came again and was recognised");
    assert_eq!(
        runs[2].processed,
        EVENTS as u64 - 2,
        "the last consumer kept going"
    );
    assert_eq!(
        hooks.asked.load(Ordering::SeqCst),
        EVENTS as u32,
        "asked once per applied record, never for a duplicate"
    );
    let rows = count(&fixture, &format!("select count(*) from {applied}")).await;
    let distinct = count(
        &fixture,
        &format!("select count(distinct order_id) from {applied}"),
    )
    .await;
    assert_eq!(
        (rows, distinct),
        (EVENTS as i64, EVENTS as i64),
        "one effect per event"
    );

    // The last consumer stopped cleanly and committed everything: nothing more would come again.
    let committed = tokio::task::spawn_blocking({
        let (kafka, topic) = (fixture.kafka.clone(), fixture.topic.clone());
        move || {
            let mut kafka = kafka;
            let reader: BaseConsumer = kafka.set("group.id", &group).create().unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let committed = reader.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
            committed
                .find_partition(&topic, 0)
                .map(|p| p.offset())
                .unwrap_or(Offset::Invalid)
        }
    })
    .await
    .unwrap();
    assert_eq!(committed, Offset::Offset(EVENTS as i64));
    fixture.stop().await;
}
