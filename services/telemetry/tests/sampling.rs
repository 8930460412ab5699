//! Head sampling across links: the stock parent-based ratio sampler loses the linked traces of a kept
//! order; the link-aware sampler keeps them all.
//!
//! In-process with the SDK's in-memory exporter: sampling is a pure decision at span start, so the
//! real Collector adds nothing here (the end-to-end tests cover the export path).

use std::collections::HashSet;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use pizza_telemetry::config::SamplerConfig;
use pizza_telemetry::{Topology, init::sampler, kafka};
use tracing_subscriber::layer::SubscriberExt as _;

const ORDERS: usize = 1000;
/// An order in `linked` topology: the request's trace, then one trace per asynchronous hop.
const HOPS: [&str; 4] = [
    "process kitchen.events",
    "workflow.execute",
    "process delivery.requests",
    "process delivery.events",
];

struct Outcome {
    orders_kept: usize,
    hops_of_kept_orders: usize,
    hops_kept: usize,
}

/// Runs ORDERS orders, each a root span plus HOPS linked roots (each linked to the previous hop).
fn run(config: SamplerConfig) -> Outcome {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(sampler(config))
        .build();
    let tracer = provider.tracer("sampling-test");
    let mut kept_orders = HashSet::new();
    for _ in 0..ORDERS {
        let root = tracer
            .span_builder("POST /orders")
            .with_kind(SpanKind::Server)
            .start_with_context(&tracer, &Context::new());
        let mut cause: SpanContext = root.span_context().clone();
        if cause.is_sampled() {
            kept_orders.insert(cause.trace_id());
        }
        drop(root);
        for hop in HOPS {
            let span = tracer
                .span_builder(hop)
                .with_kind(SpanKind::Consumer)
                .with_links(vec![Link::new(
                    cause.clone(),
                    vec![KeyValue::new("pizza.link.reason", "producer")],
                    0,
                )])
                .start_with_context(&tracer, &Context::new());
            cause = span.span_context().clone();
            drop(span);
        }
    }
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    // Follow links back to the order's root trace.
    let mut order_of = std::collections::HashMap::new();
    for s in &spans {
        if s.name == "POST /orders" {
            order_of.insert(s.span_context.span_id(), s.span_context.trace_id());
        }
    }
    let mut hops_of_kept_orders = 0;
    for s in spans.iter().filter(|s| s.name != "POST /orders") {
        let linked = s
            .links
            .links
            .first()
            .expect("every hop links to its cause")
            .span_context
            .span_id();
        if let Some(order) = order_of.get(&linked).copied() {
            order_of.insert(s.span_context.span_id(), order);
            if kept_orders.contains(&order) {
                hops_of_kept_orders += 1;
            }
        }
    }
    Outcome {
        orders_kept: kept_orders.len(),
        hops_of_kept_orders,
        hops_kept: spans.iter().filter(|s| s.name != "POST /orders").count(),
    }
}

#[test]
fn at_ten_percent_the_link_aware_sampler_keeps_every_linked_trace_of_a_kept_order_and_the_stock_one_loses_them()
 {
    let stock = run(SamplerConfig::ParentBasedTraceIdRatio(0.1));
    let aware = run(SamplerConfig::LinkAware(0.1));
    for (name, o) in [("stock", &stock), ("link-aware", &aware)] {
        // Both keep about 10% of orders (1000 orders: mean 100, sd about 9.5).
        assert!(
            (50..=150).contains(&o.orders_kept),
            "{name} kept {} orders",
            o.orders_kept
        );
    }
    // Link-aware: every hop of every kept order, and nothing else.
    assert_eq!(aware.hops_of_kept_orders, aware.orders_kept * HOPS.len());
    assert_eq!(aware.hops_kept, aware.orders_kept * HOPS.len());
    // Stock: a hop survives only when only a connected chain from the root survives: the chain of
    // independent 10% decisions falls apart (about 10% of the first hop, 1% of the second...).
    let complete_share = stock.hops_of_kept_orders as f64 / (stock.orders_kept * HOPS.len()) as f64;
    assert!(
        complete_share < 0.5,
        "stock sampler kept {complete_share:.2} of kept orders' hops"
    );
    println!(
        "orders kept: stock {} / link-aware {}; hops of kept orders kept: stock {:.0}% / link-aware 100%",
        stock.orders_kept,
        aware.orders_kept,
        complete_share * 100.0
    );
}

#[test]
fn the_kafka_helper_adds_links_before_the_span_starts_so_the_sampler_sees_them() {
    // Ratio 0: a root span is sampled only if the sampler saw a sampled link at creation.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(sampler(SamplerConfig::LinkAware(0.0)))
        .build();
    let producer = Context::new().with_remote_span_context(SpanContext::new(
        opentelemetry::trace::TraceId::from(7_u128),
        opentelemetry::trace::SpanId::from(9_u64),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        Default::default(),
    ));
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
    tracing::subscriber::with_default(subscriber, || {
        let msg = kafka::Incoming {
            topic: "kitchen.events",
            partition: 0,
            offset: 1,
            key: Some("order-1"),
            message_id: None,
            consumer_group: "order",
            body_size: 10,
        };
        let linked = kafka::process_span_from(&msg, &producer, Topology::Linked);
        linked.in_scope(|| {});
        let orphan = kafka::process_span_from(&msg, &Context::new(), Topology::Linked);
        orphan.in_scope(|| {});
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1, "only the span with a sampled link is kept");
    assert_eq!(
        spans[0].links.links[0].span_context.span_id(),
        opentelemetry::trace::SpanId::from(9_u64)
    );
    assert_ne!(
        spans[0].span_context.trace_id(),
        opentelemetry::trace::TraceId::from(7_u128),
        "linked: a new trace"
    );
}
