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
    /// The services' head-sampling ratio when they sample (trace figures are then over kept orders).
    pub sampled: Option<f64>,
    /// The services' `OTEL_BSP_SCHEDULE_DELAY`, seconds: how long before a kill a span may have
    /// ended and still have died with the process.
    pub export_delay_s: f64,
}

impl RunOptions {
    /// The defaults of a run against a shop: 256 in flight, 10 s per request, up to 180 s for
    /// terminal states (a restarted consumer may wait out a 45 s session first) and 60 s for
    /// traces, every span sampled, exported every 500 ms.
    pub fn new(platform_name: &str, topology: &str) -> Self {
        Self {
            max_in_flight: 256,
            request_timeout: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(180),
            trace_patience: Duration::from_secs(60),
            read_traces: true,
            platform_name: platform_name.to_owned(),
            topology: topology.to_owned(),
            sdk_disabled: false,
            quiet: false,
            sampled: None,
            export_delay_s: 0.5,
        }
    }
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
    let driver::Settled { states, looks } =
        driver::settle(target, &accepted, options.settle_timeout, &progress).await;
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
        let roots: std::collections::BTreeMap<uuid::Uuid, &str> = arrivals
            .arrivals
            .iter()
            .filter_map(driver::Arrival::accepted)
            .filter(|(_, trace_id)| !trace_id.is_empty())
            .collect();
        let list: Vec<traces::ToRead> = states
            .iter()
            .map(|s| traces::ToRead {
                order_id: s.order_id,
                status: s.status.clone(),
                trace_id: roots.get(&s.order_id).map(|t| (*t).to_owned()),
            })
            .collect();
        traces::collect(
            target,
            &list,
            options.trace_patience,
            options.sampled.is_some(),
            &progress,
        )
        .await
    } else {
        Vec::new()
    };
    let mut fault_events = fault_events;
    fault_events.extend(faults::clear_open_plans(scenario, target, started, &progress).await);
    progress.finish();
    let sampled = options.sampled.is_some();
    let trace_summary =
        (options.read_traces && !options.sdk_disabled).then(|| TraceSummary::of_kept(&traces, sampled));
    // Under head sampling only the orders sampling kept are judged, here and in the timeline.
    let traces: Vec<OrderTraces> = traces.into_iter().filter(|t| !sampled || t.has_root).collect();
    let complete: std::collections::BTreeMap<uuid::Uuid, bool> =
        traces.iter().map(|t| (t.order_id, t.complete)).collect();
    let (arrival_summary, latency) = report::summarize(&arrivals);
    let terminal_at = report::terminal_times(&arrivals.arrivals, &states);
    let sent: std::collections::BTreeMap<uuid::Uuid, f64> = arrivals
        .arrivals
        .iter()
        .filter_map(|a| Some((a.order_id()?, a.sent_s?)))
        .collect();
    let killed = report::killed_loss(
        &traces,
        &fault_events,
        &sent,
        &terminal_at,
        options.export_delay_s,
    );
    let mut report = Report {
        checks: Vec::new(),
        scenario: scenario.clone(),
        platform: options.platform_name.clone(),
        topology: options.topology.clone(),
        started_at,
        sdk_disabled: options.sdk_disabled,
        arrivals: arrival_summary,
        latency_ms: latency,
        end_to_end_ms: report::end_to_end(&states),
        stages_ms: report::stages(&states),
        settle_s,
        settle_looks: looks,
        pass: orders.lost.is_empty() && orders.duplicated_side_effects == 0,
        orders,
        traces: trace_summary,
        faults: fault_events,
        timeline: report::timeline(&arrivals.arrivals, &complete, &terminal_at),
        span_stats: Default::default(),
        cancelled: report::Cancelled::of(&states),
        killed,
        collector: None,
        sampled: options.sampled,
    };
    report.recheck();
    RunResult {
        report,
        states,
        traces,
        arrivals,
    }
}
