//! The figures of a run: latency percentiles from HDR histograms, the arrival and trace summaries,
//! and the per-second timeline the chart draws.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::driver::{Arrival, Arrivals, OrderState, Outcome};
use crate::traces::OrderTraces;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// A histogram of microseconds from 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a microsecond histogram, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(0.5),
        p90: ms(0.9),
        p99: ms(0.99),
        p999: ms(0.999),
        max: h.max() as f64 / 1000.0,
    }
}

/// What the arrival phase achieved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArrivalSummary {
    /// Arrivals the schedule had.
    pub scheduled: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Answered with another status.
    pub refused: u64,
    /// No answer.
    pub failed: u64,
    /// Not sent (too many in flight).
    pub overflow: u64,
    /// Sent late by the client.
    pub late_starts: u64,
    /// Accepted orders per second over the arrival phase.
    pub accepted_per_s: f64,
    /// Refusal statuses and failure messages, with how often each happened (at most 10).
    pub errors: BTreeMap<String, u64>,
}

/// The traces of all orders, summed up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceSummary {
    /// Orders whose traces were read.
    pub orders: usize,
    /// Orders with every expected span.
    pub complete: usize,
    /// `complete / orders` (1.0 when there are no orders).
    pub completeness: f64,
    /// Orders whose spans are all in one trace.
    pub continuous: usize,
    /// Orders whose consumer and execution spans all link to spans that exist.
    pub linked: usize,
    /// Orders with at least one orphan span.
    pub with_orphans: usize,
    /// Orphan spans in all.
    pub orphans: usize,
    /// Orders in more than one fragment.
    pub fragmented: usize,
    /// The most fragments of one order.
    pub max_fragments: usize,
    /// Spans read in all.
    pub spans: usize,
    /// Expected spans missing, by span, with how many orders miss it.
    pub missing: BTreeMap<String, usize>,
    /// Orders head sampling did not keep (no `POST /orders` span), left out of every figure above;
    /// 0 when the services sample everything.
    #[serde(default)]
    pub not_kept: usize,
}

impl TraceSummary {
    /// Sums the verdicts.
    pub fn of(verdicts: &[OrderTraces]) -> Self {
        let mut s = TraceSummary {
            orders: verdicts.len(),
            ..Default::default()
        };
        for v in verdicts {
            s.complete += usize::from(v.complete);
            s.continuous += usize::from(v.continuous);
            s.linked += usize::from(v.linked);
            s.with_orphans += usize::from(v.orphans > 0);
            s.orphans += v.orphans;
            s.fragmented += usize::from(v.fragments > 1);
            s.max_fragments = s.max_fragments.max(v.fragments);
            s.spans += v.spans;
            for m in &v.missing {
                *s.missing.entry(m.clone()).or_default() += 1;
            }
        }
        s.completeness = if s.orders == 0 {
            1.0
        } else {
            s.complete as f64 / s.orders as f64
        };
        s
    }
}

impl TraceSummary {
    /// Sums the verdicts of the orders sampling kept (with `sampled`), or of all orders.
    pub fn of_kept(verdicts: &[OrderTraces], sampled: bool) -> Self {
        if !sampled {
            return Self::of(verdicts);
        }
        let kept: Vec<OrderTraces> = verdicts.iter().filter(|v| v.has_root).cloned().collect();
        let mut s = Self::of(&kept);
        s.not_kept = verdicts.len() - kept.len();
        s
    }
}

/// Cancelled orders, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    /// Orders that ended `cancelled`.
    pub orders: usize,
    /// Their share of the accepted orders.
    pub share: f64,
    /// The reasons the order service gave, with how many orders each.
    pub reasons: BTreeMap<String, usize>,
}

impl Cancelled {
    /// Counts the cancelled orders of `states`.
    pub fn of(states: &[OrderState]) -> Self {
        let mut c = Cancelled::default();
        for s in states.iter().filter(|s| s.status == "cancelled") {
            c.orders += 1;
            let reason = s.reason.clone().unwrap_or_else(|| "(none given)".into());
            *c.reasons.entry(reason).or_default() += 1;
        }
        c.share = if states.is_empty() {
            0.0
        } else {
            c.orders as f64 / states.len() as f64
        };
        c
    }
}

/// What killed processes took with them.
///
/// A `kill -9` loses the spans its process had not exported: those that ended in the last
/// `OTEL_BSP_SCHEDULE_DELAY` before the kill and those still open. Those spans are not in Jaeger, so
/// they are identified by where and when they would have been: an order with missing spans (or
/// orphans) counts as *lost with a killed process* when every span it misses belongs to a service
/// that was killed while the order was in flight (sent before the kill, not ended more than the
/// export delay and the workflow's tail, [`WORKFLOW_TAIL_S`], before it); one order may lose spans
/// to several kills. Anything else incomplete is *unexplained*: a real loss the kill does not account for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KilledLoss {
    /// The kills: service and seconds since the start.
    pub kills: Vec<(String, f64)>,
    /// Orders whose missing spans and orphans a kill explains.
    pub orders: usize,
    /// Expected spans those orders miss, by service.
    pub missing_spans: BTreeMap<String, usize>,
    /// Orphan spans in those orders (their parent died with the process).
    pub orphans: usize,
    /// Orders with missing spans or orphans that no kill explains.
    pub unexplained: usize,
}

/// How long an order's workflow may run on after the order's terminal status, in seconds: after
/// `delivered` it sleeps, then asks for feedback (the last execution of its run), and on a busy
/// machine that timer fires late. A kill in that tail takes those spans with it.
pub const WORKFLOW_TAIL_S: f64 = 10.0;

/// Splits the incomplete orders of `verdicts` into those a kill of `faults` explains and the rest;
/// see [`KilledLoss`]. `sent` and `ended` are seconds since the start; `export_delay_s` is the
/// services' `OTEL_BSP_SCHEDULE_DELAY`.
pub fn killed_loss(
    verdicts: &[OrderTraces],
    faults: &[crate::faults::FaultEvent],
    sent: &BTreeMap<Uuid, f64>,
    ended: &BTreeMap<Uuid, f64>,
    export_delay_s: f64,
) -> KilledLoss {
    let kills: Vec<(String, f64)> = faults
        .iter()
        .filter(|f| f.error.is_none())
        .filter_map(|f| Some((f.what.strip_prefix("apply kill ")?.to_owned(), f.at_s)))
        .collect();
    let mut loss = KilledLoss {
        kills: kills.clone(),
        ..Default::default()
    };
    for v in verdicts.iter().filter(|v| !v.complete || v.orphans > 0) {
        let services: Vec<&str> = v.missing.iter().filter_map(|m| m.split(' ').next()).collect();
        let in_flight = |at: f64| {
            sent.get(&v.order_id).is_some_and(|s| *s <= at + 1.0)
                && ended
                    .get(&v.order_id)
                    .is_none_or(|e| *e + WORKFLOW_TAIL_S + export_delay_s >= at)
        };
        // Several kills may each take a part of one order (random kills of order, then kitchen):
        // every service it misses spans of must have been killed while it was in flight. An order
        // with orphans alone was in flight at some kill.
        let explained = if services.is_empty() {
            kills.iter().any(|(_, at)| in_flight(*at))
        } else {
            services
                .iter()
                .all(|s| kills.iter().any(|(killed, at)| killed == s && in_flight(*at)))
        };
        if explained {
            loss.orders += 1;
            loss.orphans += v.orphans;
            for s in services {
                *loss.missing_spans.entry(s.to_owned()).or_default() += 1;
            }
        } else {
            loss.unexplained += 1;
        }
    }
    loss
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the second, since the start of the run.
    pub t_s: u64,
    /// Arrivals due in it.
    pub due: u64,
    /// Of those, accepted.
    pub accepted: u64,
    /// Of those, refused, failed or overflowed.
    pub errors: u64,
    /// Orders that reached their terminal state in this second.
    pub terminal: u64,
    /// Median latency of its answered arrivals, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Share of its accepted orders with complete traces.
    pub complete_share: Option<f64>,
}

/// Groups arrivals by the second they were due in, and terminal states by the second they were
/// reached (`terminal_at`: order id → seconds since the start), so the timeline runs on past the
/// last arrival until the last order ended.
pub fn timeline(
    arrivals: &[Arrival],
    complete: &BTreeMap<Uuid, bool>,
    terminal_at: &BTreeMap<Uuid, f64>,
) -> Vec<Bucket> {
    let last_due = arrivals.iter().map(|a| a.due_s as u64).max();
    let last_end = terminal_at.values().map(|t| t.max(0.0) as u64).max();
    let Some(last) = last_due.max(last_end) else {
        return Vec::new();
    };
    let mut buckets: Vec<(Bucket, Histogram<u64>, u64, u64)> = (0..=last)
        .map(|t| {
            (
                Bucket {
                    t_s: t,
                    ..Default::default()
                },
                histogram(),
                0,
                0,
            )
        })
        .collect();
    for t in terminal_at.values() {
        buckets[t.max(0.0) as usize].0.terminal += 1;
    }
    for a in arrivals {
        let (b, h, checked, whole) = &mut buckets[a.due_s as usize];
        b.due += 1;
        match &a.outcome {
            Outcome::Accepted { order_id, .. } => {
                b.accepted += 1;
                if let Some(c) = complete.get(order_id) {
                    *checked += 1;
                    *whole += u64::from(*c);
                }
            }
            _ => b.errors += 1,
        }
        if let Some(us) = a.latency_us {
            h.saturating_record(us.max(1));
        }
    }
    buckets
        .into_iter()
        .map(|(mut b, h, checked, whole)| {
            if !h.is_empty() {
                b.p50_ms = Some(h.value_at_quantile(0.5) as f64 / 1000.0);
                b.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
            }
            b.complete_share = (checked > 0).then(|| whole as f64 / checked as f64);
            b
        })
        .collect()
}

/// When each accepted order reached its terminal state, in seconds since the start: when it was
/// sent plus its end-to-end time by the service's clock.
pub fn terminal_times(arrivals: &[Arrival], states: &[OrderState]) -> BTreeMap<Uuid, f64> {
    let sent: BTreeMap<Uuid, f64> = arrivals
        .iter()
        .filter_map(|a| Some((a.order_id()?, a.sent_s?)))
        .collect();
    states
        .iter()
        .filter(|s| s.terminal)
        .filter_map(|s| Some((s.order_id, sent.get(&s.order_id)? + s.end_to_end_s?)))
        .collect()
}

/// Builds the summary parts of a report from what the run recorded.
pub fn summarize(arrivals: &Arrivals) -> (ArrivalSummary, Percentiles) {
    let mut s = ArrivalSummary {
        scheduled: arrivals.arrivals.len() as u64,
        late_starts: arrivals.late_starts,
        overflow: arrivals.overflow,
        ..Default::default()
    };
    let mut h = histogram();
    for a in &arrivals.arrivals {
        match &a.outcome {
            Outcome::Accepted { .. } => s.accepted += 1,
            Outcome::Refused { status } => {
                s.refused += 1;
                *s.errors.entry(format!("HTTP {status}")).or_default() += 1;
            }
            Outcome::Failed { error } => {
                s.failed += 1;
                let key: String = error.chars().take(120).collect();
                if s.errors.len() < 10 || s.errors.contains_key(&key) {
                    *s.errors.entry(key).or_default() += 1;
                }
            }
            Outcome::Overflow => {}
        }
        if let Some(us) = a.latency_us {
            h.saturating_record(us.max(1));
        }
    }
    s.accepted_per_s = if arrivals.elapsed_s > 0.0 {
        s.accepted as f64 / arrivals.elapsed_s
    } else {
        0.0
    };
    (s, percentiles(&h))
}

/// One stage of the completed orders' end-to-end time: the wait before one kind of timeline entry
/// (see [`OrderState::stages`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The timeline entry's event (`payment-captured`, `order-ready`, ...).
    pub event: String,
    /// The time from the entry before it, ms (an event an order has more than once, like
    /// `order-on-its-way`, counts each time).
    pub ms: Percentiles,
}

/// Where the completed orders' end-to-end time went, stage by stage, in the order the stages
/// happen (by their mean position in the timelines). Only completed orders: a cancelled one's
/// timeline is another path, and its compensation would blur the stages of the common one.
pub fn stages(states: &[OrderState]) -> Vec<Stage> {
    let mut by_event: BTreeMap<&str, (Histogram<u64>, f64)> = BTreeMap::new();
    for s in states.iter().filter(|s| s.status == "completed") {
        for (position, (event, secs)) in s.stages.iter().enumerate() {
            let (h, positions) = by_event
                .entry(event.as_str())
                .or_insert_with(|| (histogram(), 0.0));
            h.saturating_record(((secs.max(0.0) * 1e6) as u64).max(1));
            *positions += position as f64;
        }
    }
    let mut stages: Vec<(f64, Stage)> = by_event
        .into_iter()
        .map(|(event, (h, positions))| {
            let stage = Stage {
                event: event.to_owned(),
                ms: percentiles(&h),
            };
            (positions / h.len() as f64, stage)
        })
        .collect();
    stages.sort_by(|a, b| a.0.total_cmp(&b.0));
    stages.into_iter().map(|(_, stage)| stage).collect()
}

/// End-to-end latency percentiles of the terminal orders.
pub fn end_to_end(states: &[OrderState]) -> Percentiles {
    let mut h = histogram();
    for s in states {
        if let Some(secs) = s.end_to_end_s
            && secs >= 0.0
        {
            h.saturating_record(((secs * 1e6) as u64).max(1));
        }
    }
    percentiles(&h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    fn verdict(id: Uuid, missing: &[&str], orphans: usize) -> OrderTraces {
        OrderTraces {
            order_id: id,
            spans: 10,
            traces: 1,
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
            complete: missing.is_empty(),
            continuous: true,
            linked: true,
            unlinked: 0,
            orphans,
            fragments: 1,
            has_root: true,
        }
    }

    #[test]
    fn missing_spans_are_put_down_to_a_kill_only_for_orders_in_flight_and_spans_of_the_killed_service() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let verdicts = vec![
            // In flight at the kill of `order` at 20 s, missing only order spans: explained.
            verdict(ids[0], &["order consumer workflow.execute order-fulfillment"], 0),
            // In flight, complete but with an orphan (its parent died with the process): explained.
            verdict(ids[1], &[], 1),
            // In flight, but missing a kitchen span: not the killed service's.
            verdict(ids[2], &["kitchen producer send kitchen.events"], 0),
            // Ended long before the kill: unexplained.
            verdict(ids[3], &["order internal workflow.step capture"], 0),
            // Complete: not counted at all.
            verdict(ids[4], &[], 0),
        ];
        let faults = vec![crate::faults::FaultEvent {
            at_s: 20.0,
            done_s: 20.1,
            what: "apply kill order".into(),
            error: None,
        }];
        let sent: BTreeMap<Uuid, f64> = ids.iter().map(|id| (*id, 18.0)).collect();
        let mut ended: BTreeMap<Uuid, f64> = ids.iter().map(|id| (*id, 30.0)).collect();
        ended.insert(ids[3], 5.0);
        let loss = killed_loss(&verdicts, &faults, &sent, &ended, 0.5);
        assert_eq!(loss.kills, vec![("order".to_owned(), 20.0)]);
        assert_eq!((loss.orders, loss.orphans, loss.unexplained), (2, 1, 2));
        assert_eq!(loss.missing_spans, BTreeMap::from([("order".to_owned(), 1)]));
    }

    #[test]
    fn an_order_may_lose_spans_to_several_kills_but_only_to_kills_while_it_was_in_flight() {
        let ids: Vec<Uuid> = (0..2).map(|_| Uuid::new_v4()).collect();
        let verdicts = vec![
            // In flight at both kills, missing spans of both services: explained.
            verdict(
                ids[0],
                &[
                    "order internal workflow.step mark-paid",
                    "kitchen internal cook.finish",
                ],
                0,
            ),
            // Missing a kitchen span, but its run had ended (with its tail) before the kitchen was
            // killed: unexplained.
            verdict(
                ids[1],
                &[
                    "order internal workflow.step mark-paid",
                    "kitchen internal cook.finish",
                ],
                0,
            ),
        ];
        let kill = |at_s: f64, service: &str| crate::faults::FaultEvent {
            at_s,
            done_s: at_s + 0.1,
            what: format!("apply kill {service}"),
            error: None,
        };
        let faults = vec![kill(20.0, "order"), kill(40.0, "kitchen")];
        let sent: BTreeMap<Uuid, f64> = ids.iter().map(|id| (*id, 18.0)).collect();
        let ended = BTreeMap::from([(ids[0], 45.0), (ids[1], 25.0)]);
        let loss = killed_loss(&verdicts, &faults, &sent, &ended, 0.5);
        assert_eq!((loss.orders, loss.unexplained), (1, 1));
        assert_eq!(
            loss.missing_spans,
            BTreeMap::from([("kitchen".to_owned(), 1), ("order".to_owned(), 1)])
        );
    }

    #[test]
    fn under_sampling_only_kept_orders_count_and_cancellations_have_their_reasons() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut dropped = verdict(ids[2], &["order server POST /orders"], 0);
        dropped.has_root = false;
        let verdicts = vec![verdict(ids[0], &[], 0), verdict(ids[1], &[], 0), dropped];
        let t = TraceSummary::of_kept(&verdicts, true);
        assert_eq!((t.orders, t.complete, t.not_kept), (2, 2, 1));
        assert_eq!(TraceSummary::of_kept(&verdicts, false).complete, 2);
        let state = |status: &str, reason: Option<&str>| OrderState {
            order_id: Uuid::new_v4(),
            status: status.into(),
            terminal: true,
            reason: reason.map(str::to_owned),
            terminal_entries: 1,
            end_to_end_s: Some(1.0),
            stages: Vec::new(),
        };
        let c = Cancelled::of(&[
            state("completed", None),
            state("cancelled", Some("kitchen-timeout")),
            state("cancelled", Some("kitchen-timeout")),
            state("completed", None),
        ]);
        assert_eq!((c.orders, c.share), (2, 0.5));
        assert_eq!(c.reasons["kitchen-timeout"], 2);
    }

    #[test]
    fn stages_are_the_completed_orders_gaps_by_event_in_timeline_order() {
        let order = |status: &str, stages: &[(&str, f64)]| OrderState {
            order_id: Uuid::new_v4(),
            status: status.into(),
            terminal: true,
            reason: None,
            terminal_entries: 1,
            end_to_end_s: Some(1.0),
            stages: stages.iter().map(|(e, s)| ((*e).to_owned(), *s)).collect(),
        };
        let states = [
            order(
                "completed",
                &[
                    ("payment-captured", 0.2),
                    ("order-ready", 1.0),
                    ("order-on-its-way", 0.5),
                    ("order-on-its-way", 0.7),
                ],
            ),
            order(
                "completed",
                &[
                    ("payment-captured", 0.4),
                    ("order-ready", 3.0),
                    ("order-on-its-way", 0.5),
                ],
            ),
            // Cancelled: another path, left out.
            order(
                "cancelled",
                &[("order-cancelled", 60.0), ("payment-captured", 9.0)],
            ),
        ];
        let stages = stages(&states);
        let events: Vec<&str> = stages.iter().map(|s| s.event.as_str()).collect();
        assert_eq!(events, ["payment-captured", "order-ready", "order-on-its-way"]);
        assert_eq!(stages[0].ms.count, 2);
        assert!((stages[0].ms.max - 400.0).abs() < 1.0, "{:?}", stages[0].ms);
        assert!((stages[1].ms.max - 3000.0).abs() < 5.0, "{:?}", stages[1].ms);
        assert_eq!(stages[2].ms.count, 3, "every leg counts");
        assert!(super::stages(&[]).is_empty());
    }

    #[test]
    fn arrivals_are_summed_and_percentiles_come_from_the_histogram() {
        let (r, _) = sample();
        assert_eq!(
            (r.arrivals.accepted, r.arrivals.refused, r.arrivals.late_starts),
            (4, 1, 1)
        );
        assert_eq!(r.arrivals.errors["HTTP 503"], 1);
        assert!((r.arrivals.accepted_per_s - 1.6).abs() < 1e-9);
        assert_eq!(r.latency_ms.count, 5);
        assert!((r.latency_ms.max - 40.0).abs() < 0.1);
        assert!((r.latency_ms.p50 - 20.0).abs() < 0.1);
    }

    #[test]
    fn the_timeline_buckets_arrivals_by_due_second_with_completeness() {
        let (r, _) = sample();
        assert_eq!(r.timeline.len(), 5, "runs on to the last terminal state at 4.2 s");
        assert_eq!(r.timeline[4].terminal, 1);
        assert_eq!(r.timeline[4].due, 0);
        assert_eq!((r.timeline[0].due, r.timeline[0].accepted), (2, 2));
        assert_eq!(r.timeline[0].complete_share, Some(0.5));
        assert_eq!((r.timeline[1].accepted, r.timeline[1].errors), (1, 1));
        assert_eq!(r.timeline[1].complete_share, Some(1.0));
    }
}
