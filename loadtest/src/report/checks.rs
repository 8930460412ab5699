//! The scenario's expectations, checked against what the run found.

use serde::{Deserialize, Serialize};

use super::stats::TraceSummary;
use crate::scenario::{Fragmentation, Scenario};
use crate::verify::OrdersVerdict;

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

/// The checks that need the whole report: the cancelled share, incomplete orders no killed process
/// explains, and spans dropped on the way to Jaeger.
pub fn report_checks(report: &super::Report) -> Vec<Check> {
    let e = &report.scenario.expect;
    let mut out = Vec::new();
    if let Some(max) = e.max_cancelled_share {
        let c = &report.cancelled;
        out.push(Check {
            what: "cancelled orders".into(),
            expected: format!("≤ {:.1}%", max * 100.0),
            found: format!("{} ({:.1}%)", c.orders, c.share * 100.0),
            ok: c.share <= max + 1e-9,
        });
    }
    if let Some(max) = e.max_unexplained_incomplete {
        let found = report.traces.as_ref().map(|_| report.killed.unexplained as u64);
        out.push(Check {
            what: "incomplete orders no killed process explains".into(),
            expected: format!("≤ {max}"),
            found: found.map_or("not measured".into(), |n| n.to_string()),
            ok: found.is_some_and(|n| n <= max),
        });
    }
    if let Some(max) = e.max_spans_dropped {
        let measured = !report.span_stats.is_empty() || report.collector.is_some();
        let dropped = report.spans_dropped();
        out.push(Check {
            what: "spans dropped (SDKs and Collector)".into(),
            expected: format!("≤ {max}"),
            found: if measured {
                dropped.to_string()
            } else {
                "not measured".into()
            },
            ok: measured && dropped <= max,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::report::tests::sample;

    #[test]
    fn unmet_expectations_are_reported_as_not_met() {
        let (r, _) = sample();
        let by: BTreeMap<&str, bool> = r.checks.iter().map(|c| (c.what.as_str(), c.ok)).collect();
        assert!(by["lost orders"]);
        assert!(!by["trace completeness"], "75% is below 100%");
        assert!(by["fragmented orders"]);
    }
}
