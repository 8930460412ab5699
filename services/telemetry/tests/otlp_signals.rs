//! Logs and metrics, not only traces, leave the process over OTLP and reach the real Collector.
//!
//! The Collector's own metrics count what its OTLP receiver accepted; the test reads them before and
//! after emitting, so it proves receipt, not just a successful send.

mod common;

use std::time::{Duration, Instant};

use pizza_telemetry::TelemetryArgs;
use pizza_testkit::Stack;

/// Sum of a Collector self-metric over all its label sets (0 before the first sample exists).
async fn collector_counter(name: &str) -> f64 {
    let text = reqwest::get(Stack::from_env().collector_metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_reach_the_collector_over_otlp() {
    let stack = Stack::from_env();
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", stack.otlp_grpc_endpoint.clone()),
        ("RUST_LOG", "info".to_owned()),
        ("PIZZA_LOG_FORMAT", "json".to_owned()),
    ];
    let config =
        TelemetryArgs::from_lookup(|k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone()))
            .unwrap()
            .config("pizza-otlp-signals-test", "0.0.0")
            .unwrap();
    let guard = pizza_telemetry::init(&config).unwrap();
    let logs_before = collector_counter("otelcol_receiver_accepted_log_records").await;
    let points_before = collector_counter("otelcol_receiver_accepted_metric_points").await;

    tracing::info_span!("bake").in_scope(|| tracing::info!(pizzas = 3, "oven loaded"));
    let counter = opentelemetry::global::meter("otlp-signals-test")
        .u64_counter("pizza.test.baked")
        .build();
    counter.add(3, &[]);

    let guard = tokio::task::spawn_blocking(move || {
        guard.flush();
        guard
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = collector_counter("otelcol_receiver_accepted_log_records").await - logs_before;
        let points = collector_counter("otelcol_receiver_accepted_metric_points").await - points_before;
        if logs >= 1.0 && points >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Collector accepted {logs} log records and {points} metric points"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
}
