//! Metric names, in one place, and the telemetry pipeline's own metric.
//!
//! HTTP and messaging names follow the semantic conventions; `workflow.*` follow the workflow proposal;
//! `pizza.*` are ours. Attribute keys on metrics come from [`crate::attributes`] like span attributes,
//! and never carry customer data.

use std::sync::OnceLock;

use opentelemetry::global;
use opentelemetry::metrics::Histogram;

use crate::export::SpanCounters;

/// HTTP server request duration (seconds), stable convention.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
/// HTTP client request duration (seconds), stable convention.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// Time to process one message (seconds), messaging convention.
pub const MESSAGING_PROCESS_DURATION: &str = "messaging.process.duration";
/// Messages sent, messaging convention.
pub const MESSAGING_CLIENT_SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// Messages consumed, messaging convention.
pub const MESSAGING_CLIENT_CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// Outbox rows not yet published.
pub const OUTBOX_BACKLOG: &str = "pizza.outbox.backlog";
/// Outbox rows the relay gave up on after repeated refusals, waiting for an operator.
pub const OUTBOX_DEAD: &str = "pizza.outbox.dead";
/// Failed publish attempts of the outbox relay.
pub const OUTBOX_PUBLISH_FAILURES: &str = "pizza.outbox.publish.failures";
/// Records behind the high watermark, per partition.
pub const CONSUMER_LAG: &str = "pizza.consumer.lag";
/// Messages sent to a dead-letter topic.
pub const DEAD_LETTERED: &str = "pizza.consumer.dead_lettered";
/// Dead letters their dead-letter topic would not take, kept in the service's database instead.
pub const PARKED_DEAD_LETTERS: &str = "pizza.consumer.parked";
/// Workflow run duration (seconds).
pub const WORKFLOW_RUN_DURATION: &str = "workflow.run.duration";
/// Workflow step attempts, by outcome.
pub const WORKFLOW_STEP_ATTEMPTS: &str = "workflow.step.attempts";
/// How late runnable runs are claimed (seconds).
pub const WORKFLOW_QUEUE_LAG: &str = "workflow.queue.lag";
/// Runs not yet terminal.
pub const WORKFLOW_ACTIVE_RUNS: &str = "workflow.active_runs";
/// Orders by terminal state.
pub const ORDERS_TERMINAL: &str = "pizza.orders.terminal";
/// Orders put on hold for an operator: their workflow ended without ending them and the ledger holds
/// a capture with no refund.
pub const ORDERS_ON_HOLD: &str = "pizza.orders.on_hold";
/// The span pipeline: exported, dropped for a full queue, lost in failed exports.
pub const TELEMETRY_SPANS: &str = "pizza.telemetry.spans";

/// Registers [`TELEMETRY_SPANS`] as an observable counter reading `counters`.
pub(crate) fn register_span_counters(counters: SpanCounters) {
    let meter = global::meter("pizza-telemetry");
    let _counter = meter
        .u64_observable_counter(TELEMETRY_SPANS)
        .with_description("Spans leaving the process, by outcome")
        .with_unit("{span}")
        .with_callback(move |observer| {
            for (value, outcome) in crate::init::span_outcomes(counters.stats()) {
                observer.observe(value, &[outcome]);
            }
        })
        .build();
}

/// Bucket boundaries the HTTP semantic conventions recommend for request durations, in seconds.
const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The HTTP duration histograms, made on first use so that they bind to the meter provider
/// [`crate::init()`] installed (a service builds its router after initialising telemetry).
pub(crate) fn http_server_duration() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| http_duration(HTTP_SERVER_REQUEST_DURATION, "Duration of HTTP server requests"))
}

/// See [`http_server_duration`].
pub(crate) fn http_client_duration() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| http_duration(HTTP_CLIENT_REQUEST_DURATION, "Duration of HTTP client requests"))
}

fn http_duration(name: &'static str, description: &'static str) -> Histogram<f64> {
    global::meter("pizza-telemetry")
        .f64_histogram(name)
        .with_description(description)
        .with_unit("s")
        .with_boundaries(HTTP_DURATION_BUCKETS.to_vec())
        .build()
}
