//! Proof that each part of the native stack is real and does what the platform relies on.
//!
//! These run against the processes `make test` starts (deploy/local/infra.sh): nothing here is mocked.
//! Each test states the property a later layer depends on: Kafka keeps record headers (trace context
//! travels in them), sqlx migrations apply, a span link survives the trip SDK -> Collector -> Jaeger,
//! and the Collector binary accepts the one config file every deployment mounts, and rejects a bad one.

use std::process::Command;
use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use pizza_testkit::{Jaeger, Stack, kafka};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use uuid::Uuid;

const SMOKE_TOPIC: &str = "smoke.test";

#[tokio::test]
async fn kafka_round_trip_keeps_key_payload_and_headers() {
    let stack = Stack::from_env();
    let producer: FutureProducer = kafka::producer_config(&stack).create().expect("producer");
    let key = Uuid::new_v4().to_string();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some(traceparent),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("order-placed"),
        })
        .insert(Header {
            key: "empty",
            value: None::<&[u8]>,
        });
    let delivery = producer
        .send(
            FutureRecord::to(SMOKE_TOPIC)
                .key(&key)
                .payload(r#"{"pizza":"margherita"}"#)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("the broker acknowledges the record");

    // Read back exactly the acknowledged record: assign to its partition and offset.
    let consumer: BaseConsumer = kafka::consumer_config(&stack, &format!("smoke-{key}"))
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(SMOKE_TOPIC, delivery.partition, Offset::Offset(delivery.offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let message = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "no record within 20 s");
            if let Some(result) = consumer.poll(Duration::from_millis(500)) {
                break result.expect("consume").detach();
            }
        }
    })
    .await
    .unwrap();

    assert_eq!(message.key(), Some(key.as_bytes()));
    assert_eq!(message.payload(), Some(br#"{"pizza":"margherita"}"#.as_slice()));
    assert_eq!(message.offset(), delivery.offset);
    let headers = message.headers().expect("headers survive the broker");
    let got: Vec<(String, Option<Vec<u8>>)> = headers
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("traceparent".to_owned(), Some(traceparent.as_bytes().to_vec())),
            ("ce_type".to_owned(), Some(b"order-placed".to_vec())),
            ("empty".to_owned(), None),
        ],
        "header order, names and values (including a null value) are kept"
    );
}

#[sqlx::test(migrations = "tests/migrations")]
async fn sqlx_migrations_apply_and_a_row_round_trips(pool: PgPool) {
    let applied: Vec<(i64, String)> =
        sqlx::query_as("select version, description from _sqlx_migrations order by version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        applied,
        vec![(1, "smoke".to_owned()), (2, "smoke index".to_owned())]
    );

    let id = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into smoke_orders (id, pizza, quantity) values ($1, $2, $3)")
        .bind(id)
        .bind("diavola")
        .bind(2_i32)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (pizza, quantity): (String, i32) =
        sqlx::query_as("select pizza, quantity from smoke_orders where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((pizza.as_str(), quantity), ("diavola", 2));

    // The constraint is enforced by the real server: a zero quantity is refused with SQLSTATE 23514.
    let err = sqlx::query("insert into smoke_orders (id, pizza, quantity) values ($1, 'x', 0)")
        .bind(Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23514")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_link_survives_sdk_collector_and_jaeger() {
    let stack = Stack::from_env();
    let service = format!("pizza-smoke-{}", Uuid::new_v4().simple());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&stack.otlp_grpc_endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .expect("OTLP exporter");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("pizza-infra-smoke");

    // The cause: a producer span in its own trace.
    let cause = tracer
        .span_builder("send smoke.test")
        .with_kind(SpanKind::Producer)
        .start(&tracer);
    let cause_cx = cause.span_context().clone();
    drop(cause);
    // The effect: a consumer span in a new trace, linked to the cause at creation time.
    let effect = tracer
        .span_builder("process smoke.test")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::new(
            cause_cx.clone(),
            vec![KeyValue::new("pizza.link.reason", "smoke")],
            0,
        )])
        .start(&tracer);
    let effect_cx = Context::current_with_span(effect);
    let child = tracer.start_with_context("smoke.child", &effect_cx);
    let child_id = child.span_context().span_id();
    drop(child);
    let effect_ids = effect_cx.span().span_context().clone();
    drop(effect_cx);
    assert_ne!(
        effect_ids.trace_id(),
        cause_cx.trace_id(),
        "the effect starts its own trace"
    );

    // Flush and stop the SDK off the async workers (shutdown blocks until the export is done).
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("spans exported");

    let jaeger = Jaeger::new(&stack.jaeger_url);
    let trace = jaeger
        .wait_for_trace(&effect_ids.trace_id().to_string(), Duration::from_secs(30), |t| {
            t.spans.len() >= 2
        })
        .await
        .expect("the linked trace reaches Jaeger through the Collector");
    let effect = trace.span("process smoke.test").expect("effect span");
    assert_eq!(effect.service_name, service);
    assert_eq!(effect.kind, pizza_testkit::SpanKind::Consumer);
    assert_eq!(effect.links.len(), 1, "exactly one link: {:?}", effect.links);
    assert_eq!(effect.links[0].trace_id, cause_cx.trace_id().to_string());
    assert_eq!(effect.links[0].span_id, cause_cx.span_id().to_string());
    assert_eq!(effect.links[0].attributes["pizza.link.reason"], "smoke");
    let child = trace.span("smoke.child").expect("child span");
    assert_eq!(child.span_id, child_id.to_string());
    assert_eq!(child.parent_span_id.as_deref(), Some(effect.span_id.as_str()));

    // The link's target exists too, in its own trace.
    let cause_trace = jaeger
        .wait_for_trace(&cause_cx.trace_id().to_string(), Duration::from_secs(30), |t| {
            !t.spans.is_empty()
        })
        .await
        .expect("the cause's trace is in Jaeger");
    assert_eq!(cause_trace.spans[0].span_id, cause_cx.span_id().to_string());
    assert!(jaeger.services().await.unwrap().contains(&service));
}

/// The Collector binary the stack runs, built from otel-collector/builder-config.yaml.
fn otelcol() -> std::path::PathBuf {
    if let Some(bin) = Stack::from_env().otelcol_bin {
        return bin;
    }
    let out = Command::new(Stack::repo_root().join("deploy/local/infra.sh"))
        .args(["path", "collector"])
        .output()
        .expect("run deploy/local/infra.sh path collector");
    assert!(
        out.status.success(),
        "no Collector built yet: run `make infra-up` (or set PIZZA_OTELCOL_BIN)"
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

fn validate(config: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(otelcol())
        .arg("validate")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn the_built_collector_validates_the_one_config_with_native_and_container_values() {
    let config = Stack::repo_root().join("otel-collector/config.yaml");
    // Container defaults (compose and Kubernetes set nothing but the Jaeger endpoint's host).
    let out = validate(&config, &[]);
    assert!(
        out.status.success(),
        "default env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The native stack's values, as deploy/local/infra.sh passes them.
    let native = [
        ("OTELCOL_LISTEN_HOST", "127.0.0.1"),
        ("OTELCOL_OTLP_GRPC_PORT", "4317"),
        ("OTELCOL_OTLP_HTTP_PORT", "4318"),
        ("OTELCOL_HEALTH_PORT", "13133"),
        ("OTELCOL_METRICS_PORT", "8888"),
        ("OTELCOL_PROMETHEUS_PORT", "8889"),
        ("JAEGER_OTLP_ENDPOINT", "127.0.0.1:14317"),
    ];
    let out = validate(&config, &native);
    assert!(
        out.status.success(),
        "native env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_built_collector_rejects_a_config_that_uses_a_missing_component() {
    // Guards the test above: validation must be able to fail. A pipeline naming an exporter that is
    // not defined, and a component type this distribution does not include, must both be refused.
    let dir = std::env::temp_dir().join(format!("otelcol-bad-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(Stack::repo_root().join("otel-collector/config.yaml")).unwrap();
    for (name, bad) in [
        (
            "undefined-exporter",
            good.replace(
                "exporters: [otlp_grpc/jaeger, spanmetrics]",
                "exporters: [nowhere]",
            ),
        ),
        (
            "unknown-type",
            good.replace("  debug:\n    verbosity: basic", "  kafka:\n    brokers: [x]"),
        ),
    ] {
        assert_ne!(bad, good, "{name}: the replacement must change the config");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, bad).unwrap();
        let out = validate(&path, &[]);
        assert!(!out.status.success(), "{name} was accepted");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn jaeger_serves_the_real_ui_not_the_placeholder() {
    // The Go module carries no UI build; infra.sh points Jaeger at a real one. Without it Jaeger serves
    // a placeholder page that has no application bundle.
    let base = Stack::from_env().jaeger_url;
    let index = reqwest::get(format!("{base}/search"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        index.contains("jaeger-ui-root"),
        "not the Jaeger UI: {index:.300}"
    );
    let script = index
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|s| s.ends_with(".js"))
        .expect("the UI page loads a script bundle");
    let bundle = reqwest::get(format!("{base}/{}", script.trim_start_matches("./")))
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200, "{script}");
    assert!(
        bundle.text().await.unwrap().len() > 100_000,
        "{script} is the application bundle"
    );
}

#[test]
fn infra_status_reports_pid_port_and_health_of_every_component() {
    let out = Command::new(Stack::repo_root().join("deploy/local/infra.sh"))
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "status exits 0 only when all are healthy:\n{table}"
    );
    for (component, port) in [
        ("postgres", "55432"),
        ("kafka", "9092"),
        ("jaeger", "16686"),
        ("collector", "4317"),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(component))
            .unwrap_or_else(|| panic!("{component}:\n{table}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields[1].parse::<u32>().is_ok(), "{component} has a pid: {line}");
        assert!(fields.contains(&port), "{component} lists port {port}: {line}");
        assert_eq!(fields.last(), Some(&"healthy"), "{line}");
    }
}
