//! The settings every service shares, as one `clap` struct each service flattens into its own
//! (`#[command(flatten)]`), so the variable names, defaults and checks are the same everywhere. The
//! telemetry settings ([`TelemetryArgs`]) are among them: one parse of the command line and the
//! environment gives a service everything it runs with.

use std::time::Duration;

use pizza_telemetry::TelemetryArgs;
use rdkafka::ClientConfig;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::faults::{FaultError, FaultPlan, Faults};

/// The settings every service has, read from flags or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceConfig {
    /// PostgreSQL URL; each service keeps its tables in a schema of its own.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "PIZZA_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub kafka_bootstrap: String,
    /// Multiplier of every simulated duration (1.0 for a demo, 0.02 for tests).
    #[arg(long, env = "PIZZA_TIME_SCALE", default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
    /// Bearer token of the admin API (`/admin/faults`); unset or blank, the admin API answers 403. A
    /// service listening beyond loopback refuses to start with the workshop's published token or a
    /// token shorter than 12 characters (see `pizza_servicekit::faults::admin_access`).
    #[arg(long, env = "PIZZA_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The fault plan to start with, as JSON (see `pizza_servicekit::FaultPlan`).
    #[arg(long, env = "PIZZA_FAULTS", value_parser = parse_plan)]
    pub faults: Option<FaultPlan>,
    /// Telemetry: the standard `OTEL_*` variables and the platform's `PIZZA_*` switches (trace
    /// topology, trusting an inbound `traceparent`, dropped edges, log format).
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// This replica's stable name: the same every time the replica starts, different from every
    /// other live replica of the service (`order-0`; a Kubernetes pod's name). A replica restarted
    /// after a crash then resumes at once: its consumer takes its partitions back (static group
    /// membership), its relay its claims, its workflow worker its leases. Unset, each start is a
    /// stranger and waits for the dead one's session, claims and leases to expire.
    #[arg(long, env = "PIZZA_INSTANCE_ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,
}

impl ServiceConfig {
    /// `seconds` of simulated time, scaled by [`time_scale`](Self::time_scale).
    pub fn scaled(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds * self.time_scale)
    }

    /// A Kafka client configuration pointing at the bootstrap servers; the relay, the consumer and
    /// the readiness probe each add their own settings to it.
    pub fn kafka(&self) -> ClientConfig {
        let mut kafka = ClientConfig::new();
        kafka.set("bootstrap.servers", &self.kafka_bootstrap);
        kafka
    }

    /// Connects a pool of at most `max_connections` to [`database_url`](Self::database_url).
    pub async fn connect(&self, max_connections: u32) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&self.database_url)
            .await
    }

    /// The live fault plan to start with: the configured one, or none.
    pub fn initial_faults(&self) -> Result<Faults, FaultError> {
        Faults::new(self.faults.clone().unwrap_or_default())
    }
}

/// Parses a positive, finite multiplier or duration in seconds, at most 1000; services use it for
/// their own simulated durations too.
pub fn parse_scale(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 1000.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be a number above 0 and at most 1000"))
    }
}

/// A timeout in seconds: a number above 0 and at most a day. Wider than [`parse_scale`]: a timeout
/// is scaled by the time scale, and a shop at a small scale that must ride out an outage of real
/// seconds needs a long one.
pub fn parse_timeout_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} must be a number of seconds above 0 and at most 86400 (a day)"
        ))
    }
}

/// A Kafka `group.instance.id` and a lease owner: 1 to 200 characters of `[A-Za-z0-9._-]`.
fn parse_instance_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} must be 1 to 200 letters, digits, '.', '_' or '-' (a pod name is)"
        ))
    }
}

fn parse_plan(s: &str) -> Result<FaultPlan, String> {
    FaultPlan::from_json(s)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: ServiceConfig,
    }

    fn parse(args: &[&str]) -> Result<ServiceConfig, clap::Error> {
        Cli::try_parse_from(["svc"].iter().chain(args)).map(|c| c.common)
    }

    #[test]
    fn defaults_are_the_local_broker_real_time_and_no_faults() {
        let c = parse(&["--database-url", "postgres://x"]).unwrap();
        assert_eq!(c.kafka_bootstrap, "127.0.0.1:9092");
        assert_eq!(c.time_scale, 1.0);
        assert_eq!(c.admin_token, None);
        assert_eq!(c.faults, None);
        assert_eq!(
            c.instance_id, None,
            "no stable name unless the deployment gives one"
        );
        assert_eq!(c.initial_faults().unwrap().plan(), FaultPlan::default());
    }

    #[test]
    fn the_time_scale_scales_and_bad_values_are_refused() {
        let c = parse(&["--database-url", "x", "--time-scale", "0.5"]).unwrap();
        assert_eq!(c.scaled(3.0), Duration::from_millis(1500));
        for bad in ["0", "-1", "nan", "inf", "1001", "fast"] {
            assert!(
                parse(&["--database-url", "x", "--time-scale", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_timeout_may_be_long_but_not_endless_or_negative() {
        assert_eq!(parse_timeout_seconds("2000"), Ok(2000.0));
        assert_eq!(parse_timeout_seconds("0.5"), Ok(0.5));
        for bad in ["0", "-1", "86401", "inf", "nan", "soon"] {
            assert!(parse_timeout_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_instance_id_is_a_name_kafka_and_the_lease_owner_accept() {
        let c = parse(&["--database-url", "x", "--instance-id", "order-7f9c4d8b6-x2x5p"]).unwrap();
        assert_eq!(c.instance_id.as_deref(), Some("order-7f9c4d8b6-x2x5p"));
        for bad in ["", "order 0", "order/0", &"a".repeat(201)] {
            assert!(
                parse(&["--database-url", "x", "--instance-id", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_invalid_fault_plan_is_refused_and_a_valid_one_is_kept() {
        assert!(parse(&["--database-url", "x", "--faults", r#"{"http_error_rate":2}"#]).is_err());
        let c = parse(&[
            "--database-url",
            "x",
            "--faults",
            r#"{"business_failure_rate":{"oven":0.5}}"#,
        ])
        .unwrap();
        assert_eq!(c.faults.unwrap().business_failure_rate["oven"], 0.5);
    }
}
