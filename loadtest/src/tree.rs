//! `pizza-load trace ORDER_ID`: an order's spans as one tree in the terminal, across traces.
//!
//! Jaeger draws one trace at a time and shows a span link only as a reference to click. In the
//! `linked` topology an order is several traces joined by links, so here a span that starts a trace
//! (or lost its parent) and links to a span we know is drawn *under* that span, marked `⇢`, with its
//! trace id: the order reads top to bottom as it happened. Linked traces that no search found are
//! fetched by their id, transitively, so the tree follows links wherever they lead. The reading and
//! the tree's shape are [`pizza_traces`]'s; this module draws it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use pizza_traces::{Edge, Jaeger, Span, SpanGraph, SpanSearch, Tree};
use uuid::Uuid;

/// Every span of the order, plus the traces its spans link to (up to `max_traces` traces).
pub async fn gather(jaeger: &Jaeger, order_id: Uuid, max_traces: usize) -> anyhow::Result<Vec<Span>> {
    let search = SpanSearch::order(order_id).following_links(max_traces);
    Ok(jaeger.find_spans(&search).await?.spans)
}

/// The tree as text: one span a line, children indented, linked traces under the span they link to.
pub fn render(spans: &[Span]) -> String {
    let graph = SpanGraph::new(spans);
    let tree = graph.tree();
    let t0 = graph.spans().iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} spans in {} trace(s), {} piece(s) without a parent or a link to follow",
        graph.len(),
        graph.traces().len(),
        tree.roots.len()
    );
    let mut printer = Printer {
        graph: &graph,
        tree: &tree,
        t0,
        printed: BTreeSet::new(),
        out,
    };
    for &(i, edge) in &tree.roots {
        printer.line(i, edge, 0);
    }
    printer.out
}

struct Printer<'g, 'a> {
    graph: &'g SpanGraph<'a>,
    tree: &'g Tree,
    t0: u64,
    printed: BTreeSet<usize>,
    out: String,
}

impl Printer<'_, '_> {
    fn line(&mut self, i: usize, edge: Edge, depth: usize) {
        if !self.printed.insert(i) {
            return;
        }
        let s = self.graph.spans()[i];
        let marker = match edge {
            Edge::Root { .. } => "●",
            Edge::Parent => "└",
            Edge::Link { .. } => "⇢",
        };
        let mut notes = Vec::new();
        if let Edge::Root { missing_parent: true } | Edge::Link { missing_parent: true } = edge {
            notes.push("parent missing".to_owned());
        }
        if matches!(edge, Edge::Root { .. } | Edge::Link { .. }) {
            notes.push(format!("trace {}", &s.trace_id));
        }
        if s.is_error() {
            notes.push("ERROR".into());
        }
        let _ = writeln!(
            self.out,
            "{:indent$}{marker} {} [{} {}] +{:.1} ms, {:.1} ms{}",
            "",
            s.name,
            s.service_name,
            s.kind.name(),
            s.start_unix_nano.saturating_sub(self.t0) as f64 / 1e6,
            s.end_unix_nano.saturating_sub(s.start_unix_nano) as f64 / 1e6,
            if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            },
            indent = depth * 2
        );
        let children = self.tree.children.get(&i).cloned().unwrap_or_default();
        for (child, edge) in children {
            self.line(child, edge, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use pizza_traces::SpanKind::Internal;

    use super::*;

    fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, start_ms: u64) -> Span {
        let s = Span::new(trace, id, "order", Internal, name).at(start_ms, 2);
        match parent {
            Some(p) => s.child_of(p),
            None => s,
        }
    }

    #[test]
    fn a_linked_trace_is_drawn_under_the_span_it_links_to() {
        let spans = vec![
            span("t1", "a", None, "POST /orders", 0),
            span("t1", "b", Some("a"), "send kitchen.events", 10),
            span("t2", "c", None, "process kitchen.events", 20).linked_to("t1", "b"),
            span("t2", "d", Some("c"), "workflow.signal.send kitchen-ready", 21),
        ];
        let text = render(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("4 spans in 2 trace(s), 1 piece(s)"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("● POST /orders [order internal] +0.0 ms, 2.0 ms"),
            "{text}"
        );
        assert!(lines[2].starts_with("  └ send kitchen.events"), "{text}");
        assert!(
            lines[3].starts_with("    ⇢ process kitchen.events") && lines[3].contains("trace t2"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("      └ workflow.signal.send kitchen-ready"),
            "{text}"
        );
    }

    #[test]
    fn an_unlinked_fragment_is_a_second_root_and_a_missing_parent_is_said() {
        let spans = vec![
            span("t1", "a", None, "POST /orders", 0),
            span("t3", "x", Some("gone"), "process delivery.events", 30),
        ];
        let text = render(&spans);
        assert!(text.contains("2 piece(s)"), "{text}");
        assert!(
            text.contains("● process delivery.events") && text.contains("parent missing"),
            "{text}"
        );
    }
}
