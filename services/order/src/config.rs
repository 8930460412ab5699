//! The order service's settings, from flags or the environment: the only place the service reads the
//! environment. Its telemetry settings (`OTEL_*`, `PIZZA_TRACE_TOPOLOGY`,
//! `PIZZA_TRUST_INBOUND_TRACEPARENT`, ...) come with the common ones, as
//! `pizza_telemetry::TelemetryArgs` inside [`ServiceConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use pizza_contracts::topics;
use pizza_servicekit::ServiceConfig;
use pizza_servicekit::config::{parse_scale, parse_timeout_seconds};

/// Everything the order service needs to start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pizza-order", about = "The pizza shop's order service", version)]
pub struct Config {
    /// Database, Kafka, time scale, admin token and fault plan, as every service has them; the order
    /// service keeps its tables in the schema `orders` and the workflow engine's in `workflow`.
    #[command(flatten)]
    pub common: ServiceConfig,
    /// Address the API and the web UI listen on.
    #[arg(long, env = "PIZZA_ORDER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The kitchen's base URL.
    #[arg(long, env = "PIZZA_KITCHEN_URL", default_value = "http://127.0.0.1:8081")]
    pub kitchen_url: String,
    /// The delivery service's base URL (only the web UI's faults panel talks to it, through this
    /// service).
    #[arg(long, env = "PIZZA_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,
    /// Base URL of the Jaeger UI, for the trace links shown to customers and workshop attendees.
    #[arg(long, env = "PIZZA_JAEGER_UI_URL", default_value = "http://127.0.0.1:16686")]
    pub jaeger_ui_url: String,
    /// Kafka consumer group of the order service (also scopes its inbox).
    #[arg(long, env = "PIZZA_ORDER_GROUP", default_value = "order")]
    pub consumer_group: String,
    /// Topic of the order's own events (`order-placed`, `order-cancelled`).
    #[arg(long, env = "PIZZA_ORDERS_EVENTS_TOPIC", default_value = topics::ORDERS_EVENTS)]
    pub orders_events_topic: String,
    /// Topic the kitchen publishes to.
    #[arg(long, env = "PIZZA_KITCHEN_EVENTS_TOPIC", default_value = topics::KITCHEN_EVENTS)]
    pub kitchen_events_topic: String,
    /// Topic of the delivery commands.
    #[arg(long, env = "PIZZA_DELIVERY_REQUESTS_TOPIC", default_value = topics::DELIVERY_REQUESTS)]
    pub delivery_requests_topic: String,
    /// Topic the delivery service publishes to.
    #[arg(long, env = "PIZZA_DELIVERY_EVENTS_TOPIC", default_value = topics::DELIVERY_EVENTS)]
    pub delivery_events_topic: String,
    /// Workflow executions this process runs at once.
    #[arg(long, env = "PIZZA_WORKFLOW_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workflow_concurrency: u32,
    /// How long a worker's claim on a run lasts without a heartbeat, in seconds (not scaled). A
    /// killed order process's runs are taken over by another worker after at most this long.
    #[arg(long, env = "PIZZA_WORKFLOW_LEASE_SECONDS", default_value_t = 10.0, value_parser = parse_scale)]
    pub workflow_lease_seconds: f64,
    /// How long an idle workflow worker waits at most before it looks for due runs anyway, in
    /// seconds (not scaled). A safety net: this process's starts, signals, child ends and timers wake
    /// its workers at once; the net is how another replica's worker finds a run this one made due,
    /// and how a wake lost with a crash is recovered.
    #[arg(long, env = "PIZZA_WORKFLOW_POLL_SECONDS", default_value_t = 5.0, value_parser = parse_timeout_seconds)]
    pub workflow_poll_seconds: f64,
    /// How long the order waits for the kitchen to report it ready, before scaling, in seconds.
    #[arg(long, env = "PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", default_value_t = 120.0, value_parser = parse_timeout_seconds)]
    pub kitchen_timeout_seconds: f64,
    /// How long the order waits for the delivery, before scaling, in seconds.
    #[arg(long, env = "PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", default_value_t = 180.0, value_parser = parse_timeout_seconds)]
    pub delivery_timeout_seconds: f64,
    /// The pause between delivery and the feedback request, before scaling, in seconds.
    #[arg(long, env = "PIZZA_ORDER_FEEDBACK_DELAY_SECONDS", default_value_t = 10.0, value_parser = parse_scale)]
    pub feedback_delay_seconds: f64,
    /// How long the simulated payment provider takes per operation, before scaling, in seconds.
    #[arg(long, env = "PIZZA_ORDER_PAYMENT_SECONDS", default_value_t = 1.0, value_parser = parse_scale)]
    pub payment_seconds: f64,
}

/// The workflow's durations, scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Wait for `order-ready`.
    pub kitchen_timeout: Duration,
    /// Wait for `order-completed`.
    pub delivery_timeout: Duration,
    /// The durable sleep before the feedback request.
    pub feedback_delay: Duration,
    /// One simulated payment operation.
    pub payment: Duration,
    /// First pause of a retried step (the kitchen call); later ones grow.
    pub retry_initial: Duration,
    /// Longest pause between two attempts of a step.
    pub retry_max: Duration,
    /// The workers' lease: how long a killed worker's runs wait before another worker resumes them.
    /// Waits on work that may be held by a dead worker allow for it.
    pub lease: Duration,
}

impl Config {
    /// The workflow's durations, scaled by the time scale. Step retry pauses scale too, so a test's
    /// failing kitchen costs little, but with floors in real time (100 ms first, 2 s longest): an
    /// outage of a peer is not simulated time, and a kitchen restart of ten seconds must fit into the
    /// retry budget at any scale.
    pub fn timings(&self) -> Timings {
        Timings {
            kitchen_timeout: self.common.scaled(self.kitchen_timeout_seconds),
            delivery_timeout: self.common.scaled(self.delivery_timeout_seconds),
            feedback_delay: self.common.scaled(self.feedback_delay_seconds),
            payment: self.common.scaled(self.payment_seconds),
            retry_initial: self.common.scaled(0.5).max(Duration::from_millis(100)),
            retry_max: self.common.scaled(8.0).max(Duration::from_secs(2)),
            lease: self.lease(),
        }
    }

    /// The workers' lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.workflow_lease_seconds)
    }

    /// The workers' safety-net poll.
    pub fn worker_poll(&self) -> Duration {
        Duration::from_secs_f64(self.workflow_poll_seconds)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_are_the_documented_port_peers_and_topics() {
        let c = Config::try_parse_from(["order", "--database-url", "postgres://x"]).unwrap();
        assert_eq!(c.addr.port(), 8080);
        assert_eq!(c.kitchen_url, "http://127.0.0.1:8081");
        assert_eq!(c.kitchen_events_topic, "kitchen.events");
        assert_eq!(c.delivery_events_topic, "delivery.events");
        assert_eq!(c.delivery_requests_topic, "delivery.requests");
        assert_eq!(c.orders_events_topic, "orders.events");
        assert_eq!(c.lease(), Duration::from_secs(10));
        assert_eq!(c.timings().kitchen_timeout, Duration::from_secs(120));
    }

    #[test]
    fn the_time_scale_scales_every_workflow_duration_with_a_floor_on_retries() {
        let c = Config::try_parse_from(["order", "--database-url", "x", "--time-scale", "0.01"]).unwrap();
        let t = c.timings();
        assert_eq!(t.kitchen_timeout, Duration::from_secs_f64(1.2));
        assert_eq!(t.feedback_delay, Duration::from_millis(100));
        assert_eq!(t.retry_initial, Duration::from_millis(100));
        assert_eq!(t.retry_max, Duration::from_secs(2));
        assert_eq!(t.lease, Duration::from_secs(10));
        for bad in ["0", "-1", "soon"] {
            assert!(
                Config::try_parse_from(["order", "--database-url", "x", "--workflow-lease-seconds", bad])
                    .is_err()
            );
        }
    }
}
