//! The order service with the real kitchen and delivery, on the real stack: the happy path, the
//! kitchen failing (retries as step attempts), compensation, cancellation, idempotency, bad input.
//!
//! Times are scaled down (see `shop`); every wait is bounded and no test asserts on timing.

mod shop;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use axum::body::Body;
use pizza_testkit::records::eventually;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;
use uuid::Uuid;

use shop::{ADMIN_TOKEN, Shop};

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
            base: shop.order.base.clone(),
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

    /// Places the default order and returns its id.
    async fn place_order(&self) -> anyhow::Result<Uuid> {
        let (status, body) = self.place(&order_body(), None).await?;
        ensure!(status == 202, "POST /orders answered {status}: {body}");
        Ok(body["order_id"].as_str().context("order_id")?.parse()?)
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

async fn count(pool: &PgPool, sql: &str, order: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(order)
        .fetch_one(pool)
        .await?)
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
async fn api_only(pool: &PgPool) -> anyhow::Result<pizza_order::OrderService> {
    let stack = pizza_testkit::Stack::from_env();
    let config = <pizza_order::Config as clap::Parser>::try_parse_from([
        "order",
        "--database-url",
        &stack.database_url,
        "--kafka-bootstrap",
        &stack.kafka_bootstrap,
    ])?;
    Ok(pizza_order::OrderService::with_pool(config, pool.clone()).await?)
}

// ---- the happy path ----------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn an_order_goes_from_accepted_to_completed_with_every_side_effect_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
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
    assert_eq!(
        count(
            &pool,
            "select count(*) from kitchen.tickets where order_id = $1",
            order
        )
        .await?,
        1
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from delivery.deliveries where order_id = $1",
            order
        )
        .await?,
        1
    );
    let payments: Vec<String> =
        sqlx::query_scalar("select operation from orders.payments where order_id = $1 order by at")
            .bind(order)
            .fetch_all(&pool)
            .await?;
    assert_eq!(payments, ["authorize", "capture"]);
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
    shop.close().await
}

// ---- failures ----------------------------------------------------------------------------------------

#[sqlx::test(migrations = false)]
async fn kitchen_errors_show_as_step_attempts_and_the_order_still_completes(
    pool: PgPool,
) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
    let client = Client::new(&shop);
    client
        .set_faults("kitchen", json!({"http_error_rate": 1.0}))
        .await?;
    let order = client.place_order().await?;
    eventually(ORDER_LIMIT, "three failed kitchen calls", || async {
        let failed = attempts(&pool, order, "place-kitchen-ticket").await?;
        Ok((failed.len() >= 3).then_some(()))
    })
    .await?;
    client.set_faults("kitchen", json!({})).await?;
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
    assert_eq!(
        count(
            &pool,
            "select count(*) from kitchen.tickets where order_id = $1",
            order
        )
        .await?,
        1
    );
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn an_oven_failure_cancels_the_order_and_compensates(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
    let client = Client::new(&shop);
    client
        .set_faults("kitchen", json!({"business_failure_rate": {"oven": 1.0}}))
        .await?;
    let order = client.place_order().await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["reason"], "oven-failure", "{done}");
    let payments: Vec<String> =
        sqlx::query_scalar("select operation from orders.payments where order_id = $1 order by at")
            .bind(order)
            .fetch_all(&pool)
            .await?;
    assert_eq!(payments, ["authorize", "capture", "refund"]);
    assert_eq!(
        attempts(&pool, order, "cancel-kitchen-ticket")
            .await?
            .last()
            .unwrap()
            .0,
        "completed"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from delivery.deliveries where order_id = $1",
            order
        )
        .await?,
        0
    );
    let cancelled = count(
        &pool,
        "select count(*) from orders.outbox where message_key = $1::text and event_type = 'order-cancelled'",
        order,
    )
    .await?;
    assert_eq!(cancelled, 1);
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn a_declined_payment_cancels_before_the_kitchen_hears_of_it(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
    let client = Client::new(&shop);
    client
        .set_faults("order", json!({"business_failure_rate": {"payment": 1.0}}))
        .await?;
    let order = client.place_order().await?;
    let done = client.until_terminal(order).await?;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("payment-declined"))
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from kitchen.tickets where order_id = $1",
            order
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from orders.payments where order_id = $1",
            order
        )
        .await?,
        0
    );
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn a_customer_cancel_stops_the_order_once(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
    let client = Client::new(&shop);
    // Ovens so slow the order waits for the kitchen when the customer cancels.
    client
        .set_faults("kitchen", json!({"http_latency_ms": 0}))
        .await?;
    sqlx::query("select 1").execute(&pool).await?;
    let order = client.place_order().await?;
    eventually(ORDER_LIMIT, "the kitchen has the ticket", || async {
        Ok((count(
            &pool,
            "select count(*) from kitchen.tickets where order_id = $1",
            order,
        )
        .await?
            == 1)
            .then_some(()))
    })
    .await?;
    let response = client
        .http
        .post(format!("{}/orders/{order}/cancel", client.base))
        .send()
        .await?;
    let code = response.status().as_u16();
    let done = client.until_terminal(order).await?;
    if code == 202 && done["status"] == "cancelled" {
        assert_eq!(done["reason"], "customer-cancelled");
        let ticket: String = sqlx::query_scalar("select status from kitchen.tickets where order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await?;
        assert!(ticket == "cancelled" || ticket == "picked_up", "{ticket}");
    } else {
        // The order was already delivered when the cancel arrived: a 409, and it completes.
        assert!(code == 409 || done["status"] == "completed", "{code} {done}");
    }
    // Cancelling an ended order is a conflict.
    let again = client
        .http
        .post(format!("{}/orders/{order}/cancel", client.base))
        .send()
        .await?;
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    shop.close().await
}

#[sqlx::test(migrations = false)]
async fn the_same_idempotency_key_returns_the_same_order(pool: PgPool) -> anyhow::Result<()> {
    let shop = Shop::open(&pool).await?;
    let client = Client::new(&shop);
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
    let orders: i64 = sqlx::query_scalar("select count(*) from orders.orders")
        .fetch_one(&pool)
        .await?;
    let runs: i64 =
        sqlx::query_scalar("select count(*) from workflow.runs where workflow_name = 'order-fulfillment'")
            .fetch_one(&pool)
            .await?;
    assert_eq!((orders, runs), (1, 1));
    shop.close().await
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
            String::new(),
            404,
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
async fn an_order_whose_workflow_ended_early_is_cancelled_once_by_the_reconciler(
    pool: PgPool,
) -> anyhow::Result<()> {
    let service = api_only(&pool).await?;
    let request = http::Request::builder()
        .method("POST")
        .uri("/orders")
        .header("content-type", "application/json")
        .body(Body::from(order_body().to_string()))?;
    let response = service.router()?.oneshot(request).await?;
    assert_eq!(response.status(), 202);
    let healthy = Uuid::now_v7();
    // No worker runs here: the run stays pending. Pretend it failed outside the workflow's code.
    sqlx::query("update workflow.runs set status = 'failed' where workflow_name = 'order-fulfillment'")
        .execute(&pool)
        .await?;
    let outbox = pizza_messaging::Outbox::new(pizza_order::store::messaging_schema());
    let ended = pizza_order::reconcile::round(&pool, &outbox, "orders.events").await?;
    assert_eq!(ended.len(), 1);
    assert_ne!(ended[0], healthy);
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("select status, reason from orders.orders where order_id = $1")
            .bind(ended[0])
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("cancelled", Some(pizza_order::reconcile::REASON))
    );
    assert!(
        pizza_order::reconcile::round(&pool, &outbox, "orders.events")
            .await?
            .is_empty()
    );
    let events = count(
        &pool,
        "select count(*) from orders.outbox where message_key = $1::text and event_type = 'order-cancelled'",
        ended[0],
    )
    .await?;
    assert_eq!(events, 1);
    Ok(())
}
