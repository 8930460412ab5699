//! The SVG chart of a [`Report`]: three panels sharing the time axis (orders per second, latency,
//! trace completeness), fault windows shaded. Written by hand; see the module docs of
//! [`crate::report`] for why.

use std::fmt::Write as _;

use super::{Bucket, Report};

impl Report {
    /// A per-second series that exists only while arrivals were due (after that, "0 accepted"
    /// would be drawn as if the shop had stopped taking orders).
    fn during_arrivals(&self, value: impl Fn(&Bucket) -> u64) -> Vec<Option<f64>> {
        let arrivals_end = self.scenario.duration.as_secs_f64();
        self.timeline
            .iter()
            .map(|b| ((b.t_s as f64) < arrivals_end).then(|| value(b) as f64))
            .collect()
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
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn scales_end_on_nice_numbers() {
        assert_eq!(nice(4.0), 5.0);
        assert_eq!(nice(101.0), 200.0);
        assert_eq!(nice(1.0), 1.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(2000.0), 2000.0);
    }

    #[test]
    fn svg_shows_the_figures_and_shades_the_fault_window() {
        let (r, _) = sample();
        let svg = r.svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One shaded window per panel, labelled with the fault.
        assert_eq!(svg.matches("fill-opacity=\"0.18\"").count(), 3);
        assert!(svg.contains("<title>stop kafka</title>"));
        assert_eq!(svg.matches("<path").count(), 6);
    }
}
