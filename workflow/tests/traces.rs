//! The trace of a workflow read back from the real Jaeger: a retried step, a sleep, a signal wait, a
//! wait that times out and a child workflow, in both topologies. The whole tree is compared, span by
//! span, with the span model of the project's TELEMETRY design.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{SERVICE, Workers, eventually, migrated, worker_config};
use opentelemetry::trace::TraceContextExt as _;
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::{pizza, workflow as wf};
use pizza_testkit::conventions::{Registry, unknown_attributes};
use pizza_testkit::{Settle, Span, SpanGraph, SpanKind, SpanSearch, Trace};
use pizza_workflow::{
    AttemptStatus, Engine, Labels, RetryPolicy, RunStatus, StartOptions, StepError, WorkerConfig,
    WorkflowError, Workflows,
};
use sqlx::PgPool;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

const ORDER: &str = "order-flow";
const CHILD: &str = "child-flow";

fn workflows() -> Workflows {
    Workflows::new()
        .register(ORDER, |ctx, _: ()| async move {
            let retry = RetryPolicy {
                initial_interval: Duration::from_millis(50),
                maximum_attempts: 3,
                ..RetryPolicy::default()
            };
            ctx.run("charge", retry, |step| async move {
                if step.attempt == 1 {
                    Err(StepError::retryable("http_503", "payment service busy"))
                } else {
                    Ok(())
                }
            })
            .await?;
            ctx.sleep("cool-down", Duration::from_millis(300)).await?;
            let ready: Option<String> = ctx
                .wait_for_signal("kitchen-ready", Duration::from_secs(30))
                .await?;
            let never: Option<String> = ctx.wait_for_signal("never", Duration::from_millis(200)).await?;
            let baked: u64 = ctx.run_workflow(CHILD, &21u64, Duration::from_secs(30)).await?;
            Ok::<_, WorkflowError>((ready, never, baked))
        })
        .register(CHILD, |ctx, n: u64| async move {
            ctx.run("bake", RetryPolicy::no_retry(), |_| async move { Ok(n * 2) })
                .await
        })
}

fn trace_id_of(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

/// A readable name for a span: executions with their number, steps with their attempt, waits with
/// their step.
fn label(span: &Span) -> String {
    let name = span.name.as_str();
    if name.starts_with("workflow.execute") {
        format!("{name} #{}", span.attr_i64(wf::EXECUTION_NUMBER).unwrap_or(0))
    } else if name.starts_with("workflow.step") {
        format!("{name} @{}", span.attr_i64(wf::STEP_ATTEMPT).unwrap_or(0))
    } else if name.starts_with("workflow.wait") {
        format!("{name} ({})", span.attr_str(wf::STEP_NAME).unwrap_or("?"))
    } else {
        name.to_owned()
    }
}

/// Every span as `label <- parent | link[reason], ...`, sorted.
fn shape(spans: &[Span]) -> Vec<String> {
    SpanGraph::new(spans).shape(label)
}

fn expected(topology: Topology) -> Vec<String> {
    let create = format!("workflow_run.create {ORDER}");
    let exec = |n: u32| format!("workflow.execute {ORDER} #{n}");
    let exec_parent = match topology {
        Topology::Continuous => create.clone(),
        Topology::Linked => "-".to_owned(),
    };
    let child_create = format!("workflow_run.create {CHILD}");
    let child_exec = format!("workflow.execute {CHILD} #1");
    let child_exec_parent = match topology {
        Topology::Continuous => child_create.clone(),
        Topology::Linked => "-".to_owned(),
    };
    let send = "workflow.signal.send kitchen-ready".to_owned();
    let woken = |by: &str| {
        let mut links = [format!("{create}[created_by]"), format!("{by}[woken_by]")];
        links.sort();
        links.join(", ")
    };
    let mut lines = vec![
        "test.order <- -".to_owned(),
        format!("{create} <- test.order"),
        format!("{} <- {exec_parent} | {create}[created_by]", exec(1)),
        format!("workflow.step charge @1 <- {}", exec(1)),
        format!("{} <- {exec_parent} | {}", exec(2), woken(&exec(1))),
        format!("workflow.step charge @2 <- {}", exec(2)),
        format!("{} <- {exec_parent} | {}", exec(3), woken(&exec(2))),
        format!("workflow.wait sleep (cool-down) <- {}", exec(3)),
        "test.kitchen <- -".to_owned(),
        format!("{send} <- test.kitchen | {create}[signal_target]"),
        format!("{} <- {exec_parent} | {}", exec(4), woken(&send)),
        format!(
            "workflow.wait signal (kitchen-ready) <- {} | {send}[signal]",
            exec(4)
        ),
        format!("{} <- {exec_parent} | {}", exec(5), woken(&exec(4))),
        format!("workflow.wait signal (never) <- {}", exec(5)),
        format!("workflow.step {CHILD} @1 <- {}", exec(5)),
        format!("{child_create} <- workflow.step {CHILD} @1"),
        format!("{child_exec} <- {child_exec_parent} | {child_create}[created_by]"),
        format!("workflow.step bake @1 <- {child_exec}"),
        format!("workflow.run {CHILD} <- {child_create}"),
        format!("{} <- {exec_parent} | {}", exec(6), woken(&child_exec)),
        format!(
            "workflow.wait child ({CHILD}) <- {} | {child_create}[child]",
            exec(6)
        ),
        format!("workflow.run {ORDER} <- {create}"),
    ];
    lines.sort();
    lines
}

/// Reads every span of the two runs and of the two test traces, waiting until `count` have arrived.
async fn read_spans(known_traces: &[String], runs: &[Uuid], count: usize) -> Vec<Span> {
    common::flush().await;
    let search = runs
        .iter()
        .skip(1)
        .fold(
            SpanSearch::attribute(SERVICE, wf::RUN_ID, &runs[0].to_string()),
            |s, run| s.or_value(&run.to_string()),
        )
        .with_traces(known_traces.iter().cloned());
    let settle = Settle {
        limit: Duration::from_secs(30),
        quiet: Duration::ZERO,
        poll: Duration::from_millis(250),
    };
    match common::jaeger()
        .wait_for_spans(&search, settle, |spans| spans.len() >= count)
        .await
    {
        Ok(found) => found.spans,
        Err(pizza_testkit::JaegerError::NotReady { found, .. }) => {
            panic!("only {} of {count} spans reached Jaeger", found.spans.len())
        }
        Err(e) => panic!("reading Jaeger: {e}"),
    }
}

async fn run_and_read_back(pool: PgPool, topology: Topology) {
    common::telemetry();
    migrated(&pool).await;
    let engine = Engine::builder(pool).topology(topology).build();
    // One worker running one execution at a time: the span model below has the parent park in its
    // wait for the child before the child runs (execution 6 is the parent woken by it). With more
    // executions at once, a child that finishes before its parent parks lets the parent carry on in
    // execution 5, which is the engine's right, and another shape.
    let workers = Workers::start(&engine, &workflows(), 1, |_| WorkerConfig {
        concurrency: 1,
        ..worker_config(&format!("{topology}-0"))
    });

    let order_span = tracing::info_span!("test.order");
    let order_trace = trace_id_of(&order_span);
    let order_id = format!("o-{}", Uuid::new_v4().simple());
    let options = StartOptions {
        labels: Labels::new().with(pizza::ORDER_ID, order_id.clone()),
        ..StartOptions::default()
    };
    let run = engine
        .start(ORDER, &(), options)
        .instrument(order_span.clone())
        .await
        .unwrap();
    drop(order_span);

    // Signal only once the run is parked in the wait, so that the signal is what wakes it.
    eventually(
        "the run parked in its signal wait",
        Duration::from_secs(20),
        || async {
            let parked = engine.status(run).await.unwrap().status == RunStatus::Sleeping;
            let history = engine.history(run).await.unwrap();
            let waiting = history
                .iter()
                .any(|s| s.step_name == "kitchen-ready" && s.status == AttemptStatus::Waiting);
            (parked && waiting).then_some(())
        },
    )
    .await;
    let kitchen_span = tracing::info_span!("test.kitchen");
    let kitchen_trace = trace_id_of(&kitchen_span);
    engine
        .signal(run, "kitchen-ready", &"pizza 1", None)
        .instrument(kitchen_span.clone())
        .await
        .unwrap();
    drop(kitchen_span);

    let done = engine
        .wait_until_finished(run, Duration::from_secs(30))
        .await
        .unwrap();
    let child = engine
        .history(run)
        .await
        .unwrap()
        .iter()
        .find_map(|s| s.child_run_id)
        .unwrap();
    engine
        .wait_until_finished(child, Duration::from_secs(30))
        .await
        .unwrap();
    workers.stop().await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(serde_json::json!(["pizza 1", null, 42])));
    assert_eq!(done.executions, 6);

    let want = expected(topology);
    let spans = read_spans(
        &[order_trace.clone(), kitchen_trace.clone()],
        &[run, child],
        want.len(),
    )
    .await;
    let trace = Trace { spans: spans.clone() };
    assert_eq!(
        shape(&spans),
        want,
        "{topology}: the tree differs from the span model"
    );

    // Traces: one per order in `continuous` (plus the kitchen's), one per execution in `linked`.
    let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    match topology {
        Topology::Continuous => {
            assert_eq!(
                traces,
                BTreeSet::from([order_trace.as_str(), kitchen_trace.as_str()])
            );
            assert_eq!(
                done.traceparent.as_deref().map(|tp| &tp[3..35]),
                Some(order_trace.as_str())
            );
        }
        Topology::Linked => assert_eq!(traces.len(), 2 + 6 + 1, "the order, the kitchen, 7 executions"),
    }

    // Kinds, statuses and attributes.
    let by_label = |l: &str| {
        spans
            .iter()
            .find(|s| label(s) == l)
            .unwrap_or_else(|| panic!("{l}"))
    };
    for span in spans.iter().filter(|s| s.name.starts_with("workflow")) {
        let kind = match span.name.split(' ').next().unwrap() {
            "workflow_run.create" | "workflow.signal.send" => SpanKind::Producer,
            "workflow.execute" => SpanKind::Consumer,
            _ => SpanKind::Internal,
        };
        assert_eq!(span.kind, kind, "{}", span.name);
        assert_eq!(
            span.attr_str(pizza::ORDER_ID),
            Some(order_id.as_str()),
            "{}",
            span.name
        );
        assert!(span.attr_str(wf::RUN_ID).is_some(), "{}", span.name);
    }
    let failed = by_label("workflow.step charge @1");
    assert!(failed.is_error());
    assert_eq!(failed.attr_str("error.type"), Some("http_503"));
    assert!(
        failed.events.iter().any(|e| e.name == "exception"),
        "an exception event on the failed attempt"
    );
    assert!(!by_label("workflow.step charge @2").is_error());
    let replayed: Vec<i64> = (1..=6)
        .map(|n| {
            by_label(&format!("workflow.execute {ORDER} #{n}"))
                .attr_i64(wf::REPLAYED_STEPS)
                .unwrap()
        })
        .collect();
    assert_eq!(
        replayed,
        vec![0, 0, 1, 2, 3, 4],
        "replayed steps are counted, never traced"
    );
    let exec1 = by_label(&format!("workflow.execute {ORDER} #1"));
    assert_eq!(exec1.attributes[wf::REPLAY], serde_json::json!(false));
    assert_eq!(exec1.attr_str(pizza::TRACE_TOPOLOGY), Some(topology.as_str()));
    let wait = by_label("workflow.wait signal (kitchen-ready)");
    let exec4 = by_label(&format!("workflow.execute {ORDER} #4"));
    assert!(
        wait.start_unix_nano < exec4.start_unix_nano,
        "the wait keeps its real start, before its execution"
    );
    assert_eq!(wait.attributes[wf::WAIT_TIMED_OUT], serde_json::json!(false));
    assert_eq!(
        by_label("workflow.wait signal (never)").attributes[wf::WAIT_TIMED_OUT],
        serde_json::json!(true)
    );
    let summary = by_label(&format!("workflow.run {ORDER}"));
    assert_eq!(summary.attr_str(wf::RUN_STATUS), Some("completed"));
    assert_eq!(summary.attr_i64(wf::RUN_EXECUTIONS), Some(6));
    assert!(summary.start_unix_nano <= exec1.start_unix_nano);
    assert!(summary.end_unix_nano >= by_label(&format!("workflow.execute {ORDER} #6")).start_unix_nano);

    let registry = Registry::load().unwrap();
    assert_eq!(unknown_attributes(&trace, &registry), Vec::<String>::new());
}

#[sqlx::test(migrations = false)]
async fn in_continuous_topology_the_whole_workflow_is_one_trace_shaped_as_the_span_model_says(pool: PgPool) {
    run_and_read_back(pool, Topology::Continuous).await;
}

#[sqlx::test(migrations = false)]
async fn in_linked_topology_each_execution_is_its_own_trace_joined_by_links_as_the_span_model_says(
    pool: PgPool,
) {
    run_and_read_back(pool, Topology::Linked).await;
}
