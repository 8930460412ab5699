//! Conformance checks for exported telemetry.
//!
//! Two questions a test asks of every trace it reads back:
//! - does each span use only attribute names we know: OpenTelemetry semantic conventions listed in
//!   `pizza_telemetry::attributes`, names the SDK adds itself, or the project's own registry
//!   (`semconv/registry/*.yaml`, Weaver format)? An unknown key is either a typo or a new attribute
//!   that needs registering and documenting.
//! - does any span, link or event carry customer personal data? The test passes the names, addresses
//!   and phone numbers it used, and every value is searched for them.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::stack::Stack;
use pizza_traces::Trace;

/// The attribute ids declared in the project's Weaver registry.
#[derive(Debug, Clone)]
pub struct Registry {
    ids: BTreeSet<String>,
}

#[derive(Deserialize)]
struct RegistryFile {
    #[serde(default)]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    attributes: Vec<Attribute>,
}

#[derive(Deserialize)]
struct Attribute {
    id: String,
}

impl Registry {
    /// Loads every `*.yaml` file of `semconv/registry` in the checkout.
    pub fn load() -> Result<Self, String> {
        Self::load_dir(&Stack::repo_root().join("semconv/registry"))
    }

    /// Loads every `*.yaml` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        let mut ids = BTreeSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let file: RegistryFile =
                    serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                ids.extend(file.groups.into_iter().flat_map(|g| g.attributes).map(|a| a.id));
            }
        }
        Ok(Self { ids })
    }

    /// The registered ids.
    pub fn ids(&self) -> &BTreeSet<String> {
        &self.ids
    }

    /// Whether `key` may appear on an exported span.
    pub fn allows(&self, key: &str) -> bool {
        pizza_telemetry::attributes::semconv::ALL.contains(&key)
            || pizza_telemetry::attributes::SDK_ADDED.contains(&key)
            || self.ids.contains(key)
    }
}

/// The prefix of annotations Jaeger adds to spans it stores (`@jaeger@warnings`, for instance its
/// clock-skew notes on a child that starts after its parent ended, as every asynchronous consumer
/// does). They are Jaeger's, not something a service emitted, so the conformance check skips them.
pub const JAEGER_ANNOTATION_PREFIX: &str = "@jaeger@";

/// Every span or link attribute of `trace` whose key the registry does not allow, as
/// `"<span name>: <key>"`. Jaeger's own annotations ([`JAEGER_ANNOTATION_PREFIX`]) are not counted.
pub fn unknown_attributes(trace: &Trace, registry: &Registry) -> Vec<String> {
    let mut found = Vec::new();
    for span in &trace.spans {
        let keys = span
            .attributes
            .keys()
            .chain(span.links.iter().flat_map(|l| l.attributes.keys()));
        for key in keys {
            if !key.starts_with(JAEGER_ANNOTATION_PREFIX) && !registry.allows(key) {
                found.push(format!("{}: {key}", span.name));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Every place in `trace` (span names, attribute, link and event values) where one of `needles`
/// (case-insensitive) appears, as `"<span name>: <where>"`.
pub fn personal_data(trace: &Trace, needles: &[&str]) -> Vec<String> {
    let needles: Vec<String> = needles
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| n.to_lowercase())
        .collect();
    let hit = |text: &str| {
        let text = text.to_lowercase();
        needles.iter().any(|n| text.contains(n.as_str()))
    };
    let mut found = Vec::new();
    for span in &trace.spans {
        if hit(&span.name) {
            found.push(format!("{}: span name", span.name));
        }
        let values = span
            .attributes
            .iter()
            .chain(span.links.iter().flat_map(|l| l.attributes.iter()))
            .chain(span.events.iter().flat_map(|e| e.attributes.iter()));
        for (key, value) in values {
            if hit(&value_text(value)) {
                found.push(format!("{}: {key}", span.name));
            }
        }
        for event in &span.events {
            if hit(&event.name) {
                found.push(format!("{}: event {}", span.name, event.name));
            }
        }
    }
    found
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use pizza_traces::{Event, Span, SpanKind};

    fn span(attributes: &[(&str, &str)], event: Option<(&str, &str)>) -> Span {
        Span {
            trace_id: "0".repeat(32),
            span_id: "1".repeat(16),
            parent_span_id: None,
            name: "POST /orders".into(),
            kind: SpanKind::Server,
            service_name: "order".into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect(),
            links: vec![],
            events: event
                .map(|(k, v)| Event {
                    name: "log".into(),
                    attributes: BTreeMap::from([(k.to_string(), Value::from(v))]),
                })
                .into_iter()
                .collect(),
            status_code: 0,
            start_unix_nano: 0,
            end_unix_nano: 0,
        }
    }

    #[test]
    fn the_registry_loads_and_unknown_keys_are_reported() {
        let registry = Registry::load().unwrap();
        assert!(registry.ids().contains("pizza.order.id"));
        let trace = Trace {
            spans: vec![span(
                &[
                    ("http.route", "/orders"),
                    ("pizza.order.id", "x"),
                    ("customer.name", "Ada"),
                    ("@jaeger@warnings", "skew"),
                ],
                None,
            )],
        };
        assert_eq!(
            unknown_attributes(&trace, &registry),
            vec!["POST /orders: customer.name"]
        );
    }

    #[test]
    fn personal_data_is_found_in_attribute_and_event_values_whatever_the_case() {
        let trace = Trace {
            spans: vec![span(
                &[("url.path", "/orders")],
                Some(("message", "deliver to 12 ELM Street")),
            )],
        };
        assert_eq!(
            personal_data(&trace, &["elm street"]),
            vec!["POST /orders: message"]
        );
        assert!(personal_data(&trace, &["Ada Lovelace"]).is_empty());
    }
}
