//! One span graph: spans joined by their parents and their links, whatever traces they are in.
//!
//! Every reader of an order's spans asks the same questions: which span is this one's parent, which
//! span does this link point at, which spans lost their parent (orphans), and into how many pieces do
//! the spans fall when joined by parents *and* links (fragments). In the `continuous` topology an
//! order is one trace; in `linked` it is several traces joined by links; either way a healthy order is
//! one fragment, and a dropped trace context makes two or more.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pizza_telemetry::attributes::pizza;

use crate::span::{Link, Span};

/// Spans indexed by `(trace id, span id)`, one copy each.
#[derive(Debug, Clone)]
pub struct SpanGraph<'a> {
    spans: Vec<&'a Span>,
    index: HashMap<(&'a str, &'a str), usize>,
}

/// How a span hangs in the [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// A piece of its own: no parent here and no link to a span here.
    Root {
        /// It names a parent that is not here.
        missing_parent: bool,
    },
    /// Under its parent.
    Parent,
    /// Under the span it links to (it starts a trace, or its parent is not here).
    Link {
        /// It names a parent that is not here.
        missing_parent: bool,
    },
}

/// The graph as one tree per piece: each span under its parent, or else under the first span it links
/// to, or else a root. Children are in start order.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// The pieces' first spans (indexes into [`SpanGraph::spans`]), in start order.
    pub roots: Vec<(usize, Edge)>,
    /// Each span's children.
    pub children: BTreeMap<usize, Vec<(usize, Edge)>>,
}

impl<'a> SpanGraph<'a> {
    /// The graph of `spans`; a span read twice (found by two searches) is kept once.
    pub fn new(spans: impl IntoIterator<Item = &'a Span>) -> Self {
        let mut graph = Self {
            spans: Vec::new(),
            index: HashMap::new(),
        };
        for span in spans {
            let key = (span.trace_id.as_str(), span.span_id.as_str());
            if !graph.index.contains_key(&key) {
                graph.index.insert(key, graph.spans.len());
                graph.spans.push(span);
            }
        }
        graph
    }

    /// The graph of an order's processing: `spans` without the reads of the order
    /// ([`Span::is_read`]).
    pub fn of_order(spans: &'a [Span]) -> Self {
        Self::new(spans.iter().filter(|s| !s.is_read()))
    }

    /// Every span, one copy each.
    pub fn spans(&self) -> &[&'a Span] {
        &self.spans
    }

    /// How many spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no spans.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The span with these ids.
    pub fn get(&self, trace_id: &str, span_id: &str) -> Option<&'a Span> {
        self.position(trace_id, span_id).map(|i| self.spans[i])
    }

    fn position(&self, trace_id: &str, span_id: &str) -> Option<usize> {
        self.index.get(&(trace_id, span_id)).copied()
    }

    /// `span`'s parent, if it has one and it is here.
    pub fn parent(&self, span: &Span) -> Option<&'a Span> {
        span.parent_span_id
            .as_deref()
            .and_then(|p| self.get(&span.trace_id, p))
    }

    /// The span `link` points at, if it is here.
    pub fn target(&self, link: &Link) -> Option<&'a Span> {
        self.get(&link.trace_id, &link.span_id)
    }

    /// Whether `span` names a parent that is not here.
    pub fn is_orphan(&self, span: &Span) -> bool {
        span.parent_span_id.is_some() && self.parent(span).is_none()
    }

    /// Spans naming a parent that is not here.
    pub fn orphans(&self) -> impl Iterator<Item = &'a Span> + '_ {
        self.spans.iter().copied().filter(|s| self.is_orphan(s))
    }

    /// The distinct trace ids.
    pub fn traces(&self) -> BTreeSet<&'a str> {
        self.spans.iter().map(|s| s.trace_id.as_str()).collect()
    }

    /// Connected pieces, joining spans by parent and by link (0 for no spans).
    pub fn fragments(&self) -> usize {
        let mut parent: Vec<usize> = (0..self.spans.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for (me, s) in self.spans.iter().enumerate() {
            let others = self
                .parent(s)
                .into_iter()
                .chain(s.links.iter().filter_map(|l| self.target(l)));
            for other in others {
                let o = self.position(&other.trace_id, &other.span_id).expect("indexed");
                let (a, b) = (find(&mut parent, me), find(&mut parent, o));
                parent[a] = b;
            }
        }
        (0..self.spans.len())
            .map(|i| find(&mut parent, i))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The graph as a tree; see [`Tree`].
    pub fn tree(&self) -> Tree {
        let mut tree = Tree::default();
        for (i, s) in self.spans.iter().enumerate() {
            if let Some(p) = self.parent(s) {
                let p = self.position(&p.trace_id, &p.span_id).expect("indexed");
                tree.children.entry(p).or_default().push((i, Edge::Parent));
                continue;
            }
            let missing_parent = s.parent_span_id.is_some();
            match s.links.iter().find_map(|l| self.target(l)) {
                Some(t) => {
                    let t = self.position(&t.trace_id, &t.span_id).expect("indexed");
                    tree.children
                        .entry(t)
                        .or_default()
                        .push((i, Edge::Link { missing_parent }));
                }
                None => tree.roots.push((i, Edge::Root { missing_parent })),
            }
        }
        let start = |&(i, _): &(usize, Edge)| self.spans[i].start_unix_nano;
        tree.roots.sort_by_key(start);
        for list in tree.children.values_mut() {
            list.sort_by_key(start);
        }
        tree
    }

    /// Every span as `label <- parent`, with ` | target[reason], ...` for its links (sorted), the whole
    /// sorted: a shape that compares as text with a span model. A parent that is not here shows as
    /// `? id`, a link target that is not here as `?`; the reason is the link's `pizza.link.reason`.
    pub fn shape(&self, label: impl Fn(&Span) -> String) -> Vec<String> {
        let mut lines: Vec<String> = self
            .spans
            .iter()
            .map(|s| {
                let parent = match &s.parent_span_id {
                    None => "-".to_owned(),
                    Some(p) => self.parent(s).map(&label).unwrap_or_else(|| format!("? {p}")),
                };
                let mut links: Vec<String> = s
                    .links
                    .iter()
                    .map(|l| {
                        let target = self.target(l).map(&label).unwrap_or_else(|| "?".to_owned());
                        format!("{target}[{}]", l.reason().unwrap_or(""))
                    })
                    .collect();
                links.sort();
                if links.is_empty() {
                    format!("{} <- {parent}", label(s))
                } else {
                    format!("{} <- {parent} | {}", label(s), links.join(", "))
                }
            })
            .collect();
        lines.sort();
        lines
    }
}

impl Link {
    /// Why the link was made (`pizza.link.reason`: `created_by`, `woken_by`, `signal`, ...).
    pub fn reason(&self) -> Option<&str> {
        self.attributes.get(pizza::LINK_REASON).and_then(|v| v.as_str())
    }
}

impl Span {
    /// This span's link to `target`, if it has one.
    pub fn link_to(&self, target: &Span) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.trace_id == target.trace_id && l.span_id == target.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanKind::{Consumer, Internal, Producer, Server};

    #[test]
    fn parents_links_orphans_and_fragments_are_read_across_traces() {
        let spans = vec![
            Span::new("t1", "a", "order", Server, "POST /orders"),
            Span::new("t1", "b", "kitchen", Producer, "send").child_of("a"),
            Span::new("t2", "c", "order", Consumer, "process").linked_to("t1", "b"),
            Span::new("t3", "d", "order", Internal, "lost").child_of("gone"),
            Span::new("t1", "b", "kitchen", Producer, "send").child_of("a"),
        ];
        let g = SpanGraph::new(&spans);
        assert_eq!(g.len(), 4, "the span read twice is kept once");
        assert_eq!(g.parent(&spans[1]).unwrap().span_id, "a");
        assert_eq!(g.target(&spans[2].links[0]).unwrap().span_id, "b");
        assert_eq!(g.orphans().map(|s| s.span_id.as_str()).collect::<Vec<_>>(), ["d"]);
        assert_eq!(g.traces().len(), 3);
        assert_eq!(g.fragments(), 2);
        let tree = g.tree();
        assert_eq!(
            tree.roots,
            vec![
                (
                    0,
                    Edge::Root {
                        missing_parent: false
                    }
                ),
                (3, Edge::Root { missing_parent: true })
            ]
        );
        assert_eq!(
            tree.children[&1],
            vec![(
                2,
                Edge::Link {
                    missing_parent: false
                }
            )]
        );
    }

    #[test]
    fn a_parent_is_looked_up_in_its_own_trace_only() {
        let spans = vec![
            Span::new("t1", "a", "order", Server, "POST /orders"),
            Span::new("t2", "b", "order", Internal, "x").child_of("a"),
        ];
        let g = SpanGraph::new(&spans);
        assert!(g.is_orphan(&spans[1]));
        assert_eq!(g.fragments(), 2);
    }

    #[test]
    fn the_shape_names_parents_and_link_targets_by_label_and_says_what_is_missing() {
        let mut linked = Span::new("t2", "c", "order", Consumer, "process").linked_to("t1", "a");
        linked.links[0]
            .attributes
            .insert(pizza::LINK_REASON.into(), "created_by".into());
        let spans = vec![
            Span::new("t1", "a", "order", Server, "POST /orders"),
            linked.child_of("zz").linked_to("t9", "q"),
        ];
        assert_eq!(
            SpanGraph::new(&spans).shape(|s| s.name.clone()),
            vec![
                "POST /orders <- -".to_owned(),
                "process <- ? zz | ?[], POST /orders[created_by]".to_owned()
            ]
        );
    }
}
