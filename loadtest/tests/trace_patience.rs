//! The load tester's patience with late spans, against the native stack's real Jaeger.
//!
//! An order can be complete by its expected span names while one of its spans still misses its
//! parent: the parent is late (held by an SDK retrying, or by a Collector restarting). Judging such
//! an order at once reports an orphan that a few seconds would have resolved, so the reader reads it
//! again, like an incomplete one, until it is whole or the patience is spent.

use std::time::{Duration, Instant};

use pizza_load::Target;
use pizza_load::progress::Progress;
use pizza_testkit::Stack;
use serde_json::json;
use uuid::Uuid;

/// A status with no expected spans: any span of the order makes it complete by name.
const NO_EXPECTATIONS: &str = "test-no-expected-spans";

fn hex(bytes: usize) -> String {
    let id = Uuid::new_v4().simple().to_string();
    id[..bytes * 2].to_owned()
}

/// Sends one span of service `order` carrying the order's id straight to Jaeger (OTLP/HTTP JSON).
async fn send_span(
    stack: &Stack,
    order_id: Uuid,
    trace_id: &str,
    span_id: &str,
    parent: Option<&str>,
    name: &str,
) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let span = json!({
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent.unwrap_or(""),
        "name": name,
        "kind": 2,
        "startTimeUnixNano": now.to_string(),
        "endTimeUnixNano": (now + 1_000_000).to_string(),
        "attributes": [{"key": "pizza.order.id", "value": {"stringValue": order_id.to_string()}}],
    });
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "order"}}]},
        "scopeSpans": [{"spans": [span]}],
    }]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", stack.jaeger_otlp_http_url))
        .json(&body)
        .send()
        .await
        .expect("Jaeger's OTLP/HTTP receiver answers");
    assert!(
        response.status().is_success(),
        "Jaeger took the span: {}",
        response.status()
    );
}

#[tokio::test]
async fn an_order_whose_span_has_no_parent_yet_is_read_again_until_the_parent_arrives() {
    let stack = Stack::from_env();
    let order_id = Uuid::now_v7();
    let (trace_id, root, child) = (hex(16), hex(8), hex(8));
    // The child is in Jaeger, its parent not yet: complete by name, with one orphan.
    send_span(&stack, order_id, &trace_id, &child, Some(&root), "child").await;
    let target = Target {
        order_url: String::new(),
        kitchen_url: String::new(),
        delivery_url: String::new(),
        admin_token: None,
        database_url: String::new(),
        kafka_bootstrap: String::new(),
        jaeger_url: stack.jaeger_url.clone(),
        topics: Target::default_topics(),
    };
    let jaeger = pizza_traces::Jaeger::new(&stack.jaeger_url);
    let started = Instant::now();
    while jaeger.trace(&trace_id).await.ok().flatten().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Jaeger never showed the child span"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With the trace id the `POST /orders` answer would carry: read by id first (whole once the
    // parent is there), searched while it is not.
    let orders = [pizza_load::traces::ToRead {
        order_id,
        status: NO_EXPECTATIONS.to_owned(),
        trace_id: Some(trace_id.clone()),
    }];
    let reader = tokio::spawn(async move {
        let progress = Progress::new("traces", 0, true);
        pizza_load::traces::collect(&target, &orders, Duration::from_secs(60), false, &progress).await
    });
    // Later than the reader's first look (it starts at once and looks every 3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    send_span(&stack, order_id, &trace_id, &root, None, "root").await;
    let verdicts = reader.await.expect("the reader finishes");
    assert_eq!(verdicts.len(), 1);
    let verdict = &verdicts[0];
    assert_eq!(
        (verdict.spans, verdict.orphans),
        (2, 0),
        "the order was judged before its late parent span arrived: {verdict:?}"
    );
}
