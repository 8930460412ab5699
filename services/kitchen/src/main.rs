//! The kitchen binary: settings, telemetry, run until SIGTERM or Ctrl-C, flush telemetry.

use clap::Parser as _;
use pizza_kitchen::{Config, Kitchen};
use pizza_servicekit::serve::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = pizza_telemetry::TelemetryConfig::from_env("kitchen", env!("CARGO_PKG_VERSION"))?;
    let guard = pizza_telemetry::init(&telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "kitchen listening");
    let result = match Kitchen::connect(config).await {
        Ok(kitchen) => {
            kitchen
                .with_topology(telemetry.topology)
                .run(listener, shutdown_signal())
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::error!(%error, "kitchen stopped with an error");
    }
    tokio::task::spawn_blocking(move || guard.shutdown()).await?;
    Ok(result?)
}
