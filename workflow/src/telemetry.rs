//! The engine's spans and metrics, after the span model in the project's TELEMETRY design.
//!
//! | span | kind | parent | links |
//! |---|---|---|---|
//! | `workflow_run.create {name}` | PRODUCER | the caller's current span | |
//! | `workflow.execute {name}` | CONSUMER | `continuous`: the create span; `linked`: none | the create span (`created_by`); what woke it (`woken_by`) |
//! | `workflow.step {name}` | INTERNAL | the execution | |
//! | `workflow.signal.send {name}` | PRODUCER | the sender's current span | the target run's create span |
//! | `workflow.wait {kind}` | INTERNAL | the execution in which the wait resolved | the signal's send span |
//! | `workflow.run {name}` | INTERNAL | the create span | |
//!
//! # Why the create span's context is persisted
//! A run outlives the request that started it, the worker that first executed it, and possibly every
//! process that was alive then. The only thing all its executions share is the row, so the row keeps
//! the `traceparent`/`tracestate` of its create span, and each execution restores it: as the parent in
//! `continuous` (one trace per order) or as a link in `linked` (one trace per execution). Baggage is
//! never stored: it can be large and may carry user data.
//!
//! # Why replayed steps have no span
//! Replay re-runs the workflow function from the top on every execution. A span per replayed step
//! would repeat, in every execution, spans for work that happened once, with made-up timings; a
//! 10-step workflow with 10 executions would show 55 step spans for 10 steps. Each step gets a span
//! for each attempt that really ran; the execution span counts what it replayed in
//! `workflow.replayed_steps` (the rule Temporal, Restate and OpenWorkflow follow too).
//!
//! # Why waits are emitted after the fact
//! A wait (a sleep, a signal, a child) spans executions and often outlives the process that began it:
//! a span opened at its start would be lost with that process, or stay open for hours. So the wait is
//! recorded as data (its start time in the step row) and its span is emitted once, when the wait
//! resolves, with its real start time, as a child of the execution that resumed, linked to the signal
//! that ended it. Likewise `workflow.run` is emitted at the terminal state with the run's real start.
//!
//! The polling, claim and heartbeat queries are not traced (see [`crate::store`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::{pizza, semconv, workflow as wf};
use pizza_telemetry::metrics as names;
use pizza_telemetry::propagation;
use time::OffsetDateTime;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::core::StepKind;
use crate::error::StepError;
use crate::labels::Labels;

/// The instrumentation scope of spans made with the OpenTelemetry API directly.
pub const SCOPE: &str = "pizza-workflow";

/// Link reasons (`pizza.link.reason`).
pub mod link_reason {
    /// From an execution to its run's create span.
    pub const CREATED_BY: &str = "created_by";
    /// From an execution to what woke it.
    pub const WOKEN_BY: &str = "woken_by";
    /// From a signal's send span to the target run's create span.
    pub const SIGNAL_TARGET: &str = "signal_target";
    /// From a wait to the signal that ended it.
    pub const SIGNAL: &str = "signal";
    /// From a child wait to the child run's create span.
    pub const CHILD: &str = "child";
}

/// The identity every span of a run carries: its id, its workflow and the caller's labels.
#[derive(Debug, Clone)]
pub(crate) struct RunIdentity {
    pub run_id: Uuid,
    pub workflow_name: String,
    pub labels: Labels,
}

impl RunIdentity {
    fn set_on(&self, span: &Span) {
        for kv in self.key_values() {
            span.set_attribute(kv.key, kv.value);
        }
    }

    fn key_values(&self) -> Vec<KeyValue> {
        let mut kv = vec![
            KeyValue::new(wf::RUN_ID, self.run_id.to_string()),
            KeyValue::new(wf::NAME, self.workflow_name.clone()),
        ];
        kv.extend(self.labels.key_values());
        kv
    }
}

/// `workflow_run.create {name}`: PRODUCER, a child of the current span. Its context is what the run
/// stores.
pub(crate) fn create_span(id: &RunIdentity, parent_run_id: Option<Uuid>) -> Span {
    let span = tracing::info_span!(
        target: "pizza_workflow",
        "workflow_run.create",
        otel.name = %format!("workflow_run.create {}", id.workflow_name),
        otel.kind = "producer",
    );
    id.set_on(&span);
    if let Some(parent) = parent_run_id {
        span.set_attribute(wf::PARENT_RUN_ID, parent.to_string());
    }
    span
}

/// The carrier of a span, for storing.
pub(crate) fn carrier_of(span: &Span) -> Vec<(String, String)> {
    propagation::context_to_carrier(&span.context())
}

/// `workflow.execute {name}`: CONSUMER, drawn from the create span per `topology`, linked to the cause
/// that woke it. Parent and links are set before the span starts, so samplers see them.
pub(crate) fn execute_span(
    id: &RunIdentity,
    create: &[(String, String)],
    woken_by: &[(String, String)],
    topology: Topology,
    execution: i32,
    worker_id: &str,
) -> Span {
    let span = tracing::info_span!(
        target: "pizza_workflow",
        "workflow.execute",
        otel.name = %format!("workflow.execute {}", id.workflow_name),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let create_cx = propagation::carrier_to_context(create);
    pizza_telemetry::kafka::link_to_cause(&span, &create_cx, topology, link_reason::CREATED_BY);
    let create_sc = create_cx.span().span_context().clone();
    let woken_sc = propagation::carrier_to_context(woken_by)
        .span()
        .span_context()
        .clone();
    if woken_sc.is_valid() && woken_sc.span_id() != create_sc.span_id() {
        span.add_link_with_attributes(
            woken_sc,
            vec![KeyValue::new(pizza::LINK_REASON, link_reason::WOKEN_BY)],
        );
    }
    id.set_on(&span);
    span.set_attribute(wf::EXECUTION_NUMBER, i64::from(execution));
    span.set_attribute(wf::WORKER_ID, worker_id.to_owned());
    span
}

/// `workflow.step {name}`: INTERNAL, a child of the current span (the execution).
pub(crate) fn step_span(id: &RunIdentity, name: &str, kind: StepKind, attempt: u32) -> Span {
    let span = tracing::info_span!(
        target: "pizza_workflow",
        "workflow.step",
        otel.name = %format!("workflow.step {name}"),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    id.set_on(&span);
    span.set_attribute(wf::STEP_NAME, name.to_owned());
    span.set_attribute(wf::STEP_KIND, kind.as_str());
    span.set_attribute(wf::STEP_ATTEMPT, i64::from(attempt));
    span
}

/// `workflow.signal.send {name}`: PRODUCER, a child of the current span, linked to the target run's
/// create span (so the run's trace and the sender's trace are joined in either topology).
pub(crate) fn signal_send_span(target: &RunIdentity, target_create: &[(String, String)], name: &str) -> Span {
    let span = tracing::info_span!(
        target: "pizza_workflow",
        "workflow.signal.send",
        otel.name = %format!("workflow.signal.send {name}"),
        otel.kind = "producer",
    );
    let sc = propagation::carrier_to_context(target_create)
        .span()
        .span_context()
        .clone();
    if sc.is_valid() {
        span.add_link_with_attributes(
            sc,
            vec![KeyValue::new(pizza::LINK_REASON, link_reason::SIGNAL_TARGET)],
        );
    }
    target.set_on(&span);
    span.set_attribute(wf::SIGNAL_NAME, name.to_owned());
    span
}

/// Marks a span as failed: status ERROR, `error.type`, and an exception event.
pub(crate) fn record_failure(span: &Span, error_type: &str, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
    span.add_event(
        "exception",
        vec![
            KeyValue::new(semconv::EXCEPTION_TYPE, error_type.to_owned()),
            KeyValue::new(semconv::EXCEPTION_MESSAGE, message.to_owned()),
        ],
    );
}

/// Marks a span as succeeded (status OK).
pub(crate) fn record_ok(span: &Span) {
    span.record("otel.status_code", "OK");
}

/// Marks a step span with the outcome of its attempt.
pub(crate) fn record_step(span: &Span, result: Result<(), &StepError>) {
    match result {
        Ok(()) => record_ok(span),
        Err(e) => record_failure(span, &e.error_type, &e.message),
    }
}

/// A wait that resolved.
#[derive(Debug)]
pub(crate) struct ResolvedWait<'a> {
    pub kind: &'static str,
    pub step_name: &'a str,
    pub started_at: OffsetDateTime,
    pub ended_at: OffsetDateTime,
    pub timed_out: bool,
    pub signal_name: Option<&'a str>,
    pub link: Option<(&'a [(String, String)], &'static str)>,
}

/// Emits `workflow.wait {kind}` with its real start time, as a child of `execution`.
pub(crate) fn emit_wait(execution: &Context, id: &RunIdentity, wait: ResolvedWait<'_>) {
    let tracer = global::tracer(SCOPE);
    let mut attributes = id.key_values();
    attributes.push(KeyValue::new(wf::WAIT_KIND, wait.kind));
    attributes.push(KeyValue::new(wf::WAIT_TIMED_OUT, wait.timed_out));
    attributes.push(KeyValue::new(wf::STEP_NAME, wait.step_name.to_owned()));
    if let Some(signal) = wait.signal_name {
        attributes.push(KeyValue::new(wf::SIGNAL_NAME, signal.to_owned()));
    }
    let links = match wait.link {
        Some((carrier, reason)) => {
            let sc = propagation::carrier_to_context(carrier)
                .span()
                .span_context()
                .clone();
            if sc.is_valid() {
                vec![Link::new(sc, vec![KeyValue::new(pizza::LINK_REASON, reason)], 0)]
            } else {
                vec![]
            }
        }
        None => vec![],
    };
    let span = tracer
        .span_builder(format!("workflow.wait {}", wait.kind))
        .with_kind(SpanKind::Internal)
        .with_start_time(SystemTime::from(wait.started_at))
        .with_attributes(attributes)
        .with_links(links)
        .start_with_context(&tracer, execution);
    let cx = Context::new().with_span(span);
    cx.span().set_status(Status::Ok);
    cx.span()
        .end_with_timestamp(SystemTime::from(wait.ended_at.max(wait.started_at)));
}

/// A run that ended.
#[derive(Debug)]
pub(crate) struct EndedRun<'a> {
    pub status: &'a str,
    pub executions: i32,
    pub created_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
    pub error: Option<(&'a str, &'a str)>,
}

/// Emits `workflow.run {name}`, the run's summary, as a child of its create span, from the run's
/// creation to its end.
pub(crate) fn emit_run_summary(create: &[(String, String)], id: &RunIdentity, run: EndedRun<'_>) {
    let tracer = global::tracer(SCOPE);
    let parent = propagation::carrier_to_context(create);
    let mut attributes = id.key_values();
    attributes.push(KeyValue::new(wf::RUN_STATUS, run.status.to_owned()));
    attributes.push(KeyValue::new(wf::RUN_EXECUTIONS, i64::from(run.executions)));
    if let Some((error_type, _)) = run.error {
        attributes.push(KeyValue::new(semconv::ERROR_TYPE, error_type.to_owned()));
    }
    let span = tracer
        .span_builder(format!("workflow.run {}", id.workflow_name))
        .with_kind(SpanKind::Internal)
        .with_start_time(SystemTime::from(run.created_at))
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    let cx = Context::new().with_span(span);
    match run.error {
        Some((error_type, message)) if run.status != "completed" => {
            cx.span().add_event(
                "exception",
                vec![
                    KeyValue::new(semconv::EXCEPTION_TYPE, error_type.to_owned()),
                    KeyValue::new(semconv::EXCEPTION_MESSAGE, message.to_owned()),
                ],
            );
            cx.span().set_status(Status::error(message.to_owned()));
        }
        _ => cx.span().set_status(Status::Ok),
    }
    cx.span()
        .end_with_timestamp(SystemTime::from(run.finished_at.max(run.created_at)));
}

// ---- metrics ------------------------------------------------------------------------------------------

/// The engine's instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    run_duration: Histogram<f64>,
    step_attempts: Counter<u64>,
    queue_lag: Histogram<f64>,
    active_runs: Arc<AtomicI64>,
}

impl Metrics {
    /// Instruments on `meter`: `workflow.run.duration`, `workflow.step.attempts`,
    /// `workflow.queue.lag` and the observable gauge `workflow.active_runs`.
    pub fn new(meter: &Meter) -> Self {
        let active_runs = Arc::new(AtomicI64::new(0));
        let observed = active_runs.clone();
        let _gauge = meter
            .i64_observable_gauge(names::WORKFLOW_ACTIVE_RUNS)
            .with_description(
                "Runs not yet ended (pending, running or sleeping), as a worker last counted them",
            )
            .with_unit("{run}")
            .with_callback(move |observer| observer.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        Self {
            run_duration: meter
                .f64_histogram(names::WORKFLOW_RUN_DURATION)
                .with_description("From a run's creation to its terminal state")
                .with_unit("s")
                .build(),
            step_attempts: meter
                .u64_counter(names::WORKFLOW_STEP_ATTEMPTS)
                .with_description("Step attempts executed, by outcome")
                .with_unit("{attempt}")
                .build(),
            queue_lag: meter
                .f64_histogram(names::WORKFLOW_QUEUE_LAG)
                .with_description(
                    "How long a runnable run waited past its due time before a worker claimed it",
                )
                .with_unit("s")
                .build(),
            active_runs,
        }
    }

    /// The process-wide instruments on the global meter provider (created once).
    pub fn global() -> Self {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(|| Metrics::new(&global::meter(SCOPE))).clone()
    }

    pub(crate) fn run_ended(&self, workflow: &str, status: &str, seconds: f64) {
        self.run_duration.record(
            seconds.max(0.0),
            &[
                KeyValue::new(wf::NAME, workflow.to_owned()),
                KeyValue::new(wf::RUN_STATUS, status.to_owned()),
            ],
        );
    }

    /// `outcome`: `ok`, `retry` (failed, will be retried), `failed` (failed for good), `abandoned`
    /// (its worker died).
    pub(crate) fn step_attempt(&self, workflow: &str, step: &str, outcome: &'static str) {
        self.step_attempts.add(
            1,
            &[
                KeyValue::new(wf::NAME, workflow.to_owned()),
                KeyValue::new(wf::STEP_NAME, step.to_owned()),
                KeyValue::new(pizza::OUTCOME, outcome),
            ],
        );
    }

    pub(crate) fn claimed(&self, workflow: &str, lag_seconds: f64) {
        self.queue_lag.record(
            lag_seconds.max(0.0),
            &[KeyValue::new(wf::NAME, workflow.to_owned())],
        );
    }

    pub(crate) fn set_active_runs(&self, n: i64) {
        self.active_runs.store(n, Ordering::Relaxed);
    }
}
