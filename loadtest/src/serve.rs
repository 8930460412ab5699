//! `pizza-load serve NAME`: runs one of the shop's services in this process, exactly as its own
//! binary's `main` does (settings from the environment, telemetry, run until SIGTERM, flush).
//!
//! It exists for [`crate::managed`]: a shop started by the load tester runs this checkout's service
//! code as real, killable processes without depending on separately built binaries (a test can only
//! name the binaries of its own package, and a stale `target/debug/pizza-order` would test old code).
//! At a graceful exit it writes the span pipeline's counters to `$PIZZA_LOAD_SPAN_STATS`, which is
//! how the benchmark learns how many spans were dropped.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser as _;
use pizza_servicekit::serve::shutdown_signal;
use pizza_telemetry::{TelemetryConfig, TelemetryGuard};

/// Runs `name` (`order`, `kitchen` or `delivery`) until SIGTERM or Ctrl-C.
pub async fn serve(name: &str, stats_file: Option<PathBuf>) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let (telemetry, guard) = match name {
        "order" | "kitchen" | "delivery" => {
            let telemetry = TelemetryConfig::from_env(name, version)?;
            let guard = pizza_telemetry::init(&telemetry)?;
            (telemetry, guard)
        }
        other => bail!("no service called {other}: order, kitchen or delivery"),
    };
    let result = match name {
        "order" => {
            let config = pizza_order::Config::try_parse_from(["pizza-order"])?;
            let listener = tokio::net::TcpListener::bind(config.addr).await?;
            let service = pizza_order::OrderService::connect(config).await?;
            service
                .with_topology(telemetry.topology)
                .with_trust_inbound(telemetry.trust_inbound_traceparent)
                .run(listener, shutdown_signal())
                .await
                .map_err(anyhow::Error::from)
        }
        "kitchen" => {
            let config = pizza_kitchen::Config::try_parse_from(["pizza-kitchen"])?;
            let listener = tokio::net::TcpListener::bind(config.addr).await?;
            let kitchen = pizza_kitchen::Kitchen::connect(config).await?;
            kitchen
                .with_topology(telemetry.topology)
                .run(listener, shutdown_signal())
                .await
                .map_err(anyhow::Error::from)
        }
        _ => {
            let config = pizza_delivery::Config::try_parse_from(["pizza-delivery"])?;
            let listener = tokio::net::TcpListener::bind(config.addr).await?;
            let delivery = pizza_delivery::Delivery::connect(config).await?;
            delivery
                .with_topology(telemetry.topology)
                .run(listener, shutdown_signal())
                .await
                .map_err(anyhow::Error::from)
        }
    };
    if let Err(error) = &result {
        tracing::error!(error = %format!("{error:#}"), service = name, "service stopped with an error");
    }
    tokio::task::spawn_blocking(move || finish(guard, stats_file)).await??;
    result
}

/// Flushes, records the span counters, shuts telemetry down.
fn finish(guard: TelemetryGuard, stats_file: Option<PathBuf>) -> anyhow::Result<()> {
    guard.flush();
    let stats = guard.span_stats();
    guard.shutdown();
    if let Some(path) = stats_file {
        let json = serde_json::json!({
            "ended": stats.ended,
            "exported": stats.exported,
            "queue_full": stats.queue_full,
            "export_failed": stats.export_failed,
        });
        std::fs::write(path, json.to_string())?;
    }
    Ok(())
}
