//! The HTTP layers record `http.server.request.duration` and `http.client.request.duration` with the
//! semantic conventions' attributes and buckets.
//!
//! In-process with the SDK's in-memory metric exporter installed as the global meter provider: the
//! question is what the layers record, not how it travels (`otlp_signals.rs` covers the transport).

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::get;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use pizza_telemetry::attributes::semconv;
use pizza_telemetry::http_client::Tracing;
use pizza_telemetry::http_server::HttpServerLayer;
use pizza_telemetry::metrics;

/// Each histogram data point of `name`: its attributes (as strings) and its count.
fn points(exporter: &InMemoryMetricExporter, name: &str) -> Vec<(BTreeMap<String, String>, u64, Vec<f64>)> {
    let mut found = Vec::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == name) {
                let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                    panic!("{name} is not an f64 histogram");
                };
                for point in histogram.data_points() {
                    let attributes = point
                        .attributes()
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect();
                    found.push((attributes, point.count(), point.bounds().collect()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn server_and_client_durations_are_recorded_with_route_method_and_status() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let app = Router::new()
        .route("/tickets/{id}", get(|| async { "ok" }))
        .route(
            "/broken",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .layer(HttpServerLayer::new(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(Tracing::new("kitchen"))
        .build();
    for path in ["/tickets/1", "/tickets/2", "/broken"] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }
    provider.force_flush().unwrap();

    let server = points(&exporter, metrics::HTTP_SERVER_REQUEST_DURATION);
    let ok = server
        .iter()
        .find(|(a, _, _)| a.get(semconv::HTTP_ROUTE).map(String::as_str) == Some("/tickets/{id}"))
        .expect("a series for the route template, not the raw path");
    assert_eq!(ok.1, 2, "two requests to /tickets/{{id}}");
    assert_eq!(ok.0[semconv::HTTP_REQUEST_METHOD], "GET");
    assert_eq!(ok.0[semconv::HTTP_RESPONSE_STATUS_CODE], "200");
    assert!(!ok.0.contains_key(semconv::ERROR_TYPE));
    assert_eq!(
        ok.2.first().copied(),
        Some(0.005),
        "the convention's buckets, in seconds"
    );
    let broken = server
        .iter()
        .find(|(a, _, _)| a.get(semconv::HTTP_ROUTE).map(String::as_str) == Some("/broken"));
    assert_eq!(broken.unwrap().0[semconv::ERROR_TYPE], "500");

    let client_points = points(&exporter, metrics::HTTP_CLIENT_REQUEST_DURATION);
    let total: u64 = client_points.iter().map(|(_, n, _)| n).sum();
    assert_eq!(total, 3, "one client measurement per request");
    assert!(
        client_points
            .iter()
            .all(|(a, _, _)| a[semconv::SERVER_ADDRESS] == "127.0.0.1")
    );
    assert!(
        client_points
            .iter()
            .any(|(a, _, _)| a.get(semconv::ERROR_TYPE).map(String::as_str) == Some("500"))
    );
}
