//! Process-wide telemetry setup: traces, metrics and logs over OTLP, JSON logs on stdout.
//!
//! [`init`] must run inside a Tokio runtime when the protocol is gRPC (tonic spawns its connection
//! task there). It installs:
//!
//! - the W3C propagators;
//! - a tracer provider with the configured sampler and a bounded, counted export path that holds
//!   and retries what an absent Collector refused ([`crate::export`]); exports run on the SDK's own
//!   thread, so a slow or absent Collector never blocks a request;
//! - a meter provider exporting every `OTEL_METRIC_EXPORT_INTERVAL` (SDK default 60 s);
//! - a logger provider bridging `tracing` events to OTLP logs;
//! - a `tracing` subscriber with three layers, each with its own filter: stdout logs (`RUST_LOG`),
//!   spans to OpenTelemetry, and events to OTLP logs. The last two never see the exporter's own
//!   transport crates (hyper, h2, tonic, tower, reqwest) nor OpenTelemetry's internal logs, so the
//!   exporter does not trace itself into a feedback loop.
//!
//! The returned [`TelemetryGuard`] flushes and shuts everything down when dropped.

use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample,
};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::attributes::{pizza, semconv};
use crate::config::{LogFormat, Protocol, SamplerConfig, TelemetryConfig};
use crate::export::{
    CountingExporter, CountingProcessor, RetryPolicy, RetryingExporter, SpanCounters, SpanStats,
};
use crate::logs::JsonWithTrace;
use crate::sampler::LinkAwareSampler;
use crate::{metrics, propagation};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An OTLP exporter could not be built (bad endpoint, no Tokio runtime for gRPC).
    #[error("building the OTLP {signal} exporter: {source}")]
    Exporter {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// The exporter's error.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global `tracing` subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    /// `RUST_LOG` could not be parsed.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
}

/// Keeps the providers alive; flushes and shuts them down on drop.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    counters: SpanCounters,
}

impl TelemetryGuard {
    /// Span pipeline counters (ended, exported, dropped).
    pub fn span_stats(&self) -> SpanStats {
        self.counters.stats()
    }

    /// Exports whatever is buffered now, blocking until done or timed out.
    pub fn flush(&self) {
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
        }
        if let Some(m) = &self.meter {
            let _ = m.force_flush();
        }
        if let Some(l) = &self.logger {
            let _ = l.force_flush();
        }
    }

    /// Flushes and stops every provider (also done on drop). Blocking: call it off the async workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // A batch held for an absent Collector gets one more attempt, not the whole retry window.
        self.counters.begin_shutdown();
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
        if let Some(l) = self.logger.take() {
            let _ = l.shutdown();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Crates whose spans and events must never reach the OpenTelemetry pipeline: the exporter's own
/// transport, and OpenTelemetry's internal diagnostics.
const EXPORTER_INTERNALS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "tower_http",
    "reqwest",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry-otlp",
    "opentelemetry_http",
];

fn pipeline_filter() -> Targets {
    EXPORTER_INTERNALS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::INFO), |t, target| {
            t.with_target(*target, LevelFilter::OFF)
        })
}

/// Sets up telemetry for the process; see the module docs.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    propagation::install_propagator();
    propagation::set_dropped_edges(config.drop_trace_context.iter().cloned());

    let stdout: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonWithTrace)
            .with_filter(EnvFilter::try_new(&config.log_filter)?)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_filter(EnvFilter::try_new(&config.log_filter)?)
            .boxed(),
    };

    let counters = SpanCounters::default();
    if config.sdk_disabled {
        tracing_subscriber::registry().with(stdout).try_init()?;
        return Ok(TelemetryGuard {
            tracer: None,
            meter: None,
            logger: None,
            counters,
        });
    }

    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new(
            semconv::SERVICE_VERSION,
            config.service_version.clone(),
        ))
        .build();

    let tracer = if config.traces {
        Some(tracer_provider(config, resource.clone(), counters.clone())?)
    } else {
        None
    };
    let meter = if config.metrics {
        Some(meter_provider(config, resource.clone())?)
    } else {
        None
    };
    let logger = if config.logs {
        Some(logger_provider(config, resource)?)
    } else {
        None
    };

    let otel_layer = tracer.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("pizza"))
            .with_error_records_to_exceptions(true)
            // Spans are the product here: keep them to the attributes the conventions define, not
            // the Rust source location, thread and busy/idle timings of the helper that made them.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(pipeline_filter())
    });
    let log_layer = logger.as_ref().map(|provider| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(provider)
            .with_filter(pipeline_filter())
    });
    tracing_subscriber::registry()
        .with(stdout)
        .with(otel_layer)
        .with(log_layer)
        .try_init()?;

    if let Some(provider) = &tracer {
        global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &meter {
        global::set_meter_provider(provider.clone());
        metrics::register_span_counters(counters.clone());
    }
    Ok(TelemetryGuard {
        tracer,
        meter,
        logger,
        counters,
    })
}

fn endpoint(config: &TelemetryConfig, path: &str) -> String {
    match config.protocol {
        Protocol::Grpc => config.endpoint.clone(),
        Protocol::HttpProtobuf => format!("{}/v1/{path}", config.endpoint.trim_end_matches('/')),
    }
}

/// The sampler a configuration names.
pub fn sampler(config: SamplerConfig) -> Box<dyn ShouldSample> {
    match config {
        SamplerConfig::AlwaysOn => Box::new(Sampler::AlwaysOn),
        SamplerConfig::AlwaysOff => Box::new(Sampler::AlwaysOff),
        SamplerConfig::TraceIdRatio(r) => Box::new(Sampler::TraceIdRatioBased(r)),
        SamplerConfig::ParentBasedAlwaysOn => Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
        SamplerConfig::ParentBasedAlwaysOff => Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOff))),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Box::new(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))))
        }
        SamplerConfig::LinkAware(r) => Box::new(LinkAwareSampler::new(r)),
    }
}

fn tracer_provider(
    config: &TelemetryConfig,
    resource: Resource,
    counters: SpanCounters,
) -> Result<SdkTracerProvider, InitError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match config.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(endpoint(config, "traces"))
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(endpoint(config, "traces"))
            .build(),
    }
    .map_err(|source| InitError::Exporter {
        signal: "traces",
        source,
    })?;
    // The SDK's queue gets a batch of slack beyond ours, so the counting processor is the one that
    // drops (and counts); the SDK's own queue never overflows silently. While the retrying exporter
    // holds a batch for an absent Collector, that queue is where new spans wait (see `export`). The
    // SDK allocates its queue's slots up front, so the slack is one batch, not a second queue.
    let capacity = config.max_queued_spans;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(capacity + 512)
        .with_max_export_batch_size(512)
        .with_scheduled_delay(config.schedule_delay)
        .build();
    let policy = RetryPolicy {
        retry_for: config.export_retry_for,
        ..RetryPolicy::default()
    };
    let exporter = RetryingExporter::new(exporter, policy, counters.clone());
    let processor = BatchSpanProcessor::builder(CountingExporter::new(exporter, counters.clone()))
        .with_batch_config(batch)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(config.sampler))
        .with_span_processor(CountingProcessor::new(processor, capacity, counters))
        .build())
}

fn meter_provider(config: &TelemetryConfig, resource: Resource) -> Result<SdkMeterProvider, InitError> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match config.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(endpoint(config, "metrics"))
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(endpoint(config, "metrics"))
            .build(),
    }
    .map_err(|source| InitError::Exporter {
        signal: "metrics",
        source,
    })?;
    Ok(SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(exporter)
        .build())
}

fn logger_provider(config: &TelemetryConfig, resource: Resource) -> Result<SdkLoggerProvider, InitError> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    let exporter = match config.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(endpoint(config, "logs"))
            .build(),
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(endpoint(config, "logs"))
            .build(),
    }
    .map_err(|source| InitError::Exporter {
        signal: "logs",
        source,
    })?;
    Ok(SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// The `pizza.telemetry.span.outcome` values of the span pipeline metric.
pub(crate) fn span_outcomes(stats: SpanStats) -> [(u64, KeyValue); 3] {
    [
        (stats.exported, KeyValue::new(pizza::SPAN_OUTCOME, "exported")),
        (stats.queue_full, KeyValue::new(pizza::SPAN_OUTCOME, "queue_full")),
        (
            stats.export_failed,
            KeyValue::new(pizza::SPAN_OUTCOME, "export_failed"),
        ),
    ]
}
