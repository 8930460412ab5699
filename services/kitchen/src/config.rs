//! The kitchen's settings, from flags or the environment: the only place the kitchen reads the
//! environment. Its telemetry settings (`OTEL_*`, `PIZZA_TRACE_TOPOLOGY`, ...) come with the common
//! ones, as `pizza_telemetry::TelemetryArgs` inside [`ServiceConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use pizza_contracts::topics;
use pizza_servicekit::ServiceConfig;
use pizza_servicekit::config::parse_scale;

/// Everything the kitchen needs to start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pizza-kitchen", about = "The pizza shop's kitchen service", version)]
pub struct Config {
    /// Database, Kafka, time scale, admin token and fault plan, as every service has them; the
    /// kitchen keeps its tables in the schema `kitchen`.
    #[command(flatten)]
    pub common: ServiceConfig,
    /// Address the HTTP API listens on.
    #[arg(long, env = "PIZZA_KITCHEN_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,
    /// Cook time of one ticket before scaling, in seconds.
    #[arg(long, env = "PIZZA_KITCHEN_COOK_SECONDS", default_value_t = 8.0, value_parser = parse_scale)]
    pub cook_seconds: f64,
    /// Tickets that can cook at once (the ovens).
    #[arg(long, env = "PIZZA_KITCHEN_OVENS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ovens: u32,
    /// The longest the oven loop sleeps when nothing is due and no notification arrives, in
    /// milliseconds: the safety net for a lost `NOTIFY` (the loop wakes on events, not on a timer).
    #[arg(long, env = "PIZZA_KITCHEN_SAFETY_NET_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub safety_net_ms: u64,
    /// Topic the kitchen publishes to.
    #[arg(long, env = "PIZZA_KITCHEN_EVENTS_TOPIC", default_value = topics::KITCHEN_EVENTS)]
    pub kitchen_events_topic: String,
    /// Topic the kitchen reads cancellations from (its dead-letter topic is `<topic>.dlq`).
    #[arg(long, env = "PIZZA_ORDERS_EVENTS_TOPIC", default_value = topics::ORDERS_EVENTS)]
    pub orders_events_topic: String,
    /// Kafka consumer group of the kitchen (also scopes its inbox).
    #[arg(long, env = "PIZZA_KITCHEN_GROUP", default_value = "kitchen")]
    pub consumer_group: String,
}

impl Config {
    /// How long one ticket cooks, scaled.
    pub fn cook_time(&self) -> Duration {
        self.common.scaled(self.cook_seconds)
    }

    /// The oven loop's safety net (see [`Config::safety_net_ms`]).
    pub fn safety_net(&self) -> Duration {
        Duration::from_millis(self.safety_net_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_are_the_documented_ports_topics_and_ovens() {
        let c = Config::try_parse_from(["kitchen", "--database-url", "postgres://x"]).unwrap();
        assert_eq!(c.addr.port(), 8081);
        assert_eq!(c.kitchen_events_topic, "kitchen.events");
        assert_eq!(c.orders_events_topic, "orders.events");
        assert_eq!(c.ovens, 4);
    }

    #[test]
    fn the_time_scale_scales_the_cook_time_and_bad_values_are_refused() {
        let c = Config::try_parse_from(["kitchen", "--database-url", "x", "--time-scale", "0.5"]).unwrap();
        assert_eq!(c.cook_time(), Duration::from_secs(4));
        for bad in ["0", "-1", "nan", "fast"] {
            assert!(Config::try_parse_from(["kitchen", "--database-url", "x", "--time-scale", bad]).is_err());
        }
        assert!(
            Config::try_parse_from([
                "kitchen",
                "--database-url",
                "x",
                "--faults",
                r#"{"http_error_rate":2}"#
            ])
            .is_err()
        );
        let c = Config::try_parse_from([
            "kitchen",
            "--database-url",
            "x",
            "--faults",
            r#"{"business_failure_rate":{"oven":0.5}}"#,
        ])
        .unwrap();
        assert_eq!(c.common.faults.unwrap().business_failure_rate["oven"], 0.5);
    }
}
