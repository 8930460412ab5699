//! The kitchen against the real stack: PostgreSQL (a fresh database per test), Kafka (topics of the
//! test's own), the Collector and Jaeger.
//!
//! Each `TestApp` runs the whole kitchen in-process on port 0: HTTP API, ovens, outbox relay and the
//! `orders.events` consumer. Events are read back from the topic with a plain consumer. Cook times are
//! scaled down (`time_scale`), and every wait is bounded; no test asserts on timing.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::body::Body;
use pizza_contracts::events::{OrderCancelled, OrderEvent};
use pizza_contracts::kitchen::problems;
use pizza_contracts::types;
use pizza_kitchen::{Config, Kitchen};
use pizza_messaging::Envelope;
use pizza_servicekit::{Host, ServiceConfig};
use pizza_telemetry::attributes::pizza;
use pizza_testkit::app::Running;
use pizza_testkit::conventions::{Registry, unknown_attributes};
use pizza_testkit::records::{self, Seen, eventually, types_of};
use pizza_testkit::{Jaeger, SpanKind, Stack, kafka};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;
use uuid::Uuid;

const ADMIN_TOKEN: &str = "kitchen-test-token";

// ---- helpers ---------------------------------------------------------------------------------------

/// Settings for a test kitchen: its own topics and group, a cook time of 8 s × 0.02 = 160 ms.
fn config(kitchen_topic: &str, orders_topic: &str) -> Config {
    let stack = Stack::from_env();
    Config {
        common: ServiceConfig {
            database_url: stack.database_url.clone(),
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            time_scale: 0.02,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            faults: None,
            telemetry: Default::default(),
            instance_id: None,
        },
        addr: "127.0.0.1:0".parse().unwrap(),
        cook_seconds: 8.0,
        ovens: 4,
        // Only notifications and due times may drive the loops here: a test passes on events, never
        // on a poll.
        safety_net_ms: 60_000,
        kitchen_events_topic: kitchen_topic.to_owned(),
        orders_events_topic: orders_topic.to_owned(),
        consumer_group: format!("kitchen-test-{}", Uuid::new_v4().simple()),
    }
}

/// `config` with another time scale.
fn with_time_scale(mut config: Config, time_scale: f64) -> Config {
    config.common.time_scale = time_scale;
    config
}

/// The topics of one test: kitchen events, and orders events with its dead-letter topic.
struct Topics {
    kitchen: String,
    orders: String,
}

impl Topics {
    async fn create() -> anyhow::Result<Self> {
        let kitchen = kafka::unique_topic("kitchen.events");
        let orders = kafka::unique_topic("orders.events");
        let dead = pizza_contracts::topics::dead_letter(&orders);
        kafka::create_topics(
            &Stack::from_env().kafka_bootstrap,
            &[(&kitchen, 1), (&orders, 1), (&dead, 1)],
        )
        .await?;
        Ok(Self { kitchen, orders })
    }
}

/// A kitchen running in-process on port 0.
struct TestApp {
    base: String,
    http: reqwest::Client,
    running: Running,
}

impl TestApp {
    async fn spawn(pool: &PgPool, config: Config) -> anyhow::Result<Self> {
        let kitchen = Host::<Kitchen>::with_pool(config, pool.clone()).await?;
        let running =
            Running::start(|listener, shutdown| async move { Ok(kitchen.run(listener, shutdown).await?) })
                .await?;
        Ok(Self {
            base: running.base.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            running,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, value))
    }

    async fn post_ticket(&self, order: Uuid, items: Value) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            "/tickets",
            Some(json!({"order_id": order, "items": items})),
        )
        .await
    }

    async fn status(&self, order: Uuid) -> anyhow::Result<String> {
        let (code, body) = self
            .call(reqwest::Method::GET, &format!("/tickets/{order}"), None)
            .await?;
        ensure!(code == 200, "GET ticket answered {code}: {body}");
        Ok(body["status"].as_str().unwrap_or_default().to_owned())
    }

    async fn wait_for_status(&self, order: Uuid, wanted: &str) -> anyhow::Result<()> {
        eventually(Duration::from_secs(30), &format!("ticket {wanted}"), || async {
            Ok((self.status(order).await? == wanted).then_some(()))
        })
        .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await.context("stopping the kitchen")
    }
}

fn items() -> Value {
    json!([{"pizza": "margherita", "quantity": 2}, {"pizza": "diavola", "quantity": 1}])
}

/// Every event of `topic` keyed by `order`, in partition order.
async fn events(topic: &str, order: Uuid) -> anyhow::Result<Vec<Seen>> {
    let bootstrap = Stack::from_env().kafka_bootstrap;
    records::events(&bootstrap, topic, &order.to_string(), Duration::from_secs(30)).await
}

/// Waits until the order's events on `topic` include `last`, and returns them all.
async fn events_until(topic: &str, order: Uuid, last: &str) -> anyhow::Result<Vec<Seen>> {
    let bootstrap = Stack::from_env().kafka_bootstrap;
    let limit = Duration::from_secs(30);
    records::events_until(&bootstrap, topic, &order.to_string(), last, limit).await
}

// ---- bad input ---------------------------------------------------------------------------------------

/// What is wrong, method, URI, content type, body, expected status.
type BadRequest<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, String, u16);

#[sqlx::test(migrations = false)]
async fn every_bad_request_gets_a_4xx_problem_and_stores_nothing(pool: PgPool) -> anyhow::Result<()> {
    let kitchen = Host::<Kitchen>::with_pool(config("unused.kitchen", "unused.orders"), pool.clone()).await?;
    let router = kitchen.router()?;
    let order = Uuid::now_v7();
    let ticket = |items: Value| json!({"order_id": order, "items": items}).to_string();
    let json_type = Some("application/json");
    let (status_uri, pickup_uri, cancel_uri) = (
        format!("/tickets/{order}"),
        format!("/tickets/{order}/pickup"),
        format!("/tickets/{order}/cancel"),
    );
    let cases: Vec<BadRequest<'_>> = vec![
        (
            "malformed JSON",
            "POST",
            "/tickets",
            json_type,
            r#"{"order_id": "#.into(),
            400,
        ),
        (
            "text/plain body",
            "POST",
            "/tickets",
            Some("text/plain"),
            ticket(items()),
            415,
        ),
        ("no content type", "POST", "/tickets", None, ticket(items()), 415),
        (
            "oversize body",
            "POST",
            "/tickets",
            json_type,
            format!(r#"{{"pad":"{}"}}"#, "x".repeat(20_000)),
            413,
        ),
        (
            "order id not a uuid",
            "POST",
            "/tickets",
            json_type,
            json!({"order_id": "42", "items": items()}).to_string(),
            422,
        ),
        (
            "items missing",
            "POST",
            "/tickets",
            json_type,
            json!({"order_id": order}).to_string(),
            422,
        ),
        (
            "empty items",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([])),
            422,
        ),
        (
            "unknown pizza",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "hawaii", "quantity": 1}])),
            422,
        ),
        (
            "zero quantity",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "margherita", "quantity": 0}])),
            422,
        ),
        (
            "negative quantity",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "margherita", "quantity": -1}])),
            422,
        ),
        (
            "fractional quantity",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "margherita", "quantity": 1.5}])),
            422,
        ),
        (
            "absurd quantity",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "margherita", "quantity": 1e20}])),
            422,
        ),
        (
            "21 of one pizza",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([{"pizza": "margherita", "quantity": 21}])),
            422,
        ),
        (
            "51 pizzas in all",
            "POST",
            "/tickets",
            json_type,
            ticket(json!([
                {"pizza": "margherita", "quantity": 20},
                {"pizza": "diavola", "quantity": 20},
                {"pizza": "funghi", "quantity": 11}
            ])),
            422,
        ),
        (
            "status of a non-uuid",
            "GET",
            "/tickets/not-a-uuid",
            None,
            String::new(),
            400,
        ),
        (
            "status of an unknown order",
            "GET",
            &status_uri,
            None,
            String::new(),
            404,
        ),
        (
            "pickup of an unknown order",
            "POST",
            &pickup_uri,
            None,
            String::new(),
            404,
        ),
        (
            "cancel of an unknown order",
            "POST",
            &cancel_uri,
            None,
            String::new(),
            404,
        ),
        ("unknown route", "GET", "/nowhere", None, String::new(), 404),
        ("wrong method", "DELETE", "/tickets", None, String::new(), 405),
        (
            "admin without token",
            "PUT",
            "/admin/faults",
            json_type,
            "{}".into(),
            401,
        ),
    ];
    let mut summary = Vec::new();
    for (what, method, uri, content_type, body, expected) in cases {
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            request = request.header(http::header::CONTENT_TYPE, t);
        }
        let response = router.clone().oneshot(request.body(Body::from(body))?).await?;
        let status = response.status().as_u16();
        let content = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        let problem: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{what}: body is not JSON"))?;
        ensure!(
            status == expected,
            "{what}: expected {expected}, got {status}: {problem}"
        );
        ensure!(
            content == "application/problem+json",
            "{what}: content type {content:?}"
        );
        ensure!(problem["status"] == expected, "{what}: problem status {problem}");
        if what == "unknown pizza" {
            ensure!(problem["type"] == problems::UNKNOWN_PIZZA, "{problem}");
            ensure!(problem["errors"][0]["field"] == "/items/0/pizza", "{problem}");
        }
        summary.push(format!("{what} → {status}"));
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from kitchen.tickets")
        .fetch_one(&pool)
        .await?;
    ensure!(stored == 0, "a refused request stored {stored} tickets");
    println!(
        "{} bad requests, all 4xx problem+json: {}",
        summary.len(),
        summary.join("; ")
    );
    Ok(())
}

// ---- the happy path --------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_ticket_is_cooked_announced_in_order_and_picked_up_once_ready(pool: PgPool) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    let app = TestApp::spawn(&pool, config(&topics.kitchen, &topics.orders)).await?;
    let order = Uuid::now_v7();

    let (code, created) = app.post_ticket(order, items()).await?;
    ensure!(code == 201, "first POST answered {code}: {created}");
    ensure!(created["status"] == "queued", "{created}");
    let ticket_id = created["ticket_id"].as_str().context("ticket_id")?.to_owned();

    let (code, again) = app.post_ticket(order, items()).await?;
    ensure!(code == 200, "the same POST again answered {code}: {again}");
    ensure!(
        again["ticket_id"] == ticket_id.as_str(),
        "a second ticket was made: {again}"
    );
    let (code, conflict) = app
        .post_ticket(order, json!([{"pizza": "funghi", "quantity": 1}]))
        .await?;
    ensure!(
        code == 409 && conflict["type"] == problems::TICKET_CONFLICT,
        "{code}: {conflict}"
    );

    let seen = events_until(&topics.kitchen, order, types::ORDER_READY).await?;
    ensure!(
        types_of(&seen) == [types::ORDER_IN_PREPARATION, types::ORDER_READY],
        "events for the order: {:?}",
        types_of(&seen)
    );
    ensure!(
        seen.iter().all(|s| s.body["ticket_id"] == ticket_id.as_str()),
        "{seen:?}"
    );
    app.wait_for_status(order, "ready").await?;

    let (code, picked) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/pickup"), None)
        .await?;
    ensure!(code == 200 && picked["status"] == "picked_up", "{code}: {picked}");
    let (code, _) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/pickup"), None)
        .await?;
    ensure!(code == 200, "a repeated pickup answered {code}");
    let (code, refused) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/cancel"), None)
        .await?;
    ensure!(
        code == 409 && refused["type"] == problems::TICKET_CLOSED,
        "cancel after pickup: {code} {refused}"
    );
    let (code, _) = app.post_ticket(order, items()).await?;
    ensure!(code == 200, "re-POST after pickup answered {code}");
    ensure!(
        events(&topics.kitchen, order).await?.len() == 2,
        "no event after ready"
    );
    println!(
        "ticket {ticket_id}: 201, 200 on re-POST, 409 on other items; events {:?}; pickup 200",
        types_of(&seen)
    );
    app.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_cooking_ticket_cannot_be_picked_up_and_cancelling_it_twice_is_fine(
    pool: PgPool,
) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    // 8 s × 50 = 400 s: the ticket stays in the oven for the whole test.
    let app = TestApp::spawn(
        &pool,
        with_time_scale(config(&topics.kitchen, &topics.orders), 50.0),
    )
    .await?;
    let order = Uuid::now_v7();
    ensure!(app.post_ticket(order, items()).await?.0 == 201);
    app.wait_for_status(order, "cooking").await?;

    let (code, body) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/pickup"), None)
        .await?;
    ensure!(
        code == 409 && body["type"] == problems::NOT_READY,
        "pickup while cooking: {code} {body}"
    );
    for attempt in 1..=2 {
        let (code, body) = app
            .call(reqwest::Method::POST, &format!("/tickets/{order}/cancel"), None)
            .await?;
        ensure!(
            code == 200 && body["status"] == "cancelled",
            "cancel #{attempt}: {code} {body}"
        );
    }
    let (code, body) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/pickup"), None)
        .await?;
    ensure!(
        code == 409 && body["type"] == problems::TICKET_CLOSED,
        "pickup after cancel: {code} {body}"
    );
    app.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_cancel_frees_its_oven_for_the_next_ticket_at_once(pool: PgPool) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    // One oven, 8 s × 50 = 400 s a ticket, and a safety net of a minute (see `config`): the second
    // ticket can only start within the test because the cancel's notification wakes the ovens.
    let mut settings = with_time_scale(config(&topics.kitchen, &topics.orders), 50.0);
    settings.ovens = 1;
    let app = TestApp::spawn(&pool, settings).await?;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    ensure!(app.post_ticket(first, items()).await?.0 == 201);
    app.wait_for_status(first, "cooking").await?;
    ensure!(app.post_ticket(second, items()).await?.0 == 201);
    // The new ticket woke the ovens too: they looked, and the one oven is busy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        app.status(second).await? == "queued",
        "one oven, busy: the second waits"
    );

    let (code, body) = app
        .call(reqwest::Method::POST, &format!("/tickets/{first}/cancel"), None)
        .await?;
    ensure!(code == 200, "cancel: {code} {body}");
    app.wait_for_status(second, "cooking").await?;
    app.stop().await
}

// ---- cancellation by event -------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn order_cancelled_events_cancel_tickets_past_poison_and_duplicates(
    pool: PgPool,
) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    // 8 s × 50 = 400 s in the oven: only the cancellation can end these tickets.
    let app = TestApp::spawn(
        &pool,
        with_time_scale(config(&topics.kitchen, &topics.orders), 50.0),
    )
    .await?;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    for order in [first, second] {
        ensure!(app.post_ticket(order, items()).await?.0 == 201);
    }
    let cancel = |order| {
        Envelope::new(
            "/pizza/order",
            OrderEvent::from(OrderCancelled {
                order_id: order,
                reason: "payment-declined".into(),
            }),
        )
    };
    let event = cancel(first);
    let encoded = event.encode()?;
    let later = cancel(second).encode()?;
    // In partition order: a poison record (an order-cancelled whose body is not JSON), the
    // cancellation of the first order twice (as an at-least-once producer may send it), then the
    // cancellation of the second order, which can only be applied once everything before it was.
    let records: Vec<(&str, rdkafka::message::OwnedHeaders, &[u8])> = vec![
        (&encoded.key, encoded.headers.clone(), b"{not json"),
        (&encoded.key, encoded.headers.clone(), &encoded.payload),
        (&encoded.key, encoded.headers.clone(), &encoded.payload),
        (&later.key, later.headers.clone(), &later.payload),
    ];
    let producer: FutureProducer = kafka::producer_config(&Stack::from_env()).create()?;
    for (key, headers, payload) in records {
        producer
            .send(
                FutureRecord::to(&topics.orders)
                    .key(key)
                    .headers(headers)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    app.wait_for_status(second, "cancelled").await?;
    ensure!(app.status(first).await? == "cancelled");
    let applied: i64 = sqlx::query_scalar("select count(*) from kitchen.inbox where event_id = $1")
        .bind(event.id())
        .fetch_one(&pool)
        .await?;
    ensure!(applied == 1, "the first cancellation was applied {applied} times");
    let dead = events(&pizza_contracts::topics::dead_letter(&topics.orders), first).await?;
    ensure!(dead.len() == 1, "dead letters for the order: {dead:?}");
    let (code, body) = app
        .call(reqwest::Method::POST, &format!("/tickets/{first}/pickup"), None)
        .await?;
    ensure!(
        code == 409 && body["type"] == problems::TICKET_CLOSED,
        "{code} {body}"
    );
    println!("poison → 1 dead letter; duplicate cancellation applied {applied} time; both tickets cancelled");
    app.stop().await
}

// ---- the oven fault ---------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_broken_oven_reports_a_kitchen_issue_instead_of_ready(pool: PgPool) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    let app = TestApp::spawn(&pool, config(&topics.kitchen, &topics.orders)).await?;
    let plan = json!({"seed": 7, "business_failure_rate": {"oven": 1.0}});
    let response = app
        .http
        .put(format!("{}/admin/faults", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&plan)
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "PUT /admin/faults answered {}",
        response.status()
    );

    let order = Uuid::now_v7();
    ensure!(app.post_ticket(order, items()).await?.0 == 201);
    let seen = events_until(&topics.kitchen, order, types::KITCHEN_ISSUE).await?;
    ensure!(
        types_of(&seen) == [types::ORDER_IN_PREPARATION, types::KITCHEN_ISSUE],
        "{:?}",
        types_of(&seen)
    );
    ensure!(seen[1].body["reason"] == "oven-failure", "{:?}", seen[1].body);
    app.wait_for_status(order, "failed").await?;
    let (code, body) = app
        .call(reqwest::Method::POST, &format!("/tickets/{order}/pickup"), None)
        .await?;
    ensure!(
        code == 409 && body["type"] == problems::TICKET_CLOSED,
        "{code} {body}"
    );
    app.stop().await
}

// ---- durability -------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_restarted_kitchen_finishes_the_ticket_the_stopped_one_was_cooking(
    pool: PgPool,
) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    // 8 s × 0.25 = 2 s in the oven: the first kitchen stops while the ticket cooks.
    let settings = with_time_scale(config(&topics.kitchen, &topics.orders), 0.25);
    let first = TestApp::spawn(&pool, settings.clone()).await?;
    let order = Uuid::now_v7();
    ensure!(first.post_ticket(order, items()).await?.0 == 201);
    first.wait_for_status(order, "cooking").await?;
    first.stop().await?;

    let second = TestApp::spawn(&pool, settings).await?;
    let seen = events_until(&topics.kitchen, order, types::ORDER_READY).await?;
    ensure!(
        types_of(&seen) == [types::ORDER_IN_PREPARATION, types::ORDER_READY],
        "each event once, in order: {:?}",
        types_of(&seen)
    );
    second.wait_for_status(order, "ready").await?;
    second.stop().await
}

// ---- the trace ---------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn the_ready_event_is_sent_in_the_trace_of_the_ticket_request(pool: PgPool) -> anyhow::Result<()> {
    pizza_testkit::telemetry::init_once("kitchen");
    let topics = Topics::create().await?;
    let app = TestApp::spawn(&pool, config(&topics.kitchen, &topics.orders)).await?;
    let order = Uuid::now_v7();
    let trace_id = Uuid::new_v4().simple().to_string();
    let caller_span = &Uuid::new_v4().simple().to_string()[..16];
    let response = app
        .http
        .post(format!("{}/tickets", app.base))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"order_id": order, "items": items()}))
        .send()
        .await?;
    ensure!(response.status() == 201, "POST answered {}", response.status());

    let seen = events_until(&topics.kitchen, order, types::ORDER_READY).await?;
    for s in &seen {
        let tp = s.traceparent.as_deref().unwrap_or_default();
        ensure!(
            tp.contains(&trace_id),
            "{} record carries traceparent {tp:?}",
            s.event_type
        );
    }
    app.stop().await?;
    pizza_testkit::telemetry::flush().await;

    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let send_name = format!("send {}", topics.kitchen);
    let is_ready_send = |s: &pizza_testkit::Span| {
        s.name == send_name && s.attr_str(pizza::EVENT_TYPE) == Some(types::ORDER_READY)
    };
    let trace = jaeger
        .wait_for_trace(&trace_id, Duration::from_secs(60), |t| {
            t.span("POST /tickets").is_some()
                && t.spans.iter().any(is_ready_send)
                && t.span("cook.finish").is_some()
        })
        .await?;
    let server = trace.span("POST /tickets").context("server span")?;
    ensure!(server.kind == SpanKind::Server, "{:?}", server.kind);
    ensure!(
        server.parent_span_id.as_deref() == Some(caller_span),
        "the caller's traceparent was not continued"
    );
    let finish = trace.span("cook.finish").context("cook.finish")?;
    let start = trace.span("cook.start").context("cook.start")?;
    ensure!(
        finish.is_child_of(server) && start.is_child_of(server),
        "oven spans continue the stored carrier"
    );
    let send = trace
        .spans
        .iter()
        .find(|s| is_ready_send(s))
        .context("send span")?;
    ensure!(send.kind == SpanKind::Producer, "{:?}", send.kind);
    ensure!(
        send.is_child_of(finish),
        "the ready event is sent under cook.finish:\n{}",
        trace.summary()
    );
    for span in [server, start, finish, send] {
        ensure!(
            span.attr_str(pizza::ORDER_ID) == Some(order.to_string().as_str()),
            "{} lacks pizza.order.id",
            span.name
        );
    }
    let unknown = unknown_attributes(&trace, &Registry::load().map_err(anyhow::Error::msg)?);
    ensure!(unknown.is_empty(), "unregistered attributes: {unknown:?}");
    println!(
        "trace {trace_id}: {} spans, ready sent under cook.finish under POST /tickets",
        trace.spans.len()
    );
    Ok(())
}
