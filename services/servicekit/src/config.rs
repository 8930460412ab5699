//! The settings every service shares, as one `clap` struct each service flattens into its own
//! (`#[command(flatten)]`), so the variable names, defaults and checks are the same everywhere.

use std::time::Duration;

use rdkafka::ClientConfig;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::faults::{FaultError, FaultPlan, Faults};

/// Connections per service process: enough for the HTTP handlers, the background loop, the relay
/// and the consumer at once.
const MAX_CONNECTIONS: u32 = 10;

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
    /// Bearer token of the admin API (`/admin/faults`); without it the admin API answers 403.
    #[arg(long, env = "PIZZA_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The fault plan to start with, as JSON (see `pizza_servicekit::FaultPlan`).
    #[arg(long, env = "PIZZA_FAULTS", value_parser = parse_plan)]
    pub faults: Option<FaultPlan>,
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

    /// Connects a pool to [`database_url`](Self::database_url).
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
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
