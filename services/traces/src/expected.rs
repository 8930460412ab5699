//! The expected span model: which spans an order must have in Jaeger to count as complete, by how it
//! ended (`expected-spans.yaml`, shipped with this crate).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::span::SpanKind;

/// The expected span sets, as shipped with the crate.
pub const EXPECTED_SPANS: &str = include_str!("../expected-spans.yaml");

/// One expected span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSpan {
    /// `service.name` of the emitter.
    pub service: String,
    /// Span kind: internal, server, client, producer, consumer.
    pub kind: String,
    /// Span name (default topic names).
    pub name: String,
}

impl ExpectedSpan {
    /// The kind, parsed.
    pub fn span_kind(&self) -> SpanKind {
        SpanKind::from_name(&self.kind)
    }
}

impl std::fmt::Display for ExpectedSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.service, self.kind, self.name)
    }
}

/// Expected spans by terminal status (`completed`, `cancelled`, `rejected`).
pub type Expectations = BTreeMap<String, Vec<ExpectedSpan>>;

/// Parses [`EXPECTED_SPANS`].
pub fn expectations() -> Expectations {
    serde_yaml_ng::from_str(EXPECTED_SPANS).expect("expected-spans.yaml is valid (a unit test checks it)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jaeger::SHOP_SERVICES;

    #[test]
    fn the_shipped_expectations_parse_and_name_known_kinds() {
        let e = expectations();
        assert!(e.contains_key("completed") && e.contains_key("cancelled") && e.contains_key("rejected"));
        for span in e.values().flatten() {
            assert_ne!(span.span_kind(), SpanKind::Unspecified, "{span:?}");
            assert!(SHOP_SERVICES.contains(&span.service.as_str()), "{span:?}");
        }
    }
}
