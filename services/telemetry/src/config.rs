//! Telemetry settings: the standard `OTEL_*` environment variables plus the platform's own `PIZZA_*`
//! switches, read by `clap` as [`TelemetryArgs`] (every service flattens it into its own settings,
//! so `--help` lists them and a deployment check can see which variables a service reads), and
//! resolved into the [`TelemetryConfig`] that [`crate::init()`] takes.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `true` turns every signal off (no exporter, no-op providers) | `false` |
//! | `OTEL_SERVICE_NAME` | `service.name` | the service's own name |
//! | `OTEL_RESOURCE_ATTRIBUTES` | extra resource attributes, `k=v,k=v` (read by the SDK itself) | none |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the Collector | `http://127.0.0.1:4317` (grpc), `http://127.0.0.1:4318` (http) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc` or `http/protobuf` | `grpc` |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | see [`SamplerConfig`] | `parentbased_always_on` |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER` | `otlp` or `none` | `otlp` |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | spans waiting for export before new ones are dropped (and counted): the hold buffer for a Collector outage | 16384 |
//! | `OTEL_BSP_SCHEDULE_DELAY` | ms an ended span may wait before its batch is exported: what a killed process loses | 500 |
//! | `PIZZA_SPAN_EXPORT_RETRY_SECONDS` | how long a batch the Collector refused is retried before it is dropped (and counted) | 300 |
//! | other `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL` | read by the SDK itself | SDK defaults |
//! | `PIZZA_TRACE_TOPOLOGY` | `continuous` or `linked`, see [`Topology`] | `continuous` |
//! | `PIZZA_TRUST_INBOUND_TRACEPARENT` | whether an edge HTTP server continues a caller's trace | `true` |
//! | `PIZZA_DROP_TRACE_CONTEXT` | comma-separated edges whose context is dropped on purpose | none |
//! | `PIZZA_LOG_FORMAT` | `json` (one object a line, with `trace_id`/`span_id`) or `text` | `json` |
//! | `PIZZA_SPAN_STATS_FILE` | where a process writes its span counters as JSON when it stops gracefully | none |
//! | `RUST_LOG` | log filter | `info` |
//!
//! The span defaults are sized for the bound the README states: a Collector outage of 60 s at 4
//! orders/s loses no span (about 40 spans per order in the busiest service, so 9,600 spans held of
//! 16,384, a few kilobytes each at most), and a `kill -9` loses at most the spans that ended in the
//! last half second plus those not yet ended. The SDK's own defaults (2,048 spans, 5 s, no retry
//! beyond 3.5 s) lose most of a 20 s outage and five seconds of spans at every crash.
//!
//! As the OpenTelemetry SDKs read their variables, a value is trimmed and a variable set to nothing
//! counts as not set; booleans accept `true`/`false`/`1`/`0` in any case. A value outside its domain
//! stops the process at start, with the variable named.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args as _, FromArgMatches as _};

/// How asynchronous edges (Kafka, workflow executions) are drawn.
///
/// Links are added at span creation in both modes, so a sampler sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// The whole order is one trace: a consumer's `process` span is a child of the producer's `send`
    /// span and also links to it. Best for demos: one trace id shows everything.
    #[default]
    Continuous,
    /// OpenTelemetry messaging conventions' default: a consumer starts a new trace and links to the
    /// producer. Traces stay small; the order is reassembled by links and `pizza.order.id`.
    Linked,
}

impl Topology {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Continuous => "continuous",
            Topology::Linked => "linked",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topology {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "continuous" => Ok(Topology::Continuous),
            "linked" => Ok(Topology::Linked),
            other => Err(ConfigError::Invalid {
                name: "PIZZA_TRACE_TOPOLOGY",
                value: other.to_owned(),
                expected: "continuous or linked",
            }),
        }
    }
}

/// Which sampler the tracer provider uses (`OTEL_TRACES_SAMPLER` and `_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`: the trace id decides, ignoring the parent.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the OpenTelemetry default).
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: the stock head sampler that loses linked traces.
    ParentBasedTraceIdRatio(f64),
    /// `pizza_linkaware`: sample when the parent or any link is sampled, else the ratio. See
    /// [`crate::sampler::LinkAwareSampler`].
    LinkAware(f64),
}

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The variable holds a value outside its domain.
    #[error("{name}={value:?} is not valid; expected {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
        /// What it may hold.
        expected: &'static str,
    },
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Log line format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with `trace_id` and `span_id` (for machines and log pipelines).
    Json,
    /// Human-readable lines (for a terminal).
    Text,
}

impl FromStr for Protocol {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(ConfigError::Invalid {
                name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: other.to_owned(),
                expected: "grpc or http/protobuf",
            }),
        }
    }
}

impl FromStr for LogFormat {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(ConfigError::Invalid {
                name: "PIZZA_LOG_FORMAT",
                value: other.to_owned(),
                expected: "json or text",
            }),
        }
    }
}

/// The telemetry settings of a process, from flags or the environment (see the module docs). Every
/// service flattens them into its own settings (`#[command(flatten)]`); [`TelemetryArgs::config`]
/// resolves them for [`crate::init()`].
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TelemetryArgs {
    /// `true` turns every signal off: no exporter, no-op providers, stdout logs only.
    #[arg(long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", default_value_t = false,
          action = clap::ArgAction::Set, value_name = "BOOL", value_parser = flag("OTEL_SDK_DISABLED", false))]
    pub sdk_disabled: bool,
    /// `service.name` (the service's own name when unset).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME", value_parser = text)]
    pub service_name: Option<String>,
    /// The Collector's OTLP endpoint (port 4317 for grpc, 4318 for http/protobuf on 127.0.0.1 when
    /// unset).
    #[arg(long = "otel-exporter-otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = text)]
    pub endpoint: Option<String>,
    /// The OTLP transport: grpc or http/protobuf.
    #[arg(long = "otel-exporter-otlp-protocol", env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc",
          value_parser = parsed::<Protocol>(Protocol::Grpc))]
    pub protocol: Protocol,
    /// The head sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio or pizza_linkaware.
    #[arg(long = "otel-traces-sampler", env = "OTEL_TRACES_SAMPLER", value_parser = text)]
    pub traces_sampler: Option<String>,
    /// The ratio of the ratio samplers (0 to 1; 1 when unset).
    #[arg(long = "otel-traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", value_parser = text)]
    pub traces_sampler_arg: Option<String>,
    /// Whether traces are exported: otlp or none.
    #[arg(long = "otel-traces-exporter", env = "OTEL_TRACES_EXPORTER", default_value = "otlp",
          action = clap::ArgAction::Set, value_name = "EXPORTER", value_parser = exporter("OTEL_TRACES_EXPORTER"))]
    pub traces: bool,
    /// Whether metrics are exported: otlp or none.
    #[arg(long = "otel-metrics-exporter", env = "OTEL_METRICS_EXPORTER", default_value = "otlp",
          action = clap::ArgAction::Set, value_name = "EXPORTER", value_parser = exporter("OTEL_METRICS_EXPORTER"))]
    pub metrics: bool,
    /// Whether logs are exported over OTLP (stdout logging is always on): otlp or none.
    #[arg(long = "otel-logs-exporter", env = "OTEL_LOGS_EXPORTER", default_value = "otlp",
          action = clap::ArgAction::Set, value_name = "EXPORTER", value_parser = exporter("OTEL_LOGS_EXPORTER"))]
    pub logs: bool,
    /// Spans that may wait for export before new ones are dropped and counted: the hold buffer for
    /// a Collector outage.
    #[arg(long = "otel-bsp-max-queue-size", env = "OTEL_BSP_MAX_QUEUE_SIZE", default_value_t = 16_384,
          value_parser = positive("OTEL_BSP_MAX_QUEUE_SIZE", 16_384))]
    pub max_queued_spans: usize,
    /// Milliseconds an ended span may wait before its batch is exported: what a killed process loses.
    #[arg(long = "otel-bsp-schedule-delay", env = "OTEL_BSP_SCHEDULE_DELAY", default_value_t = 500,
          value_parser = positive("OTEL_BSP_SCHEDULE_DELAY", 500))]
    pub schedule_delay_ms: usize,
    /// Seconds a batch the Collector refused is retried before it is dropped and counted.
    #[arg(long = "span-export-retry-seconds", env = "PIZZA_SPAN_EXPORT_RETRY_SECONDS", default_value_t = 300,
          value_parser = positive("PIZZA_SPAN_EXPORT_RETRY_SECONDS", 300))]
    pub export_retry_seconds: usize,
    /// How asynchronous edges are drawn: continuous or linked.
    #[arg(long = "trace-topology", env = "PIZZA_TRACE_TOPOLOGY", default_value = "continuous",
          value_parser = parsed::<Topology>(Topology::Continuous))]
    pub topology: Topology,
    /// Whether a service at the edge continues an inbound `traceparent`; when not, it starts a new
    /// trace and links the inbound context instead.
    #[arg(long = "trust-inbound-traceparent", env = "PIZZA_TRUST_INBOUND_TRACEPARENT", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL",
          value_parser = flag("PIZZA_TRUST_INBOUND_TRACEPARENT", true))]
    pub trust_inbound_traceparent: bool,
    /// Edges whose trace context is dropped on purpose (`kafka:<topic>`, `http:<peer>`), comma
    /// separated: the broken-trace demonstration.
    #[arg(long = "drop-trace-context", env = "PIZZA_DROP_TRACE_CONTEXT", value_delimiter = ',',
          value_parser = text)]
    pub drop_trace_context: Vec<String>,
    /// Stdout log format: json or text.
    #[arg(long = "log-format", env = "PIZZA_LOG_FORMAT", default_value = "json",
          value_parser = parsed::<LogFormat>(LogFormat::Json))]
    pub log_format: LogFormat,
    /// `RUST_LOG`-style log filter.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info", value_parser = text_or("info"))]
    pub log_filter: String,
    /// Where the process writes its span pipeline's counters (ended, exported, dropped) as JSON when
    /// it stops gracefully: how the load tester's benchmark learns how many spans were dropped.
    /// Blank is unset, as everywhere; read it through [`TelemetryArgs::span_stats_file`].
    #[arg(long = "span-stats-file", env = "PIZZA_SPAN_STATS_FILE", value_parser = path)]
    pub span_stats_file: Option<PathBuf>,
}

impl Default for TelemetryArgs {
    /// The defaults as declared above, whatever the process environment holds.
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the declared defaults parse")
    }
}

impl TelemetryArgs {
    /// Reads the process environment alone (for a program without a command line of its own).
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::parse(Self::bare_command(), Vec::new())
    }

    /// Reads the variables `lookup` returns and nothing of the process environment: for tests and
    /// tools that choose the variables themselves. Each variable is handed to its flag, so it is
    /// parsed exactly as the environment would be.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, clap::Error> {
        let command = Self::bare_command();
        let flags = command
            .get_arguments()
            .filter_map(|arg| {
                let name = arg.get_env()?.to_str()?;
                let value = lookup(name)?;
                Some(format!("--{}={value}", arg.get_long()?))
            })
            .collect();
        Self::parse(command.mut_args(|arg| arg.env(None)), flags)
    }

    /// Where to write the span counters at a graceful exit, if anywhere (`PIZZA_SPAN_STATS_FILE`).
    pub fn span_stats_file(&self) -> Option<&Path> {
        self.span_stats_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }

    fn bare_command() -> clap::Command {
        Self::augment_args(clap::Command::new("telemetry").no_binary_name(true))
    }

    fn parse(command: clap::Command, flags: Vec<String>) -> Result<Self, clap::Error> {
        Self::from_arg_matches(&command.try_get_matches_from(flags)?)
    }

    /// The settings of the service `service_name` at `service_version` (the default of
    /// `OTEL_SERVICE_NAME`, and `service.version`). Fails on a sampler the two `OTEL_TRACES_SAMPLER*`
    /// variables do not describe together.
    pub fn config(&self, service_name: &str, service_version: &str) -> Result<TelemetryConfig, ConfigError> {
        Ok(TelemetryConfig {
            service_name: self
                .service_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| service_name.to_owned()),
            service_version: service_version.to_owned(),
            sdk_disabled: self.sdk_disabled,
            endpoint: self
                .endpoint
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| match self.protocol {
                    Protocol::Grpc => "http://127.0.0.1:4317".to_owned(),
                    Protocol::HttpProtobuf => "http://127.0.0.1:4318".to_owned(),
                }),
            protocol: self.protocol,
            sampler: parse_sampler(
                self.traces_sampler.as_deref().filter(|s| !s.is_empty()),
                self.traces_sampler_arg.as_deref().filter(|s| !s.is_empty()),
            )?,
            traces: self.traces,
            metrics: self.metrics,
            logs: self.logs,
            topology: self.topology,
            trust_inbound_traceparent: self.trust_inbound_traceparent,
            drop_trace_context: self
                .drop_trace_context
                .iter()
                .filter(|e| !e.is_empty())
                .cloned()
                .collect(),
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
            max_queued_spans: self.max_queued_spans,
            schedule_delay: Duration::from_millis(self.schedule_delay_ms as u64),
            export_retry_for: Duration::from_secs(self.export_retry_seconds as u64),
        })
    }
}

/// A value as given, trimmed.
fn text(s: &str) -> Result<String, ConfigError> {
    Ok(s.trim().to_owned())
}

/// A path, trimmed; blank is the empty path, which [`TelemetryArgs::span_stats_file`] reads as unset.
fn path(s: &str) -> Result<PathBuf, ConfigError> {
    Ok(PathBuf::from(s.trim()))
}

/// A value as given, trimmed; blank is `default`.
fn text_or(default: &'static str) -> impl Fn(&str) -> Result<String, ConfigError> + Clone + Send + Sync {
    move |s| match s.trim() {
        "" => Ok(default.to_owned()),
        v => Ok(v.to_owned()),
    }
}

/// A value parsed by `T`'s `FromStr`, trimmed; blank is `default`.
fn parsed<T>(default: T) -> impl Fn(&str) -> Result<T, ConfigError> + Clone + Send + Sync + 'static
where
    T: FromStr<Err = ConfigError> + Clone + Send + Sync + 'static,
{
    move |s| match s.trim() {
        "" => Ok(default.clone()),
        v => v.parse(),
    }
}

/// A boolean `name`: `true`/`1` or `false`/`0` in any case; blank is `default`.
fn flag(
    name: &'static str,
    default: bool,
) -> impl Fn(&str) -> Result<bool, ConfigError> + Clone + Send + Sync {
    move |s| match s.trim().to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ConfigError::Invalid {
            name,
            value: other.to_owned(),
            expected: "true or false",
        }),
    }
}

/// Whether the exporter variable `name` turns its signal on: `otlp` (or blank) or `none`.
fn exporter(name: &'static str) -> impl Fn(&str) -> Result<bool, ConfigError> + Clone + Send + Sync {
    move |s| match s.trim() {
        "" | "otlp" => Ok(true),
        "none" => Ok(false),
        other => Err(ConfigError::Invalid {
            name,
            value: other.to_owned(),
            expected: "otlp or none",
        }),
    }
}

/// A positive whole number for the variable `name`; blank is `default`.
fn positive(
    name: &'static str,
    default: usize,
) -> impl Fn(&str) -> Result<usize, ConfigError> + Clone + Send + Sync {
    move |s| match s.trim() {
        "" => Ok(default),
        v => v.parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
            name,
            value: v.to_owned(),
            expected: "a positive whole number",
        }),
    }
}

/// Everything [`crate::init()`] needs, resolved from [`TelemetryArgs`].
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`.
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// `OTEL_SDK_DISABLED`.
    pub sdk_disabled: bool,
    /// Collector endpoint for the chosen protocol.
    pub endpoint: String,
    /// OTLP transport.
    pub protocol: Protocol,
    /// Head sampler.
    pub sampler: SamplerConfig,
    /// Export traces (`OTEL_TRACES_EXPORTER` is not `none`).
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
    /// Export logs over OTLP (stdout logging is always on).
    pub logs: bool,
    /// The async-edge topology.
    pub topology: Topology,
    /// Whether HTTP servers at the edge continue an inbound `traceparent`; when not, they start a
    /// new trace and link the inbound context instead.
    pub trust_inbound_traceparent: bool,
    /// Edges whose trace context is dropped on purpose (the broken-trace demonstration).
    pub drop_trace_context: Vec<String>,
    /// Stdout log format.
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter.
    pub log_filter: String,
    /// Spans that may wait for export before new ones are dropped and counted
    /// (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queued_spans: usize,
    /// How long an ended span may wait before its batch is exported (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// How long a refused batch is retried (`PIZZA_SPAN_EXPORT_RETRY_SECONDS`).
    pub export_retry_for: Duration,
}

/// Parses `OTEL_TRACES_SAMPLER` and its argument, as the OpenTelemetry SDK specification defines them,
/// plus `pizza_linkaware`.
pub fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerConfig, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match arg {
            None => Ok(1.0),
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(ConfigError::Invalid {
                    name: "OTEL_TRACES_SAMPLER_ARG",
                    value: a.to_owned(),
                    expected: "a ratio between 0 and 1",
                }),
            },
        }
    };
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => SamplerConfig::AlwaysOn,
        "always_off" => SamplerConfig::AlwaysOff,
        "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
        "parentbased_always_on" => SamplerConfig::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
        "pizza_linkaware" => SamplerConfig::LinkAware(ratio()?),
        other => {
            return Err(ConfigError::Invalid {
                name: "OTEL_TRACES_SAMPLER",
                value: other.to_owned(),
                expected: "always_on, always_off, traceidratio, parentbased_always_on, \
                           parentbased_always_off, parentbased_traceidratio or pizza_linkaware",
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TelemetryArgs::from_lookup(|k| map.get(k).cloned())
            .map_err(|e| e.to_string())?
            .config("order", "1.0.0")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_opentelemetry_specification_and_the_native_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.service_name, "order");
        assert!(!c.sdk_disabled);
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint, "http://127.0.0.1:4317");
        assert_eq!(c.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(c.topology, Topology::Continuous);
        assert!(c.trust_inbound_traceparent && c.traces && c.metrics && c.logs);
        assert!(c.drop_trace_context.is_empty());
        // The span path's own defaults: sized for the stated outage bound (module docs).
        assert_eq!(c.max_queued_spans, 16_384);
        assert_eq!(c.schedule_delay, Duration::from_millis(500));
        assert_eq!(c.export_retry_for, Duration::from_secs(300));
        let c = config(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("PIZZA_SPAN_EXPORT_RETRY_SECONDS", "30"),
        ])
        .unwrap();
        assert_eq!(
            (c.schedule_delay, c.export_retry_for),
            (Duration::from_millis(200), Duration::from_secs(30))
        );
    }

    #[test]
    fn reads_the_standard_variables_and_the_platform_switches() {
        let c = config(&[
            ("OTEL_SERVICE_NAME", "kitchen-2"),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "pizza_linkaware"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ("OTEL_LOGS_EXPORTER", "none"),
            ("PIZZA_TRACE_TOPOLOGY", "linked"),
            ("PIZZA_TRUST_INBOUND_TRACEPARENT", "false"),
            ("PIZZA_DROP_TRACE_CONTEXT", "kafka:kitchen.events, http:kitchen"),
        ])
        .unwrap();
        assert_eq!(c.service_name, "kitchen-2");
        assert!(c.sdk_disabled);
        assert_eq!(c.endpoint, "http://127.0.0.1:4318");
        assert_eq!(c.sampler, SamplerConfig::LinkAware(0.1));
        assert!(!c.logs && c.traces);
        assert_eq!(c.topology, Topology::Linked);
        assert!(!c.trust_inbound_traceparent);
        assert_eq!(c.drop_trace_context, vec!["kafka:kitchen.events", "http:kitchen"]);
    }

    #[test]
    fn rejects_values_it_cannot_understand_with_the_variable_named() {
        for (name, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("PIZZA_TRACE_TOPOLOGY", "tree"),
            ("OTEL_SDK_DISABLED", "yes please"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("PIZZA_SPAN_EXPORT_RETRY_SECONDS", "0"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
        let err = config(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert!(err.contains("OTEL_TRACES_SAMPLER_ARG"));
    }

    #[test]
    fn a_variable_set_to_nothing_counts_as_not_set() {
        let command = TelemetryArgs::bare_command();
        let names: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        assert!(names.len() >= 16, "{names:?}");
        let defaults = TelemetryArgs::default();
        for blank in ["", "  "] {
            let parsed =
                TelemetryArgs::from_lookup(|k| names.contains(&k.to_owned()).then(|| blank.to_owned()))
                    .unwrap_or_else(|e| panic!("{blank:?}: {e}"));
            assert_eq!(
                format!("{:?}", parsed.config("order", "1").unwrap()),
                format!("{:?}", defaults.config("order", "1").unwrap())
            );
            assert_eq!(parsed.span_stats_file(), None);
        }
    }
}
