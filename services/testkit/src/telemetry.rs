//! `pizza_telemetry::init` once per test process, exporting to the real Collector.
//!
//! A process has one global `tracing` subscriber and one global tracer provider, so every test of a
//! binary shares the first initialisation. The exporters are built inside a runtime that lives as long
//! as the process: tonic runs its connection task on the runtime it was created in, and a
//! `#[tokio::test]` runtime ends with its test, which would leave later tests exporting into nothing.

use std::sync::OnceLock;

use pizza_telemetry::{TelemetryArgs, TelemetryGuard};

use crate::Stack;

struct Telemetry {
    guard: TelemetryGuard,
    _runtime: tokio::runtime::Runtime,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Initialises telemetry for this process on first call (every span sampled, OTLP/gRPC to the stack's
/// Collector, metrics and OTLP logs off, stdout logs at warn); later calls return the same guard.
/// `service` names the resource on the first call only.
pub fn init_once(service: &str) -> &'static TelemetryGuard {
    &TELEMETRY
        .get_or_init(|| {
            let stack = Stack::from_env();
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", stack.otlp_grpc_endpoint.clone()),
                ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
                ("OTEL_METRICS_EXPORTER", "none".to_owned()),
                ("OTEL_LOGS_EXPORTER", "none".to_owned()),
                ("RUST_LOG", "warn".to_owned()),
            ];
            let config = TelemetryArgs::from_lookup(|k| {
                vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())
            })
            .expect("test telemetry config")
            .config(service, "0.0.0")
            .expect("test telemetry config");
            // Built on a thread of its own: this may be called from inside a test's runtime, where
            // blocking on another runtime is not allowed.
            let (guard, runtime) = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("telemetry runtime");
                let guard = runtime
                    .block_on(async { pizza_telemetry::init(&config) })
                    .expect("telemetry init");
                (guard, runtime)
            })
            .join()
            .expect("telemetry init thread");
            Telemetry {
                guard,
                _runtime: runtime,
            }
        })
        .guard
}

/// Exports every buffered span now (blocking work, done off the async workers).
pub async fn flush() {
    if let Some(t) = TELEMETRY.get() {
        tokio::task::spawn_blocking(|| t.guard.flush())
            .await
            .expect("flush task");
    }
}
