//! What happened to each order's traces: read from Jaeger, judged against the expected span set.
//!
//! The reading and the judging are [`pizza_traces`]'s (one span reader for the tests, `pizza-load
//! trace` and this report): per order, every span carrying its `pizza.order.id`, from every trace
//! that holds one, judged by [`analyze`] as complete, continuous, linked, with its orphans and
//! fragments. What this module adds is the load tester's patience: spans reach Jaeger late (SDK
//! batch, Collector batch), so orders that are incomplete, or have an orphan or an unresolved link,
//! are read again until they are whole or the patience is spent.
//!
//! # What reading costs Jaeger
//! Jaeger answers a trace by id from an index, but a search by attribute (`pizza.order.id` in one
//! service) scans every trace it holds: three searches an order (one per service) make reading a
//! run's traces grow with the square of its size, and a search that outlives the client's timeout
//! keeps running in Jaeger after the client gave up. So an order is read in two steps:
//! 1. its own trace, by the id the `POST /orders` answer carried. When that trace alone makes the
//!    order **whole** (every expected span, no orphan, no unresolved link), it is the verdict: no
//!    search. In the `continuous` topology that is nearly every order.
//! 2. otherwise (the `linked` topology, where an order is several traces by design; spans still on
//!    their way; a trace broken into pieces) the full search across the three services, following
//!    links, which also reads the order's own trace.
//!
//! The price of step 1: when an order's own trace is whole, copies of its spans in *other* traces
//! (a consumer that lost the context, on a redelivery) are not looked for. A lost context shows
//! as a missing span in the order's own trace, which sends the order to step 2.
//!
//! At most [`READERS`] orders are read at once, whatever the run's size, so a busy Jaeger is
//! never asked more than it can answer while the client still waits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use pizza_traces::{Expectations, Jaeger, SpanSearch, expectations};
pub use pizza_traces::{OrderTraces, analyze};
use uuid::Uuid;

use crate::target::Target;

/// At most this many orders are read from Jaeger at once (each order's reads one after another).
pub const READERS: usize = 8;

/// An order whose traces are to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToRead {
    /// The order.
    pub order_id: Uuid,
    /// Its terminal status (which expected span set applies).
    pub status: String,
    /// The trace of its `POST /orders`, from the answer, when there was one.
    pub trace_id: Option<String>,
}

/// Reads and judges the traces of `orders`. Spans reach Jaeger late (SDK batch, Collector batch, a
/// Collector restart), so an order that is incomplete or has an orphan or an unresolved link is
/// read again until it is whole or `patience` has passed; what is still missing then is reported as
/// missing. With `sampled`, an order whose `POST /orders` span is not there was not kept by
/// sampling and is not read again. How an order is read: see the module docs.
pub async fn collect(
    target: &Target,
    orders: &[ToRead],
    patience: Duration,
    sampled: bool,
    progress: &crate::progress::Progress,
) -> Vec<OrderTraces> {
    let jaeger = Jaeger::new(&target.jaeger_url);
    let reader = Reader {
        jaeger: &jaeger,
        expectations: &expectations(),
        normalize: &|name| target.normalize(name),
    };
    reader.collect(orders, patience, sampled, progress).await
}

/// How orders are read and judged: the Jaeger, the expected spans per status, span names mapped to
/// their default-topic spelling.
struct Reader<'a> {
    jaeger: &'a Jaeger,
    expectations: &'a Expectations,
    normalize: &'a (dyn Fn(&str) -> String + Sync),
}

impl Reader<'_> {
    async fn collect(
        &self,
        orders: &[ToRead],
        patience: Duration,
        sampled: bool,
        progress: &crate::progress::Progress,
    ) -> Vec<OrderTraces> {
        let deadline = Instant::now() + patience;
        let mut results: BTreeMap<Uuid, OrderTraces> = BTreeMap::new();
        // Owned, not borrowed: a stream of borrows here makes the future not `Send` (the closure's
        // higher-ranked lifetime), and a caller spawns it.
        let mut pending: Vec<ToRead> = orders.to_vec();
        loop {
            let round: Vec<(ToRead, OrderTraces)> = futures::stream::iter(pending)
                .map(|order| async move {
                    let verdict = self.read(&order).await;
                    (order, verdict)
                })
                .buffer_unordered(READERS)
                .collect()
                .await;
            pending = Vec::new();
            for (order, verdict) in round {
                // A span whose parent or link target is not there yet is as late as a missing
                // expected span: an order that is complete by name but has an orphan or an
                // unresolved link is read again too (a Collector restart can hold the parent back).
                let again = !whole(&verdict) && (verdict.has_root || !sampled);
                results.insert(order.order_id, verdict);
                if again {
                    pending.push(order);
                }
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
        orders
            .iter()
            .filter_map(|o| results.remove(&o.order_id))
            .collect()
    }

    /// One order, read as the module docs say. A request that fails (Jaeger busy or down) reads as
    /// nothing found: the order is read again in the next round.
    async fn read(&self, order: &ToRead) -> OrderTraces {
        let expected = self
            .expectations
            .get(order.status.as_str())
            .cloned()
            .unwrap_or_default();
        let judge = |spans: &[pizza_traces::Span]| analyze(order.order_id, spans, &expected, self.normalize);
        if let Some(trace_id) = &order.trace_id
            && let Ok(Some(trace)) = self.jaeger.trace(trace_id).await
        {
            let verdict = judge(&trace.spans);
            if whole(&verdict) {
                return verdict;
            }
        }
        let search = SpanSearch::order(order.order_id).with_traces(order.trace_id.clone());
        let spans = self
            .jaeger
            .find_spans(&search)
            .await
            .map(|found| found.spans)
            .unwrap_or_default();
        judge(&spans)
    }
}

/// Every expected span there, no span without its parent, every link resolved: nothing to wait for.
fn whole(verdict: &OrderTraces) -> bool {
    verdict.complete && verdict.orphans == 0 && verdict.unlinked == 0
}

#[cfg(test)]
mod tests {
    //! Against a fake Jaeger (the real one is read by the trace-integrity matrix): what this module
    //! asks of it, not what Jaeger answers.

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde_json::{Value, json};

    use super::*;

    /// Spans of one order: `(service, trace id, span id, parent span id, kind, name, link)`; kinds
    /// as OTLP numbers, ids as hex.
    type FakeSpan = (
        &'static str,
        String,
        String,
        Option<String>,
        u8,
        &'static str,
        Option<(String, String)>,
    );

    #[derive(Default)]
    struct Fake {
        traces: BTreeMap<String, Vec<FakeSpan>>,
        /// `(service, order id)` → trace ids a search answers.
        found: BTreeMap<(String, String), Vec<String>>,
        trace_reads: AtomicUsize,
        searches: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl Fake {
        async fn busy<T>(&self, answer: impl FnOnce() -> T) -> T {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
            let answer = answer();
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        }
    }

    fn otlp(spans: &[FakeSpan]) -> Value {
        let resource_spans: Vec<Value> = spans
            .iter()
            .map(|(service, trace, span, parent, kind, name, link)| {
                json!({
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                    "scopeSpans": [{"spans": [{
                        "traceId": trace, "spanId": span, "parentSpanId": parent.clone().unwrap_or_default(),
                        "name": name, "kind": kind,
                        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
                        "links": link.iter().map(|(t, s)| json!({"traceId": t, "spanId": s})).collect::<Vec<_>>(),
                    }]}],
                })
            })
            .collect();
        json!({"result": {"resourceSpans": resource_spans}})
    }

    async fn trace(State(fake): State<Arc<Fake>>, Path(id): Path<String>) -> (StatusCode, String) {
        fake.trace_reads.fetch_add(1, Ordering::SeqCst);
        fake.busy(|| match fake.traces.get(&id) {
            Some(spans) => (StatusCode::OK, otlp(spans).to_string()),
            None => (StatusCode::NOT_FOUND, String::new()),
        })
        .await
    }

    async fn search(State(fake): State<Arc<Fake>>, Query(query): Query<BTreeMap<String, String>>) -> String {
        fake.searches.fetch_add(1, Ordering::SeqCst);
        let tags: BTreeMap<String, String> = serde_json::from_str(&query["tags"]).unwrap();
        let order = tags[pizza_telemetry::attributes::pizza::ORDER_ID].clone();
        fake.busy(|| {
            let ids = fake
                .found
                .get(&(query["service"].clone(), order))
                .cloned()
                .unwrap_or_default();
            json!({"data": ids.iter().map(|id| json!({"traceID": id})).collect::<Vec<_>>()}).to_string()
        })
        .await
    }

    /// Serves `fake` on a free port of 127.0.0.1; its base URL.
    async fn serve(fake: Arc<Fake>) -> String {
        let app = Router::new()
            .route("/api/v3/traces/{id}", get(trace))
            .route("/api/traces", get(search))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    /// `continuous` orders are one trace: `POST /orders`, its `send kitchen.requests` and the
    /// kitchen's `process kitchen.requests` linked to it; the others (`linked`) have the consumer in
    /// a trace of its own, which only a search finds.
    fn shop(continuous: usize, linked: usize) -> (Fake, Vec<ToRead>) {
        let mut fake = Fake::default();
        let mut orders = Vec::new();
        for i in 0..continuous + linked {
            let order_id = Uuid::from_u128(i as u128 + 1);
            let root = format!("{:032x}", 2 * i + 1);
            let (server, producer, consumer) = (
                format!("{:016x}", 3 * i + 1),
                format!("{:016x}", 3 * i + 2),
                format!("{:016x}", 3 * i + 3),
            );
            let mut spans: Vec<FakeSpan> = vec![
                (
                    "order",
                    root.clone(),
                    server.clone(),
                    None,
                    2,
                    "POST /orders",
                    None,
                ),
                (
                    "order",
                    root.clone(),
                    producer.clone(),
                    Some(server),
                    4,
                    "send kitchen.requests",
                    None,
                ),
            ];
            let link = Some((root.clone(), producer.clone()));
            if i < continuous {
                spans.push((
                    "kitchen",
                    root.clone(),
                    consumer,
                    Some(producer),
                    5,
                    "process kitchen.requests",
                    link,
                ));
            } else {
                let other = format!("{:032x}", 2 * i + 2);
                let consumer_spans = vec![(
                    "kitchen",
                    other.clone(),
                    consumer,
                    None,
                    5,
                    "process kitchen.requests",
                    link,
                )];
                fake.traces.insert(other.clone(), consumer_spans);
                fake.found
                    .insert(("kitchen".into(), order_id.to_string()), vec![other]);
            }
            fake.found
                .insert(("order".into(), order_id.to_string()), vec![root.clone()]);
            fake.traces.insert(root.clone(), spans);
            orders.push(ToRead {
                order_id,
                status: "completed".into(),
                trace_id: Some(root),
            });
        }
        (fake, orders)
    }

    #[tokio::test]
    async fn an_order_whose_own_trace_is_whole_costs_jaeger_one_read_and_no_search() {
        let (fake, orders) = shop(90, 10);
        let fake = Arc::new(fake);
        let base = serve(fake.clone()).await;
        let expected: Expectations = serde_yaml_ng::from_str(
            "completed:\n\
             - {service: order, kind: server, name: POST /orders}\n\
             - {service: order, kind: producer, name: send kitchen.requests}\n\
             - {service: kitchen, kind: consumer, name: process kitchen.requests}\n",
        )
        .unwrap();
        let reader = Reader {
            jaeger: &Jaeger::new(base),
            expectations: &expected,
            normalize: &|name| name.to_owned(),
        };
        let progress = crate::progress::Progress::new("test", 0, true);
        let verdicts = reader
            .collect(&orders, Duration::from_secs(5), false, &progress)
            .await;

        assert_eq!(verdicts.len(), 100);
        assert!(verdicts.iter().all(whole), "every order whole: {verdicts:?}");
        assert_eq!(verdicts.iter().filter(|v| v.continuous).count(), 90);
        assert!(verdicts[90..].iter().all(|v| v.traces == 2 && v.linked));
        // Only the ten linked orders were searched, once per shop service each; each read its own
        // trace first, then (searching) its own trace and its consumer's again.
        assert_eq!(
            fake.searches.load(Ordering::SeqCst),
            10 * pizza_traces::SHOP_SERVICES.len()
        );
        assert_eq!(fake.trace_reads.load(Ordering::SeqCst), 100 + 10 * 2);
        let most = fake.most_in_flight.load(Ordering::SeqCst);
        assert!(most <= READERS, "{most} requests at once, more than {READERS}");
    }

    #[tokio::test]
    async fn an_order_without_a_known_trace_id_is_searched() {
        let (fake, mut orders) = shop(1, 0);
        orders[0].trace_id = None;
        let fake = Arc::new(fake);
        let base = serve(fake.clone()).await;
        let reader = Reader {
            jaeger: &Jaeger::new(base),
            expectations: &expectations(),
            normalize: &|name| name.to_owned(),
        };
        let progress = crate::progress::Progress::new("test", 0, true);
        let verdicts = reader.collect(&orders, Duration::ZERO, false, &progress).await;
        assert_eq!(verdicts[0].spans, 3);
        assert_eq!(
            fake.searches.load(Ordering::SeqCst),
            pizza_traces::SHOP_SERVICES.len()
        );
    }
}
