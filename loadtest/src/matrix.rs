//! `pizza-load matrix`: every scenario, in both topologies and with the link-aware sampler at 10%,
//! in one report.
//!
//! ```text
//!  for each scenario (short version):
//!    private Collector (+ private broker if the scenario stops Kafka), shared by three shops:
//!      continuous │ linked │ linked, pizza_linkaware 10%     ◄── the same arrivals and fault window
//!    run the three side by side ─► graceful shutdown (span statistics) ─► the Collector's counters
//!  ─► matrix.md (one row per scenario and variant), matrix.json, each run's report.md and chart
//! ```
//!
//! The three variants of a scenario run at the same time under the same fault (one broker stop, one
//! Collector stop, a kill in each shop at the same second), so the matrix costs one fault window per
//! scenario, not three, and the variants are compared under the very same conditions. Every shop is
//! a [`crate::managed`] shop (its own processes, database, topics and consumer groups); the broker and
//! the Collector are private to the run, so nothing stops the shared stack. The Collector forwards to
//! the shared Jaeger, and its own metrics endpoint says what it dropped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pizza_testkit::broker::PrivateBroker;
use pizza_testkit::collector::{CollectorSpans, PrivateCollector};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::faults::{Platform, ProcessOp};
use crate::managed::{ManagedOptions, ManagedStack};
use crate::report::Report;
use crate::run::RunOptions;
use crate::scenario::{Action, Fragmentation, Scenario};

/// One way of running the shop under a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Its name in the matrix.
    pub name: &'static str,
    /// `PIZZA_TRACE_TOPOLOGY`.
    pub topology: &'static str,
    /// The link-aware sampler's ratio, or `None` for every span.
    pub sampled: Option<f64>,
}

/// The three variants of every scenario.
pub const VARIANTS: [Variant; 3] = [
    Variant {
        name: "continuous",
        topology: "continuous",
        sampled: None,
    },
    Variant {
        name: "linked",
        topology: "linked",
        sampled: None,
    },
    Variant {
        name: "linked, 10% sampled",
        topology: "linked",
        sampled: Some(0.1),
    },
];

/// The broker and the Collector a matrix run's shops share.
#[derive(Debug)]
pub struct SharedInfra {
    broker: Option<Mutex<PrivateBroker>>,
    collector: Mutex<PrivateCollector>,
    /// The Collector's counters from before its restarts (they start at zero with each process).
    counted: Mutex<CollectorSpans>,
}

impl SharedInfra {
    /// Starts a private Collector and, with `broker`, a private broker.
    pub async fn start(broker: bool) -> anyhow::Result<Self> {
        let collector = PrivateCollector::start().await?;
        let broker = if broker {
            Some(Mutex::new(PrivateBroker::start().await?))
        } else {
            None
        };
        Ok(Self {
            broker,
            collector: Mutex::new(collector),
            counted: Mutex::new(CollectorSpans::default()),
        })
    }

    /// Stops or starts the broker or the Collector.
    pub async fn process(&self, name: &str, op: ProcessOp) -> anyhow::Result<()> {
        match (name, op) {
            ("collector", ProcessOp::Start) => Ok(self.collector.lock().await.up().await?),
            ("collector", _) => {
                let mut collector = self.collector.lock().await;
                let before = collector.spans().await?;
                add(&mut *self.counted.lock().await, before);
                Ok(collector.stop().await?)
            }
            ("kafka", op) => {
                let mut broker = self
                    .broker
                    .as_ref()
                    .context("this matrix run has no private broker")?
                    .lock()
                    .await;
                match op {
                    ProcessOp::Start => broker.up().await?,
                    ProcessOp::Kill | ProcessOp::Stop => broker.stop().await?,
                }
                Ok(())
            }
            (other, _) => anyhow::bail!("the shared infrastructure has no {other}"),
        }
    }

    /// The Collector's counters over the whole run.
    pub async fn collector_spans(&self) -> anyhow::Result<CollectorSpans> {
        let mut total = *self.counted.lock().await;
        let collector = self.collector.lock().await;
        if collector.is_running() {
            add(&mut total, collector.spans().await?);
        }
        Ok(total)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the shops.
    async fn otlp_endpoint(&self) -> String {
        self.collector.lock().await.otlp_grpc_endpoint()
    }

    async fn bootstrap(&self) -> Option<String> {
        match &self.broker {
            Some(b) => Some(b.lock().await.bootstrap()),
            None => None,
        }
    }

    /// Stops the Collector gracefully, and the broker. The Collector's log (both of its lives when
    /// a fault restarted it) is copied to `keep_log`: what it did at a stop is evidence a report
    /// may need, and its own directory goes with it.
    pub async fn stop(self, keep_log: &Path) -> anyhow::Result<()> {
        let mut collector = self.collector.lock().await;
        let stopped = collector.stop().await;
        if let Some(parent) = keep_log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(collector.dir().join("collector.log"), keep_log)
            .with_context(|| format!("keeping the private Collector's log as {}", keep_log.display()))?;
        stopped?;
        if let Some(broker) = &self.broker {
            broker.lock().await.stop().await?;
        }
        Ok(())
    }
}

fn add(total: &mut CollectorSpans, more: CollectorSpans) {
    total.accepted += more.accepted;
    total.sent += more.sent;
    total.dropped += more.dropped;
}

/// How to run the matrix.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Orders per second in each shop (overrides the scenarios').
    pub rate: f64,
    /// How long arrivals go on (a scenario's faults are cut to fit).
    pub duration: Duration,
    /// Where the reports go.
    pub out: PathBuf,
    /// No progress output.
    pub quiet: bool,
}

/// One cell of the matrix: a scenario run in one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixRun {
    /// The scenario.
    pub scenario: String,
    /// The variant's name.
    pub variant: String,
    /// The run's report (its files are in `<out>/<scenario>/<variant dir>/`).
    pub report: Report,
    /// The directory of the run's report, relative to the matrix report.
    pub dir: String,
    /// Each order's end state (in the run's `orders.json`, not in `matrix.json`).
    #[serde(skip)]
    pub states: Vec<crate::driver::OrderState>,
    /// Each judged order's trace verdict (likewise).
    #[serde(skip)]
    pub traces: Vec<crate::traces::OrderTraces>,
}

/// The whole matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixReport {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Orders per second in each shop.
    pub rate: f64,
    /// Seconds of arrivals per scenario.
    pub duration_s: f64,
    /// Wall-clock seconds each scenario took, in order.
    pub seconds: Vec<(String, f64)>,
    /// Every run.
    pub runs: Vec<MatrixRun>,
}

impl MatrixReport {
    /// Whether every expectation of every run was met.
    pub fn pass(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.report.pass && r.report.checks.iter().all(|c| c.ok))
    }
}

/// The scenario names in `dir` (the stems of its `.yaml` files), sorted.
pub fn scenario_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The short version of `scenario`: `duration` of arrivals at `rate`, faults that start later
/// dropped, faults that would outlast the arrivals cut at their end.
pub fn shorten(scenario: &Scenario, rate: f64, duration: Duration) -> Scenario {
    let mut s = scenario.clone();
    s.rate = rate;
    s.duration = duration.min(scenario.duration);
    s.faults.retain(|f| f.at < s.duration);
    for f in &mut s.faults {
        if let Some(d) = f.duration {
            f.duration = Some(d.min(s.duration - f.at));
        }
    }
    s
}

/// The scenario's expectations as they apply to `variant`. Under head sampling a trace context that
/// the scenario drops on purpose cannot be followed by any sampler: the pieces of an order are kept
/// or dropped independently, so a kept order may lack the pieces sampling dropped and show no
/// fragment. There, completeness and fragmentation of the kept orders are not expected; everything
/// else is.
pub fn expectations_for(scenario: &Scenario, variant: &Variant) -> Scenario {
    let mut s = scenario.clone();
    if variant.sampled.is_some() && s.expect.fragmentation == Fragmentation::Detected {
        s.expect.min_trace_completeness = None;
        s.expect.max_unexplained_incomplete = None;
        s.expect.fragmentation = Fragmentation::Any;
    }
    s
}

fn dir_name(variant: &Variant) -> String {
    variant
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Runs one scenario in the three variants side by side; see the module docs.
pub async fn run_scenario(options: &MatrixOptions, scenario: &Scenario) -> anyhow::Result<Vec<MatrixRun>> {
    let scenario = shorten(scenario, options.rate, options.duration);
    let stops_kafka = scenario
        .faults
        .iter()
        .any(|f| f.target == "kafka" && matches!(f.action, Action::Kill | Action::Stop));
    let infra = Arc::new(SharedInfra::start(stops_kafka).await?);
    let endpoint = infra.otlp_endpoint().await;
    let bootstrap = infra.bootstrap().await;
    // One after another: each shop picks free ports for its services and binds them when they
    // start, and two shops picking at once could pick the same port.
    let mut shops = Vec::new();
    for variant in &VARIANTS {
        let mut managed = ManagedOptions::new();
        if let Some(b) = &bootstrap {
            managed.kafka_bootstrap = b.clone();
        }
        managed.topology = variant.topology.parse()?;
        managed.log_dir = options
            .out
            .join(&scenario.name)
            .join(dir_name(variant))
            .join("logs");
        managed
            .env
            .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
        if let Some(ratio) = variant.sampled {
            managed
                .env
                .push(("OTEL_TRACES_SAMPLER".into(), "pizza_linkaware".into()));
            managed
                .env
                .push(("OTEL_TRACES_SAMPLER_ARG".into(), ratio.to_string()));
        }
        shops.push(Arc::new(ManagedStack::start(managed).await?));
    }
    let runs = VARIANTS
        .iter()
        .zip(&shops)
        .enumerate()
        .map(|(i, (variant, shop))| {
            let platform = Platform::Matrix {
                shop: shop.clone(),
                infra: infra.clone(),
                owner: i == 0,
            };
            let target = shop.target();
            let scenario = expectations_for(&scenario, variant);
            let mut run_options = RunOptions::new("managed", variant.topology);
            run_options.sampled = variant.sampled;
            // Spans are in Jaeger within seconds of the orders' end on a quiet machine. What a kill
            // lost never comes, so a crash scenario waits its patience out whole: 60 s there. Where
            // nothing is killed an incomplete trace is only late, and the wait ends as soon as it is
            // whole, so a longer patience costs nothing on a quiet machine and keeps a machine busy
            // with other suites (a cold CI run builds the compose images meanwhile; one took 80 s to
            // show the last order's spans) from failing a scenario on its speed.
            let kills = scenario.faults.iter().any(|f| {
                matches!(
                    f.action,
                    crate::scenario::Action::Kill | crate::scenario::Action::RandomKills
                )
            });
            run_options.trace_patience = Duration::from_secs(if kills { 60 } else { 180 });
            // Three progress bars at once would garble each other: only the first speaks.
            run_options.quiet = options.quiet || i > 0;
            async move { crate::run(&scenario, &target, &platform, &run_options).await }
        });
    let results = futures::future::join_all(runs).await;
    let collector = infra.collector_spans().await?;
    let mut out = Vec::new();
    for ((variant, shop), mut result) in VARIANTS.iter().zip(shops).zip(results) {
        let shop = Arc::try_unwrap(shop).map_err(|_| anyhow::anyhow!("a matrix shop is still in use"))?;
        result.report.span_stats = shop.shutdown().await?;
        // One Collector served the three shops: its counters are the run's, shown with each.
        result.report.collector = Some(collector);
        result.report.recheck();
        let dir = Path::new(&scenario.name).join(dir_name(variant));
        result.write(&options.out.join(&dir))?;
        out.push(MatrixRun {
            scenario: scenario.name.clone(),
            variant: variant.name.into(),
            report: result.report,
            dir: dir.display().to_string(),
            states: result.states,
            traces: result.traces,
        });
    }
    Arc::try_unwrap(infra)
        .map_err(|_| anyhow::anyhow!("the shared infrastructure is still in use"))?
        .stop(&options.out.join(&scenario.name).join("collector.log"))
        .await?;
    Ok(out)
}

/// Runs every scenario of `options` and writes `matrix.md` and `matrix.json` into `options.out`.
pub async fn run_matrix(options: &MatrixOptions) -> anyhow::Result<MatrixReport> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut report = MatrixReport {
        started_at,
        rate: options.rate,
        duration_s: options.duration.as_secs_f64(),
        seconds: Vec::new(),
        runs: Vec::new(),
    };
    for scenario in &options.scenarios {
        let started = Instant::now();
        let runs = run_scenario(options, scenario)
            .await
            .with_context(|| format!("matrix: scenario {}", scenario.name))?;
        report.runs.extend(runs);
        report
            .seconds
            .push((scenario.name.clone(), started.elapsed().as_secs_f64()));
        report.write(&options.out)?;
    }
    Ok(report)
}

impl MatrixReport {
    /// Writes `matrix.json` and `matrix.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("matrix.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("matrix.md"), self.markdown())
    }

    /// The matrix as Markdown: one row per scenario and variant, then what each scenario cost.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let total: f64 = self.seconds.iter().map(|(_, s)| s).sum();
        let _ = writeln!(
            md,
            "# Trace-integrity matrix\n\nStarted {}: every scenario for {:.0} s at {} orders/s in each of \
             three shops run side by side under the same fault (continuous, linked, linked with the \
             link-aware sampler at 10%), each shop its own processes, database and topics, with a \
             private Collector (and a private broker where Kafka is stopped). {:.0} s in all. \
             **{}**.\n",
            self.started_at,
            self.duration_s,
            self.rate,
            total,
            if self.pass() {
                "Every expectation met"
            } else {
                "Expectations NOT MET"
            }
        );
        let _ = writeln!(
            md,
            "| scenario | variant | accepted | completed | cancelled (reasons) | lost | dup. effects | complete traces | continuous | linked | fragmented | with orphans | lost with a killed process | dropped: SDKs / Collector | e2e p50 / p99 ms | expectations |"
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for run in &self.runs {
            let r = &run.report;
            let o = &r.orders;
            let completed = o.by_status.get("completed").copied().unwrap_or(0);
            let reasons: Vec<String> = r
                .cancelled
                .reasons
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let cancelled = if reasons.is_empty() {
                r.cancelled.orders.to_string()
            } else {
                format!("{} ({})", r.cancelled.orders, reasons.join(", "))
            };
            let traces = match &r.traces {
                None => ["not read".to_owned(), "".into(), "".into(), "".into(), "".into()],
                Some(t) => [
                    format!(
                        "{}/{} ({:.1}%){}",
                        t.complete,
                        t.orders,
                        t.completeness * 100.0,
                        if r.sampled.is_some() {
                            format!(", {} not kept", t.not_kept)
                        } else {
                            String::new()
                        }
                    ),
                    t.continuous.to_string(),
                    t.linked.to_string(),
                    format!("{} (max {})", t.fragmented, t.max_fragments),
                    t.with_orphans.to_string(),
                ],
            };
            let sdk: u64 = r.spans_dropped() - r.collector.map_or(0, |c| c.dropped);
            let failed: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.what.as_str())
                .collect();
            let _ = writeln!(
                md,
                "| [{}]({}/report.md) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {:.0} / {:.0} | {} |",
                run.scenario,
                run.dir,
                run.variant,
                r.arrivals.accepted,
                completed,
                cancelled,
                o.lost.len(),
                o.duplicated_side_effects,
                traces[0],
                traces[1],
                traces[2],
                traces[3],
                traces[4],
                r.killed.orders,
                sdk,
                r.collector.map_or("-".into(), |c| c.dropped.to_string()),
                r.end_to_end_ms.p50,
                r.end_to_end_ms.p99,
                if failed.is_empty() && r.pass {
                    "met".to_owned()
                } else {
                    format!("NOT MET: {}", failed.join("; "))
                }
            );
        }
        let _ = writeln!(md, "\n## What each scenario cost (wall clock)\n");
        for (name, s) in &self.seconds {
            let _ = writeln!(md, "- {name}: {s:.0} s");
        }
        let _ = writeln!(md, "- all: {total:.0} s");
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_version_keeps_the_faults_that_fit_and_cuts_the_ones_that_outlast_the_arrivals() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let slow = Scenario::load(&dir, "slow-delivery").unwrap();
        let short = shorten(&slow, 3.0, Duration::from_secs(30));
        assert_eq!((short.rate, short.duration), (3.0, Duration::from_secs(30)));
        assert_eq!(short.faults[0].at, Duration::from_secs(10));
        assert_eq!(
            short.faults[0].duration,
            Some(Duration::from_secs(20)),
            "cut at the end"
        );
        let down = shorten(
            &Scenario::load(&dir, "collector-down").unwrap(),
            3.0,
            Duration::from_secs(30),
        );
        assert_eq!(
            down.faults[0].duration,
            Some(Duration::from_secs(20)),
            "the whole outage"
        );
        let late = Scenario::parse(
            "name: x\ndescription: d\nrate: 1\nduration: 60s\nfaults:\n - {at: 40s, for: 5s, action: kill, target: order}\n",
        )
        .unwrap();
        assert!(shorten(&late, 1.0, Duration::from_secs(30)).faults.is_empty());
    }

    #[test]
    fn a_sampled_variant_of_a_broken_context_expects_neither_completeness_nor_fragments() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let broken = Scenario::load(&dir, "broken-propagation").unwrap();
        let sampled = expectations_for(&broken, &VARIANTS[2]);
        assert_eq!(sampled.expect.fragmentation, Fragmentation::Any);
        assert_eq!(sampled.expect.min_trace_completeness, None);
        assert_eq!(sampled.expect.lost, 0);
        assert_eq!(expectations_for(&broken, &VARIANTS[1]), broken);
        let base = Scenario::load(&dir, "baseline").unwrap();
        assert_eq!(expectations_for(&base, &VARIANTS[2]), base);
    }

    #[test]
    fn variant_directories_are_plain_names() {
        let names: Vec<String> = VARIANTS.iter().map(dir_name).collect();
        assert_eq!(names, ["continuous", "linked", "linked-10-sampled"]);
    }
}
