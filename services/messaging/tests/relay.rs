//! The relay's claims against the real Kafka and PostgreSQL of the native stack: rows the broker
//! refuses end dead without holding anything else up, no transaction or row lock outlives a claim,
//! several relays keep order per key, and a relay that dies between publishing and marking is
//! replaced without loss, its copies absorbed by the inbox.
//!
//! Each test has its own schema and topic ([`Fixture`]); the outage test has its own broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pizza_contracts::events::OrderPlaced;
use pizza_messaging::{
    Backoff, DeadRow, Envelope, FaultHooks, Outbox, Relay, RelayConfig, RelayStats, Source, outbox_wake,
};
use pizza_telemetry::Topology;
use pizza_testkit::broker::PrivateBroker;
use pizza_testkit::records::{eventually, read_topic};
use pizza_testkit::{Stack, kafka};
use rdkafka::{ClientConfig, message::OwnedMessage};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Effect, Fixture, logs, order_placed_with};

const LIMIT: Duration = Duration::from_secs(120);

/// Writes one event of `order` to `topic`, in a transaction of its own; returns its `ce_id`.
async fn enqueue(
    fixture: &Fixture,
    outbox: &Outbox,
    topic: &str,
    order: Uuid,
    seq: u64,
    pizza: &str,
) -> Uuid {
    let event = order_placed_with(order, seq, pizza);
    let mut tx = fixture.pool.begin().await.unwrap();
    outbox.enqueue_to(&mut tx, topic, &event).await.unwrap();
    tx.commit().await.unwrap();
    event.id()
}

async fn scalar(fixture: &Fixture, sql: String) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&fixture.pool)
        .await
        .expect("count query")
}

/// Waits until no row of the fixture's outbox is unpublished, failing with `what` otherwise.
async fn drained(fixture: &Fixture, what: &str) {
    let sql = format!(
        "select count(*) from {} where published_at is null",
        fixture.table("outbox")
    );
    eventually(LIMIT, what, || async {
        Ok((scalar(fixture, sql.clone()).await == 0).then_some(()))
    })
    .await
    .unwrap();
}

/// A relay config that reacts within milliseconds.
fn quick() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(20),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2.0,
        },
        ..RelayConfig::default()
    }
}

/// Starts a relay on `kafka` with `config`; it runs until `stop` says so.
fn spawn_relay(
    fixture: &Fixture,
    kafka: &ClientConfig,
    config: RelayConfig,
    stop: &watch::Sender<bool>,
) -> JoinHandle<RelayStats> {
    let relay = Relay::new(fixture.pool.clone(), fixture.outbox(), kafka, config).unwrap();
    let mut stopped = stop.subscribe();
    tokio::spawn(relay.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }))
}

/// Starts a relay that only its process's announcements wake in time (its poll an hour apart).
fn spawn_announced_relay(fixture: &Fixture, stop: &watch::Sender<bool>) -> JoinHandle<RelayStats> {
    let config = RelayConfig {
        poll_interval: Duration::from_secs(3600),
        wakes: Some(Source::Process),
        ..quick()
    };
    spawn_relay(fixture, &fixture.kafka, config, stop)
}

/// The `ce_id`s in `records`, in order, per record key.
fn ids_by_key(records: &[OwnedMessage]) -> HashMap<Uuid, Vec<Uuid>> {
    let mut seen: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for record in records {
        let event = Envelope::<OrderPlaced>::decode(record).expect("a relayed record decodes");
        seen.entry(event.order_id()).or_default().push(event.id());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_broker_keeps_refusing_end_dead_while_every_other_key_flows_and_their_keys_wait() {
    logs();
    const POISON: usize = 100;
    const GOOD: usize = 100;
    let fixture = Fixture::new("poison", 3).await;
    let outbox = fixture.outbox();
    let missing = kafka::unique_topic("missing");
    // Ids first: the poison rows are the oldest, as a batch of them would be in front of the relay.
    // Half go to a topic that does not exist (auto-creation is off), half are over the producer's
    // size limit (librdkafka's default `message.max.bytes`, 1 MB).
    let too_large = "x".repeat(1_100_000);
    let mut poison_orders = Vec::new();
    for i in 0..POISON {
        let order = Uuid::now_v7();
        let (topic, pizza) = if i % 2 == 0 {
            (missing.as_str(), "margherita")
        } else {
            (fixture.topic.as_str(), too_large.as_str())
        };
        enqueue(&fixture, &outbox, topic, order, 0, pizza).await;
        poison_orders.push((order, topic.to_owned()));
    }
    // A later event of two poison keys: it must wait behind its dead row, not overtake it.
    let (unknown_key, _) = poison_orders[0].clone();
    let (large_key, _) = poison_orders[1].clone();
    let follower_of_unknown = enqueue(&fixture, &outbox, &missing, unknown_key, 1, "margherita").await;
    let follower_of_large = enqueue(&fixture, &outbox, &fixture.topic, large_key, 1, "margherita").await;
    let mut good: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for seq in 0..GOOD as u64 {
        let order = Uuid::now_v7();
        good.insert(
            order,
            vec![enqueue(&fixture, &outbox, &fixture.topic, order, seq, "margherita").await],
        );
    }

    // Unknown topics fail after the metadata propagation wait, and a topic created later is seen at
    // the next metadata refresh: half a second each here.
    let mut kafka = fixture.kafka.clone();
    kafka
        .set("topic.metadata.propagation.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "500");
    let (stop, _) = watch::channel(false);
    let relay = spawn_relay(
        &fixture,
        &kafka,
        RelayConfig {
            max_refusals: 3,
            // A row's three tries span 1 + 2 s: several of the producer's 0.5 s metadata refreshes,
            // so a requeued row of the topic created meanwhile is sent once the producer sees it,
            // however slow the machine, instead of dying again on the producer's stale metadata.
            refusal_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            },
            ..quick()
        },
        &stop,
    );

    let outbox_table = fixture.table("outbox");
    eventually(
        LIMIT,
        "every good event published and every poison row dead",
        || async {
            let published = scalar(
                &fixture,
                format!("select count(*) from {outbox_table} where published_at is not null"),
            )
            .await;
            let dead = outbox.dead(&fixture.pool).await?.len();
            Ok((published == GOOD as i64 && dead == POISON).then_some(()))
        },
    )
    .await
    .unwrap();

    let dead: Vec<DeadRow> = outbox.dead(&fixture.pool).await.unwrap();
    assert!(
        dead.iter().all(|d| d.refusals == 3),
        "each refused three times: {dead:?}"
    );
    let errors: HashSet<bool> = dead
        .iter()
        .map(|d| {
            let error = d.last_error.as_deref().unwrap_or_default().to_lowercase();
            if d.topic == missing {
                error.contains("unknown")
            } else {
                error.contains("size") || error.contains("large")
            }
        })
        .collect();
    assert_eq!(errors, HashSet::from([true]), "each dead row says why: {dead:?}");
    let backlog = outbox.backlog(&fixture.pool).await.unwrap();
    let waiting: i64 = backlog.iter().map(|b| b.pending).sum();
    assert_eq!(
        waiting, 2,
        "the two followers wait behind their dead rows: {backlog:?}"
    );

    // Every good event once; the follower of the too-large row never went out.
    let records = read_topic(&Stack::from_env().kafka_bootstrap, &fixture.topic, LIMIT)
        .await
        .unwrap();
    assert_eq!(ids_by_key(&records), good, "each good event once, nothing else");

    // The operator creates the missing topic and requeues its rows; the too-large rows are given up
    // (deleted), which lets their followers go.
    kafka::create_topics(&Stack::from_env().kafka_bootstrap, &[(&missing, 1)])
        .await
        .unwrap();
    let (unknown, large): (Vec<&DeadRow>, Vec<&DeadRow>) = dead.iter().partition(|d| d.topic == missing);
    let requeued = outbox
        .requeue(&fixture.pool, &unknown.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(requeued, POISON as u64 / 2);
    sqlx::query(AssertSqlSafe(format!(
        "delete from {outbox_table} where id = any($1)"
    )))
    .bind(large.iter().map(|d| d.id).collect::<Vec<_>>())
    .execute(&fixture.pool)
    .await
    .unwrap();
    drained(&fixture, "the requeued rows and the followers published").await;
    let _ = stop.send(true);
    let stats = relay.await.unwrap();
    assert_eq!(stats.dead, POISON as u64, "{stats:?}");

    let requeued_records = read_topic(&Stack::from_env().kafka_bootstrap, &missing, LIMIT)
        .await
        .unwrap();
    let by_key = ids_by_key(&requeued_records);
    assert_eq!(by_key.len(), POISON / 2, "every requeued row published");
    assert_eq!(
        by_key[&unknown_key].last(),
        Some(&follower_of_unknown),
        "the follower came after its requeued row"
    );
    assert_eq!(by_key[&unknown_key].len(), 2);
    let records = read_topic(&Stack::from_env().kafka_bootstrap, &fixture.topic, LIMIT)
        .await
        .unwrap();
    assert_eq!(
        ids_by_key(&records).get(&large_key),
        Some(&vec![follower_of_large]),
        "once its dead row was deleted, the follower went"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_broker_outage_the_relay_holds_no_row_lock_and_publishes_each_row_once() {
    logs();
    let mut broker = PrivateBroker::start().await.unwrap();
    let bootstrap = broker.bootstrap();
    let fixture = Fixture::new("claims", 1).await;
    kafka::create_topics(&bootstrap, &[(&fixture.topic, 1)])
        .await
        .unwrap();
    let outbox = fixture.outbox();
    let order = Uuid::now_v7();
    let first = enqueue(&fixture, &outbox, &fixture.topic, order, 0, "margherita").await;
    broker.stop().await.unwrap();

    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &bootstrap);
    let (stop, _) = watch::channel(false);
    // A short claim: it must be renewed several times while the broker is away.
    let relay = spawn_relay(
        &fixture,
        &kafka,
        RelayConfig {
            claim_lease: Duration::from_millis(900),
            ..quick()
        },
        &stop,
    );
    let outbox_table = fixture.table("outbox");
    eventually(LIMIT, "the row claimed", || async {
        let claimed = scalar(
            &fixture,
            format!("select count(*) from {outbox_table} where claimed_by is not null"),
        )
        .await;
        Ok((claimed == 1).then_some(()))
    })
    .await
    .unwrap();
    // Written while the first row is in flight: same key, so it waits behind it.
    let second = enqueue(&fixture, &outbox, &fixture.topic, order, 1, "margherita").await;

    // Nobody holds a lock on the rows: another transaction locks them without waiting.
    let mut tx = fixture.pool.begin().await.unwrap();
    let locked: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select id from {outbox_table} order by id for update nowait"
    )))
    .fetch_all(&mut *tx)
    .await
    .expect("no relay holds a row lock while the broker is away");
    assert_eq!(locked.len(), 2);
    tx.rollback().await.unwrap();
    // No transaction stays open while the broker is away. One caught between two statements of a
    // short transaction is fine (a loaded machine catches them); a transaction held across the
    // round trip would still be the same one a while later, the broker being still down.
    let open_transactions = || async {
        let open: Vec<(i32, String)> = sqlx::query_as(
            "select pid, xact_start::text from pg_stat_activity where datname = current_database() \
             and state like 'idle in transaction%' and query like '%outbox%'",
        )
        .fetch_all(&fixture.pool)
        .await
        .unwrap();
        open
    };
    let before = open_transactions().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still: Vec<_> = open_transactions()
        .await
        .into_iter()
        .filter(|t| before.contains(t))
        .collect();
    assert_eq!(
        still,
        vec![],
        "no relay transaction stays open across the round trip"
    );

    // Outlast the claim several times over: the relay renews it, nobody else may take the row.
    let claim_end = |fixture: &Fixture| {
        let sql = format!(
            "select extract(epoch from available_at)::float8 from {outbox_table} order by id limit 1"
        );
        let pool = fixture.pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>(AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let at_start = claim_end(&fixture).await;
    eventually(LIMIT, "the claim renewed past three leases", || async {
        Ok((claim_end(&fixture).await > at_start + 2.7).then_some(()))
    })
    .await
    .unwrap();

    broker.up().await.unwrap();
    drained(&fixture, "both rows published").await;
    let _ = stop.send(true);
    let stats = relay.await.unwrap();
    let records = read_topic(&bootstrap, &fixture.topic, LIMIT).await.unwrap();
    assert_eq!(
        ids_by_key(&records),
        HashMap::from([(order, vec![first, second])]),
        "each row once, in order"
    );
    assert_eq!(stats.published, 2, "{stats:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_one_outbox_and_every_order_arrives_once_in_order() {
    logs();
    const ORDERS: usize = 20;
    const PER_ORDER: u64 = 10;
    let fixture = Fixture::new("tworelays", 3).await;
    let outbox = fixture.outbox();
    let (stop, _) = watch::channel(false);
    let relay = || {
        let config = RelayConfig {
            batch_size: 7,
            ..quick()
        };
        spawn_relay(&fixture, &fixture.kafka, config, &stop)
    };
    let relays = [relay(), relay()];
    // Written while both relays run, one event per transaction, orders interleaved.
    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let mut expected: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for seq in 0..PER_ORDER {
        for order in &orders {
            let id = enqueue(&fixture, &outbox, &fixture.topic, *order, seq, "margherita").await;
            expected.entry(*order).or_default().push(id);
        }
    }
    drained(&fixture, "outbox drained").await;
    let _ = stop.send(true);
    let mut published = Vec::new();
    for relay in relays {
        published.push(relay.await.unwrap().published);
    }
    let records = read_topic(&Stack::from_env().kafka_bootstrap, &fixture.topic, LIMIT)
        .await
        .unwrap();
    eprintln!("two relays: {} events, published {published:?}", records.len());
    assert_eq!(
        ids_by_key(&records),
        expected,
        "each event once, in order per order"
    );
    assert_eq!(published.iter().sum::<u64>(), (ORDERS as u64) * PER_ORDER);
    fixture.stop().await;
}

/// Crashes the relay the first time it is about to mark stored records.
#[derive(Debug, Default)]
struct CrashBeforeMark {
    crashes: AtomicU32,
}

impl FaultHooks for CrashBeforeMark {
    fn crash_relay_before_mark(&self) -> bool {
        self.crashes.fetch_add(1, Ordering::SeqCst) == 0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_is_taken_over_by_its_restart_at_once_and_the_copies_have_no_effect()
 {
    logs();
    const EVENTS: usize = 30;
    let fixture = Fixture::new("relaycrash", 1).await;
    let applied = fixture.create_table("applied", "order_id uuid not null").await;
    let outbox = fixture.outbox();
    let mut expected: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for seq in 0..EVENTS as u64 {
        let order = Uuid::now_v7();
        expected.insert(
            order,
            vec![enqueue(&fixture, &outbox, &fixture.topic, order, seq, "margherita").await],
        );
    }
    let outbox_table = fixture.table("outbox");

    // The first relay publishes, then dies before marking anything. Its claims last five minutes:
    // only taking them back can explain a quick takeover.
    let hooks = Arc::new(CrashBeforeMark::default());
    let config = RelayConfig {
        instance_id: Some("order-0".to_owned()),
        claim_lease: Duration::from_secs(300),
        ..quick()
    };
    let (stop, _) = watch::channel(false);
    let crashed = spawn_relay(
        &fixture,
        &fixture.kafka,
        RelayConfig {
            faults: Some(hooks.clone()),
            ..config.clone()
        },
        &stop,
    )
    .await
    .unwrap();
    assert!(crashed.crashed, "{crashed:?}");
    let claimed = scalar(
        &fixture,
        format!("select count(*) from {outbox_table} where claimed_by = 'order-0' and published_at is null"),
    )
    .await;
    assert!(claimed > 0, "the dead relay left its claims");
    let stored = read_topic(&Stack::from_env().kafka_bootstrap, &fixture.topic, LIMIT)
        .await
        .unwrap()
        .len();
    assert!(stored > 0, "the broker had stored records of the dead relay");

    // The replica restarts under the same name and takes its claims back at once.
    let restarted = spawn_relay(&fixture, &fixture.kafka, config, &stop);
    drained(&fixture, "every row published").await;

    // A consumer with its inbox applies each event once, however many copies the topic holds.
    fixture.spawn_consumer(
        "g",
        Topology::Continuous,
        Effect {
            sql: format!("insert into {applied} (order_id) values ($1)"),
        },
    );
    let inbox = fixture.table("inbox");
    eventually(LIMIT, "every event applied", || async {
        let n = scalar(&fixture, format!("select count(*) from {inbox}")).await;
        Ok((n == EVENTS as i64).then_some(()))
    })
    .await
    .unwrap();
    let _ = stop.send(true);
    let stats = restarted.await.unwrap();
    let records = read_topic(&Stack::from_env().kafka_bootstrap, &fixture.topic, LIMIT)
        .await
        .unwrap();
    let mut first_copies: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (order, ids) in ids_by_key(&records) {
        let mut unique = ids.clone();
        unique.dedup();
        first_copies.insert(order, unique);
    }
    eprintln!(
        "relay crash: {EVENTS} events, {stored} stored before the crash, {} records in the topic; the restart \
         published {}",
        records.len(),
        stats.published
    );
    assert_eq!(first_copies, expected, "every event is in the topic");
    assert_eq!(
        records.len(),
        EVENTS + stored,
        "what the dead relay had stored went out again, with the same ce_id"
    );
    let rows = scalar(&fixture, format!("select count(*) from {applied}")).await;
    let distinct = scalar(
        &fixture,
        format!("select count(distinct order_id) from {applied}"),
    )
    .await;
    assert_eq!(
        (rows, distinct),
        (EVENTS as i64, EVENTS as i64),
        "one effect per event"
    );
    fixture.stop().await;
}

/// The records of `topic` once there are exactly `n` of them (for `eventually`).
async fn records_when(topic: String, n: usize) -> anyhow::Result<Option<Vec<OwnedMessage>>> {
    let records = read_topic(&Stack::from_env().kafka_bootstrap, &topic, LIMIT).await?;
    Ok((records.len() == n).then_some(records))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_woken_by_its_process_publishes_an_announced_row_and_its_outbox_notifies_nobody() {
    logs();
    let fixture = Fixture::new("in_process", 1).await;
    let trigger = || {
        scalar(
            &fixture,
            format!(
                "select count(*) from pg_trigger where tgname = 'outbox_notify' \
                 and tgrelid = '{}'::regclass",
                fixture.table("outbox")
            ),
        )
    };
    assert_eq!(trigger().await, 1, "the migrations create the trigger");
    for _ in 0..2 {
        outbox_wake(&fixture.pool, &fixture.schema, Source::Process)
            .await
            .unwrap();
        assert_eq!(trigger().await, 0, "dropped, and dropping again changes nothing");
    }
    let mut listener = PgListener::connect_with(&fixture.pool).await.unwrap();
    listener.listen("pizza_outbox").await.unwrap();
    let outbox = fixture.outbox();
    let (stop, _) = watch::channel(false);
    let relay = spawn_announced_relay(&fixture, &stop);
    let in_topic = |n: usize| records_when(fixture.topic.clone(), n);
    let order = Uuid::now_v7();
    enqueue(&fixture, &outbox, &fixture.topic, order, 0, "margherita").await;
    eventually(
        LIMIT,
        "the first row sent (the relay looks once at start)",
        || in_topic(1),
    )
    .await
    .unwrap();
    enqueue(&fixture, &outbox, &fixture.topic, order, 1, "margherita").await;
    Outbox::new(fixture.schema.clone()).announce(&fixture.pool);
    eventually(LIMIT, "the announced row sent", || in_topic(2))
        .await
        .unwrap();
    let _ = stop.send(true);
    relay.await.unwrap();
    // Other tests' outboxes in the same database notify too, with their schema as the payload.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(notification) = tokio::time::timeout_at(quiet_until, listener.recv()).await {
        let notification = notification.unwrap();
        assert_ne!(
            notification.payload(),
            fixture.schema.as_str(),
            "this outbox notified"
        );
    }
    for _ in 0..2 {
        outbox_wake(&fixture.pool, &fixture.schema, Source::Database)
            .await
            .unwrap();
        assert_eq!(trigger().await, 1, "created again, and once");
    }
    fixture.stop().await;
}

/// Announcements that queue up while the relay is busy are covered by its next claim, which reads
/// every row committed before it: that claim forgets them, instead of waking once for each to find
/// nothing. On one thread, the relay runs only when the test awaits, so all ten announcements are
/// waiting when it wakes.
#[tokio::test(flavor = "current_thread")]
async fn announcements_waiting_for_a_busy_relay_cost_one_claim_not_one_each() {
    logs();
    let fixture = Fixture::new("announced_once", 1).await;
    outbox_wake(&fixture.pool, &fixture.schema, Source::Process)
        .await
        .unwrap();
    let outbox = fixture.outbox();
    let (stop, _) = watch::channel(false);
    let relay = spawn_announced_relay(&fixture, &stop);
    // The relay's first look, at its start, finds nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for seq in 0..10 {
        enqueue(
            &fixture,
            &outbox,
            &fixture.topic,
            Uuid::now_v7(),
            seq,
            "margherita",
        )
        .await;
    }
    // Ten commits announced one after another, as ten steps would; nothing awaits in between.
    for _ in 0..10 {
        outbox.announce(&fixture.pool);
    }
    let in_topic = |n: usize| records_when(fixture.topic.clone(), n);
    eventually(LIMIT, "the ten rows sent", || in_topic(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    let stats = relay.await.unwrap();
    assert_eq!(stats.published, 10);
    assert!(
        stats.rounds <= 3,
        "one claim at the start and one for the ten announcements (one more if the start raced the \
         first look), not one claim each: {} rounds",
        stats.rounds
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_relay_publishes_a_committed_row_at_once_instead_of_at_its_next_poll() {
    logs();
    let fixture = Fixture::new("notify", 1).await;
    let outbox = fixture.outbox();
    let (stop, _) = watch::channel(false);
    // A poll an hour apart: only the commit's notification can wake the relay in time.
    let relay = spawn_relay(
        &fixture,
        &fixture.kafka,
        RelayConfig {
            poll_interval: Duration::from_secs(3600),
            ..quick()
        },
        &stop,
    );
    // Marks wait for the relay's next turn; the topic shows what was sent.
    let in_topic = |n: usize| records_when(fixture.topic.clone(), n);
    let order = Uuid::now_v7();
    let first = enqueue(&fixture, &outbox, &fixture.topic, order, 0, "margherita").await;
    eventually(LIMIT, "the first row sent", || in_topic(1))
        .await
        .unwrap();
    // The relay has nothing more to claim: it sleeps until a notification.
    let second = enqueue(&fixture, &outbox, &fixture.topic, order, 1, "margherita").await;
    let records = eventually(LIMIT, "the second row sent", || in_topic(2))
        .await
        .unwrap();
    let _ = stop.send(true);
    let stats = relay.await.unwrap();
    assert_eq!(
        ids_by_key(&records),
        HashMap::from([(order, vec![first, second])])
    );
    let unpublished = scalar(
        &fixture,
        format!(
            "select count(*) from {} where published_at is null",
            fixture.table("outbox")
        ),
    )
    .await;
    assert_eq!(unpublished, 0, "both marked by the stop at the latest: {stats:?}");
    fixture.stop().await;
}
