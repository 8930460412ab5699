//! What happened to each order's traces: read from Jaeger, judged against the expected span set.
//!
//! The reading and the judging are [`pizza_traces`]'s (one span reader for the tests, `pizza-load
//! trace` and this report): per order, every span carrying its `pizza.order.id`, from every trace
//! that holds one, judged by [`analyze`] as complete, continuous, linked, with its orphans and
//! fragments. What this module adds is the load tester's patience: spans reach Jaeger late (SDK
//! batch, Collector batch), so incomplete orders are read again until they are complete or the
//! patience is spent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pizza_traces::{Jaeger, SpanSearch, expectations};
pub use pizza_traces::{OrderTraces, analyze};
use uuid::Uuid;

use crate::target::Target;

/// Reads and judges the traces of `orders` (order id → terminal status). Spans reach Jaeger late
/// (SDK batch, Collector batch), so incomplete orders are read again until they are complete or
/// `patience` has passed; what is still missing then is reported as missing. With `sampled`, an
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
            if !verdict.complete && (verdict.has_root || !sampled) {
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
