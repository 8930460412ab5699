//! W3C trace context and baggage across process boundaries, and the switch that breaks it on purpose.
//!
//! The propagator is the W3C pair (`traceparent`/`tracestate` and `baggage`), installed globally by
//! [`crate::init()`] or [`install_propagator`]. Carriers exist for HTTP headers ([`http::HeaderMap`]) and
//! Kafka record headers (rdkafka), so the same code path serves both kinds of edge.
//!
//! A malformed `traceparent` is not an error: the W3C propagator yields an invalid span context, the
//! next span starts a fresh trace, and the request goes on. A bad header from a caller never costs an
//! order.
//!
//! # The broken-trace switch
//! [`set_dropped_edges`] names edges (`kafka:<topic>`, `http:<peer>`) whose context is not injected.
//! The span on the far side then starts a new trace with no parent and no link: the fragmented picture
//! the Dapr gRPC-stream bug produced, reproduced on purpose so a workshop can see it and fix it. The
//! sending span carries `pizza.trace.context_dropped=true` so the cause is visible in Jaeger too.

use std::collections::BTreeSet;
use std::sync::{OnceLock, RwLock};

use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Names of the propagation headers, as W3C defines them.
pub mod headers {
    /// W3C Trace Context: version, trace id, parent span id, flags.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C Trace Context: vendor state.
    pub const TRACESTATE: &str = "tracestate";
    /// W3C Baggage.
    pub const BAGGAGE: &str = "baggage";
}

/// Installs the W3C trace-context and baggage propagators as the global propagator.
pub fn install_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

// ---- the fault switch --------------------------------------------------------------------------------

fn dropped() -> &'static RwLock<BTreeSet<String>> {
    static DROPPED: OnceLock<RwLock<BTreeSet<String>>> = OnceLock::new();
    DROPPED.get_or_init(Default::default)
}

/// Replaces the set of edges whose context is dropped (an admin API or the environment sets it).
pub fn set_dropped_edges(edges: impl IntoIterator<Item = String>) {
    *dropped().write().expect("dropped-edges lock") = edges.into_iter().collect();
}

/// The edges whose context is dropped now.
pub fn dropped_edges() -> Vec<String> {
    dropped()
        .read()
        .expect("dropped-edges lock")
        .iter()
        .cloned()
        .collect()
}

/// Is the context at `edge` dropped on purpose?
pub fn is_dropped(edge: &str) -> bool {
    dropped().read().expect("dropped-edges lock").contains(edge)
}

/// The edge name of a Kafka topic, for [`set_dropped_edges`].
pub fn kafka_edge(topic: &str) -> String {
    format!("kafka:{topic}")
}

/// The edge name of an HTTP peer, for [`set_dropped_edges`].
pub fn http_edge(peer: &str) -> String {
    format!("http:{peer}")
}

// ---- HTTP ---------------------------------------------------------------------------------------------

/// Reads the context a caller sent in HTTP headers (an invalid or missing one gives an empty context).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// Writes `cx` into HTTP headers, unless the edge is dropped. Returns whether it injected.
pub fn inject_http(cx: &Context, edge: &str, headers: &mut http::HeaderMap) -> bool {
    if is_dropped(edge) {
        return false;
    }
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut HttpHeadersMut(headers)));
    true
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HttpHeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HttpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

// ---- Kafka --------------------------------------------------------------------------------------------

/// Reads the producer's context from Kafka record headers (none, or a malformed one, gives an empty
/// context). When a header repeats, the last one wins, as Kafka clients conventionally read them.
pub fn extract_kafka<H: Headers>(headers: Option<&H>) -> Context {
    match headers {
        Some(h) => global::get_text_map_propagator(|p| p.extract(&KafkaHeaders(h))),
        None => Context::new(),
    }
}

/// Appends `cx`'s propagation headers to `headers`, unless the edge is dropped.
/// Returns the headers and whether it injected.
pub fn inject_kafka(cx: &Context, edge: &str, headers: OwnedHeaders) -> (OwnedHeaders, bool) {
    if is_dropped(edge) || !cx.span().span_context().is_valid() {
        return (headers, false);
    }
    let mut pairs = Vec::new();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut PairCollector(&mut pairs)));
    let headers = pairs.iter().fold(headers, |h, (k, v)| {
        h.insert(Header {
            key: k.as_str(),
            value: Some(v.as_bytes()),
        })
    });
    (headers, true)
}

/// The propagation fields of `cx` as text pairs, for storing with an outbox row or a workflow run.
/// Only `traceparent` and `tracestate` are kept: baggage can be large and may carry user data, so it
/// is never persisted.
pub fn context_to_carrier(cx: &Context) -> Vec<(String, String)> {
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut pairs = Vec::new();
    TraceContextPropagator::new().inject_context(cx, &mut PairCollector(&mut pairs));
    pairs
}

/// The context a stored carrier describes (an empty context if it holds none or a malformed one).
pub fn carrier_to_context(pairs: &[(String, String)]) -> Context {
    TraceContextPropagator::new().extract(&Pairs(pairs))
}

struct KafkaHeaders<'a, H>(&'a H);

impl<H: Headers> Extractor for KafkaHeaders<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(key))
            .last()
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct PairCollector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairCollector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), value));
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use rdkafka::message::OwnedHeaders;

    use super::*;

    fn sample_context() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("pizza", "1")]).unwrap(),
        ))
    }

    #[test]
    fn kafka_headers_round_trip_the_context() {
        install_propagator();
        let (headers, injected) = inject_kafka(&sample_context(), "kafka:t", OwnedHeaders::new());
        assert!(injected);
        let cx = extract_kafka(Some(&headers));
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("pizza"), Some("1"));
    }

    #[test]
    fn a_malformed_traceparent_gives_an_empty_context_not_an_error() {
        install_propagator();
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(bad),
            });
            assert!(
                !extract_kafka(Some(&headers)).span().span_context().is_valid(),
                "{bad}"
            );
            let mut http = http::HeaderMap::new();
            http.insert("traceparent", bad.parse().unwrap());
            assert!(!extract_http(&http).span().span_context().is_valid(), "{bad}");
        }
    }

    #[test]
    fn a_dropped_edge_injects_nothing_and_others_are_untouched() {
        install_propagator();
        set_dropped_edges([kafka_edge("kitchen.events")]);
        let (headers, injected) = inject_kafka(
            &sample_context(),
            &kafka_edge("kitchen.events"),
            OwnedHeaders::new(),
        );
        assert!(!injected);
        assert_eq!(headers.count(), 0);
        let (_, injected) = inject_kafka(
            &sample_context(),
            &kafka_edge("delivery.events"),
            OwnedHeaders::new(),
        );
        assert!(injected);
        set_dropped_edges([]);
        assert!(dropped_edges().is_empty());
    }

    #[test]
    fn a_stored_carrier_keeps_trace_context_but_never_baggage() {
        install_propagator();
        let cx = sample_context().with_baggage(vec![opentelemetry::KeyValue::new("customer", "someone")]);
        let carrier = context_to_carrier(&cx);
        assert!(
            carrier
                .iter()
                .all(|(k, _)| k == "traceparent" || k == "tracestate"),
            "{carrier:?}"
        );
        let back = carrier_to_context(&carrier);
        assert_eq!(
            back.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
        assert!(context_to_carrier(&Context::new()).is_empty());
    }
}
