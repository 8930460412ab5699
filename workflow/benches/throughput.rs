//! Throughput of the engine against the real PostgreSQL, beside the database's own speed.
//!
//! `make bench` (or `cargo bench -p pizza-workflow --bench throughput`). For 1, 2 and 4 workers (one
//! execution at a time each), it starts a batch of runs of the 3-step demo workflow, then times the
//! workers from start to the last run completed, and prints runs/s and steps/s. In the same process
//! and against the same PostgreSQL it times raw single-row transactions (`begin; insert; commit`) from
//! one and from four connections, and prints the workflow's steps/s as a ratio of those: the price of
//! durability, since every step is recorded before and after it runs, in its own transactions.
//!
//! Nothing is asserted: speed depends on the machine. Spans are not exported (no subscriber), so this
//! measures the engine and the database, not the telemetry pipeline. `cargo test --all-targets`
//! builds this and runs it without `--bench`, when it only says how to run it.

#![allow(clippy::print_stdout)] // a benchmark's report is its output

use std::sync::Arc;
use std::time::{Duration, Instant};

use pizza_testkit::Stack;
use pizza_workflow::{Engine, StartOptions, WorkerConfig, demo};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor as _, PgPool};
use tokio::sync::watch;

const RUNS: usize = 400;
const RAW_TRANSACTIONS: usize = 2_000;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: a benchmark; run it with `make bench` (cargo bench -p pizza-workflow)");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let admin_url = Stack::from_env().database_url;
    let name = format!("pizza_workflow_bench_{}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await?;
    // The name is made here from the process id, never from input, so formatting it into SQL is safe.
    sqlx::raw_sql(AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await?;
    let (server, _) = admin_url.rsplit_once('/').expect("a database URL with a path");
    let url = format!("{server}/{name}");
    let result = measure(&url).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&admin)
    .await?;
    result
}

async fn measure(url: &str) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new().max_connections(16).connect(url).await?;
    pizza_workflow::migrate(&pool).await?;
    demo::migrate(&pool).await?;
    pool.execute("create table raw_bench (id bigserial primary key, v bigint not null)")
        .await?;

    let raw_1 = raw_transactions(&pool, 1).await?;
    let raw_4 = raw_transactions(&pool, 4).await?;
    println!("PostgreSQL, raw single-row transactions: {raw_1:.0}/s from 1 connection, {raw_4:.0}/s from 4");
    println!();
    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>10} {:>14} {:>14}",
        "workers", "runs", "seconds", "runs/s", "steps/s", "steps/raw(1)", "steps/raw(4)"
    );
    for workers in [1usize, 2, 4] {
        let (seconds, runs_per_s, steps_per_s) = workflow_throughput(&pool, workers).await?;
        println!(
            "{workers:>7} {RUNS:>6} {seconds:>9.2} {runs_per_s:>9.1} {steps_per_s:>10.1} {:>14.3} {:>14.3}",
            steps_per_s / raw_1,
            steps_per_s / raw_4,
        );
    }
    println!();
    println!("A step costs two transactions (record the attempt, record its result) plus the fence check in");
    println!(
        "each; a run adds its claim and its completion. The ratio is the fraction of the database's raw"
    );
    println!("commit rate that ends up as workflow steps.");
    pool.close().await;
    Ok(())
}

/// Single-row transactions per second from `clients` connections at once.
async fn raw_transactions(pool: &PgPool, clients: usize) -> anyhow::Result<f64> {
    let per_client = RAW_TRANSACTIONS / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let mut tx = pool.begin().await?;
                sqlx::query("insert into raw_bench (v) values ($1)")
                    .bind((c * per_client + i) as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_client * clients) as f64 / started.elapsed().as_secs_f64())
}

/// Seconds, runs/s and steps/s for `RUNS` runs of the 3-step workflow with `workers` workers.
async fn workflow_throughput(pool: &PgPool, workers: usize) -> anyhow::Result<(f64, f64, f64)> {
    let engine = Engine::builder(pool.clone()).build();
    let mut runs = Vec::with_capacity(RUNS);
    for n in 0..RUNS {
        runs.push(
            engine
                .start(demo::THREE_STEPS, &(n as u64), StartOptions::default())
                .await?,
        );
    }
    let (stop, _) = watch::channel(false);
    let workflows = Arc::new(demo::workflows(pool.clone()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..workers {
        let worker = engine.worker(
            (*workflows).clone(),
            WorkerConfig {
                id: format!("bench-{i}"),
                lease: Duration::from_secs(30),
                poll_interval: Duration::from_millis(10),
                concurrency: 1,
            },
        );
        let mut stopped = stop.subscribe();
        handles.push(tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    loop {
        let left: i64 = sqlx::query_scalar(
            "select count(*) from workflow.runs where workflow_name = $1 and status <> 'completed'",
        )
        .bind(demo::THREE_STEPS)
        .fetch_one(pool)
        .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for h in handles {
        h.await??;
    }
    Ok((seconds, RUNS as f64 / seconds, (RUNS * 3) as f64 / seconds))
}
