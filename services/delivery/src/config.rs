//! The delivery service's settings, from flags or the environment: the only place it reads the
//! environment. Its telemetry settings (`OTEL_*`, `PIZZA_TRACE_TOPOLOGY`, ...) come with the common
//! ones, as `pizza_telemetry::TelemetryArgs` inside [`ServiceConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use pizza_contracts::topics;
use pizza_servicekit::ServiceConfig;
use pizza_servicekit::config::parse_scale;

/// Everything the delivery service needs to start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pizza-delivery", about = "The pizza shop's delivery service", version)]
pub struct Config {
    /// Database, Kafka, time scale, admin token and fault plan, as every service has them; the
    /// service keeps its tables in the schema `delivery`.
    #[command(flatten)]
    pub common: ServiceConfig,
    /// Address the HTTP API listens on.
    #[arg(long, env = "PIZZA_DELIVERY_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,
    /// Base URL of the kitchen, where drivers pick orders up.
    #[arg(long, env = "PIZZA_KITCHEN_URL", default_value = "http://127.0.0.1:8081")]
    pub kitchen_url: String,
    /// Drive time between two position updates before scaling, in seconds.
    #[arg(long, env = "PIZZA_DELIVERY_LEG_SECONDS", default_value_t = 3.0, value_parser = parse_scale)]
    pub leg_seconds: f64,
    /// Position updates (`order-on-its-way`) per delivery.
    #[arg(long, env = "PIZZA_DELIVERY_UPDATES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub updates: u32,
    /// Wait before asking the kitchen again when the order is not ready, before scaling, in seconds.
    #[arg(long, env = "PIZZA_DELIVERY_PICKUP_RETRY_SECONDS", default_value_t = 2.0, value_parser = parse_scale)]
    pub pickup_retry_seconds: f64,
    /// Pickup attempts before the delivery fails with `pickup-timeout`.
    #[arg(long, env = "PIZZA_DELIVERY_PICKUP_ATTEMPTS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub pickup_attempts: u32,
    /// The longest the driver loop sleeps when nothing is due and no notification arrives, in
    /// milliseconds: the safety net for a lost `NOTIFY` (the loop wakes on events, not on a timer).
    #[arg(long, env = "PIZZA_DELIVERY_SAFETY_NET_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub safety_net_ms: u64,
    /// Topic of delivery requests (its dead-letter topic is `<topic>.dlq`).
    #[arg(long, env = "PIZZA_DELIVERY_REQUESTS_TOPIC", default_value = topics::DELIVERY_REQUESTS)]
    pub requests_topic: String,
    /// Topic the service publishes to.
    #[arg(long, env = "PIZZA_DELIVERY_EVENTS_TOPIC", default_value = topics::DELIVERY_EVENTS)]
    pub events_topic: String,
    /// Kafka consumer group of the service (also scopes its inbox).
    #[arg(long, env = "PIZZA_DELIVERY_GROUP", default_value = "delivery")]
    pub consumer_group: String,
}

impl Config {
    /// Drive time between two updates, scaled.
    pub fn leg_time(&self) -> Duration {
        self.common.scaled(self.leg_seconds)
    }

    /// Wait between pickup attempts, scaled.
    pub fn pickup_retry(&self) -> Duration {
        self.common.scaled(self.pickup_retry_seconds)
    }

    /// The driver loop's safety net (see [`Config::safety_net_ms`]).
    pub fn safety_net(&self) -> Duration {
        Duration::from_millis(self.safety_net_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_are_the_documented_port_topics_and_kitchen() {
        let c = Config::try_parse_from(["delivery", "--database-url", "postgres://x"]).unwrap();
        assert_eq!(c.addr.port(), 8082);
        assert_eq!(c.kitchen_url, "http://127.0.0.1:8081");
        assert_eq!(c.requests_topic, "delivery.requests");
        assert_eq!(c.events_topic, "delivery.events");
    }

    #[test]
    fn the_time_scale_scales_every_wait() {
        let c = Config::try_parse_from(["delivery", "--database-url", "x", "--time-scale", "0.5"]).unwrap();
        assert_eq!(c.leg_time(), Duration::from_millis(1500));
        assert_eq!(c.pickup_retry(), Duration::from_secs(1));
        assert!(Config::try_parse_from(["delivery", "--database-url", "x", "--time-scale", "0"]).is_err());
    }
}
