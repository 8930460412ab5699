//! Relay and consumer throughput, traced against `OTEL_SDK_DISABLED=true`, measured in one run.
//!
//! `cargo bench -p pizza-messaging --bench throughput` (or `make bench`) with the native stack up.
//! The parent process runs the measurement four times as child processes, alternating untraced and
//! traced, so both modes see the same machine in the same minutes; each child initialises telemetry
//! exactly as a service does (the real OTLP exporter to the real Collector, every span sampled, or the
//! SDK disabled). It prints events per second for each phase and the traced/untraced ratio. Nothing is
//! asserted: these machines are shared, and a ratio from one run says more than an absolute figure.
//!
//! Each child: writes `EVENTS` events into a fresh outbox, starts the relay and times until the outbox
//! is drained; then starts a consumer on the topic and times until every event's effect committed.

// A benchmark's output is its report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use pizza_contracts::events::{OrderItem, OrderPlaced};
use pizza_messaging::Envelope;
use pizza_telemetry::{TelemetryArgs, Topology};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

#[path = "../tests/support/fixture.rs"]
mod fixture;

use fixture::{Effect, Fixture};

const EVENTS: usize = 2000;
const CHILD: &str = "PIZZA_BENCH_CHILD";

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("count query")
}

async fn wait_until(pool: &PgPool, sql: String, target: i64) -> Duration {
    let started = Instant::now();
    while count(pool, sql.clone()).await < target {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no progress within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// One measurement, in a child process whose telemetry the parent chose through the environment.
async fn measure() -> (f64, f64) {
    let config = TelemetryArgs::from_env()
        .expect("telemetry settings")
        .config("pizza-messaging-bench", "0.0.0")
        .expect("telemetry config");
    let guard = pizza_telemetry::init(&config).expect("telemetry init");
    let fixture = Fixture::new("bench", 3).await;
    let effects = fixture.create_table("effects", "id uuid primary key").await;

    // Fill the outbox first, 100 events a transaction, so the relay is measured alone.
    let outbox = fixture.outbox();
    for chunk in 0..EVENTS / 100 {
        let mut tx = fixture.pool.begin().await.unwrap();
        for i in 0..100 {
            let event = Envelope::new(
                "/pizza/bench",
                OrderPlaced {
                    order_id: Uuid::now_v7(),
                    items: vec![OrderItem {
                        pizza: "margherita".into(),
                        quantity: (chunk * 100 + i) as u32 % 5 + 1,
                    }],
                    total_cents: 900,
                },
            );
            outbox.enqueue_to(&mut tx, &fixture.topic, &event).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    fixture.spawn_relay(Duration::from_millis(10));
    let published = format!(
        "select count(*) from {} where published_at is not null",
        fixture.table("outbox")
    );
    let relay_time = wait_until(&fixture.pool, published, EVENTS as i64).await;

    fixture.spawn_consumer(
        "bench",
        config.topology,
        Effect {
            sql: format!("insert into {effects} (id) values ($1)"),
        },
    );
    let consumer_time = wait_until(
        &fixture.pool,
        format!("select count(*) from {effects}"),
        EVENTS as i64,
    )
    .await;
    fixture.stop().await;

    let guard = tokio::task::spawn_blocking(move || {
        guard.flush();
        guard
    })
    .await
    .unwrap();
    let stats = guard.span_stats();
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    eprintln!("  spans: {stats:?}");
    (
        EVENTS as f64 / relay_time.as_secs_f64(),
        EVENTS as f64 / consumer_time.as_secs_f64(),
    )
}

fn child(traced: bool) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, "1")
        .env("OTEL_SDK_DISABLED", if traced { "false" } else { "true" })
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .env("PIZZA_TRACE_TOPOLOGY", Topology::Continuous.as_str())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the measurement child");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "measurement child failed");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    // The figures are the child's last line: its log lines (stdout is the services' log stream) may
    // come before them.
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let mut figures = line.split_whitespace().map(|f| {
        f.parse::<f64>()
            .unwrap_or_else(|_| panic!("a figure in {line:?}; the child printed:\n{stdout}"))
    });
    (
        figures.next().expect("relay figure"),
        figures.next().expect("consumer figure"),
    )
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (relay, consumer) = runtime.block_on(measure());
        println!("{relay} {consumer}");
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --all-targets` runs benches as tests: this one needs the stack and minutes.
        println!("throughput: run with `make bench` (needs the native stack)");
        return;
    }
    let mut untraced = Vec::new();
    let mut traced = Vec::new();
    for round in 1..=2 {
        eprintln!("round {round}: untraced");
        untraced.push(child(false));
        eprintln!("round {round}: traced");
        traced.push(child(true));
    }
    let mean =
        |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| v.iter().map(pick).sum::<f64>() / v.len() as f64;
    let (ur, uc) = (mean(&untraced, |x| x.0), mean(&untraced, |x| x.1));
    let (tr, tc) = (mean(&traced, |x| x.0), mean(&traced, |x| x.1));
    println!("pizza-messaging throughput, {EVENTS} events per phase, mean of 2 alternating rounds");
    println!("| phase    | OTEL_SDK_DISABLED=true | traced (every span) | traced / untraced |");
    println!("|----------|------------------------|---------------------|-------------------|");
    println!(
        "| relay    | {ur:>16.0} ev/s | {tr:>13.0} ev/s | {:>17.2} |",
        tr / ur
    );
    println!(
        "| consumer | {uc:>16.0} ev/s | {tc:>13.0} ev/s | {:>17.2} |",
        tc / uc
    );
}
