//! `pizza-workflow-worker`: a standalone process running workers for the demo workflows
//! (`pizza_workflow::demo`) against one database, until stopped. The crash test starts it and kills it
//! with SIGKILL in the middle of a step; any number of them can share a database.

use std::time::Duration;

use clap::Parser;
use pizza_workflow::{Engine, WorkerConfig, demo};

/// Settings, from flags or the environment.
#[derive(Debug, Parser)]
struct Args {
    /// The PostgreSQL database holding the `workflow` schema.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The worker's id (`lease_owner`, `workflow.worker.id`).
    #[arg(long, env = "PIZZA_WORKFLOW_WORKER_ID", default_value = "demo-worker")]
    worker_id: String,
    /// Lease length in milliseconds.
    #[arg(long, env = "PIZZA_WORKFLOW_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,
    /// The longest an idle worker sleeps before it looks again, in milliseconds: a safety net, since
    /// it wakes on notifications and at the next due time.
    #[arg(long, env = "PIZZA_WORKFLOW_POLL_MS", default_value_t = 5_000)]
    poll_ms: u64,
    /// Executions at once.
    #[arg(long, env = "PIZZA_WORKFLOW_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Telemetry: the `OTEL_*` and `PIZZA_*` variables of `pizza_telemetry`.
    #[command(flatten)]
    telemetry: pizza_telemetry::TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args
        .telemetry
        .config("pizza-workflow-worker", env!("CARGO_PKG_VERSION"))?;
    let telemetry = pizza_telemetry::init(&config)?;

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&args.database_url)
        .await?;
    pizza_workflow::migrate(&pool).await?;
    demo::migrate(&pool).await?;
    let engine = Engine::builder(pool.clone()).topology(config.topology).build();
    let worker = engine.worker(
        demo::workflows(pool),
        WorkerConfig {
            id: args.worker_id,
            lease: Duration::from_millis(args.lease_ms),
            poll_interval: Duration::from_millis(args.poll_ms),
            concurrency: args.concurrency,
        },
    );
    tracing::info!(topology = %config.topology, "worker started");
    worker
        .run(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
        .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
