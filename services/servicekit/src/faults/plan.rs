//! What should go wrong, as a service is told it (`PIZZA_FAULTS`, `PUT /admin/faults`), and the
//! domain of each field: a plan outside it is refused whole, so a typo never half-applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest latency a plan may inject, so a typo can't hang a service for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// What should go wrong. Every field defaults to "nothing"; an empty plan is no faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the decision sequence.
    pub seed: u64,
    /// Share of business HTTP requests answered 500 (0 to 1). Admin and health routes are exempt.
    pub http_error_rate: f64,
    /// Latency added to every business HTTP request, in milliseconds.
    pub http_latency_ms: u64,
    /// Share of Kafka publishes that fail before reaching the broker (0 to 1).
    pub kafka_publish_failure_rate: f64,
    /// How many upcoming messages make the consumer crash after their effect committed but before
    /// their offset is stored (so the message is redelivered).
    pub consumer_crash_before_commit: u32,
    /// Latency added before database transactions, in milliseconds.
    pub db_latency_ms: u64,
    /// Business failures by kind (`oven`, `driver`, `payment`), each a share (0 to 1).
    pub business_failure_rate: BTreeMap<String, f64>,
    /// Edges whose trace context is dropped (`kafka:<topic>`, `http:<peer>`).
    pub drop_trace_context: Vec<String>,
}

/// A plan that can't be applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    /// A rate outside 0..=1.
    #[error("{field} must be between 0 and 1, got {value}")]
    Rate {
        /// The field.
        field: String,
        /// Its value.
        value: f64,
    },
    /// A latency above [`MAX_LATENCY_MS`].
    #[error("{field} must be at most {MAX_LATENCY_MS} ms, got {value}")]
    Latency {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An edge name that is neither `kafka:<topic>` nor `http:<peer>`.
    #[error("drop_trace_context entry {0:?} must look like kafka:<topic> or http:<peer>")]
    Edge(String),
}

impl FaultPlan {
    /// Checks every field's domain.
    pub fn validate(&self) -> Result<(), FaultError> {
        let rates = [
            ("http_error_rate".to_owned(), self.http_error_rate),
            (
                "kafka_publish_failure_rate".to_owned(),
                self.kafka_publish_failure_rate,
            ),
        ]
        .into_iter()
        .chain(
            self.business_failure_rate
                .iter()
                .map(|(k, v)| (format!("business_failure_rate.{k}"), *v)),
        );
        for (field, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultError::Rate { field, value });
            }
        }
        for (field, value) in [
            ("http_latency_ms", self.http_latency_ms),
            ("db_latency_ms", self.db_latency_ms),
        ] {
            if value > MAX_LATENCY_MS {
                return Err(FaultError::Latency { field, value });
            }
        }
        for edge in &self.drop_trace_context {
            let ok = edge
                .split_once(':')
                .is_some_and(|(kind, name)| (kind == "kafka" || kind == "http") && !name.is_empty());
            if !ok {
                return Err(FaultError::Edge(edge.clone()));
            }
        }
        Ok(())
    }

    /// Parses a plan from JSON (the `PIZZA_FAULTS` variable holds one) and validates it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let plan: FaultPlan = serde_json::from_str(text).map_err(|e| e.to_string())?;
        plan.validate().map_err(|e| e.to_string())?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_plans_are_refused_with_the_field_named() {
        assert!(
            FaultPlan::from_json(r#"{"http_error_rate":1.5}"#)
                .unwrap_err()
                .contains("http_error_rate")
        );
        assert!(
            FaultPlan::from_json(r#"{"http_latency_ms":3600000}"#)
                .unwrap_err()
                .contains("http_latency_ms")
        );
        assert!(
            FaultPlan::from_json(r#"{"drop_trace_context":["kitchen"]}"#)
                .unwrap_err()
                .contains("kitchen")
        );
        assert!(
            FaultPlan::from_json(r#"{"http_eror_rate":0.5}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            FaultPlan::from_json(r#"{"business_failure_rate":{"oven":-0.1}}"#)
                .unwrap_err()
                .contains("oven")
        );
    }
}
