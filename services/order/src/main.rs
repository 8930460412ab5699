//! The order service binary: settings, telemetry, run until SIGTERM or Ctrl-C, flush telemetry.

use clap::Parser as _;
use pizza_order::{Config, OrderService};
use pizza_servicekit::serve::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pizza_telemetry::TelemetryConfig::from_env("order", env!("CARGO_PKG_VERSION"))?;
    // Telemetry first: the workflow engine's instruments bind to the provider in force when built.
    let guard = pizza_telemetry::init(&telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "order service listening");
    let result = match OrderService::connect(config).await {
        Ok(service) => {
            service
                .with_topology(telemetry.topology)
                .with_trust_inbound(telemetry.trust_inbound_traceparent)
                .run(listener, shutdown_signal())
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::error!(%error, "order service stopped with an error");
    }
    tokio::task::spawn_blocking(move || guard.shutdown()).await?;
    Ok(result?)
}
