//! The fault driver: applies a scenario's faults at their times and undoes them afterwards.
//!
//! Process faults go through one switch, [`Platform`]:
//! - `native`: the services by pid through `deploy/local/services.sh kill|stop|start NAME`, Kafka
//!   and the Collector through `deploy/local/infra.sh down|up NAME` (the shared stack!);
//! - `compose`: `docker compose kill -s SIGKILL|stop|start NAME` on `deploy/docker-compose.yml`
//!   (the Collector's service there is `otel-collector`);
//! - `managed`: a shop this tool started itself ([`crate::managed`]): its own child processes and,
//!   for broker faults, its private broker.
//! - `matrix`: one of the shops of a matrix run ([`crate::matrix`]): its own child processes, with a
//!   private broker and a private Collector shared by the run's shops and faulted once.
//!
//! Service faults (`fault-plan`) are `PUT /admin/faults` on the service, cleared with `DELETE`.
//! Poison records are written straight to the topic with a plain Kafka producer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::managed::ManagedStack;
use crate::progress::Progress;
use crate::scenario::{Action, Fault, Scenario};
use crate::target::Target;

/// Where processes live and how to kill, stop and start them.
#[derive(Debug, Clone)]
pub enum Platform {
    /// The native stack of this checkout (`deploy/local`).
    Native {
        /// The checkout's root.
        root: PathBuf,
    },
    /// Docker compose.
    Compose {
        /// The compose file.
        file: PathBuf,
    },
    /// A shop started by this tool.
    Managed(Arc<ManagedStack>),
    /// One shop of a matrix run: its services are its own; the broker and the Collector are shared
    /// by the run's shops, and only the `owner` stops and starts them.
    Matrix {
        /// The shop.
        shop: Arc<ManagedStack>,
        /// The shared broker and Collector.
        infra: Arc<crate::matrix::SharedInfra>,
        /// Whether this shop's fault driver acts on the shared parts.
        owner: bool,
    },
}

/// What a process fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOp {
    /// SIGKILL.
    Kill,
    /// Graceful stop.
    Stop,
    /// Start again.
    Start,
}

impl Platform {
    /// Kills, stops or starts `name` (`order`, `kitchen`, `delivery`, `kafka`, `collector`).
    pub async fn process(&self, name: &str, op: ProcessOp) -> anyhow::Result<()> {
        match self {
            Platform::Native { root } => {
                let infra = matches!(name, "kafka" | "collector");
                let (script, verb) = match (infra, op) {
                    // infra.sh stops by saved pid with SIGTERM; a broker "kill" is a stop there.
                    (true, ProcessOp::Kill | ProcessOp::Stop) => ("infra.sh", "down"),
                    (true, ProcessOp::Start) => ("infra.sh", "up"),
                    (false, ProcessOp::Kill) => ("services.sh", "kill"),
                    (false, ProcessOp::Stop) => ("services.sh", "stop"),
                    (false, ProcessOp::Start) => ("services.sh", "start"),
                };
                run(Command::new(root.join("deploy/local").join(script))
                    .arg(verb)
                    .arg(name))
                .await
            }
            Platform::Compose { file } => {
                // The compose file names the Collector after its image.
                let name = if name == "collector" {
                    "otel-collector"
                } else {
                    name
                };
                let mut command = Command::new("docker");
                command.arg("compose").arg("-f").arg(file);
                match op {
                    ProcessOp::Kill => command.args(["kill", "-s", "SIGKILL", name]),
                    ProcessOp::Stop => command.args(["stop", name]),
                    ProcessOp::Start => command.args(["start", name]),
                };
                run(&mut command).await
            }
            Platform::Managed(stack) => stack.process(name, op).await,
            Platform::Matrix { shop, infra, owner } => match name {
                "kafka" | "collector" if *owner => infra.process(name, op).await,
                // The owner does it, at the same moment, for every shop of the run.
                "kafka" | "collector" => Ok(()),
                _ => shop.process(name, op).await,
            },
        }
    }
}

async fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .await
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(())
}

/// One thing the fault driver did, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    /// When it began, seconds since the start.
    pub at_s: f64,
    /// When it was done (a broker takes seconds to stop and to start), seconds since the start.
    pub done_s: f64,
    /// `apply kill order`, `undo stop kafka`.
    pub what: String,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// The faults to drive: each `random-kills` becomes the `kill` faults of its schedule (see
/// [`crate::scenario::Fault::kill_schedule`]), every other fault stays as it is.
pub fn expand(faults: &[Fault]) -> Vec<Fault> {
    faults
        .iter()
        .flat_map(|fault| match fault.action {
            Action::RandomKills => fault
                .kill_schedule()
                .into_iter()
                .map(|kill| Fault {
                    at: kill.at,
                    duration: Some(kill.restart_after),
                    action: Action::Kill,
                    target: kill.target,
                    plan: None,
                    count: None,
                    restart_after: None,
                    seed: None,
                })
                .collect(),
            _ => vec![fault.clone()],
        })
        .collect()
}

/// Applies every fault of `scenario` due before `end` at its time (relative to `started`) and
/// undoes it after its duration; returns when every fault has been applied and undone.
pub async fn drive_faults(
    scenario: &Scenario,
    platform: &Platform,
    target: &Target,
    started: Instant,
    end: Duration,
    progress: &Progress,
) -> Vec<FaultEvent> {
    let faults = expand(&scenario.faults);
    let tasks = faults.iter().filter(|f| f.at < end).map(|fault| async move {
        let mut events = Vec::new();
        tokio::time::sleep_until((started + fault.at).into()).await;
        let begun = started.elapsed();
        let result = apply(fault, platform, target).await;
        events.push(event(
            started,
            begun,
            format!("apply {}", fault.label()),
            result,
            progress,
        ));
        if let Some(d) = fault.duration {
            tokio::time::sleep_until((started + fault.at + d).into()).await;
            let begun = started.elapsed();
            let result = undo(fault, platform, target).await;
            events.push(event(
                started,
                begun,
                format!("undo {}", fault.label()),
                result,
                progress,
            ));
        }
        events
    });
    let mut all: Vec<FaultEvent> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    all
}

/// Clears the fault plans the scenario set for the whole run (no `for`), once the run is over and
/// its orders are verified, so a shop on the native stack is not left broken.
pub async fn clear_open_plans(
    scenario: &Scenario,
    target: &Target,
    started: Instant,
    progress: &Progress,
) -> Vec<FaultEvent> {
    let mut events = Vec::new();
    for fault in &scenario.faults {
        if fault.action == Action::FaultPlan && fault.duration.is_none() {
            let begun = started.elapsed();
            let result = admin(target, &fault.target, reqwest::Method::DELETE, None).await;
            events.push(event(
                started,
                begun,
                format!("undo {} (end of run)", fault.label()),
                result,
                progress,
            ));
        }
    }
    events
}

fn event(
    started: Instant,
    begun: Duration,
    what: String,
    result: anyhow::Result<()>,
    progress: &Progress,
) -> FaultEvent {
    let error = result.err().map(|e| format!("{e:#}"));
    match &error {
        None => progress.note(&what),
        Some(e) => progress.note(&format!("{what} FAILED: {e}")),
    }
    FaultEvent {
        at_s: begun.as_secs_f64(),
        done_s: started.elapsed().as_secs_f64(),
        what,
        error,
    }
}

async fn apply(fault: &Fault, platform: &Platform, target: &Target) -> anyhow::Result<()> {
    match fault.action {
        Action::Kill => platform.process(&fault.target, ProcessOp::Kill).await,
        Action::Stop => platform.process(&fault.target, ProcessOp::Stop).await,
        Action::FaultPlan => {
            let plan = target.rewrite_plan(fault.plan.as_ref().context("fault-plan without a plan")?);
            admin(target, &fault.target, reqwest::Method::PUT, Some(plan)).await
        }
        Action::Poison => poison(target, &fault.target, fault.count.unwrap_or(1)).await,
        Action::RandomKills => bail!("random-kills is driven as the kills of its schedule (faults::expand)"),
    }
}

async fn undo(fault: &Fault, platform: &Platform, target: &Target) -> anyhow::Result<()> {
    match fault.action {
        Action::Kill | Action::Stop => platform.process(&fault.target, ProcessOp::Start).await,
        Action::FaultPlan => admin(target, &fault.target, reqwest::Method::DELETE, None).await,
        Action::Poison | Action::RandomKills => Ok(()),
    }
}

/// `PUT` or `DELETE` `/admin/faults` on a service, with the admin token.
pub async fn admin(
    target: &Target,
    service: &str,
    method: reqwest::Method,
    plan: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let base = target
        .service_url(service)
        .with_context(|| format!("no URL for service {service}"))?;
    let token = target
        .admin_token
        .as_deref()
        .context("fault plans need the services' admin token (--admin-token or PIZZA_ADMIN_TOKEN)")?;
    let client = crate::driver::http_client(Duration::from_secs(10));
    let mut request = client
        .request(method, format!("{}/admin/faults", base.trim_end_matches('/')))
        .bearer_auth(token);
    if let Some(plan) = plan {
        request = request.json(&plan);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{service} admin API answered {status}: {}",
            response.text().await?
        );
    }
    Ok(())
}

/// Writes `count` malformed records into the default topic `topic` (mapped to the run's topic):
/// no CloudEvents headers, a body that is not JSON. Each must end in `<topic>.dlq`.
pub async fn poison(target: &Target, topic: &str, count: u32) -> anyhow::Result<()> {
    let topic = target.topic(topic);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &target.kafka_bootstrap)
        .set("message.timeout.ms", "30000")
        .create()?;
    for i in 0..count {
        let key = format!("poison-{i}");
        let body = format!("{{ this is not a cloud event #{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&body),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing poison record to {topic}: {e}"))?;
    }
    Ok(())
}
