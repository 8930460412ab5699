//! The whole asynchronous chain, traced and read back from Jaeger:
//! HTTP request → state change + outbox row (one transaction) → relay → Kafka → consumer → effect.
//!
//! Everything is real: an axum server with the telemetry crate's SERVER layer, PostgreSQL, the relay
//! and consumer of this crate, Kafka, the Collector and Jaeger. The assertions are the span model of
//! the project's TELEMETRY design for the Kafka edge, in both topologies:
//!
//! | span | continuous | linked |
//! |---|---|---|
//! | `POST /orders/{id}` SERVER | root | root |
//! | `send <topic>` PRODUCER (relay) | child of the SERVER span, from the outbox row's carrier | same |
//! | `process <topic>` CONSUMER | child of `send`, and linked to it | root of a new trace, linked to `send` |

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use opentelemetry::trace::TraceContextExt as _;
use pizza_contracts::events::{OrderItem, OrderPlaced};
use pizza_messaging::{Envelope, Outbox};
use pizza_telemetry::Topology;
use pizza_telemetry::attributes::{pizza, semconv};
use pizza_telemetry::http_server::HttpServerLayer;
use pizza_testkit::conventions::{Registry, unknown_attributes};
use pizza_testkit::{Jaeger, Span, SpanKind, Stack, Trace};
use sqlx::{AssertSqlSafe, PgPool};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

const SERVICE: &str = "pizza-messaging-chain-test";

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{Effect, Fixture};

/// One chain: its own schema, topic and consumer group (a [`Fixture`]), so tests run side by side.
struct Chain {
    fixture: Fixture,
    base_url: String,
}

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    outbox: Outbox,
    orders: String,
    topic: String,
}

/// `POST /orders/{id}`: the state change and the event in one transaction; answers the trace id.
async fn place_order(State(app): State<AppState>, Path(id): Path<Uuid>) -> Result<String, String> {
    tracing::Span::current().set_attribute(pizza::ORDER_ID, id.to_string());
    let mut tx = app.pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query(AssertSqlSafe(format!(
        "insert into {} (id) values ($1)",
        app.orders
    )))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let event = Envelope::new(
        "/pizza/order",
        OrderPlaced {
            order_id: id,
            items: vec![OrderItem {
                pizza: "margherita".into(),
                quantity: 1,
            }],
            total_cents: 900,
        },
    );
    app.outbox
        .enqueue_to(&mut tx, &app.topic, &event)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string())
}

impl Chain {
    async fn start(topology: Topology) -> Self {
        pizza_testkit::telemetry::init_once(SERVICE);
        let fixture = Fixture::new("chain", 2).await;
        let orders = fixture
            .create_table(
                "orders",
                "id uuid primary key, seen boolean not null default false",
            )
            .await;
        fixture.spawn_relay(Duration::from_millis(20));
        fixture.spawn_consumer(
            "kitchen",
            topology,
            Effect {
                sql: format!("update {orders} set seen = true where id = $1"),
            },
        );
        let app = Router::new()
            .route("/orders/{id}", post(place_order))
            .with_state(AppState {
                pool: fixture.pool.clone(),
                outbox: fixture.outbox(),
                orders,
                topic: fixture.topic.clone(),
            })
            .layer(HttpServerLayer::new(true));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { fixture, base_url }
    }

    /// Places an order (optionally with a `traceparent`); returns the order id and the SERVER span's
    /// trace id.
    async fn place(&self, traceparent: Option<&str>) -> (Uuid, String) {
        let order = Uuid::now_v7();
        let mut request = reqwest::Client::new().post(format!("{}/orders/{order}", self.base_url));
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        (order, response.text().await.unwrap())
    }

    /// Waits until the consumer's effect for `order` committed.
    async fn wait_seen(&self, order: Uuid) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen: Option<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
                "select seen from {} where id = $1",
                self.fixture.table("orders")
            )))
            .bind(order)
            .fetch_optional(&self.fixture.pool)
            .await
            .unwrap();
            if seen == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "order {order} not processed within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn topic(&self) -> &str {
        &self.fixture.topic
    }

    async fn stop(self) {
        self.fixture.stop().await;
    }
}

/// Every span of the order, across traces: found by `pizza.order.id`, read whole through the v3 API.
async fn order_spans(order: Uuid, want: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pizza_testkit::telemetry::flush().await;
        let mut spans = Vec::new();
        for id in jaeger
            .find_trace_ids(SERVICE, pizza::ORDER_ID, &order.to_string())
            .await
            .unwrap()
        {
            if let Some(trace) = jaeger.trace(&id).await.unwrap() {
                spans.extend(trace.spans);
            }
        }
        if want(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "order {order}: {}",
            Trace { spans }.summary()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn find<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span {name}"))
}

fn has_chain(topic: &str) -> impl Fn(&[Span]) -> bool + '_ {
    move |spans| {
        spans.iter().any(|s| s.kind == SpanKind::Server)
            && spans.iter().any(|s| s.name == format!("send {topic}"))
            && spans.iter().any(|s| s.name == format!("process {topic}"))
    }
}

fn assert_messaging_attributes(span: &Span, topic: &str, operation: &str, order: Uuid) {
    assert_eq!(span.attr_str(semconv::MESSAGING_SYSTEM), Some("kafka"));
    assert_eq!(span.attr_str(semconv::MESSAGING_OPERATION_TYPE), Some(operation));
    assert_eq!(span.attr_str(semconv::MESSAGING_DESTINATION_NAME), Some(topic));
    assert_eq!(
        span.attr_str(semconv::MESSAGING_KAFKA_MESSAGE_KEY),
        Some(order.to_string().as_str())
    );
    assert!(span.attr_str(semconv::MESSAGING_MESSAGE_ID).is_some());
    assert_eq!(
        span.attr_str(pizza::ORDER_ID),
        Some(order.to_string().as_str()),
        "{}",
        span.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_continuous_topology_the_consumer_is_a_child_of_the_relays_send_and_links_to_it() {
    let chain = Chain::start(Topology::Continuous).await;
    let (order, trace_id) = chain.place(None).await;
    chain.wait_seen(order).await;
    let spans = order_spans(order, has_chain(chain.topic())).await;

    let server = find(&spans, "POST /orders/{id}", SpanKind::Server);
    let send = find(&spans, &format!("send {}", chain.topic()), SpanKind::Producer);
    let process = find(&spans, &format!("process {}", chain.topic()), SpanKind::Consumer);
    assert_eq!(server.trace_id, trace_id);
    assert!(
        send.is_child_of(server),
        "the relay's send continues the request's trace from the outbox row"
    );
    assert!(
        process.is_child_of(send),
        "continuous: the producer is the parent"
    );
    assert!(process.links_to(send), "and the Kafka edge carries a link too");
    assert_eq!(process.links[0].attributes[pizza::LINK_REASON], "producer");
    assert_eq!(process.attr_str(pizza::TRACE_TOPOLOGY), Some("continuous"));
    assert_messaging_attributes(send, chain.topic(), "send", order);
    assert_messaging_attributes(process, chain.topic(), "process", order);
    assert!(
        send.attr_i64(semconv::MESSAGING_KAFKA_OFFSET).is_some(),
        "the relay records where the record went"
    );
    assert_eq!(
        unknown_attributes(&Trace { spans: spans.clone() }, &Registry::load().unwrap()),
        Vec::<String>::new()
    );
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_linked_topology_the_consumer_starts_a_new_trace_linked_to_the_send() {
    let chain = Chain::start(Topology::Linked).await;
    let (order, trace_id) = chain.place(None).await;
    chain.wait_seen(order).await;
    let spans = order_spans(order, has_chain(chain.topic())).await;

    let server = find(&spans, "POST /orders/{id}", SpanKind::Server);
    let send = find(&spans, &format!("send {}", chain.topic()), SpanKind::Producer);
    let process = find(&spans, &format!("process {}", chain.topic()), SpanKind::Consumer);
    assert_eq!(server.trace_id, trace_id);
    assert!(send.is_child_of(server));
    assert_ne!(
        process.trace_id, trace_id,
        "linked: the consumer's work is a trace of its own"
    );
    assert_eq!(process.parent_span_id, None);
    assert!(process.links_to(send), "joined to its cause by a link only");
    assert_eq!(process.attr_str(pizza::TRACE_TOPOLOGY), Some("linked"));
    // Both traces are found by the order id: that is how an order is reassembled in this topology.
    let traces: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 2, "the request's trace and the consumer's");
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_fresh_trace_and_the_chain_still_completes() {
    let chain = Chain::start(Topology::Continuous).await;
    let bad_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (order, trace_id) = chain
        .place(Some(&format!("00-{bad_trace}-00f067aa0ba902b7-zz")))
        .await;
    assert_ne!(trace_id, bad_trace);
    chain.wait_seen(order).await;
    let spans = order_spans(order, has_chain(chain.topic())).await;
    let server = find(&spans, "POST /orders/{id}", SpanKind::Server);
    assert_eq!(
        server.parent_span_id, None,
        "a fresh root, not a child of the malformed context"
    );
    let process = find(&spans, &format!("process {}", chain.topic()), SpanKind::Consumer);
    assert_eq!(
        process.trace_id, trace_id,
        "the fresh trace carries on through Kafka"
    );
    chain.stop().await;
}
