//! What happened to each order's traces: read from Jaeger, judged against the expected span set.
//!
//! For one order, every span carrying its `pizza.order.id` is gathered (from every trace that holds
//! one, whatever the topology) and four questions are answered:
//!
//! - **complete**: is every span of `expected-spans.yaml` for the order's outcome there?
//! - **continuous**: are all the spans in one trace (the `continuous` topology's promise)?
//! - **linked**: does every CONSUMER span and every `workflow.execute` span link to a span that
//!   exists (the `linked` topology's promise, and also kept in `continuous`)?
//! - **orphans** and **fragments**: spans whose parent is missing, and how many pieces the order
//!   falls into when spans are joined by parents *and* links. A healthy order is one fragment in
//!   either topology; a dropped trace context makes it two or more.
//!
//! [`analyze`] is pure (tested on hand-made span sets); [`collect`] reads Jaeger.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use pizza_testkit::{Jaeger, Span, SpanKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::target::Target;

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

/// Expected spans by terminal status (`completed`, `cancelled`, `rejected`).
pub type Expectations = BTreeMap<String, Vec<ExpectedSpan>>;

/// Parses [`EXPECTED_SPANS`].
pub fn expectations() -> Expectations {
    serde_yaml_ng::from_str(EXPECTED_SPANS).expect("expected-spans.yaml is valid (a unit test checks it)")
}

/// The lower-case name of a span kind, as `expected-spans.yaml` spells it.
pub fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// The verdict on one order's traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderTraces {
    /// The order.
    pub order_id: Uuid,
    /// Spans found.
    pub spans: usize,
    /// Distinct trace ids among them.
    pub traces: usize,
    /// Expected spans not found (`service kind name`).
    pub missing: Vec<String>,
    /// Every expected span found.
    pub complete: bool,
    /// All spans in one trace.
    pub continuous: bool,
    /// Every consumer and execution span links to a span that exists.
    pub linked: bool,
    /// Consumer and execution spans without a resolvable link.
    pub unlinked: usize,
    /// Spans whose parent id is set but not among the spans.
    pub orphans: usize,
    /// Connected pieces, joining spans by parent and by link.
    pub fragments: usize,
}

/// Judges one order's spans. `normalize` maps span names to their default-topic spelling.
pub fn analyze(
    order_id: Uuid,
    spans: &[Span],
    expected: &[ExpectedSpan],
    normalize: impl Fn(&str) -> String,
) -> OrderTraces {
    // Spans may be read twice (two searches finding the same trace): one per id.
    let mut by_id: BTreeMap<&str, &Span> = BTreeMap::new();
    for s in spans.iter().filter(|s| !is_read(s)) {
        by_id.entry(s.span_id.as_str()).or_insert(s);
    }
    let present: BTreeSet<(String, &'static str, String)> = by_id
        .values()
        .map(|s| (s.service_name.clone(), kind_name(s.kind), normalize(&s.name)))
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !present.contains(&(e.service.clone(), kind_of(&e.kind), e.name.clone())))
        .map(|e| format!("{} {} {}", e.service, e.kind, e.name))
        .collect();
    let traces: BTreeSet<&str> = by_id.values().map(|s| s.trace_id.as_str()).collect();
    let orphans = by_id
        .values()
        .filter(|s| {
            s.parent_span_id
                .as_deref()
                .is_some_and(|p| !by_id.contains_key(p))
        })
        .count();
    let needs_link = |s: &Span| s.kind == SpanKind::Consumer || s.name.starts_with("workflow.execute ");
    let unlinked = by_id
        .values()
        .filter(|s| needs_link(s))
        .filter(|s| s.links.is_empty() || !s.links.iter().all(|l| by_id.contains_key(l.span_id.as_str())))
        .count();
    // Union-find over parent and link edges.
    let index: HashMap<&str, usize> = by_id.keys().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut parent: Vec<usize> = (0..index.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for s in by_id.values() {
        let me = index[s.span_id.as_str()];
        let others = s
            .parent_span_id
            .iter()
            .map(String::as_str)
            .chain(s.links.iter().map(|l| l.span_id.as_str()));
        for other in others {
            if let Some(&o) = index.get(other) {
                let (a, b) = (find(&mut parent, me), find(&mut parent, o));
                parent[a] = b;
            }
        }
    }
    let fragments = (0..index.len())
        .map(|i| find(&mut parent, i))
        .collect::<BTreeSet<_>>()
        .len();
    OrderTraces {
        order_id,
        spans: by_id.len(),
        traces: traces.len(),
        complete: missing.is_empty() && !by_id.is_empty(),
        missing,
        continuous: traces.len() == 1,
        linked: unlinked == 0,
        unlinked,
        orphans,
        fragments,
    }
}

/// A read of the order (`GET /orders/{order_id}` by the load tester's polling, the web UI, an SSE
/// stream): it carries `pizza.order.id` but is not part of processing the order, and would show as
/// a fragment of its own.
pub fn is_read(span: &Span) -> bool {
    span.kind == SpanKind::Server && span.name.starts_with("GET ")
}

fn kind_of(name: &str) -> &'static str {
    match name {
        "internal" => "internal",
        "server" => "server",
        "client" => "client",
        "producer" => "producer",
        "consumer" => "consumer",
        _ => "unspecified",
    }
}

/// The services whose traces are searched for an order's id.
pub const SERVICES: &[&str] = &["order", "kitchen", "delivery"];

/// Every span of every trace holding a span of `order_id` (found through `pizza.order.id`).
pub async fn order_spans(jaeger: &Jaeger, order_id: Uuid) -> Result<Vec<Span>, pizza_testkit::JaegerError> {
    let id = order_id.to_string();
    let mut trace_ids = BTreeSet::new();
    for service in SERVICES {
        trace_ids.extend(
            jaeger
                .find_trace_ids(service, pizza_telemetry::attributes::pizza::ORDER_ID, &id)
                .await?,
        );
    }
    let mut spans = Vec::new();
    for trace_id in trace_ids {
        if let Some(trace) = jaeger.trace(&trace_id).await? {
            spans.extend(trace.spans);
        }
    }
    Ok(spans)
}

/// Reads and judges the traces of `orders` (order id → terminal status). Spans reach Jaeger late
/// (SDK batch, Collector batch), so incomplete orders are read again until they are complete or
/// `patience` has passed; what is still missing then is reported as missing.
pub async fn collect(
    target: &Target,
    orders: &[(Uuid, String)],
    patience: Duration,
    progress: &crate::progress::Progress,
) -> Vec<OrderTraces> {
    let jaeger = Jaeger::new(&target.jaeger_url);
    let expectations = expectations();
    let deadline = Instant::now() + patience;
    let mut results: BTreeMap<Uuid, OrderTraces> = BTreeMap::new();
    let mut pending: Vec<(Uuid, String)> = orders.to_vec();
    loop {
        let round = futures::future::join_all(pending.chunks(8).map(|chunk| {
            let jaeger = jaeger.clone();
            let expectations = &expectations;
            async move {
                let mut out = Vec::new();
                for (id, status) in chunk {
                    let spans = order_spans(&jaeger, *id).await.unwrap_or_default();
                    let expected = expectations.get(status.as_str()).cloned().unwrap_or_default();
                    out.push((
                        *id,
                        status.clone(),
                        analyze(*id, &spans, &expected, |n| target.normalize(n)),
                    ));
                }
                out
            }
        }))
        .await;
        pending.clear();
        for (id, status, verdict) in round.into_iter().flatten() {
            if !verdict.complete {
                pending.push((id, status));
            }
            results.insert(id, verdict);
        }
        progress.note(&format!(
            "traces: {} of {} orders complete in Jaeger",
            orders.len() - pending.len(),
            orders.len()
        ));
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    orders.iter().filter_map(|(id, _)| results.remove(id)).collect()
}

#[cfg(test)]
mod tests {
    use pizza_testkit::Link;

    use super::*;

    fn span(trace: &str, id: &str, parent: Option<&str>, service: &str, kind: SpanKind, name: &str) -> Span {
        Span {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: name.into(),
            kind,
            service_name: service.into(),
            attributes: Default::default(),
            links: Vec::new(),
            events: Vec::new(),
            status_code: 0,
            start_unix_nano: 0,
            end_unix_nano: 0,
        }
    }

    fn link(mut s: Span, trace: &str, id: &str) -> Span {
        s.links.push(Link {
            trace_id: trace.into(),
            span_id: id.into(),
            attributes: Default::default(),
        });
        s
    }

    fn expected() -> Vec<ExpectedSpan> {
        vec![
            ExpectedSpan {
                service: "order".into(),
                kind: "server".into(),
                name: "POST /orders".into(),
            },
            ExpectedSpan {
                service: "kitchen".into(),
                kind: "producer".into(),
                name: "send kitchen.events".into(),
            },
            ExpectedSpan {
                service: "order".into(),
                kind: "consumer".into(),
                name: "process kitchen.events".into(),
            },
        ]
    }

    fn id() -> Uuid {
        Uuid::nil()
    }

    #[test]
    fn a_continuous_order_is_complete_continuous_linked_and_one_fragment() {
        let spans = vec![
            span("t1", "a", None, "order", SpanKind::Server, "POST /orders"),
            span(
                "t1",
                "b",
                Some("a"),
                "kitchen",
                SpanKind::Producer,
                "send kitchen.events.x",
            ),
            link(
                span(
                    "t1",
                    "c",
                    Some("b"),
                    "order",
                    SpanKind::Consumer,
                    "process kitchen.events.x",
                ),
                "t1",
                "b",
            ),
        ];
        let v = analyze(id(), &spans, &expected(), |n| {
            n.replace("kitchen.events.x", "kitchen.events")
        });
        assert!(v.complete, "{v:?}");
        assert!(v.continuous && v.linked);
        assert_eq!((v.orphans, v.fragments, v.traces), (0, 1, 1));
    }

    #[test]
    fn a_linked_order_spans_two_traces_yet_is_one_fragment() {
        let spans = vec![
            span("t1", "a", None, "order", SpanKind::Server, "POST /orders"),
            span(
                "t1",
                "b",
                Some("a"),
                "kitchen",
                SpanKind::Producer,
                "send kitchen.events",
            ),
            link(
                span(
                    "t2",
                    "c",
                    None,
                    "order",
                    SpanKind::Consumer,
                    "process kitchen.events",
                ),
                "t1",
                "b",
            ),
        ];
        let v = analyze(id(), &spans, &expected(), str::to_owned);
        assert!(v.complete && v.linked && !v.continuous);
        assert_eq!((v.traces, v.fragments, v.orphans), (2, 1, 0));
    }

    #[test]
    fn a_dropped_context_shows_as_an_unlinked_consumer_and_a_second_fragment() {
        let spans = vec![
            span("t1", "a", None, "order", SpanKind::Server, "POST /orders"),
            span(
                "t1",
                "b",
                Some("a"),
                "kitchen",
                SpanKind::Producer,
                "send kitchen.events",
            ),
            span(
                "t2",
                "c",
                None,
                "order",
                SpanKind::Consumer,
                "process kitchen.events",
            ),
            span(
                "t2",
                "d",
                Some("c"),
                "order",
                SpanKind::Producer,
                "workflow.signal.send kitchen-ready",
            ),
        ];
        let v = analyze(id(), &spans, &expected(), str::to_owned);
        assert!(v.complete, "all spans are there, just not joined");
        assert!(!v.linked && !v.continuous);
        assert_eq!((v.unlinked, v.fragments), (1, 2));
    }

    #[test]
    fn missing_spans_and_orphans_are_counted() {
        let spans = vec![
            span("t1", "a", None, "order", SpanKind::Server, "POST /orders"),
            // Its parent (a span the Collector never got) is missing.
            span(
                "t1",
                "c",
                Some("zz"),
                "order",
                SpanKind::Consumer,
                "process kitchen.events",
            ),
        ];
        let v = analyze(id(), &spans, &expected(), str::to_owned);
        assert!(!v.complete);
        assert_eq!(v.missing, vec!["kitchen producer send kitchen.events".to_owned()]);
        assert_eq!((v.orphans, v.fragments, v.unlinked), (1, 2, 1));
        // The same span read twice is counted once.
        let twice = [spans.clone(), spans].concat();
        assert_eq!(analyze(id(), &twice, &expected(), str::to_owned).spans, 2);
    }

    #[test]
    fn reads_of_the_order_are_not_fragments_of_it() {
        let spans = vec![
            span("t1", "a", None, "order", SpanKind::Server, "POST /orders"),
            span(
                "t9",
                "r",
                None,
                "order",
                SpanKind::Server,
                "GET /orders/{order_id}",
            ),
        ];
        let v = analyze(id(), &spans, &expected()[..1], str::to_owned);
        assert_eq!((v.spans, v.fragments, v.traces), (1, 1, 1));
        assert!(v.complete && v.continuous);
    }

    #[test]
    fn no_spans_at_all_is_incomplete_even_when_nothing_is_expected() {
        let v = analyze(id(), &[], &[], str::to_owned);
        assert!(!v.complete);
        assert_eq!(v.fragments, 0);
    }

    #[test]
    fn the_shipped_expectations_parse_and_name_known_kinds() {
        let e = expectations();
        assert!(e.contains_key("completed") && e.contains_key("cancelled") && e.contains_key("rejected"));
        for span in e.values().flatten() {
            assert_ne!(kind_of(&span.kind), "unspecified", "{span:?}");
            assert!(SERVICES.contains(&span.service.as_str()), "{span:?}");
        }
    }
}
