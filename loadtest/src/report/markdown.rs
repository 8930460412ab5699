//! The Markdown rendering of a [`Report`]: what people read, and what the README quotes.

use std::fmt::Write as _;

use super::Report;

impl Report {
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
        if !self.stages_ms.is_empty() {
            let _ = writeln!(
                md,
                "\nWhere a completed order's time went: the wait before each entry of its timeline, \
                 from the entry before it, by the order service's clock (ms):\n"
            );
            let _ = writeln!(md, "| before | n | p50 | p90 | p99 | max |");
            let _ = writeln!(md, "|---|---|---|---|---|---|");
            for s in &self.stages_ms {
                let p = &s.ms;
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    s.event, p.count, p.p50, p.p90, p.p99, p.max
                );
            }
        }
        let o = &self.orders;
        let _ = writeln!(md, "\n## Orders\n");
        let statuses: Vec<String> = o.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            md,
            "{} accepted; final states: {}. Waited {:.1} s for terminal states ({} looks at an order).\n",
            o.accepted,
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            },
            self.settle_s,
            self.settle_looks
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
        if !self.cancelled.reasons.is_empty() {
            let reasons: Vec<String> = self
                .cancelled
                .reasons
                .iter()
                .map(|(r, n)| format!("{n} × `{r}`"))
                .collect();
            let _ = writeln!(
                md,
                "\nCancelled: {} ({:.1}% of accepted): {}.",
                self.cancelled.orders,
                self.cancelled.share * 100.0,
                reasons.join(", ")
            );
        }
        let _ = writeln!(md, "\n## Traces\n");
        if let Some(ratio) = self.sampled {
            let _ = writeln!(
                md,
                "Head sampling at {:.0}%: the figures are over the orders it kept ({} not kept).\n",
                ratio * 100.0,
                self.traces.as_ref().map_or(0, |t| t.not_kept)
            );
        }
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
        let k = &self.killed;
        if !k.kills.is_empty() || k.unexplained > 0 {
            let kills: Vec<String> = k
                .kills
                .iter()
                .map(|(s, at)| format!("{s} at {at:.1} s"))
                .collect();
            let missing: Vec<String> = k.missing_spans.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let _ = writeln!(
                md,
                "\nLost with a killed process ({}): {} orders in flight at the kill miss spans only their \
                 killed service held (missing spans by service: {}; orphans: {}). Incomplete orders no \
                 kill explains: {}.",
                if kills.is_empty() {
                    "no kill".into()
                } else {
                    kills.join(", ")
                },
                k.orders,
                if missing.is_empty() {
                    "none".into()
                } else {
                    missing.join(", ")
                },
                k.orphans,
                k.unexplained
            );
        }
        if let Some(c) = &self.collector {
            let _ = writeln!(
                md,
                "\nThe Collector's own counters: {} spans accepted, {} sent to Jaeger, {} dropped.",
                c.accepted, c.sent, c.dropped
            );
            if c.accepted > c.sent {
                // Seen in every run where a fault stops the Collector while spans wait in its
                // batch: its counters can only be read before the stop, and the batch it flushes
                // to Jaeger as it shuts down is sent after that read.
                let _ = writeln!(
                    md,
                    "{} accepted spans are not counted as sent: a Collector that a fault stopped is \
                     read just before its stop, so what its shutdown flushed to Jaeger is not in its \
                     count (or they were still queued at the end). Whether they arrived is what the \
                     traces above show.",
                    c.accepted - c.sent
                );
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
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample;

    #[test]
    fn markdown_shows_the_figures_and_the_unmet_expectations() {
        let (r, _) = sample();
        let md = r.markdown("report.svg");
        assert!(md.contains("# Load report: kafka-outage"));
        assert!(md.contains("| 5 | 4 | 1 | 0 | 0 | 1 | 1.60 |"), "{md}");
        assert!(md.contains("| 4 | 3 (75.0%)"), "{md}");
        assert!(md.contains("NOT MET"));
        assert!(
            !md.contains("Where a completed order's time went"),
            "no stages, no table"
        );
    }

    #[test]
    fn markdown_shows_where_a_completed_orders_time_went() {
        let (mut r, _) = sample();
        let ms = crate::report::Percentiles {
            count: 3,
            p50: 200.0,
            p90: 350.0,
            p99: 400.0,
            p999: 400.0,
            max: 400.0,
        };
        r.stages_ms = vec![crate::report::Stage {
            event: "payment-captured".into(),
            ms,
        }];
        let md = r.markdown("report.svg");
        assert!(
            md.contains("| `payment-captured` | 3 | 200.0 | 350.0 | 400.0 | 400.0 |"),
            "{md}"
        );
    }
}
