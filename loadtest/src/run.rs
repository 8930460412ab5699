//! One run from start to report: arrivals and faults side by side, then the wait for terminal
//! states, then the verification of orders and traces.

use std::time::{Duration, Instant};

use crate::driver::{self, Arrivals, DriveOptions, OrderState};
use crate::faults::{self, Platform};
use crate::progress::Progress;
use crate::report::{self, Report, TraceSummary};
use crate::scenario::Scenario;
use crate::schedule::Schedule;
use crate::target::Target;
use crate::traces::{self, OrderTraces};
use crate::verify;

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Requests in flight at most.
    pub max_in_flight: usize,
    /// Timeout of one `POST /orders`.
    pub request_timeout: Duration,
    /// The longest wait for every accepted order to be terminal.
    pub settle_timeout: Duration,
    /// The longest wait for traces to be complete in Jaeger.
    pub trace_patience: Duration,
    /// Read and judge traces.
    pub read_traces: bool,
    /// Platform name for the report.
    pub platform_name: String,
    /// Topology for the report.
    pub topology: String,
    /// `OTEL_SDK_DISABLED` of the services, for the report.
    pub sdk_disabled: bool,
    /// No progress output.
    pub quiet: bool,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// The report.
    pub report: Report,
    /// Each accepted order's end state.
    pub states: Vec<OrderState>,
    /// Each accepted order's trace verdict.
    pub traces: Vec<OrderTraces>,
    /// The raw arrivals.
    pub arrivals: Arrivals,
}

impl RunResult {
    /// Writes the report files into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.report.write(dir, &self.states, &self.traces, &self.arrivals)
    }
}

/// Runs `scenario` against `target`, with process faults through `platform`.
pub async fn run(
    scenario: &Scenario,
    target: &Target,
    platform: &Platform,
    options: &RunOptions,
) -> RunResult {
    let schedule = Schedule {
        rate: scenario.rate,
        duration: scenario.duration,
    };
    let progress = Progress::new(&scenario.name, schedule.count(), options.quiet);
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    progress.note(&format!(
        "{} arrivals at {}/s for {:?} against {}",
        schedule.count(),
        schedule.rate,
        schedule.duration,
        target.order_url
    ));
    // A little head room, so the first arrival is not late because the tasks were still starting.
    let started = Instant::now() + Duration::from_millis(100);
    let drive = DriveOptions {
        schedule,
        max_in_flight: options.max_in_flight,
        request_timeout: options.request_timeout,
    };
    let (arrivals, fault_events) = tokio::join!(
        driver::drive(target, &drive, started, &progress),
        faults::drive_faults(scenario, platform, target, started, scenario.duration, &progress),
    );
    let accepted: Vec<uuid::Uuid> = arrivals.arrivals.iter().filter_map(|a| a.order_id()).collect();
    progress.note(&format!(
        "arrivals done: {} accepted of {}; waiting up to {:?} for terminal states",
        accepted.len(),
        arrivals.arrivals.len(),
        options.settle_timeout
    ));
    let settle_started = Instant::now();
    let states = driver::settle(target, &accepted, options.settle_timeout, &progress).await;
    let settle_s = settle_started.elapsed().as_secs_f64();
    let orders = match sqlx::PgPool::connect(&target.database_url).await {
        Ok(pool) => {
            let verdict = verify::verify_orders(&pool, &states).await;
            pool.close().await;
            verdict
        }
        Err(e) => {
            progress.note(&format!("cannot reach PostgreSQL for the duplicate checks: {e}"));
            let mut verdict = verify::verify_orders_without_database(&states);
            verdict.checks.push(verify::DuplicateCheck {
                check: "database".into(),
                duplicates: Default::default(),
                error: Some(e.to_string()),
            });
            verdict
        }
    };
    let traces = if options.read_traces && !options.sdk_disabled {
        progress.note("reading traces from Jaeger");
        let list: Vec<(uuid::Uuid, String)> = states.iter().map(|s| (s.order_id, s.status.clone())).collect();
        traces::collect(target, &list, options.trace_patience, &progress).await
    } else {
        Vec::new()
    };
    let mut fault_events = fault_events;
    fault_events.extend(faults::clear_open_plans(scenario, target, started, &progress).await);
    progress.finish();
    let trace_summary = (options.read_traces && !options.sdk_disabled).then(|| TraceSummary::of(&traces));
    let complete: std::collections::BTreeMap<uuid::Uuid, bool> =
        traces.iter().map(|t| (t.order_id, t.complete)).collect();
    let (arrival_summary, latency) = report::summarize(&arrivals);
    let report = Report {
        checks: report::checks(scenario, &orders, trace_summary.as_ref()),
        scenario: scenario.clone(),
        platform: options.platform_name.clone(),
        topology: options.topology.clone(),
        started_at,
        sdk_disabled: options.sdk_disabled,
        arrivals: arrival_summary,
        latency_ms: latency,
        end_to_end_ms: report::end_to_end(&states),
        settle_s,
        pass: orders.lost.is_empty() && orders.duplicated_side_effects == 0,
        orders,
        traces: trace_summary,
        faults: fault_events,
        timeline: report::timeline(
            &arrivals.arrivals,
            &complete,
            &report::terminal_times(&arrivals.arrivals, &states),
        ),
        span_stats: Default::default(),
    };
    RunResult {
        report,
        states,
        traces,
        arrivals,
    }
}
