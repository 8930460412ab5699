//! What happened to each order's traces: read from Jaeger, judged against the expected span set.
//!
//! The reading and the judging are [`pizza_traces`]'s (one span reader for the tests, `pizza-load
//! trace` and this report): per order, every span carrying its `pizza.order.id`, from every trace
//! that holds one, judged by [`analyze`] as complete, continuous, linked, with its orphans and
//! fragments. What this module adds is the load tester's patience: spans reach Jaeger late (SDK
//! batch, Collector batch), so orders that are incomplete, or have an orphan or an unresolved link,
//! are read again until they are whole or the patience is spent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pizza_traces::{Jaeger, SpanSearch, expectations};
pub use pizza_traces::{OrderTraces, analyze};
use uuid::Uuid;

use crate::target::Target;

/// Reads and judges the traces of `orders` (order id → terminal status). Spans reach Jaeger late
/// (SDK batch, Collector batch, a Collector restart), so an order that is incomplete or has an
/// orphan or an unresolved link is read again until it is whole or `patience` has passed; what is
/// still missing then is reported as missing. With `sampled`, an
/// order whose `POST /orders` span is not there was not kept by sampling and is not read again.
pub async fn collect(
    target: &Target,
    orders: &[(Uuid, String)],
    patience: Duration,
    sampled: bool,
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
                    let spans = jaeger
                        .find_spans(&SpanSearch::order(id))
                        .await
                        .map(|found| found.spans)
                        .unwrap_or_default();
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
            // A span whose parent or link target is not there yet is as late as a missing
            // expected span: an order that is complete by name but has an orphan or an unresolved
            // link is read again too (a Collector restart can hold the parent back).
            let whole = verdict.complete && verdict.orphans == 0 && verdict.unlinked == 0;
            if !whole && (verdict.has_root || !sampled) {
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
