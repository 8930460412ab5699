//! The report of a run: `report.json` (everything, for machines), `report.md` (for people and the
//! README), `report.svg` (throughput, latency percentiles and trace completeness over time, with the
//! fault windows shaded) and `orders.json` (each order's end state and trace verdict).
//!
//! The chart is written by hand: three panels of lines and bars are a few dozen SVG elements, and a
//! plotting library would bring font discovery (fontconfig, TrueType files) into a tool that must
//! run on a bare CI machine. Text is left to the viewer's sans-serif font.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::driver::{Arrival, Arrivals, OrderState, Outcome};
use crate::faults::FaultEvent;
use crate::scenario::{Fragmentation, Scenario};
use crate::traces::OrderTraces;
use crate::verify::OrdersVerdict;

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

/// One expectation of the scenario, checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What.
    pub what: String,
    /// The scenario's expectation.
    pub expected: String,
    /// What the run found.
    pub found: String,
    /// Met.
    pub ok: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The scenario as run (rate and duration as overridden).
    pub scenario: Scenario,
    /// `native`, `compose` or `managed`.
    pub platform: String,
    /// The services' trace topology, as far as the tester knows it.
    pub topology: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// `OTEL_SDK_DISABLED` for the services (managed platform).
    pub sdk_disabled: bool,
    /// Arrivals.
    pub arrivals: ArrivalSummary,
    /// `POST /orders` latency from the due time, ms.
    pub latency_ms: Percentiles,
    /// From acceptance to the terminal state, by the order service's clock, ms.
    pub end_to_end_ms: Percentiles,
    /// Seconds spent waiting for terminal states.
    pub settle_s: f64,
    /// Orders.
    pub orders: OrdersVerdict,
    /// Traces (absent with `--no-traces` or a disabled SDK).
    pub traces: Option<TraceSummary>,
    /// What the fault driver did.
    pub faults: Vec<FaultEvent>,
    /// Second by second.
    pub timeline: Vec<Bucket>,
    /// The scenario's expectations, checked.
    pub checks: Vec<Check>,
    /// Span statistics of the services (managed platform): ended, exported, dropped.
    pub span_stats: BTreeMap<String, serde_json::Value>,
    /// No order lost and no side effect twice.
    pub pass: bool,
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

/// Checks the scenario's expectations against the findings.
pub fn checks(scenario: &Scenario, orders: &OrdersVerdict, traces: Option<&TraceSummary>) -> Vec<Check> {
    let e = &scenario.expect;
    let mut out = vec![
        Check {
            what: "lost orders".into(),
            expected: format!("≤ {}", e.lost),
            found: orders.lost.len().to_string(),
            ok: orders.lost.len() as u64 <= e.lost,
        },
        Check {
            what: "duplicated side effects".into(),
            expected: format!("≤ {}", e.duplicated_side_effects),
            found: orders.duplicated_side_effects.to_string(),
            ok: orders.duplicated_side_effects <= e.duplicated_side_effects,
        },
    ];
    if let Some(min) = e.min_trace_completeness {
        let found = traces.map(|t| t.completeness);
        out.push(Check {
            what: "trace completeness".into(),
            expected: format!("≥ {:.1}%", min * 100.0),
            found: found.map_or("not measured".into(), |c| format!("{:.1}%", c * 100.0)),
            ok: found.is_some_and(|c| c + 1e-9 >= min),
        });
    }
    match e.fragmentation {
        Fragmentation::Any => {}
        expected => {
            let fragmented = traces.map(|t| t.fragmented);
            let ok = match (expected, fragmented) {
                (Fragmentation::None, Some(n)) => n == 0,
                (Fragmentation::Detected, Some(n)) => n > 0,
                _ => false,
            };
            out.push(Check {
                what: "fragmented orders".into(),
                expected: if expected == Fragmentation::None {
                    "none".into()
                } else {
                    "detected (> 0)".into()
                },
                found: fragmented.map_or("not measured".into(), |n| n.to_string()),
                ok,
            });
        }
    }
    out
}

impl Report {
    /// Writes `report.json`, `report.md`, `report.svg` and `orders.json` into `dir`.
    pub fn write(
        &self,
        dir: &Path,
        states: &[OrderState],
        traces: &[OrderTraces],
        arrivals: &Arrivals,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown("report.svg"))?;
        std::fs::write(dir.join("report.svg"), self.svg())?;
        let by_id: BTreeMap<Uuid, &OrderTraces> = traces.iter().map(|t| (t.order_id, t)).collect();
        let orders: Vec<serde_json::Value> = states
            .iter()
            .map(|s| serde_json::json!({"state": s, "traces": by_id.get(&s.order_id)}))
            .collect();
        std::fs::write(
            dir.join("orders.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "orders": orders,
                "arrivals": arrivals,
            }))?,
        )?;
        Ok(())
    }

    /// The Markdown report; `chart` is the chart's file name beside it.
    pub fn markdown(&self, chart: &str) -> String {
        let mut md = String::new();
        let s = &self.scenario;
        let a = &self.arrivals;
        let _ = writeln!(md, "# Load report: {}\n", s.name);
        let _ = writeln!(md, "{}\n", s.description);
        let _ = writeln!(
            md,
            "Started {} on the **{}** platform ({} topology{}), {:.1} orders/s for {} s, open loop.\n",
            self.started_at,
            self.platform,
            self.topology,
            if self.sdk_disabled {
                ", OTEL_SDK_DISABLED=true"
            } else {
                ""
            },
            s.rate,
            s.duration.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "**Result: {}** — lost orders {}, duplicated side effects {}.\n",
            if self.pass { "PASS" } else { "FAIL" },
            self.orders.lost.len(),
            self.orders.duplicated_side_effects
        );
        let _ = writeln!(md, "![throughput, latency and trace completeness]({chart})\n");
        let _ = writeln!(md, "## Arrivals\n");
        let _ = writeln!(
            md,
            "| scheduled | accepted | refused | failed | overflow | late starts | accepted/s |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} |\n",
            a.scheduled, a.accepted, a.refused, a.failed, a.overflow, a.late_starts, a.accepted_per_s
        );
        if !a.errors.is_empty() {
            let _ = writeln!(md, "Errors seen by the client:\n");
            for (e, n) in &a.errors {
                let _ = writeln!(md, "- {n} × `{e}`");
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Latency (ms)\n");
        let _ = writeln!(md, "| | n | p50 | p90 | p99 | p99.9 | max |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (label, p) in [
            ("`POST /orders` (from due time)", &self.latency_ms),
            ("accepted → terminal", &self.end_to_end_ms),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        let o = &self.orders;
        let _ = writeln!(md, "\n## Orders\n");
        let statuses: Vec<String> = o.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            md,
            "{} accepted; final states: {}. Waited {:.1} s for terminal states.\n",
            o.accepted,
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            },
            self.settle_s
        );
        let _ = writeln!(md, "| check | orders with more than one | error |");
        let _ = writeln!(md, "|---|---|---|");
        for c in &o.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                c.check,
                c.duplicates.len(),
                c.error.as_deref().unwrap_or("")
            );
        }
        if !o.completed_without_effects.is_empty() {
            let _ = writeln!(
                md,
                "\nCompleted orders without a ticket or a delivery: {}",
                o.completed_without_effects.len()
            );
        }
        let _ = writeln!(md, "\n## Traces\n");
        match &self.traces {
            None => {
                let _ = writeln!(md, "Not read (tracing disabled or `--no-traces`).");
            }
            Some(t) => {
                let _ = writeln!(
                    md,
                    "| orders | complete | continuous | linked | with orphans | fragmented | max fragments | spans |"
                );
                let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
                let _ = writeln!(
                    md,
                    "| {} | {} ({:.1}%) | {} | {} | {} | {} | {} | {} |",
                    t.orders,
                    t.complete,
                    t.completeness * 100.0,
                    t.continuous,
                    t.linked,
                    t.with_orphans,
                    t.fragmented,
                    t.max_fragments,
                    t.spans
                );
                if !t.missing.is_empty() {
                    let _ = writeln!(md, "\nMissing spans (orders missing each):\n");
                    for (span, n) in &t.missing {
                        let _ = writeln!(md, "- `{span}`: {n}");
                    }
                }
            }
        }
        if !self.span_stats.is_empty() {
            let _ = writeln!(md, "\nSpan export of the services (their own counters):\n");
            let _ = writeln!(
                md,
                "| service | ended | exported | dropped (queue full) | dropped (export failed) |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|");
            for (service, v) in &self.span_stats {
                let _ = writeln!(
                    md,
                    "| {service} | {} | {} | {} | {} |",
                    v["ended"], v["exported"], v["queue_full"], v["export_failed"]
                );
            }
        }
        if !self.faults.is_empty() {
            let _ = writeln!(md, "\n## Faults\n");
            for f in &self.faults {
                let _ = writeln!(
                    md,
                    "- {:.1} s (done at {:.1} s): {}{}",
                    f.at_s,
                    f.done_s,
                    f.what,
                    f.error
                        .as_ref()
                        .map(|e| format!(" — FAILED: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(md, "\n## Scenario expectations\n");
            let _ = writeln!(md, "| check | expected | found | |");
            let _ = writeln!(md, "|---|---|---|---|");
            for c in &self.checks {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    c.what,
                    c.expected,
                    c.found,
                    if c.ok { "ok" } else { "NOT MET" }
                );
            }
        }
        md
    }

    /// A per-second series that exists only while arrivals were due (after that, "0 accepted"
    /// would be drawn as if the shop had stopped taking orders).
    fn during_arrivals(&self, value: impl Fn(&Bucket) -> u64) -> Vec<Option<f64>> {
        let arrivals_end = self.scenario.duration.as_secs_f64();
        self.timeline
            .iter()
            .map(|b| ((b.t_s as f64) < arrivals_end).then(|| value(b) as f64))
            .collect()
    }

    /// The fault windows as they really were: from the start of each `apply` to the end of its
    /// `undo` (a broker takes seconds to stop and to start again); the scenario's plan where the
    /// driver recorded nothing.
    pub fn fault_windows(&self) -> Vec<(f64, f64, String)> {
        let end = self
            .scenario
            .duration
            .as_secs_f64()
            .max(self.timeline.len() as f64);
        let mut windows = Vec::new();
        for f in &self.faults {
            if let Some(label) = f.what.strip_prefix("apply ") {
                let undo = format!("undo {label}");
                let stop = self
                    .faults
                    .iter()
                    .find(|u| u.what == undo && u.at_s >= f.at_s)
                    .map_or(
                        if label.starts_with("poison") {
                            f.done_s.max(f.at_s + 1.0)
                        } else {
                            end
                        },
                        |u| u.done_s,
                    );
                windows.push((f.at_s, stop, label.to_owned()));
            }
        }
        if windows.is_empty() && self.faults.is_empty() {
            windows = self.scenario.fault_windows(self.scenario.duration);
        }
        windows
    }

    /// The chart: three panels sharing the time axis, fault windows shaded.
    pub fn svg(&self) -> String {
        let windows_end = self.fault_windows().iter().map(|w| w.1).fold(0.0, f64::max);
        let end = (self
            .timeline
            .len()
            .max(self.scenario.duration.as_secs() as usize)
            .max(1) as f64)
            .max(windows_end.ceil());
        let windows = self.fault_windows();
        let (w, left, right, panel_h, gap, top) = (900.0, 70.0, 20.0, 170.0, 45.0, 40.0);
        let plot_w = w - left - right;
        let x = |t: f64| left + plot_w * (t / end);
        let height = top + 3.0 * (panel_h + gap) + 10.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="20" font-size="15" font-weight="bold">{} — {:.1} orders/s, {} platform</text>"#,
            xml(&self.scenario.name),
            self.scenario.rate,
            xml(&self.platform)
        );
        let panels: [Panel<'_>; 3] = [
            (
                "orders per second (accepted, errors, reaching a terminal state)",
                nice(
                    self.timeline
                        .iter()
                        .map(|b| (b.accepted + b.errors).max(b.terminal) as f64)
                        .fold(1.0, f64::max),
                ),
                vec![
                    ("accepted", "#2b7bb9", self.during_arrivals(|b| b.accepted)),
                    ("errors", "#d62728", self.during_arrivals(|b| b.errors)),
                    (
                        "terminal",
                        "#17becf",
                        self.timeline.iter().map(|b| Some(b.terminal as f64)).collect(),
                    ),
                ],
            ),
            (
                "POST /orders latency, ms (p50, p99)",
                nice(self.timeline.iter().filter_map(|b| b.p99_ms).fold(1.0, f64::max)),
                vec![
                    ("p50", "#2ca02c", self.timeline.iter().map(|b| b.p50_ms).collect()),
                    ("p99", "#ff7f0e", self.timeline.iter().map(|b| b.p99_ms).collect()),
                ],
            ),
            (
                "trace completeness, % of orders accepted in that second",
                100.0,
                vec![(
                    "complete",
                    "#9467bd",
                    self.timeline
                        .iter()
                        .map(|b| b.complete_share.map(|c| c * 100.0))
                        .collect(),
                )],
            ),
        ];
        for (i, (title, max, series)) in panels.iter().enumerate() {
            let y0 = top + i as f64 * (panel_h + gap) + 20.0;
            let y = |v: f64| y0 + panel_h - panel_h * (v / max).clamp(0.0, 1.0);
            for (start, stop, label) in &windows {
                let (x1, x2) = (x(*start), x(stop.min(end)));
                let _ = writeln!(
                    svg,
                    r##"<rect x="{x1:.1}" y="{y0:.1}" width="{:.1}" height="{panel_h}" fill="#f4b400" fill-opacity="0.18"><title>{}</title></rect>"##,
                    (x2 - x1).max(2.0),
                    xml(label)
                );
                if i == 0 {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" fill="#8a6d00">{}</text>"##,
                        x1 + 3.0,
                        y0 + 12.0,
                        xml(label)
                    );
                }
            }
            let _ = writeln!(
                svg,
                r#"<text x="{left}" y="{:.1}" font-weight="bold">{}</text>"#,
                y0 - 6.0,
                xml(title)
            );
            let _ = writeln!(
                svg,
                r##"<rect x="{left}" y="{y0:.1}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>"##
            );
            for frac in [0.0, 0.5, 1.0] {
                let v = max * frac;
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                    left - 6.0,
                    y(v) + 4.0,
                    axis(v)
                );
            }
            for (j, (name, color, values)) in series.iter().enumerate() {
                let mut path = String::new();
                let mut pen_down = false;
                for (t, v) in values.iter().enumerate() {
                    match v {
                        Some(v) => {
                            let _ = write!(
                                path,
                                "{}{:.1},{:.1} ",
                                if pen_down { "L" } else { "M" },
                                x(t as f64 + 0.5),
                                y(*v)
                            );
                            pen_down = true;
                        }
                        None => pen_down = false,
                    }
                }
                let _ = writeln!(
                    svg,
                    r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                    path.trim_end()
                );
                let lx = left + plot_w - 110.0 + 0.0 * j as f64;
                let ly = y0 + 14.0 + 15.0 * j as f64;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                    ly - 4.0,
                    lx + 18.0,
                    ly - 4.0,
                    lx + 24.0,
                    ly
                );
            }
        }
        let axis_y = top + 3.0 * (panel_h + gap) - gap + 35.0;
        let step = if end > 120.0 { 30 } else { 10 };
        for t in (0..=end as u64).step_by(step) {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{axis_y:.1}" text-anchor="middle" fill="#555">{t} s</text>"##,
                x(t as f64)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// One panel of the chart: title, top of the scale, and series (name, colour, value per second).
type Panel<'a> = (&'a str, f64, Vec<(&'a str, &'a str, Vec<Option<f64>>)>);

/// The next "nice" number (1, 2 or 5 times a power of ten) at or above `v`, for the top of a scale.
fn nice(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|n| *n >= v - 1e-9)
        .unwrap_or(10.0 * magnitude)
}

fn axis(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::driver::Outcome;

    fn arrival(index: u64, due_s: f64, outcome: Outcome, latency_ms: u64) -> Arrival {
        Arrival {
            index,
            due_s,
            sent_s: Some(due_s),
            latency_us: Some(latency_ms * 1000),
            outcome,
        }
    }

    fn sample() -> (Report, Vec<Arrival>) {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let accepted = |i: usize| Outcome::Accepted {
            order_id: ids[i],
            trace_id: "t".into(),
        };
        let arrivals = vec![
            arrival(0, 0.0, accepted(0), 10),
            arrival(1, 0.5, accepted(1), 30),
            arrival(2, 1.0, accepted(2), 20),
            arrival(3, 1.5, Outcome::Refused { status: 503 }, 5),
            arrival(4, 2.0, accepted(3), 40),
        ];
        let complete: BTreeMap<Uuid, bool> =
            [(ids[0], true), (ids[1], false), (ids[2], true), (ids[3], true)].into();
        let mut scenario = crate::scenario::Scenario::parse(
            "name: kafka-outage\ndescription: d\nrate: 2\nduration: 3s\nexpect: {min_trace_completeness: 1.0, fragmentation: none}\nfaults:\n - {at: 1s, for: 1s, action: stop, target: kafka}\n",
        )
        .unwrap();
        scenario.duration = Duration::from_secs(3);
        let recorded = Arrivals {
            arrivals: arrivals.clone(),
            late_starts: 1,
            overflow: 0,
            elapsed_s: 2.5,
        };
        let (summary, latency) = summarize(&recorded);
        let orders = OrdersVerdict {
            accepted: 4,
            by_status: [("completed".to_owned(), 4)].into(),
            ..Default::default()
        };
        let traces = TraceSummary {
            orders: 4,
            complete: 3,
            completeness: 0.75,
            ..Default::default()
        };
        let report = Report {
            checks: checks(&scenario, &orders, Some(&traces)),
            scenario,
            platform: "managed".into(),
            topology: "continuous".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            sdk_disabled: false,
            arrivals: summary,
            latency_ms: latency,
            end_to_end_ms: Percentiles::default(),
            settle_s: 1.0,
            orders,
            traces: Some(traces),
            faults: vec![],
            timeline: timeline(&arrivals, &complete, &[(ids[0], 4.2)].into()),
            span_stats: BTreeMap::new(),
            pass: true,
        };
        (report, arrivals)
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

    #[test]
    fn scales_end_on_nice_numbers() {
        assert_eq!(nice(4.0), 5.0);
        assert_eq!(nice(101.0), 200.0);
        assert_eq!(nice(1.0), 1.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(2000.0), 2000.0);
    }

    #[test]
    fn unmet_expectations_are_reported_as_not_met() {
        let (r, _) = sample();
        let by: BTreeMap<&str, bool> = r.checks.iter().map(|c| (c.what.as_str(), c.ok)).collect();
        assert!(by["lost orders"]);
        assert!(!by["trace completeness"], "75% is below 100%");
        assert!(by["fragmented orders"]);
    }

    #[test]
    fn markdown_and_svg_show_the_figures_and_shade_the_fault_window() {
        let (r, _) = sample();
        let md = r.markdown("report.svg");
        assert!(md.contains("# Load report: kafka-outage"));
        assert!(md.contains("| 5 | 4 | 1 | 0 | 0 | 1 | 1.60 |"), "{md}");
        assert!(md.contains("| 4 | 3 (75.0%)"), "{md}");
        assert!(md.contains("NOT MET"));
        let svg = r.svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One shaded window per panel, labelled with the fault.
        assert_eq!(svg.matches("fill-opacity=\"0.18\"").count(), 3);
        assert!(svg.contains("<title>stop kafka</title>"));
        assert_eq!(svg.matches("<path").count(), 6);
    }

    #[test]
    fn recorded_fault_windows_run_from_the_apply_to_the_end_of_the_undo() {
        let (mut r, _) = sample();
        let event = |at_s: f64, done_s: f64, what: &str| FaultEvent {
            at_s,
            done_s,
            what: what.into(),
            error: None,
        };
        r.faults = vec![
            event(1.0, 1.5, "apply stop kafka"),
            event(2.0, 9.0, "undo stop kafka"),
            event(2.5, 2.6, "apply poison kitchen.events"),
            event(0.0, 0.1, "apply fault-plan kitchen"),
        ];
        assert_eq!(
            r.fault_windows(),
            vec![
                (1.0, 9.0, "stop kafka".to_owned()),
                (2.5, 3.5, "poison kitchen.events".to_owned()),
                (0.0, 5.0, "fault-plan kitchen".to_owned()),
            ]
        );
        assert_eq!(r.svg().matches("<title>stop kafka</title>").count(), 3);
    }

    #[test]
    fn the_report_files_are_written() {
        let (r, arrivals) = sample();
        let dir = std::env::temp_dir().join(format!("pizza-load-report-{}", Uuid::new_v4()));
        let recorded = Arrivals {
            arrivals,
            ..Default::default()
        };
        r.write(&dir, &[], &[], &recorded).unwrap();
        for f in ["report.json", "report.md", "report.svg", "orders.json"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(back.arrivals.accepted, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
