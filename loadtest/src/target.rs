//! Where the shop under test runs: its services' URLs, its database, broker, Jaeger, and the names
//! of its topics.
//!
//! On the native stack and on compose these are the documented defaults. A stack the load tester
//! starts itself ([`crate::managed`]) uses free ports, a database and topics of its own, so its runs
//! never meet another test's records; the topic map lets everything else (span names, fault plans,
//! poison records) keep speaking of `kitchen.events`.

use std::collections::BTreeMap;

use pizza_contracts::topics;

/// The endpoints of one shop.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL of the order service (the public API).
    pub order_url: String,
    /// Base URL of the kitchen (its admin API).
    pub kitchen_url: String,
    /// Base URL of the delivery service (its admin API).
    pub delivery_url: String,
    /// Bearer token of the services' admin APIs.
    pub admin_token: Option<String>,
    /// PostgreSQL URL of the database the services use.
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// Jaeger's query service.
    pub jaeger_url: String,
    /// Default topic name → the topic this shop really uses.
    pub topics: BTreeMap<String, String>,
}

impl Target {
    /// The topic map where every topic has its default name.
    pub fn default_topics() -> BTreeMap<String, String> {
        topics::ALL
            .iter()
            .map(|t| ((*t).to_owned(), (*t).to_owned()))
            .collect()
    }

    /// The real name of a default topic name (itself when not mapped).
    pub fn topic(&self, default: &str) -> String {
        self.topics
            .get(default)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// Rewrites every real topic name in `text` back to its default name (span names such as
    /// `send kitchen.events.3f2a…` become `send kitchen.events`).
    pub fn normalize(&self, text: &str) -> String {
        normalize(&self.topics, text)
    }

    /// Rewrites `kafka:<default topic>` edges of a fault plan to the real topics.
    pub fn rewrite_plan(&self, plan: &serde_json::Value) -> serde_json::Value {
        let mut plan = plan.clone();
        if let Some(edges) = plan
            .get_mut("drop_trace_context")
            .and_then(serde_json::Value::as_array_mut)
        {
            for edge in edges.iter_mut() {
                if let Some(topic) = edge.as_str().and_then(|e| e.strip_prefix("kafka:")) {
                    *edge = serde_json::Value::from(format!("kafka:{}", self.topic(topic)));
                }
            }
        }
        plan
    }

    /// The base URL of a service's own admin API.
    pub fn service_url(&self, service: &str) -> Option<&str> {
        match service {
            "order" => Some(&self.order_url),
            "kitchen" => Some(&self.kitchen_url),
            "delivery" => Some(&self.delivery_url),
            _ => None,
        }
    }
}

fn normalize(topics: &BTreeMap<String, String>, text: &str) -> String {
    let mut pairs: Vec<(&String, &String)> = topics.iter().filter(|(d, r)| d != r).collect();
    // Longest real names first, so `x.events.<id>.dlq` is not half-replaced by `x.events.<id>`.
    pairs.sort_by_key(|(_, real)| std::cmp::Reverse(real.len()));
    let mut out = text.to_owned();
    for (default, real) in pairs {
        out = out.replace(real.as_str(), default);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let mut topics = Target::default_topics();
        topics.insert("kitchen.events".into(), "kitchen.events.abc".into());
        Target {
            order_url: String::new(),
            kitchen_url: String::new(),
            delivery_url: String::new(),
            admin_token: None,
            database_url: String::new(),
            kafka_bootstrap: String::new(),
            jaeger_url: String::new(),
            topics,
        }
    }

    #[test]
    fn real_topic_names_are_normalized_back_to_their_defaults() {
        let t = target();
        assert_eq!(t.normalize("send kitchen.events.abc"), "send kitchen.events");
        assert_eq!(t.normalize("process delivery.events"), "process delivery.events");
        assert_eq!(t.topic("kitchen.events"), "kitchen.events.abc");
    }

    #[test]
    fn dropped_kafka_edges_of_a_plan_name_the_real_topic() {
        let plan = serde_json::json!({"drop_trace_context": ["kafka:kitchen.events", "http:kitchen"]});
        assert_eq!(
            target().rewrite_plan(&plan)["drop_trace_context"],
            serde_json::json!(["kafka:kitchen.events.abc", "http:kitchen"])
        );
    }
}
