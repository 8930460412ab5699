//! Telemetry settings, from the standard `OTEL_*` environment variables plus the platform's own
//! `PIZZA_*` switches. This is the only module of the crate that reads the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `true` turns every signal off (no exporter, no-op providers) | `false` |
//! | `OTEL_SERVICE_NAME` | `service.name` | the service's own name |
//! | `OTEL_RESOURCE_ATTRIBUTES` | extra resource attributes, `k=v,k=v` | none |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the Collector | `http://127.0.0.1:4317` (grpc), `http://127.0.0.1:4318` (http) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc` or `http/protobuf` | `grpc` |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | see [`SamplerConfig`] | `parentbased_always_on` |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER` | `otlp` or `none` | `otlp` |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | spans waiting for export before new ones are dropped (and counted) | 2048 |
//! | other `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL` | read by the SDK itself | SDK defaults |
//! | `PIZZA_TRACE_TOPOLOGY` | `continuous` or `linked`, see [`Topology`] | `continuous` |
//! | `PIZZA_TRUST_INBOUND_TRACEPARENT` | whether an HTTP server continues a caller's trace | `true` |
//! | `PIZZA_DROP_TRACE_CONTEXT` | comma-separated edges whose context is dropped on purpose | none |
//! | `PIZZA_LOG_FORMAT` | `json` (one object a line, with `trace_id`/`span_id`) or `text` | `json` |
//! | `RUST_LOG` | log filter | `info` |

use std::fmt;
use std::str::FromStr;

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

/// Everything [`crate::init()`] needs.
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
    /// Whether HTTP servers continue an inbound `traceparent`; when not, they start a new trace and
    /// link the inbound context instead.
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
}

impl TelemetryConfig {
    /// Reads the process environment. `service_name` and `service_version` are the defaults for
    /// `OTEL_SERVICE_NAME` and the version attribute.
    pub fn from_env(service_name: &str, service_version: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(service_name, service_version, |k| std::env::var(k).ok())
    }

    /// Like [`Self::from_env`], with the variables supplied by `lookup` (tests use a map).
    pub fn from_lookup(
        service_name: &str,
        service_version: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(name).map(|v| v.to_ascii_lowercase()) {
                None => Ok(default),
                Some(v) if v == "true" || v == "1" => Ok(true),
                Some(v) if v == "false" || v == "0" => Ok(false),
                Some(v) => Err(ConfigError::Invalid {
                    name,
                    value: v,
                    expected: "true or false",
                }),
            }
        };
        let protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: other.to_owned(),
                    expected: "grpc or http/protobuf",
                });
            }
        };
        let endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| match protocol {
            Protocol::Grpc => "http://127.0.0.1:4317".to_owned(),
            Protocol::HttpProtobuf => "http://127.0.0.1:4318".to_owned(),
        });
        let exporter_on = |name: &'static str| -> Result<bool, ConfigError> {
            match get(name).as_deref() {
                None | Some("otlp") => Ok(true),
                Some("none") => Ok(false),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    value: other.to_owned(),
                    expected: "otlp or none",
                }),
            }
        };
        let log_format = match get("PIZZA_LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PIZZA_LOG_FORMAT",
                    value: other.to_owned(),
                    expected: "json or text",
                });
            }
        };
        Ok(Self {
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.to_owned()),
            service_version: service_version.to_owned(),
            sdk_disabled: flag("OTEL_SDK_DISABLED", false)?,
            endpoint,
            protocol,
            sampler: parse_sampler(
                get("OTEL_TRACES_SAMPLER").as_deref(),
                get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            )?,
            traces: exporter_on("OTEL_TRACES_EXPORTER")?,
            metrics: exporter_on("OTEL_METRICS_EXPORTER")?,
            logs: exporter_on("OTEL_LOGS_EXPORTER")?,
            topology: get("PIZZA_TRACE_TOPOLOGY")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or_default(),
            trust_inbound_traceparent: flag("PIZZA_TRUST_INBOUND_TRACEPARENT", true)?,
            drop_trace_context: get("PIZZA_DROP_TRACE_CONTEXT")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            log_format,
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            max_queued_spans: match get("OTEL_BSP_MAX_QUEUE_SIZE") {
                None => 2048,
                Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                    name: "OTEL_BSP_MAX_QUEUE_SIZE",
                    value: v,
                    expected: "a positive number of spans",
                })?,
            },
        })
    }
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

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TelemetryConfig::from_lookup("order", "1.0.0", |k| map.get(k).cloned())
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
        ] {
            let err = config(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = config(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"));
    }
}
