//! The whole shop for the tests that drive it from outside: the real kitchen, delivery and order
//! services in-process on port 0, on one fresh database (each service in its own schema), with Kafka
//! topics of the test's own, and external tools (a browser, a fuzzer) pointed at the order service.
//!
//! Times are scaled down so an order goes from accepted to completed in a few seconds; the waits
//! the order workflow puts on the kitchen and the driver are stretched instead, so a slow CI machine
//! delays an order but never times it out.

use anyhow::Context as _;
use pizza_servicekit::ServiceConfig;
use pizza_testkit::app::Running;
use pizza_testkit::{Stack, kafka};
use sqlx::PgPool;
use uuid::Uuid;

/// The admin token of all three services (the order service's faults proxy passes it on).
pub(crate) const ADMIN_TOKEN: &str = "shop-test-token";
/// The time scale of every service: a cook of 8 s takes 0.4 s, a drive leg of 3 s 0.15 s.
const TIME_SCALE: f64 = 0.05;

/// The three services, running.
pub(crate) struct Shop {
    /// The order service: API, web UI, workflow worker and consumer.
    pub(crate) order: Running,
    kitchen: Running,
    delivery: Running,
}

impl Shop {
    /// Creates the topics and starts kitchen, delivery and order (in that order, so each one's peers
    /// are listening when it starts).
    pub(crate) async fn open(pool: &PgPool) -> anyhow::Result<Self> {
        let stack = Stack::from_env();
        let topic = |name: &str| kafka::unique_topic(name);
        let (kitchen_events, orders_events) = (topic("kitchen.events"), topic("orders.events"));
        let (delivery_requests, delivery_events) = (topic("delivery.requests"), topic("delivery.events"));
        let dlq = pizza_contracts::topics::dead_letter;
        let all = [
            kitchen_events.clone(),
            dlq(&kitchen_events),
            orders_events.clone(),
            dlq(&orders_events),
            delivery_requests.clone(),
            dlq(&delivery_requests),
            delivery_events.clone(),
            dlq(&delivery_events),
        ];
        let specs: Vec<(&str, i32)> = all.iter().map(|t| (t.as_str(), 1)).collect();
        kafka::create_topics(&stack.kafka_bootstrap, &specs).await?;

        let common = ServiceConfig {
            database_url: stack.database_url.clone(),
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            time_scale: TIME_SCALE,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            faults: None,
        };
        let group = |service: &str| format!("{service}-shop-test-{}", Uuid::new_v4().simple());

        let kitchen = pizza_kitchen::Kitchen::with_pool(
            pizza_kitchen::Config {
                common: common.clone(),
                addr: "127.0.0.1:0".parse()?,
                cook_seconds: 8.0,
                ovens: 4,
                tick_ms: 25,
                kitchen_events_topic: kitchen_events.clone(),
                orders_events_topic: orders_events.clone(),
                consumer_group: group("kitchen"),
            },
            pool.clone(),
        )
        .await?;
        let kitchen =
            Running::start(|listener, shutdown| async move { Ok(kitchen.run(listener, shutdown).await?) })
                .await?;

        let delivery = pizza_delivery::Delivery::with_pool(
            pizza_delivery::Config {
                common: common.clone(),
                addr: "127.0.0.1:0".parse()?,
                kitchen_url: kitchen.base.clone(),
                leg_seconds: 3.0,
                updates: 3,
                pickup_retry_seconds: 2.0,
                pickup_attempts: 1000,
                tick_ms: 25,
                requests_topic: delivery_requests.clone(),
                events_topic: delivery_events.clone(),
                consumer_group: group("delivery"),
            },
            pool.clone(),
        )
        .await?;
        let delivery =
            Running::start(|listener, shutdown| async move { Ok(delivery.run(listener, shutdown).await?) })
                .await?;

        let order = pizza_order::OrderService::with_pool(
            pizza_order::Config {
                common,
                addr: "127.0.0.1:0".parse()?,
                kitchen_url: kitchen.base.clone(),
                delivery_url: delivery.base.clone(),
                jaeger_ui_url: stack.jaeger_url.clone(),
                consumer_group: group("order"),
                orders_events_topic: orders_events,
                kitchen_events_topic: kitchen_events,
                delivery_requests_topic: delivery_requests,
                delivery_events_topic: delivery_events,
                workflow_concurrency: 4,
                workflow_lease_seconds: 10.0,
                // 600 s × 0.05 = 30 s: far beyond a scaled cook or drive, so only a broken shop
                // times out.
                kitchen_timeout_seconds: 600.0,
                delivery_timeout_seconds: 600.0,
                feedback_delay_seconds: 10.0,
                payment_seconds: 1.0,
            },
            pool.clone(),
        )
        .await?;
        let order =
            Running::start(|listener, shutdown| async move { Ok(order.run(listener, shutdown).await?) })
                .await?;
        Ok(Self {
            order,
            kitchen,
            delivery,
        })
    }

    /// Stops the services in reverse order, failing if one stopped with an error.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        self.order.stop().await.context("stopping order")?;
        self.delivery.stop().await.context("stopping delivery")?;
        self.kitchen.stop().await.context("stopping kitchen")
    }
}
