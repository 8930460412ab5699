//! The report of a run: `report.json` (everything, for machines), `report.md` (for people and the
//! README), `report.svg` (throughput, latency percentiles and trace completeness over time, with the
//! fault windows shaded) and `orders.json` (each order's end state and trace verdict).
//!
//! The chart is written by hand: three panels of lines and bars are a few dozen SVG elements, and a
//! plotting library would bring font discovery (fontconfig, TrueType files) into a tool that must
//! run on a bare CI machine. Text is left to the viewer's sans-serif font.
//!
//! # Layout
//! - [`stats`]: the figures: percentiles, arrival and trace summaries, the per-second timeline.
//! - [`mod@checks`]: the scenario's expectations against the findings.
//! - `markdown` and `svg` (private): the two renderings of a [`Report`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::driver::{Arrivals, OrderState};
use crate::faults::FaultEvent;
use crate::scenario::Scenario;
use crate::traces::OrderTraces;
use crate::verify::OrdersVerdict;

pub mod checks;
mod markdown;
pub mod stats;
mod svg;

pub use checks::{Check, checks};
pub use pizza_testkit::collector::CollectorSpans;
pub use stats::{
    ArrivalSummary, Bucket, Cancelled, KilledLoss, Percentiles, Stage, TraceSummary, end_to_end, histogram,
    killed_loss, percentiles, stages, summarize, terminal_times, timeline,
};

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
    /// Where the completed orders' end-to-end time went, stage by stage (see [`stages`]).
    #[serde(default)]
    pub stages_ms: Vec<Stage>,
    /// Seconds spent waiting for terminal states.
    pub settle_s: f64,
    /// `GET /orders/{id}` the order service answered while the tester waited (one commit each).
    #[serde(default)]
    pub settle_looks: u64,
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
    /// Cancelled orders, and why.
    #[serde(default)]
    pub cancelled: Cancelled,
    /// Orders whose missing spans a killed process explains, and those it does not.
    #[serde(default)]
    pub killed: KilledLoss,
    /// The Collector's own span counters, where the run had a Collector of its own.
    #[serde(default)]
    pub collector: Option<CollectorSpans>,
    /// The services' head-sampling ratio when they sample; trace figures are then over the orders
    /// sampling kept (those whose `POST /orders` span is in Jaeger).
    #[serde(default)]
    pub sampled: Option<f64>,
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

    /// Spans dropped by the services' SDKs (queue full, export failed) and by the Collector.
    pub fn spans_dropped(&self) -> u64 {
        let sdk: u64 = self
            .span_stats
            .values()
            .map(|v| v["queue_full"].as_u64().unwrap_or(0) + v["export_failed"].as_u64().unwrap_or(0))
            .sum();
        sdk + self.collector.map_or(0, |c| c.dropped)
    }

    /// Checks the scenario's expectations again, with everything the report now holds (span
    /// statistics and the Collector's counters arrive after the run).
    pub fn recheck(&mut self) {
        self.checks = checks::checks(&self.scenario, &self.orders, self.traces.as_ref());
        let more = checks::report_checks(self);
        self.checks.extend(more);
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
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::driver::{Arrival, Outcome};

    fn arrival(index: u64, due_s: f64, outcome: Outcome, latency_ms: u64) -> Arrival {
        Arrival {
            index,
            due_s,
            sent_s: Some(due_s),
            latency_us: Some(latency_ms * 1000),
            outcome,
        }
    }

    pub(crate) fn sample() -> (Report, Vec<Arrival>) {
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
            stages_ms: Vec::new(),
            settle_s: 1.0,
            settle_looks: 0,
            orders,
            traces: Some(traces),
            faults: vec![],
            timeline: timeline(&arrivals, &complete, &[(ids[0], 4.2)].into()),
            span_stats: BTreeMap::new(),
            pass: true,
            cancelled: Cancelled::default(),
            killed: KilledLoss::default(),
            collector: None,
            sampled: None,
        };
        (report, arrivals)
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
