//! With no Collector to talk to, a service keeps serving, holds a bounded number of spans in memory,
//! and counts every span it drops.

mod common;

use axum::Router;
use axum::routing::get;
use pizza_telemetry::TelemetryArgs;
use pizza_telemetry::http_server::HttpServerLayer;

const CAPACITY: usize = 64;
const REQUESTS: usize = 300;
const EXTRA_SPANS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_still_succeed_and_dropped_spans_are_counted() {
    // A port nothing listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{dead}")),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", CAPACITY.to_string()),
        ("OTEL_METRICS_EXPORTER", "none".to_owned()),
        ("OTEL_LOGS_EXPORTER", "none".to_owned()),
        ("RUST_LOG", "error".to_owned()),
    ];
    let config =
        TelemetryArgs::from_lookup(|k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone()))
            .unwrap()
            .config("pizza-collector-down-test", "0.0.0")
            .unwrap();
    let guard = pizza_telemetry::init(&config).expect("init succeeds without a Collector");

    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .layer(HttpServerLayer::new(true));
    let base = common::serve(app).await;
    let client = reqwest::Client::new();
    for _ in 0..REQUESTS {
        let response = client
            .get(format!("{base}/ping"))
            .send()
            .await
            .expect("the service answers");
        assert_eq!(response.status(), 200);
    }
    for i in 0..EXTRA_SPANS {
        tracing::info_span!("work", i).in_scope(|| {});
    }

    let stats = guard.span_stats();
    let ended = (REQUESTS + EXTRA_SPANS) as u64;
    assert_eq!(stats.ended, ended, "every span reached the pipeline: {stats:?}");
    assert_eq!(stats.exported, 0, "{stats:?}");
    // Bounded: at most CAPACITY spans wait (plus the batch being exported); all others are counted lost.
    let waiting = stats.ended - stats.dropped();
    assert!(
        waiting <= 2 * CAPACITY as u64,
        "{waiting} spans held in memory: {stats:?}"
    );
    assert!(
        stats.queue_full > 0,
        "the full queue dropped and counted: {stats:?}"
    );
    println!("collector down: {stats:?}");
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
}
