//! A consumer process killed with SIGKILL and started again under the same instance id resumes at
//! once: static group membership hands it the dead member's partition without waiting for the
//! dead member's session to expire.
//!
//! A real `kill -9` needs a real process, so this test binary has no libtest harness: run plainly it
//! is the test; run with `PIZZA_CRASH_CHILD` set it is the consumer process the test starts and kills
//! (the same binary, so nothing else has to be built). The consumers' session timeout is set to
//! [`SESSION`], far beyond the test's limit: a restarted consumer that had to wait for the dead
//! member's session would fail the test, however fast the machine.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use pizza_messaging::{Consumer, ConsumerConfig, Schema};
use pizza_telemetry::Topology;
use pizza_testkit::Stack;
use pizza_testkit::records::eventually;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Effect, Fixture, order_placed};

const NAME: &str =
    "a_consumer_killed_and_restarted_under_its_instance_id_resumes_before_its_old_session_expires";
/// Set in the child: `group|topic|schema|instance id|effect table`.
const CHILD: &str = "PIZZA_CRASH_CHILD";
/// The consumers' session timeout: longer than [`LIMIT`], so waiting it out fails the test.
const SESSION: Duration = Duration::from_secs(180);
/// How long each step may take.
const LIMIT: Duration = Duration::from_secs(90);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Ok(settings) = std::env::var(CHILD) {
        return runtime.block_on(child(&settings));
    }
    // `cargo test -- FILTER` passes the filter on: run only if it names this test.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        eprintln!("running 0 tests (filtered out: {NAME})");
        return Ok(());
    }
    eprintln!("running 1 test: {NAME}");
    runtime.block_on(test())?;
    eprintln!("test {NAME} ... ok");
    Ok(())
}

/// The child: one consumer of the fixture's topic, applying `Effect`, until it is killed.
async fn child(settings: &str) -> anyhow::Result<()> {
    let [group, topic, schema, instance, table]: [&str; 5] = settings
        .split('|')
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad {CHILD}: {settings}"))?;
    let stack = Stack::from_env();
    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let mut kafka = ClientConfig::new();
    kafka
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("session.timeout.ms", SESSION.as_millis().to_string());
    let mut config = ConsumerConfig::new(group, vec![topic.to_owned()], Topology::Continuous);
    config.instance_id = Some(instance.to_owned());
    let consumer = Consumer::new(
        pool,
        Schema::new(schema)?,
        &kafka,
        config,
        Effect {
            sql: format!("insert into {table} (order_id) values ($1)"),
        },
    )?;
    consumer.run(std::future::pending()).await;
    Ok(())
}

fn spawn_child(settings: &str) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .env(CHILD, settings)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the consumer process")
}

async fn test() -> anyhow::Result<()> {
    let fixture = Fixture::new("crashrecovery", 1).await;
    let applied = fixture.create_table("applied", "order_id uuid not null").await;
    let group = format!("{}-g", fixture.topic);
    let settings = format!("{group}|{}|{}|replica-0|{applied}", fixture.topic, fixture.schema);
    let producer: FutureProducer = fixture.kafka.create()?;
    let send = |order: Uuid| {
        let producer = producer.clone();
        let topic = fixture.topic.clone();
        async move {
            let event = order_placed(order, 0).encode()?;
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&event.key)
                        .headers(event.headers)
                        .payload(&event.payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
            anyhow::Ok(())
        }
    };
    let applied_once = |order: Uuid| {
        let (pool, sql) = (
            fixture.pool.clone(),
            format!("select count(*) from {applied} where order_id = $1"),
        );
        async move {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(order)
                .fetch_one(&pool)
                .await?;
            anyhow::Ok((n == 1).then_some(()))
        }
    };

    let mut first = spawn_child(&settings)?;
    let before = Uuid::now_v7();
    send(before).await?;
    eventually(LIMIT, "the first process applied a record", || {
        applied_once(before)
    })
    .await?;
    // SIGKILL: no leave, no commit, no flush; the broker still counts the member as alive.
    first.kill()?;
    first.wait()?;

    let mut second = spawn_child(&settings)?;
    let after = Uuid::now_v7();
    send(after).await?;
    let resumed = eventually(LIMIT, "the restarted process applied the next record", || {
        applied_once(after)
    })
    .await;
    second.kill()?;
    second.wait()?;
    resumed?;
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("select count(*) from {applied}")))
        .fetch_one(&fixture.pool)
        .await?;
    ensure!(rows == 2, "each record applied once: {rows} rows");
    fixture.stop().await;
    Ok(())
}
