//! Crash safety with a real process kill: a worker process is killed with SIGKILL in the middle of a
//! step; after its lease expires another worker takes the run over, replays it, runs the step again
//! under the same idempotency key, and completes the run once, in the same trace.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{SERVICE, Workers, eventually, migrated, worker_config};
use opentelemetry::trace::TraceContextExt as _;
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::workflow as wf;
use pizza_testkit::Stack;
use pizza_workflow::demo::{self, CRASH_PROBE, ProbeInput};
use pizza_workflow::{AttemptStatus, Engine, RunStatus, StartOptions};
use sqlx::PgPool;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The URL of the test's own database: `DATABASE_URL` with the database name replaced.
fn database_url(pool: &PgPool) -> String {
    let base = Stack::from_env().database_url;
    let name = pool
        .connect_options()
        .get_database()
        .expect("a test database name")
        .to_owned();
    let (server, _) = base.rsplit_once('/').expect("a database URL with a path");
    format!("{server}/{name}")
}

/// Kills the child process on every path out of the test, so a failing assertion leaves nothing.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[sqlx::test(migrations = false)]
async fn a_run_whose_worker_is_killed_inside_a_step_completes_once_elsewhere_in_the_same_trace(pool: PgPool) {
    common::telemetry();
    migrated(&pool).await;
    demo::migrate(&pool).await.unwrap();
    let engine = Engine::builder(pool.clone())
        .topology(Topology::Continuous)
        .build();

    let order = tracing::info_span!("test.order");
    let trace_id = order.context().span().span_context().trace_id().to_string();
    let input = ProbeInput {
        label: "crash".into(),
    };
    let run = engine
        .start(CRASH_PROBE, &input, StartOptions::default())
        .instrument(order.clone())
        .await
        .unwrap();
    drop(order);

    // A worker in its own process, with a 2 s lease.
    let stack = Stack::from_env();
    let child = Command::new(env!("CARGO_BIN_EXE_pizza-workflow-worker"))
        .env("DATABASE_URL", database_url(&pool))
        .env("PIZZA_WORKFLOW_WORKER_ID", "doomed")
        .env("PIZZA_WORKFLOW_LEASE_MS", "2000")
        .env("PIZZA_WORKFLOW_POLL_MS", "50")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &stack.otlp_grpc_endpoint)
        .env("OTEL_SERVICE_NAME", SERVICE)
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("PIZZA_TRACE_TOPOLOGY", "continuous")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the worker binary starts");
    let mut child = Killed(child);
    let child_pid = child.0.id() as i32;

    // Wait until the `slow` step is in flight in that process (its side effect marked, its attempt
    // recorded as running, which the engine does once a step outlasts `record_start_after`), then
    // kill it: SIGKILL, no clean-up.
    eventually(
        "the slow step in flight in the worker process",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from workflow_demo.marks m, workflow.step_attempts a \
                 where m.pid = $1 and a.step_name = 'slow' and a.status = 'running'",
            )
            .bind(child_pid)
            .fetch_one(&pool)
            .await
            .unwrap();
            (n > 0).then_some(())
        },
    )
    .await;
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    let stuck = engine.status(run).await.unwrap();
    assert_eq!(
        stuck.status,
        RunStatus::Running,
        "the dead worker still holds the lease"
    );
    let in_flight = engine.history(run).await.unwrap();
    assert_eq!(
        in_flight.last().map(|s| (s.step_name.as_str(), s.status)),
        Some(("slow", AttemptStatus::Running))
    );

    // Another worker, in this process, takes the run over once the lease has expired.
    let workers = Workers::start(&engine, &demo::workflows(pool.clone()), 1, |_| {
        worker_config("rescuer")
    });
    let done = engine
        .wait_until_finished(run, Duration::from_secs(30))
        .await
        .unwrap();
    workers.stop().await;

    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(serde_json::json!("crash-prepared")));
    assert_eq!(
        done.executions, 2,
        "the killed execution and the one that finished"
    );
    let steps: Vec<_> = engine
        .history(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_name, s.attempt, s.status))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("prepare".to_owned(), 1, AttemptStatus::Completed),
            ("slow".to_owned(), 1, AttemptStatus::Failed),
            ("slow".to_owned(), 2, AttemptStatus::Completed),
            ("finish".to_owned(), 1, AttemptStatus::Completed),
        ],
        "prepare is replayed, not run again; slow runs again; finish runs once"
    );
    let marks: Vec<(String, i32, i32)> =
        sqlx::query_as("select idempotency_key, attempt, pid from workflow_demo.marks order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        marks.len(),
        2,
        "the interrupted step ran twice (at least once, never lost)"
    );
    assert_eq!(
        marks[0].0, marks[1].0,
        "both attempts carry the same idempotency key"
    );
    assert_eq!((marks[0].2, marks[1].2), (child_pid, std::process::id() as i32));
    let applied: Vec<i32> = sqlx::query_scalar("select applied from workflow_demo.effects")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(applied, vec![1], "the final effect applied exactly once");

    // The trace goes on: the rescuing execution is in the run's trace, a child of its create span.
    common::flush().await;
    let trace = common::jaeger()
        .wait_for_trace(&trace_id, Duration::from_secs(30), |t| {
            t.spans
                .iter()
                .any(|s| s.name == format!("workflow.run {CRASH_PROBE}"))
                && t.spans
                    .iter()
                    .any(|s| s.attr_i64(wf::EXECUTION_NUMBER) == Some(2))
        })
        .await
        .unwrap();
    let create = trace
        .span(&format!("workflow_run.create {CRASH_PROBE}"))
        .expect("the create span");
    let resumed = trace
        .spans
        .iter()
        .find(|s| s.attr_i64(wf::EXECUTION_NUMBER) == Some(2))
        .unwrap();
    assert_eq!(resumed.trace_id, trace_id);
    assert!(resumed.is_child_of(create));
    assert!(resumed.links_to(create));
    assert_eq!(resumed.attr_str(wf::WORKER_ID), Some("rescuer"));
    assert_eq!(
        resumed.attr_i64(wf::REPLAYED_STEPS),
        Some(1),
        "prepare was replayed"
    );
    let retried = trace
        .spans
        .iter()
        .find(|s| s.name == "workflow.step slow" && s.attr_i64(wf::STEP_ATTEMPT) == Some(2))
        .expect("the retried attempt's span");
    assert!(retried.is_child_of(resumed));
    let summary = trace.span(&format!("workflow.run {CRASH_PROBE}")).unwrap();
    assert!(summary.is_child_of(create));
    assert_eq!(summary.attr_i64(wf::RUN_EXECUTIONS), Some(2));
}
