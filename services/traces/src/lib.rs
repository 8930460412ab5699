//! One span reader for the whole platform: an order's spans fetched from Jaeger across traces and
//! links, and one span graph to judge them.
//!
//! The end-to-end tests, the workflow's trace tests, `pizza-load trace` and the load report all ask
//! the same things of the same data: every span of an order (found by `pizza.order.id` in each
//! service, plus the traces those spans link to), which span is whose parent, where each link points,
//! which spans lost their parent, how many pieces the order falls into, and whether every span of the
//! expected span model is there. This crate answers them once.
//!
//! It is a library of its own, not part of `pizza-testkit`, because the load tester ships as a
//! binary: it needs to read traces, not the test-only helpers (in-process services, private brokers)
//! that the testkit carries.
//!
//! ```text
//!  SpanSearch (pizza.order.id = …, services, follow links) ─► Jaeger::find_spans ─► Found { spans }
//!                                                                                       │
//!         SpanGraph::of_order(spans): parents, link targets, orphans, fragments, tree, shape
//!                                                                                       │
//!         verdict::analyze(order, spans, expected-spans.yaml[status]) ─► OrderTraces ◄──┘
//! ```
//!
//! # Layout
//! - [`span`]: the span model (spans, links, events, kinds), ids as lower-case hex.
//! - [`jaeger`]: a client for Jaeger's query API v3 that reads whole traces back, searches spans by
//!   attribute across services and follows links, waiting (bounded) for them to arrive.
//! - [`graph`]: spans joined by parents and links: orphans, fragments, a tree, a comparable shape.
//! - [`expected`]: the expected span model, `expected-spans.yaml`.
//! - [`verdict`]: one order judged: complete, continuous, linked, orphans, fragments.
//! - `otlp` (private): decoding Jaeger's OTLP-shaped JSON.

pub mod expected;
pub mod graph;
pub mod jaeger;
mod otlp;
pub mod span;
pub mod verdict;

pub use expected::{Expectations, ExpectedSpan, expectations};
pub use graph::{Edge, SpanGraph, Tree};
pub use jaeger::{Found, Jaeger, JaegerError, SHOP_SERVICES, Settle, SpanSearch};
pub use span::{Event, Link, Span, SpanKind, Trace};
pub use verdict::{OrderTraces, analyze};
