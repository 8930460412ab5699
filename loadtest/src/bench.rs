//! `pizza-load bench`: three figures, printed, never asserted.
//!
//! 1. **Highest sustained rate** with every span sampled: a ladder of rates, each for `step`
//!    seconds on a fresh shop of the tester's own; a rate is sustained when every arrival was
//!    accepted without overflow, `POST /orders` p99 (from the due time, so a client that fell behind
//!    counts against it; late starts alone are the tester's machine, not the shop) stayed under 1 s, the
//!    end-to-end p99 under 10 s, and every order reached a terminal state within 60 s of the last
//!    arrival. The ladder stops at the first rate that is not.
//! 2. **Tracing overhead**: the same ladder with `OTEL_SDK_DISABLED=true`, in this one invocation;
//!    the ratio of the highest sustained rates, and of the p99 latencies at the traced ladder's
//!    highest rate (traced / disabled). An open-loop run at a rate both sustain completes orders at
//!    that rate either way, so throughput is compared where it runs out.
//! 3. **Spans dropped** at the sustained rate: the services' own span counters (queue full, export
//!    failed) from the traced run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::faults::Platform;
use crate::managed::{ManagedOptions, ManagedStack};
use crate::report::Report;
use crate::run::{RunOptions, RunResult};
use crate::scenario::Scenario;

/// One measured run of the bench.
async fn measure(
    exe: &Path,
    rate: f64,
    step: Duration,
    sdk_disabled: bool,
    dir: &Path,
) -> anyhow::Result<RunResult> {
    let mut scenario = Scenario::parse(include_str!("../scenarios/baseline.yaml"))?;
    scenario.rate = rate;
    scenario.duration = step;
    scenario.name = format!("bench-{rate}{}", if sdk_disabled { "-untraced" } else { "" });
    let mut options = ManagedOptions::new(exe.to_path_buf());
    options.sdk_disabled = sdk_disabled;
    let stack = Arc::new(ManagedStack::start(options).await?);
    let target = stack.target();
    let platform = Platform::Managed(stack.clone());
    let run_options = RunOptions {
        max_in_flight: 512,
        request_timeout: Duration::from_secs(10),
        settle_timeout: Duration::from_secs(60),
        trace_patience: Duration::from_secs(30),
        // Reading every trace back is the verification's job, not the benchmark's.
        read_traces: false,
        platform_name: "managed".into(),
        topology: "continuous".into(),
        sdk_disabled,
        quiet: false,
    };
    let mut result = crate::run(&scenario, &target, &platform, &run_options).await;
    drop(platform);
    let stack = Arc::try_unwrap(stack).map_err(|_| anyhow::anyhow!("the managed shop is still in use"))?;
    result.report.span_stats = stack.shutdown().await?;
    result.write(&dir.join(&scenario.name))?;
    Ok(result)
}

/// Whether a run kept up with its rate (see the module docs).
pub fn sustained(r: &Report) -> bool {
    let a = &r.arrivals;
    a.accepted == a.scheduled
        && a.overflow == 0
        && r.latency_ms.p99 < 1000.0
        && r.end_to_end_ms.p99 < 10_000.0
        && r.orders.lost.is_empty()
}

fn dropped(r: &Report) -> (u64, u64) {
    let get = |k: &str| {
        r.span_stats
            .values()
            .map(|v| v[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    (get("ended"), get("queue_full") + get("export_failed"))
}

/// Climbs the ladder of rates until one is not sustained; adds a table row per rate to `text` and
/// returns every run by rate, and the highest sustained rate.
async fn ladder(
    exe: &Path,
    rates: &[f64],
    step: Duration,
    sdk_disabled: bool,
    dir: &Path,
    text: &mut String,
) -> anyhow::Result<(Vec<(f64, RunResult)>, Option<f64>)> {
    let mode = if sdk_disabled { "SDK disabled" } else { "traced" };
    let mut runs = Vec::new();
    let mut best = None;
    for &rate in rates {
        let r = measure(exe, rate, step, sdk_disabled, dir).await?;
        let ok = sustained(&r.report);
        let rep = &r.report;
        let _ = writeln!(
            text,
            "| {mode} | {rate} | {:.1} | {} | {:.0} | {:.0} | {} | {} |",
            rep.arrivals.accepted_per_s,
            rep.arrivals.late_starts,
            rep.latency_ms.p99,
            rep.end_to_end_ms.p99,
            rep.orders.lost.len(),
            if ok { "yes" } else { "no" }
        );
        runs.push((rate, r));
        if !ok {
            break;
        }
        best = Some(rate);
    }
    Ok((runs, best))
}

/// Runs the three benchmarks and returns the printed summary.
pub async fn run(exe: PathBuf, rates: &[f64], step: Duration, dir: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "## Load benchmarks ({} s per step; traced = every span sampled and exported)\n",
        step.as_secs()
    );
    let _ = writeln!(
        text,
        "| mode | rate/s | accepted/s | late starts | POST p99 ms | end-to-end p99 ms | lost | sustained |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|---|---|---|");
    let (traced_runs, traced_best) = ladder(&exe, rates, step, false, dir, &mut text).await?;
    let (untraced_runs, untraced_best) = ladder(&exe, rates, step, true, dir, &mut text).await?;
    let _ = writeln!(
        text,
        "\nHighest sustained rate: traced **{}**, SDK disabled **{}** orders/s.\n",
        traced_best.map_or("none".into(), |r| r.to_string()),
        untraced_best.map_or("none".into(), |r| r.to_string())
    );
    let Some(rate) = traced_best else {
        return Ok(text);
    };
    let at = |runs: &[(f64, RunResult)]| {
        runs.iter()
            .find(|(r, _)| *r == rate)
            .map(|(_, x)| x.report.clone())
    };
    let (Some(t), Some(u)) = (at(&traced_runs), at(&untraced_runs)) else {
        return Ok(text);
    };
    let _ = writeln!(text, "Tracing overhead (traced / OTEL_SDK_DISABLED=true):\n");
    let _ = writeln!(text, "| | SDK disabled | traced | traced / disabled |");
    let _ = writeln!(text, "|---|---|---|---|");
    let mut rows = vec![
        (
            format!("POST /orders p99 ms at {rate}/s"),
            u.latency_ms.p99,
            t.latency_ms.p99,
        ),
        (
            format!("end-to-end p99 ms at {rate}/s"),
            u.end_to_end_ms.p99,
            t.end_to_end_ms.p99,
        ),
    ];
    if let Some(ub) = untraced_best {
        rows.insert(0, ("highest sustained orders/s".into(), ub, rate));
    }
    for (label, off, on) in rows {
        let ratio = if off > 0.0 { on / off } else { f64::NAN };
        let _ = writeln!(text, "| {label} | {off:.1} | {on:.1} | {ratio:.2} |");
    }
    let (ended, lost) = dropped(&t);
    let _ = writeln!(
        text,
        "\nSpans at {rate} orders/s: {ended} ended in the services, {lost} dropped (queue full or export failed)."
    );
    Ok(text)
}
