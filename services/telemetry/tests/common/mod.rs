//! Shared set-up for the end-to-end telemetry tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use pizza_telemetry::TelemetryGuard;
use pizza_testkit::{Jaeger, Stack};

/// Initialises telemetry once for this test process.
pub fn telemetry() -> &'static TelemetryGuard {
    pizza_testkit::telemetry::init_once("pizza-telemetry-test")
}

/// Exports every buffered span now.
pub async fn flush() {
    pizza_testkit::telemetry::flush().await;
}

/// The Jaeger of the stack.
pub fn jaeger() -> Jaeger {
    Jaeger::new(Stack::from_env().jaeger_url)
}

/// Serves `app` on an ephemeral port of 127.0.0.1; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}
