//! `pizza-load trace ORDER_ID`: an order's spans as one tree in the terminal, across traces.
//!
//! Jaeger draws one trace at a time and shows a span link only as a reference to click. In the
//! `linked` topology an order is several traces joined by links, so here a span that starts a trace
//! (or lost its parent) and links to a span we know is drawn *under* that span, marked `⇢`, with its
//! trace id: the order reads top to bottom as it happened. Linked traces that no search found are
//! fetched by their id, transitively, so the tree follows links wherever they lead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use pizza_testkit::{Jaeger, Span};
use uuid::Uuid;

use crate::traces::kind_name;

/// Every span of the order, plus the traces its spans link to (up to `max_traces` traces).
pub async fn gather(jaeger: &Jaeger, order_id: Uuid, max_traces: usize) -> anyhow::Result<Vec<Span>> {
    let mut spans = crate::traces::order_spans(jaeger, order_id).await?;
    let mut seen: BTreeSet<String> = spans.iter().map(|s| s.trace_id.clone()).collect();
    loop {
        let wanted: BTreeSet<String> = spans
            .iter()
            .flat_map(|s| s.links.iter().map(|l| l.trace_id.clone()))
            .filter(|t| !seen.contains(t))
            .collect();
        if wanted.is_empty() || seen.len() >= max_traces {
            break;
        }
        for trace_id in wanted {
            seen.insert(trace_id.clone());
            if let Some(trace) = jaeger.trace(&trace_id).await? {
                spans.extend(trace.spans);
            }
        }
    }
    Ok(spans)
}

/// The tree as text: one span a line, children indented, linked traces under the span they link to.
pub fn render(spans: &[Span]) -> String {
    let mut by_id: BTreeMap<&str, &Span> = BTreeMap::new();
    for s in spans {
        by_id.entry(s.span_id.as_str()).or_insert(s);
    }
    // parent id → (child id, how it is attached)
    let mut children: BTreeMap<&str, Vec<(&str, Edge)>> = BTreeMap::new();
    let mut roots: Vec<(&str, Edge)> = Vec::new();
    for s in by_id.values() {
        match s.parent_span_id.as_deref() {
            Some(p) if by_id.contains_key(p) => {
                children.entry(p).or_default().push((&s.span_id, Edge::Parent))
            }
            parent => {
                let missing_parent = parent.is_some();
                let linked = s.links.iter().find(|l| by_id.contains_key(l.span_id.as_str()));
                match linked {
                    Some(l) => children
                        .entry(l.span_id.as_str())
                        .or_default()
                        .push((&s.span_id, Edge::Link { missing_parent })),
                    None => roots.push((&s.span_id, Edge::Root { missing_parent })),
                }
            }
        }
    }
    let start = |id: &str| by_id[id].start_unix_nano;
    roots.sort_by_key(|(id, _)| start(id));
    for list in children.values_mut() {
        list.sort_by_key(|(id, _)| start(id));
    }
    let t0 = by_id.values().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let traces: BTreeSet<&str> = by_id.values().map(|s| s.trace_id.as_str()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} spans in {} trace(s), {} piece(s) without a parent or a link to follow",
        by_id.len(),
        traces.len(),
        roots.len()
    );
    let mut printed = BTreeSet::new();
    for (id, edge) in &roots {
        line(&mut out, &by_id, &children, id, *edge, 0, t0, &mut printed);
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Edge {
    Root { missing_parent: bool },
    Parent,
    Link { missing_parent: bool },
}

#[allow(
    clippy::too_many_arguments,
    reason = "a recursive printer's state, kept flat on purpose"
)]
fn line<'a>(
    out: &mut String,
    by_id: &BTreeMap<&'a str, &'a Span>,
    children: &BTreeMap<&'a str, Vec<(&'a str, Edge)>>,
    id: &'a str,
    edge: Edge,
    depth: usize,
    t0: u64,
    printed: &mut BTreeSet<&'a str>,
) {
    if !printed.insert(id) {
        return;
    }
    let s = by_id[id];
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
        out,
        "{:indent$}{marker} {} [{} {}] +{:.1} ms, {:.1} ms{}",
        "",
        s.name,
        s.service_name,
        kind_name(s.kind),
        s.start_unix_nano.saturating_sub(t0) as f64 / 1e6,
        s.end_unix_nano.saturating_sub(s.start_unix_nano) as f64 / 1e6,
        if notes.is_empty() {
            String::new()
        } else {
            format!("  ({})", notes.join(", "))
        },
        indent = depth * 2
    );
    for (child, edge) in children.get(id).into_iter().flatten() {
        line(out, by_id, children, child, *edge, depth + 1, t0, printed);
    }
}

#[cfg(test)]
mod tests {
    use pizza_testkit::{Link, SpanKind};

    use super::*;

    fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, start_ms: u64) -> Span {
        Span {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: name.into(),
            kind: SpanKind::Internal,
            service_name: "order".into(),
            attributes: Default::default(),
            links: Vec::new(),
            events: Vec::new(),
            status_code: 0,
            start_unix_nano: start_ms * 1_000_000,
            end_unix_nano: start_ms * 1_000_000 + 2_000_000,
        }
    }

    #[test]
    fn a_linked_trace_is_drawn_under_the_span_it_links_to() {
        let mut consumer = span("t2", "c", None, "process kitchen.events", 20);
        consumer.links.push(Link {
            trace_id: "t1".into(),
            span_id: "b".into(),
            attributes: Default::default(),
        });
        let spans = vec![
            span("t1", "a", None, "POST /orders", 0),
            span("t1", "b", Some("a"), "send kitchen.events", 10),
            consumer,
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
