//! Demo workflows, shared by the standalone worker (`pizza-workflow-worker`), the crash test and the
//! benchmark, so that a process that is killed and the process that recovers run the same code.
//!
//! Their side effects go to two small tables in the schema `workflow_demo` ([`migrate`]): `marks`,
//! one row per attempt of a step (so a test can see a step in flight, and see it run twice after a
//! crash, with the same idempotency key), and `effects`, a counter per idempotency key (so a test can
//! prove an effect was applied exactly once).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::core::RetryPolicy;
use crate::engine::Workflows;
use crate::error::{StepError, WorkflowError};

/// Three `run` steps that each return at once: the benchmark's unit of work.
pub const THREE_STEPS: &str = "demo-three-steps";
/// `prepare`, then `slow` (whose first attempt marks itself and then blocks for an hour, so a test can
/// kill its worker inside it), then `finish` (an effect counted per run).
pub const CRASH_PROBE: &str = "demo-crash-probe";

/// The input of [`CRASH_PROBE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInput {
    /// A label for the run.
    pub label: String,
}

/// Creates the demo tables (idempotent; they are fixtures, not part of the engine's schema).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "create schema if not exists workflow_demo; \
         create table if not exists workflow_demo.marks ( \
             id bigserial primary key, idempotency_key text not null, attempt integer not null, \
             pid integer not null, marked_at timestamptz not null default now()); \
         create table if not exists workflow_demo.effects ( \
             idempotency_key text primary key, applied integer not null);",
    )
    .execute(pool)
    .await?;
    Ok(())
}

fn db_error(e: sqlx::Error) -> StepError {
    StepError::retryable("database", e.to_string())
}

/// Applies the effect keyed `key` (counting how often it was applied).
async fn apply_effect(pool: &PgPool, key: &str) -> Result<(), StepError> {
    sqlx::query(
        "insert into workflow_demo.effects (idempotency_key, applied) values ($1, 1) \
         on conflict (idempotency_key) do update set applied = workflow_demo.effects.applied + 1",
    )
    .bind(key)
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The demo workflows, their steps writing through `pool`.
pub fn workflows(pool: PgPool) -> Workflows {
    let probe_pool = pool.clone();
    Workflows::new()
        .register(THREE_STEPS, |ctx, n: u64| async move {
            let a: u64 = ctx
                .run("one", RetryPolicy::default(), |_| async move { Ok(n + 1) })
                .await?;
            let b: u64 = ctx
                .run("two", RetryPolicy::default(), |_| async move { Ok(a + 1) })
                .await?;
            let c: u64 = ctx
                .run("three", RetryPolicy::default(), |_| async move { Ok(b + 1) })
                .await?;
            Ok::<_, WorkflowError>(c)
        })
        .register(CRASH_PROBE, move |ctx, input: ProbeInput| {
            let pool = probe_pool.clone();
            async move {
                let policy = RetryPolicy {
                    initial_interval: Duration::from_millis(50),
                    maximum_attempts: 3,
                    ..RetryPolicy::default()
                };
                let label: String = ctx
                    .run("prepare", policy, |_| async move {
                        Ok(format!("{}-prepared", input.label))
                    })
                    .await?;
                let slow_pool = pool.clone();
                ctx.run("slow", policy, |step| async move {
                    sqlx::query(
                        "insert into workflow_demo.marks (idempotency_key, attempt, pid) values ($1, $2, $3)",
                    )
                    .bind(&step.idempotency_key)
                    .bind(step.attempt as i32)
                    .bind(std::process::id() as i32)
                    .execute(&slow_pool)
                    .await
                    .map_err(db_error)?;
                    if step.attempt == 1 {
                        // The crash test kills the process here.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok(())
                })
                .await?;
                let finish_pool = pool.clone();
                ctx.run("finish", policy, |step| async move {
                    apply_effect(&finish_pool, &step.idempotency_key).await
                })
                .await?;
                Ok::<_, WorkflowError>(label)
            }
        })
}
