//! Where the stack listens.
//!
//! The defaults are the native stack's ports (see the README's port table). Each can be overridden by
//! the environment, so the same tests run against compose or a remote stack. This module reads the
//! stack's endpoints; the only other reader is [`crate::shop`], for how it finds and builds the
//! service binaries (`CARGO`, `PIZZA_SHOP_BIN_DIR`) and whether it keeps their logs
//! (`PIZZA_SHOP_KEEP_LOGS`).

use std::path::PathBuf;

/// Endpoints of the four infrastructure parts.
#[derive(Debug, Clone)]
pub struct Stack {
    /// PostgreSQL superuser URL of the `postgres` database (`DATABASE_URL`).
    pub database_url: String,
    /// Kafka bootstrap servers (`PIZZA_KAFKA_BOOTSTRAP`).
    pub kafka_bootstrap: String,
    /// OTLP/gRPC endpoint of the Collector (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_grpc_endpoint: String,
    /// Base URL of Jaeger's query service: UI and HTTP API (`PIZZA_JAEGER_URL`).
    pub jaeger_url: String,
    /// The Collector's own Prometheus metrics (`PIZZA_COLLECTOR_METRICS_URL`).
    pub collector_metrics_url: String,
    /// Jaeger's own OTLP/HTTP receiver, behind the Collector (`PIZZA_JAEGER_OTLP_HTTP_URL`): for a
    /// test that must place spans in Jaeger at a moment of its choosing, with no batch between.
    pub jaeger_otlp_http_url: String,
    /// The Collector binary built by the native stack (`PIZZA_OTELCOL_BIN`), if known.
    pub otelcol_bin: Option<PathBuf>,
}

/// The native stack's defaults, also written in the README and `deploy/local/infra.sh`.
pub mod defaults {
    /// PostgreSQL on its own port, so a system PostgreSQL on 5432 never gets in the way.
    pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";
    /// The single KRaft broker.
    pub const KAFKA_BOOTSTRAP: &str = "127.0.0.1:9092";
    /// The Collector's OTLP/gRPC receiver.
    pub const OTLP_GRPC_ENDPOINT: &str = "http://127.0.0.1:4317";
    /// Jaeger's UI and query API.
    pub const JAEGER_URL: &str = "http://127.0.0.1:16686";
    /// The Collector's own metrics.
    pub const COLLECTOR_METRICS_URL: &str = "http://127.0.0.1:8888/metrics";
    /// Jaeger's OTLP/HTTP receiver.
    pub const JAEGER_OTLP_HTTP_URL: &str = "http://127.0.0.1:14318";
}

impl Stack {
    /// Reads the endpoints from the environment, falling back to the native stack's defaults.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Self {
            database_url: var("DATABASE_URL", defaults::DATABASE_URL),
            kafka_bootstrap: var("PIZZA_KAFKA_BOOTSTRAP", defaults::KAFKA_BOOTSTRAP),
            otlp_grpc_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT", defaults::OTLP_GRPC_ENDPOINT),
            jaeger_url: var("PIZZA_JAEGER_URL", defaults::JAEGER_URL),
            collector_metrics_url: var("PIZZA_COLLECTOR_METRICS_URL", defaults::COLLECTOR_METRICS_URL),
            jaeger_otlp_http_url: var("PIZZA_JAEGER_OTLP_HTTP_URL", defaults::JAEGER_OTLP_HTTP_URL),
            otelcol_bin: std::env::var_os("PIZZA_OTELCOL_BIN").map(PathBuf::from),
        }
    }

    /// The root of the checkout (where `Cargo.lock` is), for tests that read repository files.
    pub fn repo_root() -> PathBuf {
        let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        while !dir.join("Cargo.lock").exists() {
            if !dir.pop() {
                panic!("no Cargo.lock above {}", env!("CARGO_MANIFEST_DIR"));
            }
        }
        dir
    }
}
