//! The delivery service against the real stack, with the real kitchen: both run in-process on port
//! 0 against one fresh database (each in its own schema), with Kafka topics of the test's own.
//!
//! Times are scaled down and every wait is bounded; no test asserts on timing. Where a test needs
//! the kitchen to be "not ready yet" and then ready, it cooks for minutes and the test ends the cook
//! time in the kitchen's table, instead of racing a clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::body::Body;
use pizza_contracts::events::{DeliveryAddress, DeliveryCommand, DeliveryRequested};
use pizza_contracts::types;
use pizza_delivery::{Config, Delivery};
use pizza_messaging::Envelope;
use pizza_servicekit::{Host, ServiceConfig};
use pizza_telemetry::attributes::pizza;
use pizza_testkit::app::Running;
use pizza_testkit::conventions::{Registry, personal_data, unknown_attributes};
use pizza_testkit::records::{self, Seen, eventually, types_of};
use pizza_testkit::{Jaeger, SpanKind, Stack, kafka};
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tower::ServiceExt as _;
use uuid::Uuid;

const ADMIN_TOKEN: &str = "delivery-test-token";
/// The customer's details in every request: they must never show up in a span.
const RECIPIENT: &str = "Ada Testperson";
const STREET: &str = "12 Analytical Row";

// ---- helpers ---------------------------------------------------------------------------------------

/// The topics of one test.
struct Topics {
    requests: String,
    events: String,
    kitchen: String,
    orders: String,
}

impl Topics {
    async fn create() -> anyhow::Result<Self> {
        let t = Self {
            requests: kafka::unique_topic("delivery.requests"),
            events: kafka::unique_topic("delivery.events"),
            kitchen: kafka::unique_topic("kitchen.events"),
            orders: kafka::unique_topic("orders.events"),
        };
        let requests_dlq = pizza_contracts::topics::dead_letter(&t.requests);
        let orders_dlq = pizza_contracts::topics::dead_letter(&t.orders);
        kafka::create_topics(
            &Stack::from_env().kafka_bootstrap,
            &[
                (&t.requests, 1),
                (&requests_dlq, 1),
                (&t.events, 1),
                (&t.kitchen, 1),
                (&t.orders, 1),
                (&orders_dlq, 1),
            ],
        )
        .await?;
        Ok(t)
    }
}

/// The real kitchen, cooking for `8 s × time_scale`.
fn kitchen_config(topics: &Topics, time_scale: f64) -> pizza_kitchen::Config {
    let stack = Stack::from_env();
    pizza_kitchen::Config {
        common: ServiceConfig {
            database_url: stack.database_url.clone(),
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            time_scale,
            admin_token: None,
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
        kitchen_events_topic: topics.kitchen.clone(),
        orders_events_topic: topics.orders.clone(),
        consumer_group: format!("kitchen-test-{}", Uuid::new_v4().simple()),
    }
}

/// Delivery settings: legs of 3 s × 0.02 = 60 ms, pickup retries every 2 s × 0.02 = 40 ms.
fn delivery_config(topics: &Topics, kitchen_url: &str) -> Config {
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
        kitchen_url: kitchen_url.to_owned(),
        leg_seconds: 3.0,
        updates: 4,
        pickup_retry_seconds: 2.0,
        pickup_attempts: 1000,
        // Only notifications and due times may drive the loops here: a test passes on events, never
        // on a poll.
        safety_net_ms: 60_000,
        requests_topic: topics.requests.clone(),
        events_topic: topics.events.clone(),
        consumer_group: format!("delivery-test-{}", Uuid::new_v4().simple()),
    }
}

/// The kitchen and the delivery service, both real, on one database.
struct Shop {
    pool: PgPool,
    topics: Topics,
    kitchen: Running,
    delivery: Running,
    http: reqwest::Client,
}

impl Shop {
    async fn open(pool: &PgPool, kitchen_time_scale: f64) -> anyhow::Result<Self> {
        let topics = Topics::create().await?;
        let kitchen = Host::<pizza_kitchen::Kitchen>::with_pool(
            kitchen_config(&topics, kitchen_time_scale),
            pool.clone(),
        )
        .await?;
        let kitchen =
            Running::start(|listener, shutdown| async move { Ok(kitchen.run(listener, shutdown).await?) })
                .await?;
        let delivery =
            Host::<Delivery>::with_pool(delivery_config(&topics, &kitchen.base), pool.clone()).await?;
        let delivery =
            Running::start(|listener, shutdown| async move { Ok(delivery.run(listener, shutdown).await?) })
                .await?;
        Ok(Self {
            pool: pool.clone(),
            topics,
            kitchen,
            delivery,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn post_ticket(&self, order: Uuid) -> anyhow::Result<Uuid> {
        let response = self
            .http
            .post(format!("{}/tickets", self.kitchen.base))
            .json(&json!({"order_id": order, "items": [{"pizza": "margherita", "quantity": 1}]}))
            .send()
            .await?;
        ensure!(
            response.status() == 201,
            "POST /tickets answered {}",
            response.status()
        );
        let body: Value = response.json().await?;
        Ok(body["ticket_id"].as_str().context("ticket_id")?.parse()?)
    }

    async fn get(&self, url: String) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(url).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn ticket_status(&self, order: Uuid) -> anyhow::Result<String> {
        let (_, body) = self.get(format!("{}/tickets/{order}", self.kitchen.base)).await?;
        Ok(body["status"].as_str().unwrap_or_default().to_owned())
    }

    async fn delivery(&self, order: Uuid) -> anyhow::Result<Option<Value>> {
        let (code, body) = self
            .get(format!("{}/deliveries/{order}", self.delivery.base))
            .await?;
        Ok((code == 200).then_some(body))
    }

    /// Sends `delivery-requested` for the order, with `traceparent` if given.
    async fn request_delivery(
        &self,
        order: Uuid,
        ticket: Uuid,
        traceparent: Option<&str>,
    ) -> anyhow::Result<()> {
        request_delivery(&self.topics.requests, order, ticket, traceparent).await
    }

    async fn close(self) -> anyhow::Result<()> {
        self.delivery.stop().await?;
        self.kitchen.stop().await
    }
}

/// Sends `delivery-requested` for the order to `topic`, with `traceparent` if given.
async fn request_delivery(
    topic: &str,
    order: Uuid,
    ticket: Uuid,
    traceparent: Option<&str>,
) -> anyhow::Result<()> {
    let event = Envelope::new(
        "/pizza/order",
        DeliveryCommand::from(DeliveryRequested {
            order_id: order,
            ticket_id: ticket,
            address: DeliveryAddress {
                recipient: RECIPIENT.into(),
                street: STREET.into(),
                postal_code: "NW1".into(),
                city: "London".into(),
            },
        }),
    );
    let encoded = event.encode()?;
    let mut headers = encoded.headers;
    if let Some(tp) = traceparent {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(tp),
        });
    }
    let producer: FutureProducer = kafka::producer_config(&Stack::from_env()).create()?;
    producer
        .send(
            FutureRecord::to(topic)
                .key(&encoded.key)
                .headers(headers)
                .payload(&encoded.payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Waits until the order's events on `topic` include `last`, and returns them all.
async fn events_until(topic: &str, order: Uuid, last: &str) -> anyhow::Result<Vec<Seen>> {
    let bootstrap = Stack::from_env().kafka_bootstrap;
    let limit = Duration::from_secs(60);
    records::events_until(&bootstrap, topic, &order.to_string(), last, limit).await
}

/// Ends the cook time of the order's ticket now and wakes the ovens, as a new ticket would (they
/// sleep until the cook time they read): the round that wakes takes it out ready.
async fn finish_cooking(pool: &PgPool, order: Uuid) -> anyhow::Result<()> {
    let changed = sqlx::query(
        "update kitchen.tickets set cook_until = now() where order_id = $1 and status = 'cooking'",
    )
    .bind(order)
    .execute(pool)
    .await?
    .rows_affected();
    ensure!(changed == 1, "the ticket was not cooking");
    pizza_kitchen::ovens::announce(pool);
    Ok(())
}

// ---- the API ---------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn bad_status_requests_get_a_4xx_problem(pool: PgPool) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    let delivery = Host::<Delivery>::with_pool(delivery_config(&topics, "http://127.0.0.1:9"), pool).await?;
    let router = delivery.router()?;
    let cases = [
        ("GET", "/deliveries/not-a-uuid".to_owned(), 400),
        ("GET", format!("/deliveries/{}", Uuid::now_v7()), 404),
        ("POST", format!("/deliveries/{}", Uuid::now_v7()), 405),
        ("GET", "/nowhere".to_owned(), 404),
        ("GET", "/admin/faults".to_owned(), 401),
    ];
    for (method, uri, expected) in cases {
        let response = router
            .clone()
            .oneshot(
                http::Request::builder()
                    .method(method)
                    .uri(&uri)
                    .body(Body::empty())?,
            )
            .await?;
        let status = response.status().as_u16();
        let content = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            status == expected,
            "{method} {uri}: expected {expected}, got {status}"
        );
        ensure!(content == "application/problem+json", "{method} {uri}: {content}");
    }
    Ok(())
}

// ---- the delivery story ----------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_driver_waits_for_the_kitchen_then_drives_with_updates_and_completes(
    pool: PgPool,
) -> anyhow::Result<()> {
    // The kitchen cooks for 8 s × 50 = 400 s until the test ends the cook time.
    let shop = Shop::open(&pool, 50.0).await?;
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    eventually(Duration::from_secs(30), "ticket cooking", || async {
        Ok((shop.ticket_status(order).await? == "cooking").then_some(()))
    })
    .await?;
    shop.request_delivery(order, ticket, None).await?;
    let attempts = eventually(
        Duration::from_secs(60),
        "two pickups refused as not ready",
        || async {
            let d = shop.delivery(order).await?;
            Ok(d.and_then(|d| d["pickup_attempts"].as_i64()).filter(|n| *n >= 2))
        },
    )
    .await?;
    ensure!(shop.ticket_status(order).await? == "cooking");
    finish_cooking(&shop.pool, order).await?;

    let seen = events_until(&shop.topics.events, order, types::ORDER_COMPLETED).await?;
    ensure!(
        types_of(&seen)
            == [
                types::ORDER_OUT_FOR_DELIVERY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_COMPLETED
            ],
        "{:?}",
        types_of(&seen)
    );
    let progress: Vec<i64> = seen
        .iter()
        .filter_map(|s| s.body["progress_percent"].as_i64())
        .collect();
    ensure!(progress == [20, 40, 60, 80], "{progress:?}");
    let delivery_id = seen[0].body["delivery_id"].clone();
    ensure!(
        seen.iter().all(|s| s.body["delivery_id"] == delivery_id),
        "one trip id"
    );
    ensure!(
        shop.ticket_status(order).await? == "picked_up",
        "the kitchen handed the order over"
    );
    let d = shop.delivery(order).await?.context("delivery")?;
    ensure!(d["status"] == "delivered", "{d}");
    println!(
        "{attempts}+ pickups refused while cooking, then {:?} with progress {progress:?}",
        types_of(&seen)
    );
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn the_kitchen_and_the_delivery_listen_to_nothing_and_their_commits_notify_nobody(
    pool: PgPool,
) -> anyhow::Result<()> {
    // A listener of the test's own on every channel the two services wake on.
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen_all([
            pizza_kitchen::ovens::NOTIFY_CHANNEL,
            pizza_delivery::drivers::NOTIFY_CHANNEL,
            "pizza_outbox",
        ])
        .await?;
    let own: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut listener)
        .await?;
    // A kitchen that cooks in 160 ms. Every loop's safety net is a minute (see the configs): the
    // whole order below moves only because each commit wakes the loop or relay it concerns, in
    // memory.
    let shop = Shop::open(&pool, 0.02).await?;
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    shop.request_delivery(order, ticket, None).await?;
    events_until(&shop.topics.events, order, types::ORDER_COMPLETED).await?;
    events_until(&shop.topics.kitchen, order, types::ORDER_READY).await?;
    let listening: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and query ilike 'LISTEN %' and pid <> $1",
    )
    .bind(own)
    .fetch_one(&shop.pool)
    .await?;
    ensure!(listening == 0, "{listening} of the services' connections listen");
    match tokio::time::timeout(Duration::from_millis(300), listener.recv()).await {
        Err(_) => {}
        Ok(notification) => anyhow::bail!("the services notified: {notification:?}"),
    }
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn the_driver_fault_ends_the_delivery_with_a_delivery_issue(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool, 0.02).await?;
    let response = shop
        .http
        .put(format!("{}/admin/faults", shop.delivery.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"business_failure_rate": {"driver": 1.0}}))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "PUT /admin/faults answered {}",
        response.status()
    );
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    shop.request_delivery(order, ticket, None).await?;
    let seen = events_until(&shop.topics.events, order, types::DELIVERY_ISSUE).await?;
    ensure!(
        types_of(&seen) == [types::ORDER_OUT_FOR_DELIVERY, types::DELIVERY_ISSUE],
        "{:?}",
        types_of(&seen)
    );
    ensure!(seen[1].body["reason"] == "driver-failure", "{}", seen[1].body);
    let d = shop.delivery(order).await?.context("delivery")?;
    ensure!(
        d["status"] == "failed" && d["failure_reason"] == "driver-failure",
        "{d}"
    );
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_ticket_ends_the_delivery_with_a_delivery_issue(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool, 50.0).await?;
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    let response = shop
        .http
        .post(format!("{}/tickets/{order}/cancel", shop.kitchen.base))
        .send()
        .await?;
    ensure!(response.status() == 200);
    shop.request_delivery(order, ticket, None).await?;
    let seen = events_until(&shop.topics.events, order, types::DELIVERY_ISSUE).await?;
    ensure!(
        types_of(&seen) == [types::DELIVERY_ISSUE],
        "{:?}",
        types_of(&seen)
    );
    ensure!(seen[0].body["reason"] == "ticket-unavailable", "{}", seen[0].body);
    shop.close().await
}

/// A kitchen that takes every connection and never answers: a pickup asked of it hangs until the
/// client gives up. Counts the connections it took; they are held until the task is aborted.
async fn hanging_kitchen() -> anyhow::Result<(String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    Ok((base, taken, task))
}

#[sqlx::test(migrations = false)]
async fn a_hanging_kitchen_holds_back_its_pickup_and_no_drive(pool: PgPool) -> anyhow::Result<()> {
    let topics = Topics::create().await?;
    let (kitchen, taken, kitchen_task) = hanging_kitchen().await?;
    let delivery = Host::<Delivery>::with_pool(delivery_config(&topics, &kitchen), pool.clone()).await?;
    let delivery =
        Running::start(|listener, shutdown| async move { Ok(delivery.run(listener, shutdown).await?) })
            .await?;

    // Order A asks for its pickup, and the kitchen keeps the driver waiting.
    let waiting = Uuid::now_v7();
    request_delivery(&topics.requests, waiting, Uuid::now_v7(), None).await?;
    eventually(Duration::from_secs(60), "the pickup of A asked", || async {
        Ok((taken.load(Ordering::SeqCst) >= 1).then_some(()))
    })
    .await?;

    // Order B is on the way meanwhile (picked up before: put there by hand, and its drive woken as a
    // pickup round wakes it).
    let driving = Uuid::now_v7();
    sqlx::query(
        "insert into delivery.deliveries (delivery_id, order_id, ticket_id, status, picked_up_at) \
         values ($1, $2, $3, 'on_the_way', now())",
    )
    .bind(Uuid::now_v7())
    .bind(driving)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await?;
    pizza_delivery::drivers::announce_on_the_way(&pool);

    // B's whole drive (five legs of 60 ms) ends while A's pickup still hangs: in one loop, B's next
    // leg waited in the round of A's pickup until the kitchen client gave up on it (5 s, then again).
    let seen = events_until(&topics.events, driving, types::ORDER_COMPLETED).await?;
    ensure!(
        types_of(&seen).last() == Some(&types::ORDER_COMPLETED) && seen.len() == 5,
        "{:?}",
        types_of(&seen)
    );
    let (status, attempts): (String, i32) =
        sqlx::query_as("select status, pickup_attempts from delivery.deliveries where order_id = $1")
            .bind(waiting)
            .fetch_one(&pool)
            .await?;
    ensure!(
        status == "requested" && attempts == 0,
        "A's pickup is still the first, still unanswered: {status}, {attempts} attempts"
    );
    // Let A's pickup fail (connections dropped) so the service stops at once.
    kitchen_task.abort();
    delivery.stop().await
}

// ---- durability -------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn a_restarted_delivery_service_resumes_the_drive_where_it_stood(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool, 0.02).await?;
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    // Stop the delivery service and start one whose legs take 60 s × 0.02 = 1.2 s, so it is stopped
    // again in the middle of the drive.
    let Shop {
        pool,
        topics,
        kitchen,
        delivery,
        http,
    } = shop;
    delivery.stop().await?;
    let slow = Config {
        leg_seconds: 60.0,
        ..delivery_config(&topics, &kitchen.base)
    };
    let start = |config: Config| {
        let pool = pool.clone();
        async move {
            let delivery = Host::<Delivery>::with_pool(config, pool).await?;
            Running::start(|listener, shutdown| async move { Ok(delivery.run(listener, shutdown).await?) })
                .await
        }
    };
    let first = start(slow.clone()).await?;
    let shop = Shop {
        pool: pool.clone(),
        topics,
        kitchen,
        delivery: first,
        http,
    };
    shop.request_delivery(order, ticket, None).await?;
    eventually(Duration::from_secs(60), "the drive under way", || async {
        let d = shop.delivery(order).await?;
        Ok(d.filter(|d| d["status"] == "on_the_way" && d["updates_sent"].as_i64() >= Some(1)))
    })
    .await?;
    let Shop {
        pool,
        topics,
        kitchen,
        delivery: first,
        http,
    } = shop;
    first.stop().await?;

    let second = start(slow).await?;
    let shop = Shop {
        pool,
        topics,
        kitchen,
        delivery: second,
        http,
    };
    let seen = events_until(&shop.topics.events, order, types::ORDER_COMPLETED).await?;
    ensure!(
        types_of(&seen)
            == [
                types::ORDER_OUT_FOR_DELIVERY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_ON_ITS_WAY,
                types::ORDER_COMPLETED
            ],
        "each event once, in order, across the restart: {:?}",
        types_of(&seen)
    );
    shop.close().await
}

// ---- the trace ---------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn pickup_and_every_delivery_event_stay_in_the_requests_trace(pool: PgPool) -> anyhow::Result<()> {
    pizza_testkit::telemetry::init_once("delivery");
    let shop = Shop::open(&pool, 0.02).await?;
    let order = Uuid::now_v7();
    let ticket = shop.post_ticket(order).await?;
    eventually(Duration::from_secs(30), "ticket ready", || async {
        Ok((shop.ticket_status(order).await? == "ready").then_some(()))
    })
    .await?;
    let trace_id = Uuid::new_v4().simple().to_string();
    let producer_span = Uuid::new_v4().simple().to_string()[..16].to_owned();
    shop.request_delivery(order, ticket, Some(&format!("00-{trace_id}-{producer_span}-01")))
        .await?;
    events_until(&shop.topics.events, order, types::ORDER_COMPLETED).await?;
    let requests_topic = shop.topics.requests.clone();
    let events_topic = shop.topics.events.clone();
    shop.close().await?;
    pizza_testkit::telemetry::flush().await;

    let process_name = format!("process {requests_topic}");
    let send_name = format!("send {events_topic}");
    let completed = |s: &pizza_testkit::Span| {
        s.name == send_name && s.attr_str(pizza::EVENT_TYPE) == Some(types::ORDER_COMPLETED)
    };
    let jaeger = Jaeger::new(Stack::from_env().jaeger_url);
    let trace = jaeger
        .wait_for_trace(&trace_id, Duration::from_secs(60), |t| {
            t.span(&process_name).is_some()
                && t.span("POST /tickets/{order_id}/pickup").is_some()
                && t.spans.iter().any(completed)
        })
        .await?;
    let process = trace.span(&process_name).context("process span")?;
    ensure!(process.kind == SpanKind::Consumer);
    let pickup = trace.span("delivery.pickup").context("delivery.pickup")?;
    ensure!(
        pickup.is_child_of(process),
        "the pickup continues the stored carrier:\n{}",
        trace.summary()
    );
    let client = trace
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Client && s.is_child_of(pickup))
        .context("CLIENT span under delivery.pickup")?;
    let server = trace
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.name == "POST /tickets/{order_id}/pickup")
        .context("kitchen SERVER span")?;
    ensure!(
        server.is_child_of(client),
        "the kitchen continues the client's traceparent"
    );
    let send = trace
        .spans
        .iter()
        .find(|s| completed(s))
        .context("send order-completed")?;
    let drive = trace
        .by_id(send.parent_span_id.as_deref().unwrap_or_default())
        .context("send's parent")?;
    ensure!(
        drive.name == "delivery.drive" && drive.is_child_of(process),
        "{}",
        trace.summary()
    );
    for span in [process, pickup, client, server, drive, send] {
        ensure!(
            span.attr_str(pizza::ORDER_ID) == Some(order.to_string().as_str())
                || span.kind == SpanKind::Client,
            "{} lacks pizza.order.id",
            span.name
        );
    }
    let unknown = unknown_attributes(&trace, &Registry::load().map_err(anyhow::Error::msg)?);
    ensure!(unknown.is_empty(), "unregistered attributes: {unknown:?}");
    let leaked = personal_data(&trace, &[RECIPIENT, STREET, "NW1", "London"]);
    ensure!(leaked.is_empty(), "customer data in spans: {leaked:?}");
    println!(
        "trace {trace_id}: {} spans; process → pickup → CLIENT → kitchen SERVER; drive → send completed",
        trace.spans.len()
    );
    Ok(())
}
