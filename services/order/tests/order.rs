//! The order service with the real kitchen and delivery, on the real stack: the happy path, the
//! kitchen failing (retries as step attempts), compensation, cancellation, idempotency, bad input.
//!
//! The shop is `pizza_testkit::shop`'s: the three services as real processes on the test's database,
//! with topics of their own and times scaled down (an order takes seconds); every wait is bounded and
//! no test asserts on timing.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::body::Body;
use pizza_servicekit::Host;
use pizza_testkit::records::eventually;
use pizza_testkit::shop::{ADMIN_TOKEN, Options, Service, Shop, database_url_of, database_url_on};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;
use uuid::Uuid;

/// How long an order may take to end before a test fails.
const ORDER_LIMIT: Duration = Duration::from_secs(60);

fn order_body() -> Value {
    json!({
        "customer": {"name": "Ada Testperson", "phone": "+39 055 0000",
                     "address": {"street": "1 Oven Lane", "postal_code": "50100", "city": "Firenze"}},
        "items": [{"pizza": "margherita", "quantity": 2}, {"pizza": "diavola", "quantity": 1}]
    })
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(shop: &Shop) -> Self {
        Self {
            base: shop.url(Service::Order),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn place(&self, body: &Value, key: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.post(format!("{}/orders", self.base)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    async fn set_faults(&self, service: &str, plan: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/admin/services/{service}/faults", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&plan)
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "setting faults on {service}: {}",
            response.status()
        );
        Ok(())
    }

    /// Every publish of `service` fails: its events wait in its outbox until [`Client::clear_faults`].
    async fn hold_events(&self, service: &str) -> anyhow::Result<()> {
        self.set_faults(service, json!({"kafka_publish_failure_rate": 1.0}))
            .await
    }

    async fn clear_faults(&self, service: &str) -> anyhow::Result<()> {
        self.set_faults(service, json!({})).await
    }

    /// Places the default order and returns its id.
    async fn place_order(&self) -> anyhow::Result<Uuid> {
        Ok(self.place_cancellable().await?.0)
    }

    /// Places the default order and returns its id and its cancel token.
    async fn place_cancellable(&self) -> anyhow::Result<(Uuid, String)> {
        let (status, body) = self.place(&order_body(), None).await?;
        ensure!(status == 202, "POST /orders answered {status}: {body}");
        let token = body["cancel_token"].as_str().context("cancel_token")?;
        Ok((
            body["order_id"].as_str().context("order_id")?.parse()?,
            token.to_owned(),
        ))
    }

    /// `POST /orders/{order}/cancel` with `token`: the status and the body.
    async fn cancel(&self, order: Uuid, token: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/orders/{order}/cancel", self.base))
            .json(&json!({ "cancel_token": token }))
            .send()
            .await?;
        let status = response.status().as_u16();
        ensure!(
            status == 202 || response.headers()["content-type"] == "application/problem+json",
            "a refused cancel answers problem+json"
        );
        Ok((status, response.json().await?))
    }

    /// Waits until the order is terminal and returns it.
    async fn until_terminal(&self, order: Uuid) -> anyhow::Result<Value> {
        eventually(ORDER_LIMIT, "the order ends", || async {
            let (_, body) = self.get(&format!("/orders/{order}")).await?;
            Ok(body["terminal"].as_bool().unwrap_or(false).then_some(body))
        })
        .await
    }
}

/// The shop, and a client of its order service.
async fn open(pool: &PgPool) -> anyhow::Result<(Shop, Client)> {
    let shop = Shop::open(Options::new(database_url_of(pool)?)).await?;
    let client = Client::new(&shop);
    Ok((shop, client))
}

fn statuses(order: &Value) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for entry in order["timeline"].as_array().into_iter().flatten() {
        let status = entry["status"].as_str().unwrap_or_default().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
    }
    seen
}

/// Kitchen tickets of an order.
const TICKETS: &str = "select count(*) from kitchen.tickets where order_id = $1";
/// Deliveries of an order.
const DELIVERIES: &str = "select count(*) from delivery.deliveries where order_id = $1";
/// `order-cancelled` events of an order in the order service's outbox.
const CANCELLED_EVENTS: &str =
    "select count(*) from orders.outbox where message_key = $1::text and event_type = 'order-cancelled'";

async fn count(pool: &PgPool, sql: &'static str, order: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).bind(order).fetch_one(pool).await?)
}

/// The side effects the shop's three services hold for one order.
#[derive(Debug)]
struct Effects {
    tickets: i64,
    deliveries: i64,
    /// The payment ledger's operations, oldest first.
    payments: Vec<String>,
    cancelled_events: i64,
}

async fn effects(pool: &PgPool, order: Uuid) -> anyhow::Result<Effects> {
    Ok(Effects {
        tickets: count(pool, TICKETS, order).await?,
        deliveries: count(pool, DELIVERIES, order).await?,
        payments: sqlx::query_scalar("select operation from orders.payments where order_id = $1 order by at")
            .bind(order)
            .fetch_all(pool)
            .await?,
        cancelled_events: count(pool, CANCELLED_EVENTS, order).await?,
    })
}

/// Step attempts of the order's workflow, as `(step, status, error_type)`.
async fn attempts(pool: &PgPool, order: Uuid, step: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "select a.status, a.error->>'error_type' from workflow.step_attempts a \
         join orders.orders o on o.run_id = a.run_id \
         where o.order_id = $1 and a.step_name = $2 order by a.attempt",
    )
    .bind(order)
    .bind(step)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The order service with its API only: no worker, relay or consumer runs, so what a request wrote
/// stays as it wrote it.
async fn api_only(pool: &PgPool) -> anyhow::Result<Host<pizza_order::OrderService>> {
    let stack = pizza_testkit::Stack::from_env();
    let config = <pizza_order::Config as clap::Parser>::try_parse_from([
        "order",
        "--database-url",
        &stack.database_url,
        "--kafka-bootstrap",
        &stack.kafka_bootstrap,
    ])?;
    Ok(Host::with_pool(config, pool.clone()).await?)
}

// ---- the happy path ----------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn an_order_goes_from_accepted_to_completed_with_every_side_effect_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    // The workers' safety-net poll is an hour: every step of the order is taken because something
    // woke the workers (the start, the child's end, the kitchen's and the delivery's signals, a timer).
    let options =
        Options::new(database_url_of(&pool)?).env(Service::Order, "PIZZA_WORKFLOW_POLL_SECONDS", "3600");
    let shop = Shop::open(options).await?;
    let client = Client::new(&shop);
    let (status, accepted) = client.place(&order_body(), None).await?;
    ensure!(status == 202, "{accepted}");
    let order: Uuid = accepted["order_id"].as_str().context("order_id")?.parse()?;
    let trace_id = accepted["trace_id"].as_str().context("trace_id")?;
    assert_eq!(trace_id.len(), 32);
    assert_eq!(accepted["links"]["self"], format!("/orders/{order}"));
    assert!(
        accepted["links"]["trace"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/trace/{trace_id}"))
    );

    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["total_cents"], 2 * 1_000 + 1_250);
    assert_eq!(
        statuses(&done),
        [
            "accepted",
            "paid",
            "in_preparation",
            "ready",
            "out_for_delivery",
            "on_its_way",
            "delivered",
            "completed"
        ],
        "{done}"
    );
    let progress: Vec<i64> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["progress_percent"].as_i64())
        .collect();
    assert!(progress.len() >= 2, "several on-its-way updates: {progress:?}");

    // Every side effect exactly once.
    let effects = effects(&pool, order).await?;
    assert_eq!(effects.tickets, 1);
    assert_eq!(effects.deliveries, 1);
    assert_eq!(effects.payments, ["authorize", "capture"]);
    run_end(&pool, order).await?;
    let runs: Vec<(String, String)> = sqlx::query_as(
        "select workflow_name, status from workflow.runs where labels->>'pizza.order.id' = $1 \
         order by created_at",
    )
    .bind(order.to_string())
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        runs,
        [
            ("order-fulfillment".to_owned(), "completed".to_owned()),
            ("charge-payment".to_owned(), "completed".to_owned())
        ]
    );

    // The event stream replays the whole timeline, then says `end` and closes.
    let stream = client
        .http
        .get(format!("{}/orders/{order}/events", client.base))
        .send()
        .await?;
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(10), stream.text()).await??;
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids.len(), done["timeline"].as_array().unwrap().len(), "{text}");
    assert!(text.contains("event: end"), "{text}");
    // From Last-Event-ID on, only what came after.
    let rest = client
        .http
        .get(format!("{}/orders/{order}/events", client.base))
        .header("Last-Event-ID", (ids.len() - 1).to_string())
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(
        rest.lines().filter(|l| l.starts_with("id: ")).count(),
        1,
        "{rest}"
    );

    let (_, listed) = client.get("/orders?status=completed&limit=5").await?;
    assert!(
        listed["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["order_id"] == order.to_string())
    );
    shop.stop().await
}

/// The URL `deploy/local/infra.sh database-url` gives the native stack's clients on this machine
/// (`make demo`, the workshop, `make bench-load`): PostgreSQL's Unix socket, while the server is up.
/// A whole shop runs on such a URL (the services, their pools, listeners and migrations; the
/// shop's own database named in its path), its services' connections are the socket's, and an
/// order completes.
#[sqlx::test(migrations = false)]
async fn a_shop_on_the_native_stacks_unix_socket_url_completes_an_order(pool: PgPool) -> anyhow::Result<()> {
    let infra = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/local/infra.sh");
    let out = std::process::Command::new("bash")
        .args([infra, "database-url"])
        .output()?;
    ensure!(out.status.success(), "infra.sh database-url: {out:?}");
    let server = String::from_utf8(out.stdout)?.trim().to_owned();
    let parsed: sqlx::postgres::PgConnectOptions = server.parse()?;
    ensure!(
        parsed.get_socket().is_some(),
        "with the server up, infra.sh database-url names its socket; it gave {server}"
    );
    let shop = Shop::open(Options::new(database_url_on(&server, &pool)?)).await?;
    let client = Client::new(&shop);
    let order = client.place_order().await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    // A backend without a client address is a Unix socket's: each service keeps the connections it
    // took for the order open (a pool closes an idle one after minutes), so three at least.
    let through_socket: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and backend_type = 'client backend' and client_addr is null",
    )
    .fetch_one(&pool)
    .await?;
    assert!(
        through_socket >= 3,
        "{through_socket} connections through the socket"
    );
    shop.stop().await
}

// ---- failures ----------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn kitchen_errors_show_as_step_attempts_and_the_order_still_completes(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client
        .set_faults("kitchen", json!({"http_error_rate": 1.0}))
        .await?;
    let order = client.place_order().await?;
    eventually(ORDER_LIMIT, "three failed kitchen calls", || async {
        let failed = attempts(&pool, order, "place-kitchen-ticket").await?;
        Ok((failed.len() >= 3).then_some(()))
    })
    .await?;
    client.clear_faults("kitchen").await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    let tries = attempts(&pool, order, "place-kitchen-ticket").await?;
    let (last, failed) = tries.split_last().context("attempts")?;
    assert_eq!(last.0, "completed");
    assert!(failed.len() >= 3);
    for (status, error) in failed {
        assert_eq!(status, "failed");
        assert_eq!(error.as_deref(), Some("http_500"));
    }
    assert_eq!(effects(&pool, order).await?.tickets, 1);
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn an_oven_failure_cancels_the_order_and_compensates(pool: PgPool) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client
        .set_faults("kitchen", json!({"business_failure_rate": {"oven": 1.0}}))
        .await?;
    let order = client.place_order().await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["reason"], "oven-failure", "{done}");
    let effects = effects(&pool, order).await?;
    assert_eq!(effects.payments, ["authorize", "capture", "refund"]);
    assert_eq!(
        attempts(&pool, order, "cancel-kitchen-ticket")
            .await?
            .last()
            .unwrap()
            .0,
        "completed"
    );
    assert_eq!(effects.deliveries, 0);
    assert_eq!(effects.cancelled_events, 1);
    shop.stop().await
}

/// Where the order's run stands: its status, and the interrupt it took with the step position.
async fn run_state(pool: &PgPool, order: Uuid) -> anyhow::Result<(String, Option<String>, Option<i32>)> {
    Ok(sqlx::query_as(
        "select r.status, r.interrupt_kind, r.interrupt_step from workflow.runs r \
         join orders.orders o on o.run_id = r.id where o.order_id = $1",
    )
    .bind(order)
    .fetch_one(pool)
    .await?)
}

/// Waits until the order's run has ended (the order's terminal status is committed by the run's last
/// step, a moment before the run itself is), and returns its status and interrupt.
async fn run_end(pool: &PgPool, order: Uuid) -> anyhow::Result<(String, Option<String>)> {
    eventually(ORDER_LIMIT, "the order's run ends", || async {
        let (status, kind, _) = run_state(pool, order).await?;
        let ended = ["completed", "failed", "cancelled"].contains(&status.as_str());
        Ok(ended.then_some((status, kind)))
    })
    .await
}

#[sqlx::test(migrations = false)]
async fn a_cancel_that_lands_during_compensation_does_not_skip_the_refund(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    // The oven fails, and the kitchen's kitchen-issue waits in its outbox until the stage is set.
    client
        .set_faults(
            "kitchen",
            json!({"business_failure_rate": {"oven": 1.0}, "kafka_publish_failure_rate": 1.0}),
        )
        .await?;
    let (order, token) = client.place_cancellable().await?;
    eventually(ORDER_LIMIT, "the oven failed the ticket", || async {
        let status: Option<String> =
            sqlx::query_scalar("select status from kitchen.tickets where order_id = $1")
                .bind(order)
                .fetch_optional(&pool)
                .await?;
        Ok((status.as_deref() == Some("failed")).then_some(()))
    })
    .await?;
    // Now the issue goes out, and the kitchen answers 500: the compensation retries its first step.
    client
        .set_faults("kitchen", json!({"http_error_rate": 1.0}))
        .await?;
    eventually(ORDER_LIMIT, "cancel-kitchen-ticket failed once", || async {
        let tries = attempts(&pool, order, "cancel-kitchen-ticket").await?;
        Ok(tries.iter().any(|(status, _)| status == "failed").then_some(()))
    })
    .await?;
    // The customer cancels while the compensation is parked between two attempts.
    let (code, answer) = client.cancel(order, &token).await?;
    assert_eq!(code, 202, "{answer}");
    let interrupt_step = eventually(ORDER_LIMIT, "the cancel reaches the run", || async {
        let (_, kind, step) = run_state(&pool, order).await?;
        Ok(kind.is_some().then_some(step))
    })
    .await?;
    let first_compensation_step: i32 = sqlx::query_scalar(
        "select min(a.step_index) from workflow.step_attempts a \
         join orders.orders o on o.run_id = a.run_id \
         where o.order_id = $1 and a.step_name = 'cancel-kitchen-ticket'",
    )
    .bind(order)
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        interrupt_step,
        Some(first_compensation_step),
        "the cancel was delivered to the compensation's first step"
    );
    client.clear_faults("kitchen").await?;

    let done = client.until_terminal(order).await?;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("oven-failure")),
        "{done}"
    );
    let effects = effects(&pool, order).await?;
    assert_eq!(effects.payments, ["authorize", "capture", "refund"]);
    assert_eq!(effects.cancelled_events, 1);
    assert_eq!(ticket(&pool, order).await?.as_deref(), Some("cancelled"));
    let (run, kind) = run_end(&pool, order).await?;
    assert_eq!((run.as_str(), kind.as_deref()), ("completed", Some("cancelled")));
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_declined_payment_cancels_before_the_kitchen_hears_of_it(pool: PgPool) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client
        .set_faults("order", json!({"business_failure_rate": {"payment": 1.0}}))
        .await?;
    let order = client.place_order().await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("payment-declined"))
    );
    let effects = effects(&pool, order).await?;
    assert_eq!(effects.tickets, 0);
    assert!(effects.payments.is_empty(), "{effects:?}");
    shop.stop().await
}

/// The kitchen's ticket of an order, as the kitchen has it.
async fn ticket(pool: &PgPool, order: Uuid) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("select status from kitchen.tickets where order_id = $1")
            .bind(order)
            .fetch_optional(pool)
            .await?,
    )
}

/// Waits until the kitchen's ticket of the order is `status`.
async fn until_ticket(pool: &PgPool, order: Uuid, status: &str) -> anyhow::Result<()> {
    eventually(ORDER_LIMIT, &format!("the ticket is {status}"), || async {
        Ok((ticket(pool, order).await?.as_deref() == Some(status)).then_some(()))
    })
    .await
}

/// Waits until the order's workflow has completed the step `name`.
async fn until_step(pool: &PgPool, order: Uuid, name: &str) -> anyhow::Result<()> {
    eventually(ORDER_LIMIT, &format!("{name} completed"), || async {
        let tries = attempts(pool, order, name).await?;
        Ok(tries
            .iter()
            .any(|(status, _)| status == "completed")
            .then_some(()))
    })
    .await
}

#[sqlx::test(migrations = false)]
async fn a_customer_cancel_refunds_cancels_the_ticket_and_ends_the_order_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    // The kitchen's events wait in its outbox: the order waits for order-ready, and no driver is
    // asked for, whatever the machine's speed.
    client.hold_events("kitchen").await?;
    let (order, token) = client.place_cancellable().await?;
    until_step(&pool, order, "place-kitchen-ticket").await?;
    let (code, answer) = client.cancel(order, &token).await?;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["cancel_requested"], true);
    let done = client.until_terminal(order).await?;
    client.clear_faults("kitchen").await?;

    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("customer-cancelled")),
        "{done}"
    );
    assert_eq!(statuses(&done).last().map(String::as_str), Some("cancelled"));
    let effects = effects(&pool, order).await?;
    assert_eq!(
        effects.payments,
        ["authorize", "capture", "refund"],
        "the capture is refunded"
    );
    assert_eq!(
        ticket(&pool, order).await?.as_deref(),
        Some("cancelled"),
        "the kitchen stopped"
    );
    assert_eq!((effects.deliveries, effects.cancelled_events), (0, 1));
    // Cancelling an ended order is a conflict, and changes nothing.
    let (again, problem) = client.cancel(order, &token).await?;
    assert_eq!(again, 409, "{problem}");
    assert_eq!(problem["type"], "/problems/order-not-cancellable");
    assert_eq!(self::effects(&pool, order).await?.payments.len(), 3);
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_cancel_after_pickup_is_refused_although_the_order_has_not_heard_of_it(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    // The driver picks the pizza up, but the delivery's events (out-for-delivery first) wait in its
    // outbox: the order's row still says `ready` when the customer cancels.
    client.hold_events("delivery").await?;
    let (order, token) = client.place_cancellable().await?;
    until_ticket(&pool, order, "picked_up").await?;
    let (_, before) = client.get(&format!("/orders/{order}")).await?;
    assert_eq!(
        before["status"], "ready",
        "the order has not heard of the pickup: {before}"
    );

    let (code, problem) = client.cancel(order, &token).await?;
    assert_eq!(code, 409, "{problem}");
    assert_eq!(problem["type"], "/problems/order-not-cancellable");
    client.clear_faults("delivery").await?;

    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    let effects = effects(&pool, order).await?;
    assert_eq!(
        effects.payments,
        ["authorize", "capture"],
        "a delivered pizza is not refunded"
    );
    assert_eq!((effects.deliveries, effects.cancelled_events), (1, 0));
    assert_eq!(ticket(&pool, order).await?.as_deref(), Some("picked_up"));
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_cancel_on_file_keeps_the_driver_away_even_if_the_workflow_never_heard_of_it(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client.hold_events("kitchen").await?;
    let order = client.place_order().await?;
    until_step(&pool, order, "place-kitchen-ticket").await?;
    // A cancel that marked the order and died before it reached the workflow.
    sqlx::query("update orders.orders set cancel_requested_at = now() where order_id = $1")
        .bind(order)
        .execute(&pool)
        .await?;
    client.clear_faults("kitchen").await?;

    let done = client.until_terminal(order).await?;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("customer-cancelled")),
        "{done}"
    );
    let effects = effects(&pool, order).await?;
    assert_eq!(effects.deliveries, 0, "no driver was asked for");
    assert_eq!(effects.payments, ["authorize", "capture", "refund"]);
    let refused = attempts(&pool, order, "request-delivery").await?;
    assert_eq!(
        refused,
        [("failed".to_owned(), Some("customer-cancelled".to_owned()))]
    );
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn a_cancel_the_kitchen_cannot_judge_is_answered_503_and_changes_nothing(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client.hold_events("kitchen").await?;
    let (order, token) = client.place_cancellable().await?;
    until_step(&pool, order, "place-kitchen-ticket").await?;
    // The kitchen's events go out, but it answers every call with 500: the delivery is requested,
    // and no driver can pick the pizza up, nor can a cancel learn whether one did.
    client
        .set_faults("kitchen", json!({"http_error_rate": 1.0}))
        .await?;
    until_step(&pool, order, "request-delivery").await?;
    let response = client
        .http
        .post(format!("{}/orders/{order}/cancel", client.base))
        .json(&json!({ "cancel_token": token }))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let asked: (bool, bool) = sqlx::query_as(
        "select o.cancel_requested_at is not null, r.cancel_requested_at is not null \
         from orders.orders o join workflow.runs r on r.id = o.run_id where o.order_id = $1",
    )
    .bind(order)
    .fetch_one(&pool)
    .await?;
    assert_eq!(asked, (false, false), "nothing was changed");
    client.clear_faults("kitchen").await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn an_interrupt_after_pickup_does_not_refund_the_pizza_that_is_delivered(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    client.hold_events("delivery").await?;
    let order = client.place_order().await?;
    until_ticket(&pool, order, "picked_up").await?;
    // An interrupt that does not come through POST /orders/{id}/cancel (an operator's cancel, a
    // deadline) lands on the wait for the delivery.
    let run_id: Uuid = sqlx::query_scalar("select run_id from orders.orders where order_id = $1")
        .bind(order)
        .fetch_one(&pool)
        .await?;
    pizza_workflow::Engine::builder(pool.clone())
        .build()
        .cancel(run_id)
        .await?;
    until_step(&pool, order, "cancel-kitchen-ticket").await?;
    client.clear_faults("delivery").await?;

    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "completed", "{done}");
    let effects = effects(&pool, order).await?;
    assert_eq!(
        effects.payments,
        ["authorize", "capture"],
        "a delivered pizza is not refunded"
    );
    assert_eq!(effects.cancelled_events, 0);
    let (run, kind) = run_end(&pool, order).await?;
    assert_eq!((run.as_str(), kind.as_deref()), ("completed", Some("cancelled")));
    shop.stop().await
}

#[sqlx::test(migrations = false)]
async fn the_same_idempotency_key_returns_the_same_order(pool: PgPool) -> anyhow::Result<()> {
    let (shop, client) = open(&pool).await?;
    let key = Uuid::new_v4().to_string();
    let (s1, first) = client.place(&order_body(), Some(&key)).await?;
    let (s2, second) = client.place(&order_body(), Some(&key)).await?;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["order_id"], second["order_id"]);
    assert_eq!(first["trace_id"], second["trace_id"]);
    let mut other = order_body();
    other["items"] = json!([{"pizza": "funghi", "quantity": 1}]);
    let (s3, problem) = client.place(&other, Some(&key)).await?;
    assert_eq!(s3, 422, "{problem}");
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    // The same key and pizzas from another customer: refused, not answered with the first order.
    let mut someone_else = order_body();
    someone_else["customer"]["name"] = json!("Grace Otherperson");
    let (s4, problem) = client.place(&someone_else, Some(&key)).await?;
    assert_eq!(s4, 422, "{problem}");
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert!(problem.get("order_id").is_none(), "{problem}");
    let orders: i64 = sqlx::query_scalar("select count(*) from orders.orders")
        .fetch_one(&pool)
        .await?;
    let runs: i64 =
        sqlx::query_scalar("select count(*) from workflow.runs where workflow_name = 'order-fulfillment'")
            .fetch_one(&pool)
            .await?;
    assert_eq!((orders, runs), (1, 1));
    shop.stop().await
}

/// One request to a router: the status and the body as text.
async fn call(router: &axum::Router, request: http::Request<Body>) -> anyhow::Result<(u16, String)> {
    let response = router.clone().oneshot(request).await?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    Ok((status, String::from_utf8(bytes.to_vec())?))
}

fn post_json(path: &str, body: &Value, key: Option<&str>) -> anyhow::Result<http::Request<Body>> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    Ok(request.body(Body::from(body.to_string()))?)
}

fn get(path: &str) -> anyhow::Result<http::Request<Body>> {
    Ok(http::Request::builder().uri(path).body(Body::empty())?)
}

#[sqlx::test(migrations = false)]
async fn only_the_token_handed_back_with_the_order_cancels_it(pool: PgPool) -> anyhow::Result<()> {
    let router = api_only(&pool).await?.router()?;
    let router = &router;
    let place = |key| async move {
        let (status, body) = call(router, post_json("/orders", &order_body(), Some(key))?).await?;
        ensure!(status == 202, "{body}");
        anyhow::Ok(serde_json::from_str::<Value>(&body)?)
    };
    let mine = place("mine").await?;
    let theirs = place("theirs").await?;
    let order = mine["order_id"].as_str().context("order_id")?;
    let token = mine["cancel_token"].as_str().context("cancel_token")?;
    let their_token = theirs["cancel_token"].as_str().context("cancel_token")?;
    assert_ne!(token, their_token);

    // Nothing but the first answer carries the token: not the order, not the list, not a repeat.
    let (_, shown) = call(router, get(&format!("/orders/{order}"))?).await?;
    let (_, listed) = call(router, get("/orders")?).await?;
    let repeated = place("mine").await?;
    assert_eq!(repeated["order_id"], mine["order_id"]);
    for text in [shown, listed, repeated.to_string()] {
        assert!(!text.contains(token) && !text.contains("cancel_token"), "{text}");
    }

    let path = format!("/orders/{order}/cancel");
    for wrong in [their_token, "", "not-a-token"] {
        let (status, problem) =
            call(router, post_json(&path, &json!({ "cancel_token": wrong }), None)?).await?;
        assert_eq!(status, 403, "{wrong:?}: {problem}");
        assert!(problem.contains("/problems/cancel-token-invalid"), "{problem}");
    }
    let requested: bool = sqlx::query_scalar(
        "select r.cancel_requested_at is not null from workflow.runs r \
         join orders.orders o on o.run_id = r.id where o.order_id = $1::uuid",
    )
    .bind(order)
    .fetch_one(&pool)
    .await?;
    assert!(!requested, "a refused cancel asked the workflow nothing");
    let (status, answer) = call(router, post_json(&path, &json!({ "cancel_token": token }), None)?).await?;
    assert_eq!(status, 202, "{answer}");
    Ok(())
}

/// Makes PostgreSQL count this database's statements (`pg_stat_statements`; the native stack
/// preloads it).
async fn count_statements(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("create extension if not exists pg_stat_statements")
        .execute(pool)
        .await?;
    Ok(())
}

/// How often this database ran statements whose text is `like` (`ilike`).
async fn calls(pool: &PgPool, like: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select coalesce(sum(calls), 0)::int8 from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
           and query ilike $1",
    )
    .bind(like)
    .fetch_one(pool)
    .await?)
}

#[sqlx::test(migrations = false)]
async fn showing_an_order_reads_it_and_its_timeline_in_one_statement(pool: PgPool) -> anyhow::Result<()> {
    count_statements(&pool).await?;
    let router = api_only(&pool).await?.router()?;
    let order = place_through(&router).await?;
    // A second entry, so the timeline's order shows.
    let mut conn = pool.acquire().await?;
    let change = pizza_order::store::Change::to(pizza_order::store::Status::Paid, "payment-captured");
    pizza_order::store::advance(&mut conn, order, change).await?;
    drop(conn);
    const LOOKS: i64 = 3;
    for _ in 0..LOOKS {
        let (status, body) = call(&router, get(&format!("/orders/{order}"))?).await?;
        assert_eq!(status, 200, "{body}");
        let shown: Value = serde_json::from_str(&body)?;
        assert_eq!(shown["status"], "paid", "{shown}");
        let timeline: Vec<(i64, &str, &str)> = shown["timeline"]
            .as_array()
            .context("timeline")?
            .iter()
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default();
                (
                    e["seq"].as_i64().unwrap_or_default(),
                    text("status"),
                    text("event"),
                )
            })
            .collect();
        assert_eq!(
            timeline,
            [(1, "accepted", "order-accepted"), (2, "paid", "payment-captured")],
            "{shown}"
        );
    }
    // Each look was one statement (one commit), not a read of the order and one of its timeline.
    let looks: Vec<(String, i64)> = sqlx::query_as(
        "select query, calls from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
           and query ilike 'select%orders.timeline%' and query not ilike '%for update%'",
    )
    .fetch_all(&pool)
    .await?;
    assert!(
        looks.len() == 1 && looks[0].1 == LOOKS && looks[0].0.contains("orders.orders"),
        "{looks:?}"
    );
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn a_change_is_one_statement_and_one_that_waited_for_the_lock_numbers_its_entry_after_the_holders(
    pool: PgPool,
) -> anyhow::Result<()> {
    use pizza_order::store::{Change, Status, advance};
    count_statements(&pool).await?;
    let router = api_only(&pool).await?.router()?;
    let order = place_through(&router).await?;
    // One change holds the order's row (uncommitted), a second waits for it.
    let mut holder = pool.begin().await?;
    advance(&mut holder, order, Change::to(Status::Paid, "payment-captured")).await?;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            advance(
                &mut conn,
                order,
                Change::to(Status::InPreparation, "order-in-preparation"),
            )
            .await
            .map_err(anyhow::Error::from)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the second change waits for the row");
    holder.commit().await?;
    let waited = waiter.await??.context("the order exists")?;
    assert_eq!(
        (waited.before, waited.after),
        (Status::Paid, Status::InPreparation)
    );
    let entries: Vec<(i32, String)> =
        sqlx::query_as("select seq, event from orders.timeline where order_id = $1 order by seq")
            .bind(order)
            .fetch_all(&pool)
            .await?;
    let entries: Vec<(i32, &str)> = entries.iter().map(|(n, e)| (*n, e.as_str())).collect();
    assert_eq!(
        entries,
        [
            (1, "order-accepted"),
            (2, "payment-captured"),
            (3, "order-in-preparation")
        ]
    );
    // Each change was one statement: no separate read of the row under its lock.
    let locks = calls(&pool, "select o.status%for update").await?;
    assert_eq!(locks, 0, "a change read the row on its own first");
    Ok(())
}

// ---- load limits and the event stream -----------------------------------------------------------------

/// Places the default order through `router` and returns its id.
async fn place_through(router: &axum::Router) -> anyhow::Result<Uuid> {
    let (status, body) = call(router, post_json("/orders", &order_body(), None)?).await?;
    ensure!(status == 202, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    Ok(body["order_id"].as_str().context("order_id")?.parse()?)
}

#[sqlx::test(migrations = false)]
async fn event_streams_are_capped_per_process_and_the_next_one_hears_429_with_retry_after(
    pool: PgPool,
) -> anyhow::Result<()> {
    let router = api_only(&pool).await?.router()?;
    let order = place_through(&router).await?;
    let follow = || get(&format!("/orders/{order}/events"));
    // Each open stream holds its slot for as long as its body lives.
    let mut open = Vec::new();
    loop {
        let response = router.clone().oneshot(follow()?).await?;
        if response.status() != 200 {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "5");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
            break;
        }
        open.push(response);
        ensure!(open.len() <= 10_000, "no cap on event streams");
    }
    assert_eq!(open.len(), 200, "the cap");
    // A stream that closes frees its slot.
    open.pop();
    assert_eq!(router.clone().oneshot(follow()?).await?.status(), 200);
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn a_request_that_outlives_the_time_limit_is_answered_503_with_retry_after(
    pool: PgPool,
) -> anyhow::Result<()> {
    let service = api_only(&pool).await?;
    let router = service.router()?;
    // Each database step of POST /orders waits a minute first.
    service.faults().set(
        pizza_servicekit::faults::FaultPlan::from_json(r#"{"db_latency_ms": 60000}"#)
            .map_err(anyhow::Error::msg)?,
    )?;
    // The clock only moves when every task waits: the minute and the time limit pass at once, in
    // order, and nothing here depends on the machine's speed.
    tokio::time::pause();
    let answered = call(&router, post_json("/orders", &order_body(), None)?).await;
    tokio::time::resume();
    let (status, problem) = answered?;
    assert_eq!(status, 503, "{problem}");
    assert!(problem.contains("took longer than"), "{problem}");
    let orders: i64 = sqlx::query_scalar("select count(*) from orders.orders")
        .fetch_one(&pool)
        .await?;
    assert_eq!(orders, 0, "the abandoned request wrote nothing");
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn an_event_stream_follows_entries_any_process_writes_until_the_order_ends(
    pool: PgPool,
) -> anyhow::Result<()> {
    let router = api_only(&pool).await?.router()?;
    let order = place_through(&router).await?;
    let response = router
        .clone()
        .oneshot(get(&format!("/orders/{order}/events"))?)
        .await?;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    // Reads the stream until it holds `needle`; bounded, so a stream that never hears fails.
    let mut until = async |needle: &str| -> anyhow::Result<()> {
        while !text.contains(needle) {
            let chunk = tokio::time::timeout(ORDER_LIMIT, futures::StreamExt::next(&mut body))
                .await
                .with_context(|| format!("the stream never said {needle:?}: {text}"))?
                .with_context(|| format!("the stream closed before {needle:?}: {text}"))??;
            text.push_str(std::str::from_utf8(&chunk)?);
        }
        Ok(())
    };
    until("\"order-accepted\"").await?;
    // What another process would write (no worker runs here): each entry reaches the open stream.
    let advance = |status, event| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            pizza_order::store::advance(&mut tx, order, pizza_order::store::Change::to(status, event))
                .await?;
            tx.commit().await?;
            anyhow::Ok(())
        }
    };
    use pizza_order::store::Status;
    advance(Status::Paid, "payment-captured").await?;
    until("\"payment-captured\"").await?;
    advance(Status::Cancelled, "order-cancelled").await?;
    until("event: end").await?;
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, ["1", "2", "3"], "{text}");
    Ok(())
}

// ---- bad input ---------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn bad_input_gets_a_4xx_problem_and_writes_nothing(pool: PgPool) -> anyhow::Result<()> {
    let service = api_only(&pool).await?;
    let router = service.router()?;
    let good = order_body();
    let with = |path: &str, value: Value| {
        let mut body = good.clone();
        let mut target = &mut body;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len() - 1] {
            target = match part.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*part],
            };
        }
        target[parts[parts.len() - 1]] = value;
        body.to_string()
    };
    let json = "application/json";
    let cases: Vec<(&str, String, &str, String, u16)> = vec![
        ("POST", "/orders".into(), json, "{\"customer\":".into(), 400),
        ("POST", "/orders".into(), json, "[]".into(), 422),
        ("POST", "/orders".into(), "text/plain", good.to_string(), 415),
        ("POST", "/orders".into(), json, "x".repeat(17 * 1024), 413),
        (
            "POST",
            "/orders".into(),
            json,
            with("/items/0/pizza", json!("hawaii")),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/items/0/quantity", json!(0)),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/items/0/quantity", json!(-2)),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/items/0/quantity", json!(1e12)),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/items/0/quantity", json!(9999)),
            422,
        ),
        ("POST", "/orders".into(), json, with("/items", json!([])), 422),
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/name", json!("")),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/surprise", json!(1)),
            422,
        ),
        // Text a field never needs: a NUL (jsonb cannot store it), a line break, a bidi override,
        // and a value that is only white space.
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/name", json!("Ada\u{0}")),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/address/street", json!("1 Oven Lane\r\nX-Injected: 1")),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/address/city", json!("\u{202E}aicnerolF")),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            json,
            with("/customer/phone", json!(" \t ")),
            422,
        ),
        ("GET", "/orders/not-a-uuid".into(), json, String::new(), 400),
        (
            "GET",
            format!("/orders/{}", Uuid::now_v7()),
            json,
            String::new(),
            404,
        ),
        (
            "GET",
            format!("/orders/{}/events", Uuid::now_v7()),
            json,
            String::new(),
            404,
        ),
        (
            "POST",
            format!("/orders/{}/cancel", Uuid::now_v7()),
            json,
            json!({"cancel_token": "x"}).to_string(),
            404,
        ),
        (
            "POST",
            format!("/orders/{}/cancel", Uuid::now_v7()),
            json,
            String::new(),
            400,
        ),
        (
            "POST",
            format!("/orders/{}/cancel", Uuid::now_v7()),
            json,
            "{}".into(),
            422,
        ),
        ("GET", "/orders?limit=0".into(), json, String::new(), 400),
        ("GET", "/orders?status=eaten".into(), json, String::new(), 400),
        ("DELETE", "/orders".into(), json, String::new(), 405),
        ("GET", "/nowhere".into(), json, String::new(), 404),
        (
            "GET",
            "/admin/services/order/faults".into(),
            json,
            String::new(),
            403,
        ),
        (
            "GET",
            "/admin/services/oven/faults".into(),
            json,
            String::new(),
            404,
        ),
    ];
    for (method, path, content_type, body, expected) in cases {
        let request = http::Request::builder()
            .method(method)
            .uri(&path)
            .header("content-type", content_type)
            .body(Body::from(body.clone()))?;
        let response = router.clone().oneshot(request).await?;
        let status = response.status().as_u16();
        let kind = response.headers().get("content-type").cloned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        assert_eq!(
            status,
            expected,
            "{method} {path} {}: {}",
            &body[..body.len().min(80)],
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(kind.unwrap(), "application/problem+json", "{method} {path}");
        let problem: Value = serde_json::from_slice(&bytes)?;
        assert_eq!(problem["status"], expected);
    }
    let long_key = http::Request::builder()
        .method("POST")
        .uri("/orders")
        .header("content-type", json)
        .header("idempotency-key", "k".repeat(201))
        .body(Body::from(good.to_string()))?;
    assert_eq!(router.clone().oneshot(long_key).await?.status(), 400);
    let orders: i64 = sqlx::query_scalar("select count(*) from orders.orders")
        .fetch_one(&pool)
        .await?;
    assert_eq!(orders, 0, "no bad request wrote an order");
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn the_reconciler_ends_abandoned_orders_only_as_the_ledger_allows(pool: PgPool) -> anyhow::Result<()> {
    let service = api_only(&pool).await?;
    let router = service.router()?;
    // No worker runs here: each run stays pending until the test says how it ended.
    let mut orders = Vec::new();
    for key in ["never-charged", "captured", "refunded", "still-capturing"] {
        let (status, body) = call(&router, post_json("/orders", &order_body(), Some(key))?).await?;
        assert_eq!(status, 202, "{body}");
        let body: Value = serde_json::from_str(&body)?;
        orders.push(body["order_id"].as_str().context("order_id")?.parse::<Uuid>()?);
    }
    let [never_charged, captured, refunded, still_capturing] = orders[..] else {
        unreachable!()
    };
    for (order, operations) in [
        (captured, &["authorize", "capture"][..]),
        (refunded, &["authorize", "capture", "refund"][..]),
        (still_capturing, &["authorize"][..]),
    ] {
        for operation in operations {
            sqlx::query(
                "insert into orders.payments (idempotency_key, order_id, operation, amount_cents) \
                 values ($1, $2, $3, 3250)",
            )
            .bind(format!("{order}/{operation}"))
            .bind(order)
            .bind(operation)
            .execute(&pool)
            .await?;
        }
    }
    // The last one's payment child is still running: a capture may still land.
    let child = Uuid::now_v7();
    sqlx::query(
        "insert into workflow.runs (id, workflow_name, status, input, parent_run_id, available_at, created_at) \
         select $1, 'charge-payment', 'running', '{}', run_id, now(), now() from orders.orders where order_id = $2",
    )
    .bind(child)
    .bind(still_capturing)
    .execute(&pool)
    .await?;
    // Every order's workflow failed outside its code paths (a panic, non-determinism).
    sqlx::query("update workflow.runs set status = 'failed' where workflow_name = 'order-fulfillment'")
        .execute(&pool)
        .await?;

    let outbox = service.outbox();
    let reconcile = || pizza_order::reconcile::round(&pool, &outbox, "orders.events");
    let first = reconcile().await?;
    let mut cancelled = first.cancelled.clone();
    cancelled.sort();
    assert_eq!(cancelled, [never_charged, refunded]);
    assert_eq!(first.held, [captured]);

    let state = |order: Uuid| {
        let pool = &pool;
        async move {
            let (status, reason): (String, Option<String>) =
                sqlx::query_as("select status, reason from orders.orders where order_id = $1")
                    .bind(order)
                    .fetch_one(pool)
                    .await?;
            anyhow::Ok((status, reason, count(pool, CANCELLED_EVENTS, order).await?))
        }
    };
    let reason = Some(pizza_order::reconcile::REASON.to_owned());
    for order in [never_charged, refunded] {
        assert_eq!(state(order).await?, ("cancelled".into(), reason.clone(), 1));
    }
    // Captured and never refunded: not cancelled with the money kept, and no order-cancelled.
    assert_eq!(state(captured).await?, ("on_hold".into(), reason.clone(), 0));
    assert_eq!(state(still_capturing).await?, ("accepted".into(), None, 0));

    // A second round changes nothing; once the child has ended, the last order is settled too.
    assert_eq!(reconcile().await?, pizza_order::reconcile::Round::default());
    sqlx::query("insert into orders.payments (idempotency_key, order_id, operation, amount_cents) values ($1, $2, 'capture', 3250)")
        .bind(format!("{still_capturing}/capture"))
        .bind(still_capturing)
        .execute(&pool)
        .await?;
    sqlx::query("update workflow.runs set status = 'completed' where id = $1")
        .bind(child)
        .execute(&pool)
        .await?;
    let last = reconcile().await?;
    assert_eq!((last.cancelled, last.held), (vec![], vec![still_capturing]));
    assert_eq!(state(still_capturing).await?, ("on_hold".into(), reason, 0));
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn a_batch_of_changes_leaves_what_they_leave_one_by_one_in_a_statement_per_change_an_order_has(
    pool: PgPool,
) -> anyhow::Result<()> {
    use pizza_order::store::{Advanced, Change, Status, advance, advance_all};
    count_statements(&pool).await?;
    let router = api_only(&pool).await?.router()?;
    let unknown = Uuid::now_v7();
    // Four changes to one order (one of them a repeat of a `once` change), one to another, one to
    // an order that does not exist: the consumer's batches look like this, by the order's key.
    let script = |a: Uuid, b: Uuid| {
        vec![
            (a, Change::to(Status::Paid, "payment-captured").once()),
            (b, Change::to(Status::InPreparation, "order-in-preparation")),
            (unknown, Change::to(Status::Ready, "order-ready")),
            (a, Change::to(Status::InPreparation, "order-in-preparation")),
            (a, Change::to(Status::Paid, "payment-captured").once()),
            (
                a,
                Change {
                    progress_percent: Some(40),
                    ..Change::to(Status::OnItsWay, "order-on-its-way")
                },
            ),
        ]
    };
    let timeline = |order: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i32, String, String, Option<i16>)>(
                "select seq, status, event, progress_percent from orders.timeline \
                 where order_id = $1 order by seq",
            )
            .bind(order)
            .fetch_all(&pool)
            .await
        }
    };
    let (a, b) = (place_through(&router).await?, place_through(&router).await?);
    let mut tx = pool.begin().await?;
    let together = advance_all(&mut tx, &script(a, b)).await?;
    tx.commit().await?;
    let statements = calls(&pool, "with input as%for update%insert into orders.timeline%").await?;
    assert_eq!(
        statements, 4,
        "one statement per change of the order with the most"
    );

    let (c, d) = (place_through(&router).await?, place_through(&router).await?);
    let mut one_by_one: Vec<Option<Advanced>> = Vec::new();
    for (order, change) in script(c, d) {
        let mut tx = pool.begin().await?;
        one_by_one.push(advance(&mut tx, order, change).await?);
        tx.commit().await?;
    }
    let moves = |done: &[Option<Advanced>]| -> Vec<Option<(Status, Status)>> {
        done.iter().map(|d| d.map(|d| (d.before, d.after))).collect()
    };
    assert_eq!(moves(&together), moves(&one_by_one));
    let after = |status| {
        together
            .iter()
            .flatten()
            .map(|x| x.after)
            .filter(|s| *s == status)
            .count()
    };
    assert_eq!(
        (
            after(Status::Paid),
            after(Status::InPreparation),
            after(Status::OnItsWay)
        ),
        (1, 3, 1),
        "{together:?}"
    );
    assert!(together[2].is_none(), "an unknown order: {together:?}");
    assert_eq!(timeline(a).await?, timeline(c).await?);
    assert_eq!(timeline(b).await?, timeline(d).await?);
    let events: Vec<String> = timeline(a).await?.into_iter().map(|(_, _, e, _)| e).collect();
    assert_eq!(
        events,
        [
            "order-accepted",
            "payment-captured",
            "order-in-preparation",
            "order-on-its-way"
        ]
    );
    Ok(())
}
