//! The span model every reader shares: spans as Jaeger's v3 API returns them (OTLP), ids as lower-case
//! hex, attributes as plain JSON values.

use std::collections::BTreeMap;

use serde_json::Value;

/// A set of spans read together (one trace, or every span of an order across its traces).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// All spans, in the order Jaeger returned them.
    pub spans: Vec<Span>,
}

/// The span kinds of the OpenTelemetry data model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanKind {
    /// Not given.
    Unspecified,
    /// In-process work.
    Internal,
    /// Handles a synchronous request.
    Server,
    /// Makes a synchronous request.
    Client,
    /// Creates a message or a unit of deferred work.
    Producer,
    /// Processes a message or a unit of deferred work.
    Consumer,
}

impl SpanKind {
    /// The lower-case name, as `expected-spans.yaml` and the terminal tree spell it.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// The kind a lower-case name stands for; anything unknown is [`SpanKind::Unspecified`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// One span, decoded from OTLP JSON, ids as lower-case hex.
#[derive(Debug, Clone)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: SpanKind,
    /// `service.name` of the resource that emitted the span.
    pub service_name: String,
    /// Span attributes, values converted to JSON (strings, numbers, booleans, arrays).
    pub attributes: BTreeMap<String, Value>,
    /// Span links, exactly as exported.
    pub links: Vec<Link>,
    /// Span events (logs recorded on the span, exceptions).
    pub events: Vec<Event>,
    /// `STATUS_CODE_ERROR` spans are errors; see [`Span::is_error`].
    pub status_code: i64,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// A span event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// Event attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// A span link.
#[derive(Debug, Clone)]
pub struct Link {
    /// The linked span's trace id (32 hex digits).
    pub trace_id: String,
    /// The linked span's id (16 hex digits).
    pub span_id: String,
    /// Link attributes.
    pub attributes: BTreeMap<String, Value>,
}

impl Trace {
    /// The first span with this name.
    pub fn span(&self, name: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.name == name)
    }

    /// The span with this id.
    pub fn by_id(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// One line naming each span, for failure messages.
    pub fn summary(&self) -> String {
        let names: Vec<String> = self
            .spans
            .iter()
            .map(|s| format!("{}:{}({})", s.service_name, s.name, s.span_id))
            .collect();
        format!("{} span(s): {}", self.spans.len(), names.join(", "))
    }
}

impl Span {
    /// A span with only its identity, name, service and kind set: for hand-made span sets in tests of
    /// the code that judges spans. Chain [`Span::child_of`], [`Span::linked_to`] and [`Span::at`].
    pub fn new(trace_id: &str, span_id: &str, service: &str, kind: SpanKind, name: &str) -> Self {
        Self {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            parent_span_id: None,
            name: name.into(),
            kind,
            service_name: service.into(),
            attributes: BTreeMap::new(),
            links: Vec::new(),
            events: Vec::new(),
            status_code: 0,
            start_unix_nano: 0,
            end_unix_nano: 0,
        }
    }

    /// The same span with `parent` as its parent id.
    pub fn child_of(mut self, parent: &str) -> Self {
        self.parent_span_id = Some(parent.into());
        self
    }

    /// The same span with one more link.
    pub fn linked_to(mut self, trace_id: &str, span_id: &str) -> Self {
        self.links.push(Link {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            attributes: BTreeMap::new(),
        });
        self
    }

    /// The same span starting `start_ms` after the epoch and lasting `duration_ms`.
    pub fn at(mut self, start_ms: u64, duration_ms: u64) -> Self {
        self.start_unix_nano = start_ms * 1_000_000;
        self.end_unix_nano = (start_ms + duration_ms) * 1_000_000;
        self
    }

    /// A string attribute's value.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// An integer attribute's value.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == 2
    }

    /// Whether `other` is this span's parent.
    pub fn is_child_of(&self, other: &Span) -> bool {
        self.trace_id == other.trace_id && self.parent_span_id.as_deref() == Some(other.span_id.as_str())
    }

    /// Whether this span links to `other`.
    pub fn links_to(&self, other: &Span) -> bool {
        self.links
            .iter()
            .any(|l| l.trace_id == other.trace_id && l.span_id == other.span_id)
    }

    /// A read of an order (`GET /orders/{order_id}` by a poller, the web UI, an SSE stream): it carries
    /// `pizza.order.id` but is no part of processing the order, and would show as a fragment of its own.
    pub fn is_read(&self) -> bool {
        self.kind == SpanKind::Server && self.name.starts_with("GET ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_unknown_names_are_unspecified() {
        for kind in [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ] {
            assert_eq!(SpanKind::from_name(kind.name()), kind);
        }
        assert_eq!(SpanKind::from_name("oven"), SpanKind::Unspecified);
    }
}
