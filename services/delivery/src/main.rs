//! The delivery binary: settings, telemetry, run until SIGTERM or Ctrl-C, flush telemetry.

use clap::Parser as _;
use pizza_delivery::{Config, Delivery};
use pizza_servicekit::serve::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pizza_telemetry::TelemetryConfig::from_env("delivery", env!("CARGO_PKG_VERSION"))?;
    let guard = pizza_telemetry::init(&telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "delivery listening");
    let result = match Delivery::connect(config).await {
        Ok(delivery) => {
            delivery
                .with_topology(telemetry.topology)
                .run(listener, shutdown_signal())
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::error!(%error, "delivery stopped with an error");
    }
    tokio::task::spawn_blocking(move || guard.shutdown()).await?;
    Ok(result?)
}
