//! A head sampler that keeps linked traces together.
//!
//! In `linked` topology an order is several traces: the HTTP request's, then one per Kafka consumer and
//! per workflow execution, each joined to its cause by a span link. The stock
//! `parentbased_traceidratio` sampler decides each of those root spans by its own trace id, so at a 10%
//! ratio a kept order keeps only about 10% of its linked traces: the picture falls apart exactly where
//! it is most interesting. Tail sampling in the Collector cannot help either, since it groups by trace
//! id and cannot follow links.
//!
//! [`LinkAwareSampler`] makes the decision travel along links as it travels along parents:
//!
//! 1. a span whose parent is sampled is sampled (as parent-based samplers do);
//! 2. a span with any sampled link is sampled, whatever its parent said;
//! 3. a span with an unsampled parent, or with links none of which is sampled, is dropped: the
//!    decision about this order was already made upstream, and honouring it keeps kept orders whole
//!    and dropped orders entirely dropped (no stray fragments starting mid-order);
//! 4. only a true root, with no parent and no link, falls back to the trace-id ratio. For an order
//!    that is the `POST /orders` span: one decision per order.
//!
//! Links to a context an untrusted caller sent (`pizza.link.reason=inbound_untrusted`, see
//! [`crate::http_server`]) are ignored: a stranger's sampled flag must not choose what we record.
//!
//! The links must be known when the span starts (OpenTelemetry samplers see only creation-time links),
//! which is why every helper in this crate adds links at span creation.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

use crate::attributes::pizza;

/// Samples a span when its parent or any of its links is sampled; roots fall back to a ratio.
#[derive(Debug, Clone)]
pub struct LinkAwareSampler {
    root: Sampler,
}

impl LinkAwareSampler {
    /// `ratio` (0 to 1) applies to root spans that have no sampled link.
    pub fn new(ratio: f64) -> Self {
        Self {
            root: Sampler::TraceIdRatioBased(ratio),
        }
    }
}

impl ShouldSample for LinkAwareSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        let links: Vec<&Link> = links
            .iter()
            .filter(|l| l.span_context.is_valid() && !is_untrusted(l))
            .collect();
        let link_sampled = links.iter().any(|l| l.span_context.is_sampled());
        let trace_state = parent
            .as_ref()
            .map(|p| p.trace_state().clone())
            .unwrap_or_default();
        let has_links = !links.is_empty();
        let decision = match &parent {
            Some(p) if p.is_sampled() || link_sampled => SamplingDecision::RecordAndSample,
            Some(_) => SamplingDecision::Drop,
            None if link_sampled => SamplingDecision::RecordAndSample,
            None if has_links => SamplingDecision::Drop,
            None => {
                return self
                    .root
                    .should_sample(parent_context, trace_id, name, span_kind, attributes, &[]);
            }
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// A link to a context a stranger sent (see [`crate::http_server`]): it must not decide sampling, or
/// anyone could force every request of theirs to be recorded (`-01`) or hidden (`-00`).
fn is_untrusted(link: &Link) -> bool {
    link.attributes
        .iter()
        .any(|kv| kv.key.as_str() == pizza::LINK_REASON && kv.value.as_str() == "inbound_untrusted")
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    use super::*;

    fn span_context(sampled: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(0x1234_u128),
            SpanId::from(0x42_u64),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    fn decide(
        sampler: &LinkAwareSampler,
        parent: Option<bool>,
        links: &[bool],
        trace_id: u128,
    ) -> SamplingDecision {
        let parent_cx = parent.map(|s| Context::new().with_remote_span_context(span_context(s)));
        let links: Vec<Link> = links
            .iter()
            .map(|&s| Link::with_context(span_context(s)))
            .collect();
        sampler
            .should_sample(
                parent_cx.as_ref(),
                TraceId::from(trace_id),
                "s",
                &SpanKind::Consumer,
                &[],
                &links,
            )
            .decision
    }

    #[test]
    fn a_sampled_parent_or_a_sampled_link_keeps_the_span_even_at_ratio_zero() {
        let s = LinkAwareSampler::new(0.0);
        assert_eq!(decide(&s, Some(true), &[], 7), SamplingDecision::RecordAndSample);
        assert_eq!(
            decide(&s, None, &[false, true], 7),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(&s, Some(false), &[true], 7),
            SamplingDecision::RecordAndSample
        );
    }

    #[test]
    fn an_unsampled_parent_without_sampled_links_drops_even_at_ratio_one() {
        let s = LinkAwareSampler::new(1.0);
        assert_eq!(decide(&s, Some(false), &[false], 7), SamplingDecision::Drop);
    }

    #[test]
    fn a_root_whose_links_were_all_dropped_is_dropped_even_at_ratio_one() {
        assert_eq!(
            decide(&LinkAwareSampler::new(1.0), None, &[false, false], 7),
            SamplingDecision::Drop
        );
    }

    #[test]
    fn an_untrusted_callers_link_does_not_decide_sampling() {
        let untrusted = |sampled| {
            Link::new(
                span_context(sampled),
                vec![KeyValue::new(pizza::LINK_REASON, "inbound_untrusted")],
                0,
            )
        };
        let decide_with = |ratio: f64, link: Link| {
            LinkAwareSampler::new(ratio)
                .should_sample(None, TraceId::from(7_u128), "s", &SpanKind::Server, &[], &[link])
                .decision
        };
        assert_eq!(
            decide_with(0.0, untrusted(true)),
            SamplingDecision::Drop,
            "a forced -01 is not obeyed"
        );
        assert_eq!(
            decide_with(1.0, untrusted(false)),
            SamplingDecision::RecordAndSample,
            "a -00 hides nothing"
        );
    }

    #[test]
    fn true_roots_follow_the_ratio() {
        assert_eq!(
            decide(&LinkAwareSampler::new(1.0), None, &[], 7),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(&LinkAwareSampler::new(0.0), None, &[], 7),
            SamplingDecision::Drop
        );
        let half = LinkAwareSampler::new(0.5);
        let kept = (0..2000_u128)
            .filter(|i| {
                decide(
                    &half,
                    None,
                    &[],
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                ) == SamplingDecision::RecordAndSample
            })
            .count();
        assert!(
            (800..1200).contains(&kept),
            "about half of 2000 roots kept, got {kept}"
        );
    }
}
