//! A durable workflow engine on PostgreSQL, in the spirit of OpenWorkflow and DBOS: PostgreSQL is the
//! only moving part, workflows are plain async Rust, and every run is traced after the project's span
//! model.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use pizza_workflow::{Engine, RetryPolicy, StartOptions, StepError, WorkerConfig, WorkflowError, Workflows};
//!
//! pizza_workflow::migrate(&pool).await?;
//! let workflows = Workflows::new().register("greet", |ctx, name: String| async move {
//!     let greeting: String = ctx
//!         .run("compose", RetryPolicy::default(), |step| async move {
//!             // Side effects here, keyed by step.idempotency_key.
//!             Ok::<_, StepError>(format!("hello {name}"))
//!         })
//!         .await?;
//!     ctx.sleep("pause", Duration::from_secs(5)).await?;
//!     let reply: Option<String> = ctx.wait_for_signal("reply", Duration::from_secs(60)).await?;
//!     Ok::<_, WorkflowError>((greeting, reply))
//! });
//! let engine = Engine::builder(pool).build();
//! let run_id = engine.start("greet", &"Ada", StartOptions::default()).await?;
//! engine.signal(run_id, "reply", &"hi", None).await?;
//! engine.worker(workflows, WorkerConfig::default()).run(std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//! A run is a row. Workers claim due rows with `for update skip locked` (with their recorded steps,
//! in the same statement), hold them under a lease on the database's clock renewed by heartbeats, and
//! execute the workflow function. The function runs from the top in every execution; each step call
//! is matched by position and name against the recorded steps, and returns the recorded result
//! instead of running again (replay). The first unrecorded step runs and is recorded: a step that
//! returns quickly in one statement, attempt and result together; a slow one also as it starts, so a
//! crash inside it is seen (see [`WorkflowContext::run`]). Its result is durable before the next step
//! starts. A sleep, a wait or a retry back-off parks the run: `available_at` is set to when it is due
//! and the execution ends; the row is the timer. A worker that dies loses its lease when it expires,
//! and another worker replays the run and goes on. Each step gets an idempotency key for its side
//! effects, since a step interrupted by a crash runs again.
//!
//! # How workers wake
//! Starts, signals, cancels and a child's end send `NOTIFY` when they commit; every worker listens,
//! and an idle worker sleeps until the earliest timer or lease expiry of its workflows or until a
//! notification, whichever comes first. Polling (`WorkerConfig::poll_interval`, 5 s) is only the
//! safety net for a notification lost while a listening connection was down. An idle worker costs
//! one query pair per wake-up and a listening connection.
//!
//! # Layout
//! - [`core`]: the deterministic core: replay decisions, the retry policy, waits, interrupts, the run
//!   state machine. Pure functions, unit-tested without a database.
//! - [`clock`]: the injectable [`Clock`].
//! - [`context`]: [`WorkflowContext`], the steps workflow code calls.
//! - [`engine`]: [`Engine`] (start, signal, cancel, status, history) and [`Workflows`].
//! - [`worker`]: [`Worker`]: claim, lease, heartbeat, execute, park.
//! - [`store`]: every SQL statement, and [`migrate`].
//! - [`telemetry`]: the spans and metrics, and why they look the way they do.
//! - [`error`]: [`StepError`], [`WorkflowError`], [`Error`].
//! - [`hooks`]: [`Hooks`], where tests stall a worker or crash an execution.
//! - [`labels`]: [`Labels`], what the caller says a run belongs to, stamped on its spans.
//! - [`demo`]: demo workflows for the standalone worker, the crash test and the benchmark.

pub mod clock;
pub mod context;
pub mod core;
pub mod demo;
pub mod engine;
pub mod error;
pub mod hooks;
pub mod labels;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{StepContext, StepTransaction, StepTx, WorkflowContext};
pub use core::{AttemptStatus, RetryPolicy, RunStatus, StepKind};
pub use engine::{Engine, EngineBuilder, RunInfo, Signal, StartOptions, StepRecord, Workflows};
pub use error::{Error, RunError, StepError, WorkflowError};
pub use hooks::{HookAction, HookPoint, Hooks};
pub use labels::Labels;
pub use pizza_notify::Source;
pub use store::migrate;
pub use telemetry::Metrics;
pub use worker::{Worker, WorkerConfig};
