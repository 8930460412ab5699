//! The verdict on one order's spans, judged against the expected span model.
//!
//! For one order, every span carrying its `pizza.order.id` is gathered (from every trace that holds
//! one, whatever the topology) and four questions are answered:
//!
//! - **complete**: is every span of `expected-spans.yaml` for the order's outcome there?
//! - **continuous**: are all the spans in one trace (the `continuous` topology's promise)?
//! - **linked**: does every CONSUMER span and every `workflow.execute` span link to a span that
//!   exists (the `linked` topology's promise, and also kept in `continuous`)?
//! - **orphans** and **fragments**: see [`crate::graph`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::expected::ExpectedSpan;
use crate::graph::SpanGraph;
use crate::span::{Span, SpanKind};

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
    /// The order's `POST /orders` SERVER span is there: under head sampling, whether the order was
    /// kept at all.
    #[serde(default)]
    pub has_root: bool,
}

/// Judges one order's spans. `normalize` maps span names to their default-topic spelling.
pub fn analyze(
    order_id: Uuid,
    spans: &[Span],
    expected: &[ExpectedSpan],
    normalize: impl Fn(&str) -> String,
) -> OrderTraces {
    let graph = SpanGraph::of_order(spans);
    let present: BTreeSet<(&str, SpanKind, String)> = graph
        .spans()
        .iter()
        .map(|s| (s.service_name.as_str(), s.kind, normalize(&s.name)))
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !present.contains(&(e.service.as_str(), e.span_kind(), e.name.clone())))
        .map(ExpectedSpan::to_string)
        .collect();
    let traces = graph.traces().len();
    let needs_link = |s: &Span| s.kind == SpanKind::Consumer || s.name.starts_with("workflow.execute ");
    let unlinked = graph
        .spans()
        .iter()
        .filter(|s| needs_link(s))
        .filter(|s| s.links.is_empty() || !s.links.iter().all(|l| graph.target(l).is_some()))
        .count();
    OrderTraces {
        order_id,
        spans: graph.len(),
        traces,
        complete: missing.is_empty() && !graph.is_empty(),
        missing,
        continuous: traces == 1,
        linked: unlinked == 0,
        unlinked,
        orphans: graph.orphans().count(),
        fragments: graph.fragments(),
        has_root: graph
            .spans()
            .iter()
            .any(|s| s.kind == SpanKind::Server && s.name == "POST /orders"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanKind::{Consumer, Producer, Server};

    fn expected() -> Vec<ExpectedSpan> {
        [
            ("order", "server", "POST /orders"),
            ("kitchen", "producer", "send kitchen.events"),
            ("order", "consumer", "process kitchen.events"),
        ]
        .into_iter()
        .map(|(service, kind, name)| ExpectedSpan {
            service: service.into(),
            kind: kind.into(),
            name: name.into(),
        })
        .collect()
    }

    fn id() -> Uuid {
        Uuid::nil()
    }

    fn post() -> Span {
        Span::new("t1", "a", "order", Server, "POST /orders")
    }

    fn send(name: &str) -> Span {
        Span::new("t1", "b", "kitchen", Producer, name).child_of("a")
    }

    #[test]
    fn a_continuous_order_is_complete_continuous_linked_and_one_fragment() {
        let spans = vec![
            post(),
            send("send kitchen.events.x"),
            Span::new("t1", "c", "order", Consumer, "process kitchen.events.x")
                .child_of("b")
                .linked_to("t1", "b"),
        ];
        let v = analyze(id(), &spans, &expected(), |n| {
            n.replace("kitchen.events.x", "kitchen.events")
        });
        assert!(v.complete, "{v:?}");
        assert!(v.continuous && v.linked && v.has_root);
        assert_eq!((v.orphans, v.fragments, v.traces), (0, 1, 1));
    }

    #[test]
    fn a_linked_order_spans_two_traces_yet_is_one_fragment() {
        let spans = vec![
            post(),
            send("send kitchen.events"),
            Span::new("t2", "c", "order", Consumer, "process kitchen.events").linked_to("t1", "b"),
        ];
        let v = analyze(id(), &spans, &expected(), str::to_owned);
        assert!(v.complete && v.linked && !v.continuous);
        assert_eq!((v.traces, v.fragments, v.orphans), (2, 1, 0));
    }

    #[test]
    fn a_dropped_context_shows_as_an_unlinked_consumer_and_a_second_fragment() {
        let spans = vec![
            post(),
            send("send kitchen.events"),
            Span::new("t2", "c", "order", Consumer, "process kitchen.events"),
            Span::new("t2", "d", "order", Producer, "workflow.signal.send kitchen-ready").child_of("c"),
        ];
        let v = analyze(id(), &spans, &expected(), str::to_owned);
        assert!(v.complete, "all spans are there, just not joined");
        assert!(!v.linked && !v.continuous);
        assert_eq!((v.unlinked, v.fragments), (1, 2));
    }

    #[test]
    fn missing_spans_and_orphans_are_counted() {
        let spans = vec![
            post(),
            // Its parent (a span the Collector never got) is missing.
            Span::new("t1", "c", "order", Consumer, "process kitchen.events").child_of("zz"),
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
            post(),
            Span::new("t9", "r", "order", Server, "GET /orders/{order_id}"),
        ];
        let v = analyze(id(), &spans, &expected()[..1], str::to_owned);
        assert_eq!((v.spans, v.fragments, v.traces), (1, 1, 1));
        assert!(v.complete && v.continuous);
    }

    #[test]
    fn no_spans_at_all_is_incomplete_even_when_nothing_is_expected() {
        let v = analyze(id(), &[], &[], str::to_owned);
        assert!(!v.complete && !v.has_root);
        assert_eq!(v.fragments, 0);
    }
}
