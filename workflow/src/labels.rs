//! Run labels: what the caller says a run belongs to, stamped on every span of the run.
//!
//! The engine is generic: it knows runs, steps and signals, not orders or customers. A service that
//! wants its own join key on the workflow's spans (the pizza shop's `pizza.order.id`, so one search
//! finds an order's whole story, HTTP, Kafka and workflow alike) passes it as a label when it starts
//! the run. The engine stores the labels with the run and puts each one, key and value as given, on
//! every span it draws for that run: the create span, each execution, each step, each wait, the
//! signals sent to it and its summary.
//!
//! # Inheritance
//! A child run started by [`WorkflowContext::run_workflow`](crate::WorkflowContext::run_workflow)
//! inherits all of its parent's labels: a child is part of its parent's work (the pizza shop's
//! `charge-payment` is part of the order), so the same search must find it. Children cannot add or
//! drop labels; a run that needs other labels is started on its own with [`Engine::start`].
//!
//! # What belongs in a label
//! A few low-cardinality-per-span keys, named after the attribute registry of the service
//! (`semconv/registry`): each label is written on every span of the run. Never personal data
//! (a name, an address, a phone number): labels go to the telemetry backend verbatim.
//!
//! [`Engine::start`]: crate::Engine::start

use std::collections::BTreeMap;

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};

/// A run's labels: attribute key to value, in key order (so every span lists them the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// These labels and `key = value` (replacing an earlier value of `key`).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The labels as span attributes.
    pub(crate) fn key_values(&self) -> impl Iterator<Item = KeyValue> + '_ {
        self.0.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_one_value_per_key_in_key_order_and_serialize_as_a_flat_object() {
        let labels = Labels::new()
            .with("shop.region", "north")
            .with("pizza.order.id", "o-1")
            .with("pizza.order.id", "o-2");
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            vec![("pizza.order.id", "o-2"), ("shop.region", "north")]
        );
        assert_eq!(
            serde_json::to_value(&labels).unwrap(),
            serde_json::json!({"pizza.order.id": "o-2", "shop.region": "north"})
        );
        let back: Labels = serde_json::from_value(serde_json::json!({"a": "1"})).unwrap();
        assert_eq!(back.get("a"), Some("1"));
        assert!(Labels::new().is_empty());
    }
}
