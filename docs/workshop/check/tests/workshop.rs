//! The workshop, executed: every exercise's `sh` blocks run as written (in one `bash` per exercise,
//! from the repository's root) against a shop this test starts with `deploy/local/services.sh up` on
//! the demo's ports, and then what the exercise says the reader sees is asserted from the commands'
//! output, the database and Jaeger.
//!
//! The shop differs from `make demo` in four settings, none of which the commands depend on:
//!
//! - `PIZZA_TIME_SCALE=0.1`: an order takes a few seconds instead of about forty (every wait in the
//!   exercises polls, bounded, so the pace does not matter);
//! - the order workflow's kitchen and delivery timeouts at 1000 s (scaled: 100 s), so that a broker
//!   outage or a consumer-group rebalance after `kill -9` (up to 45 s, librdkafka's session
//!   timeout) delays an order rather than timing it out at the fast pace;
//! - its own database (`pizza_workshop_check`, created afresh) and consumer groups
//!   (`workshop-check-*`), so it neither reads nor disturbs a demo's orders;
//! - its own pid directory (`PIZZA_SERVICES_RUN_DIR`), so `services.sh kill order` in an exercise
//!   acts on this test's order service.
//!
//! The topics, ports and admin token are the demo's, as the exercises name them. Ports 8080 to 8082
//! must be free (stop a running demo with `make down`); the test refuses to start otherwise.
//!
//! The exercises run one after another inside this one test: they share the shop, and exercise 7
//! stops the shared Kafka broker (`deploy/local/infra.sh down kafka`). Whatever happens, the test
//! stops the services it started and brings Kafka back before it returns.
//!
//! `PIZZA_WORKSHOP_ONLY=2,5` runs only those exercises (for writing them); unset, all run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use pizza_telemetry::attributes::{pizza, workflow as wf};
use pizza_testkit::{Jaeger, Span, SpanKind, Stack};
use pizza_workshop_check::{Exercise, exercises, repo_root, workshop_dir};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// The check's own database on the native PostgreSQL.
const DATABASE: &str = "pizza_workshop_check";
/// The longest one exercise's commands may run.
const EXERCISE_LIMIT: Duration = Duration::from_secs(900);
/// How long Jaeger may take to hold every span of an order.
const TRACE_LIMIT: Duration = Duration::from_secs(60);

// ---- the shop -----------------------------------------------------------------------------------------

/// The services started by `services.sh up`, stopped (and Kafka brought back) on drop.
struct Shop {
    root: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Shop {
    fn services(&self, args: &[&str]) -> anyhow::Result<()> {
        self.script(&format!("deploy/local/services.sh {}", args.join(" ")))
    }

    fn script(&self, command: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(command)
            .current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("PIZZA_TRACE_TOPOLOGY")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_TRACES_SAMPLER_ARG")
            .env_remove("PIZZA_FAULTS")
            .env_remove("PIZZA_DROP_TRACE_CONTEXT")
            .env_remove("OTEL_SDK_DISABLED")
            .status()
            .with_context(|| format!("running {command}"))?;
        ensure!(status.success(), "`{command}` failed: {status}");
        Ok(())
    }

    fn url(&self, service: &str) -> String {
        let var = format!("PIZZA_{}_ADDR", service.to_uppercase());
        let addr = self
            .env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        format!("http://{addr}")
    }

    /// Back to the demo's state between exercises: Kafka up, every service running, no faults.
    async fn reset(&self, restart: bool) -> anyhow::Result<()> {
        if !kafka_answers() {
            self.script("deploy/local/infra.sh up kafka")?;
        }
        if restart {
            self.services(&["restart"])?;
        } else {
            self.services(&["up"])?;
        }
        let client = reqwest_like::Client::new();
        for service in ["order", "kitchen", "delivery"] {
            client.delete_faults(&self.url(service)).await?;
        }
        Ok(())
    }
}

/// Brings the shared Kafka broker back when dropped, however the exercise that stopped it ended
/// (its commands failed, an assertion failed, the check panicked).
struct KafkaBack<'a>(&'a Shop);

impl Drop for KafkaBack<'_> {
    fn drop(&mut self) {
        if !kafka_answers() {
            eprintln!("workshop check: Kafka is down (an exercise stopped it): starting it again");
            if let Err(e) = self.0.script("deploy/local/infra.sh up kafka") {
                eprintln!("workshop check: starting Kafka: {e:#}");
            }
        }
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        if let Err(e) = self.services(&["down"]) {
            eprintln!("workshop check: stopping the services: {e:#}");
        }
        if !kafka_answers() {
            eprintln!("workshop check: Kafka is down (an exercise stopped it): starting it again");
            if let Err(e) = self.script("deploy/local/infra.sh up kafka") {
                eprintln!("workshop check: starting Kafka: {e:#}");
            }
        }
        eprintln!("workshop check: logs and outputs kept in {}", self.dir.display());
    }
}

fn kafka_answers() -> bool {
    let bootstrap = Stack::from_env().kafka_bootstrap;
    let addr = bootstrap.split(',').next().unwrap_or_default().to_owned();
    std::net::TcpStream::connect_timeout(
        &addr
            .parse()
            .unwrap_or_else(|_| "127.0.0.1:9092".parse().expect("address")),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// The admin calls the check makes itself (clearing faults between exercises), over a plain TCP
/// HTTP/1.1 request: curl is what the exercises use, and the check needs nothing more.
mod reqwest_like {
    use std::io::{Read as _, Write as _};

    use anyhow::{Context as _, ensure};

    pub(crate) struct Client;

    impl Client {
        pub(crate) fn new() -> Self {
            Self
        }

        pub(crate) async fn delete_faults(&self, base: &str) -> anyhow::Result<()> {
            let authority = base.trim_start_matches("http://").to_owned();
            let token = std::env::var("PIZZA_ADMIN_TOKEN").unwrap_or_else(|_| super::TOKEN.to_owned());
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut stream = std::net::TcpStream::connect(&authority)
                    .with_context(|| format!("connecting to {authority}"))?;
                write!(
                    stream,
                    "DELETE /admin/faults HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
                     Connection: close\r\n\r\n"
                )?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                let status = answer.split_whitespace().nth(1).unwrap_or_default().to_owned();
                ensure!(
                    status.starts_with('2'),
                    "DELETE {authority}/admin/faults answered {status}"
                );
                Ok(())
            })
            .await?
        }
    }
}

/// The demo's admin token (`deploy/local/services.sh`).
const TOKEN: &str = "pizza-workshop";

fn port_base() -> u16 {
    std::env::var("PIZZA_WORKSHOP_PORT_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8080)
}

async fn fresh_database() -> anyhow::Result<(String, PgPool)> {
    let base = Stack::from_env().database_url;
    let admin = PgPool::connect(&base)
        .await
        .with_context(|| format!("connecting to {base} (is the native stack up? make infra-up)"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {DATABASE} with (force)"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {DATABASE}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (server, _) = base
        .rsplit_once('/')
        .context("DATABASE_URL has no database path")?;
    let url = format!("{server}/{DATABASE}");
    let pool = PgPool::connect(&url).await?;
    Ok((url, pool))
}

// ---- running an exercise ------------------------------------------------------------------------------

/// What an exercise's commands left behind: their output and the shell variables the check reads.
#[derive(Debug)]
struct Ran {
    stdout: String,
    vars: BTreeMap<String, String>,
}

impl Ran {
    fn var(&self, name: &str) -> anyhow::Result<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("the exercise set no ${name}"))
    }

    fn order(&self, name: &str) -> anyhow::Result<Uuid> {
        let v = self.var(name)?;
        v.parse()
            .with_context(|| format!("${name}={v:?} is not an order id"))
    }

    /// The first line of each `pizza-load trace` tree printed: (spans, traces, pieces).
    fn trees(&self) -> Vec<(usize, usize, usize)> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (spans, rest) = l.split_once(" spans in ")?;
                let (traces, rest) = rest.split_once(" trace(s), ")?;
                let (pieces, _) = rest.split_once(" piece(s)")?;
                Some((spans.parse().ok()?, traces.parse().ok()?, pieces.parse().ok()?))
            })
            .collect()
    }
}

/// The variables an exercise is expected to set, read back after its last block.
fn vars_of(number: u32) -> &'static [&'static str] {
    match number {
        1 | 2 => &["ORDER"],
        3 => &["ORDER", "BROKEN"],
        4 => &["LINKED", "CONTINUOUS"],
        5 => &["RATIO_REPORT", "LINKAWARE_REPORT"],
        6 => &["ORDER", "DOWN"],
        7 => &["ORDERS", "PENDING", "KAFKA_BACK_AT"],
        8 => &["ORDER", "OLD_PID", "NEW_PID"],
        9 => &["REPORT"],
        _ => &[],
    }
}

async fn run(shop: &Shop, exercise: &Exercise) -> anyhow::Result<Ran> {
    let name = exercise
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("exercise")
        .to_owned();
    let mut script = String::from("set -euo pipefail\n");
    script.push_str(&exercise.script());
    script.push_str("\n# read back by the check\n");
    for var in vars_of(exercise.number) {
        script.push_str(&format!("printf '@@{var}=%s\\n' \"${{{var}-}}\"\n"));
    }
    let stdout_path = shop.dir.join(format!("{name}.out"));
    let stderr_path = shop.dir.join(format!("{name}.err"));
    std::fs::write(shop.dir.join(format!("{name}.sh")), &script)?;
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(&shop.root)
        .envs(shop.env.iter().map(|(k, v)| (k, v)))
        .env_remove("PIZZA_TRACE_TOPOLOGY")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().context("starting bash")?;
    let pid = child.id();
    let status = match tokio::time::timeout(EXERCISE_LIMIT, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &format!("-{pid}")])
                    .status();
            }
            bail!(
                "{name}: still running after {EXERCISE_LIMIT:?}\n{}",
                tail(&stderr_path)
            );
        }
    };
    let stdout = std::fs::read_to_string(&stdout_path)?;
    eprintln!(
        "{name}: commands ran in {:.1} s ({status})",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        status.success(),
        "{name}: the commands failed ({status})\n--- stdout\n{}\n--- stderr (end)\n{}",
        last_lines(&stdout, 40),
        tail(&stderr_path)
    );
    let vars = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Ran { stdout, vars })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tail(path: &Path) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default(), 60)
}

// ---- reading the outcome ------------------------------------------------------------------------------

struct Outcome {
    pool: PgPool,
    jaeger: Jaeger,
}

impl Outcome {
    async fn status(&self, order: Uuid) -> anyhow::Result<(String, Option<String>)> {
        sqlx::query_as("select status, reason from orders.orders where order_id = $1")
            .bind(order)
            .fetch_optional(&self.pool)
            .await?
            .with_context(|| format!("order {order} is not in the check's database"))
    }

    async fn completed(&self, order: Uuid) -> anyhow::Result<()> {
        let (status, reason) = self.status(order).await?;
        ensure!(
            status == "completed",
            "order {order} ended {status} ({reason:?}), not completed"
        );
        Ok(())
    }

    async fn attempts(&self, order: Uuid, step: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "select a.status, a.error->>'error_type' from workflow.step_attempts a \
             join orders.orders o on o.run_id = a.run_id where o.order_id = $1 and a.step_name = $2 \
             order by a.id",
        )
        .bind(order)
        .bind(step)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A completed order's side effects, each exactly once, and none of its events left unpublished.
    async fn each_effect_once(&self, order: Uuid) -> anyhow::Result<()> {
        let (tickets, deliveries, captures, refunds, ready, completed, terminal, pending);
        // The last event of an order (its feedback request) is written as it completes, and leaves
        // its outbox a moment later: wait for that, bounded, before counting.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "select \
               (select count(*) from kitchen.tickets where order_id = $1), \
               (select count(*) from delivery.deliveries where order_id = $1), \
               (select count(*) from orders.payments where order_id = $1 and operation = 'capture'), \
               (select count(*) from orders.payments where order_id = $1 and operation = 'refund'), \
               (select count(*) from kitchen.outbox where message_key = $1::text and event_type = 'order-ready'), \
               (select count(*) from delivery.outbox where message_key = $1::text \
                  and event_type = 'order-completed'), \
               (select count(*) from orders.timeline where order_id = $1 \
                  and status in ('completed', 'cancelled', 'rejected')), \
               (select count(*) from orders.outbox where message_key = $1::text and published_at is null) \
               + (select count(*) from kitchen.outbox where message_key = $1::text and published_at is null) \
               + (select count(*) from delivery.outbox where message_key = $1::text and published_at is null)",
        )
            .bind(order)
            .fetch_one(&self.pool)
            .await?;
            if row.7 == 0 || Instant::now() > deadline {
                (
                    tickets, deliveries, captures, refunds, ready, completed, terminal, pending,
                ) = row;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ensure!(
            (
                tickets, deliveries, captures, refunds, ready, completed, terminal, pending
            ) == (1, 1, 1, 0, 1, 1, 1, 0),
            "order {order}: each side effect once and nothing unpublished, found tickets {tickets}, deliveries \
             {deliveries}, captures {captures}, refunds {refunds}, order-ready events {ready}, \
             order-completed events {completed}, terminal entries {terminal}, unpublished events {pending}"
        );
        Ok(())
    }

    async fn one(&self, sql: &'static str, order: Uuid) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar(sql)
            .bind(order)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every span of the order's processing (its own `GET` reads left out), once the run's summary
    /// span is there and the count has stopped growing.
    async fn spans(&self, order: Uuid) -> anyhow::Result<Vec<Span>> {
        let started = Instant::now();
        let mut last = (0, Instant::now());
        loop {
            let mut ids = BTreeSet::new();
            for service in ["order", "kitchen", "delivery"] {
                ids.extend(
                    self.jaeger
                        .find_trace_ids(service, pizza::ORDER_ID, &order.to_string())
                        .await?,
                );
            }
            let mut spans = Vec::new();
            for id in &ids {
                if let Some(trace) = self.jaeger.trace(id).await? {
                    spans.extend(trace.spans);
                }
            }
            let mut seen = BTreeSet::new();
            spans.retain(|s| {
                seen.insert((s.trace_id.clone(), s.span_id.clone()))
                    && !(s.kind == SpanKind::Server && s.name.starts_with("GET "))
            });
            let finished = spans.iter().any(|s| s.name == "workflow.run order-fulfillment");
            if finished && spans.len() == last.0 && last.1.elapsed() > Duration::from_secs(2) {
                return Ok(spans);
            }
            if spans.len() != last.0 {
                last = (spans.len(), Instant::now());
            }
            if started.elapsed() > TRACE_LIMIT {
                bail!(
                    "the spans of order {order} did not settle in Jaeger within {TRACE_LIMIT:?} ({} found)",
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn traces(spans: &[Span]) -> BTreeSet<&str> {
    spans.iter().map(|s| s.trace_id.as_str()).collect()
}

fn services(spans: &[Span]) -> BTreeSet<&str> {
    spans.iter().map(|s| s.service_name.as_str()).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn trace_of_carrier(carrier: &str) -> anyhow::Result<String> {
    carrier
        .split('-')
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("not a traceparent: {carrier}"))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Per order of a load run's `orders.json`: (root trace kept, spans, complete).
fn sampled(report_dir: &str) -> anyhow::Result<Vec<(bool, u64, bool)>> {
    let doc = read_json(&Path::new(report_dir).join("orders.json"))?;
    let orders = doc["orders"].as_array().context("orders.json has no orders")?;
    Ok(orders
        .iter()
        .map(|o| {
            let t = &o["traces"];
            let spans = t["spans"].as_u64().unwrap_or(0);
            let root_missing = t["missing"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.ends_with("POST /orders")))
            });
            (spans > 0 && !root_missing, spans, t["complete"] == true)
        })
        .collect())
}

// ---- what each exercise promises ----------------------------------------------------------------------

async fn verify(number: u32, ran: &Ran, out: &Outcome) -> anyhow::Result<String> {
    match number {
        1 => {
            let order = ran.order("ORDER")?;
            out.completed(order).await?;
            let spans = out.spans(order).await?;
            ensure!(traces(&spans).len() == 1, "one trace: {:?}", traces(&spans));
            ensure!(
                services(&spans) == BTreeSet::from(["order", "kitchen", "delivery"]),
                "spans of all three services: {:?}",
                services(&spans)
            );
            let trees = ran.trees();
            ensure!(
                trees.last().is_some_and(|t| t.1 == 1 && t.2 == 1),
                "pizza-load trace printed one trace, one piece: {trees:?}"
            );
            Ok(format!("{} spans, 1 trace, 3 services", spans.len()))
        }
        2 => {
            let order = ran.order("ORDER")?;
            out.completed(order).await?;
            let spans = out.spans(order).await?;
            let n = traces(&spans).len();
            ensure!(n > 1, "the order falls apart into more than one trace: {n}");
            let dropped = spans
                .iter()
                .filter(|s| s.attributes.get(pizza::CONTEXT_DROPPED) == Some(&Value::Bool(true)))
                .count();
            ensure!(
                dropped > 0,
                "the kitchen's send spans say their context was dropped"
            );
            let trees = ran.trees();
            ensure!(
                trees.last().is_some_and(|t| t.1 > 1 && t.2 > 1),
                "pizza-load trace printed several traces and pieces: {trees:?}"
            );
            Ok(format!("{} spans in {n} traces", spans.len()))
        }
        3 => {
            let carrier_sql = "select trace_carrier->>'traceparent' from kitchen.tickets where order_id = $1";
            let order_trace_sql = "select trace_id from orders.orders where order_id = $1";
            let kept = ran.order("ORDER")?;
            out.completed(kept).await?;
            let carrier = out.one(carrier_sql, kept).await?.context("a stored carrier")?;
            let order_trace = out.one(order_trace_sql, kept).await?.context("trace id")?;
            ensure!(
                trace_of_carrier(&carrier)? == order_trace,
                "the ticket's carrier holds the order's trace"
            );
            let spans = out.spans(kept).await?;
            for cook in named(&spans, "cook.finish") {
                ensure!(cook.trace_id == order_trace, "cook.finish in the order's trace");
            }
            let broken = ran.order("BROKEN")?;
            out.completed(broken).await?;
            let carrier = out.one(carrier_sql, broken).await?.context("a stored carrier")?;
            let order_trace = out.one(order_trace_sql, broken).await?.context("trace id")?;
            let ticket_trace = trace_of_carrier(&carrier)?;
            ensure!(
                ticket_trace != order_trace,
                "without the HTTP context the ticket stores a trace of its own"
            );
            let spans = out.spans(broken).await?;
            let cooks = named(&spans, "cook.finish");
            ensure!(
                !cooks.is_empty() && cooks.iter().all(|c| c.trace_id == ticket_trace),
                "the oven continues whatever trace was stored: the ticket's"
            );
            Ok(format!(
                "kept: carrier in the order's trace; broken: oven in trace {ticket_trace}, order in {order_trace}"
            ))
        }
        4 => {
            let linked = ran.order("LINKED")?;
            out.completed(linked).await?;
            let spans = out.spans(linked).await?;
            let n = traces(&spans).len();
            ensure!(n > 1, "linked: several traces, found {n}");
            let unlinked: Vec<&str> = spans
                .iter()
                .filter(|s| s.kind == SpanKind::Consumer && s.links.is_empty())
                .map(|s| s.name.as_str())
                .collect();
            ensure!(
                unlinked.is_empty(),
                "linked: every consumer span links: {unlinked:?}"
            );
            let continuous = ran.order("CONTINUOUS")?;
            out.completed(continuous).await?;
            let cont = out.spans(continuous).await?;
            ensure!(traces(&cont).len() == 1, "continuous: one trace");
            let trees = ran.trees();
            ensure!(
                trees.iter().any(|t| t.1 > 1 && t.2 == 1) && trees.iter().any(|t| t.1 == 1 && t.2 == 1),
                "pizza-load trace showed the linked order as one piece of several traces and the \
                 continuous one as one trace: {trees:?}"
            );
            Ok(format!(
                "linked: {} spans in {n} traces; continuous: {} spans in 1 trace",
                spans.len(),
                cont.len()
            ))
        }
        5 => {
            let ratio = sampled(ran.var("RATIO_REPORT")?)?;
            let aware = sampled(ran.var("LINKAWARE_REPORT")?)?;
            let kept_incomplete = ratio
                .iter()
                .filter(|(kept, _, complete)| *kept && !complete)
                .count();
            ensure!(
                kept_incomplete > 0,
                "the ratio sampler lost linked traces of some kept order: {ratio:?}"
            );
            let kept: Vec<_> = aware.iter().filter(|(k, ..)| *k).collect();
            ensure!(
                !kept.is_empty(),
                "the link-aware sampler kept some order: {aware:?}"
            );
            ensure!(
                kept.iter().all(|(_, _, complete)| *complete),
                "the link-aware sampler kept every linked trace of each kept order: {aware:?}"
            );
            ensure!(
                aware.iter().all(|(k, spans, _)| *k || *spans == 0),
                "the link-aware sampler kept nothing of a dropped order: {aware:?}"
            );
            Ok(format!(
                "ratio: {} of {} kept orders incomplete; link-aware: {} of {} kept, all complete",
                kept_incomplete,
                ratio.iter().filter(|(k, ..)| *k).count(),
                kept.len(),
                aware.len()
            ))
        }
        6 => {
            let order = ran.order("ORDER")?;
            out.completed(order).await?;
            let tries = out.attempts(order, "place-kitchen-ticket").await?;
            let failed = tries.iter().filter(|(s, _)| s == "failed").count();
            ensure!(failed >= 3, "failed kitchen calls as attempts: {tries:?}");
            ensure!(
                tries.last().is_some_and(|(s, _)| s == "completed"),
                "the last attempt succeeded: {tries:?}"
            );
            let down = ran.order("DOWN")?;
            let (status, reason) = out.status(down).await?;
            ensure!(
                status == "cancelled" && reason.as_deref() == Some("kitchen-unavailable"),
                "a kitchen that stays down cancels the order: {status} {reason:?}"
            );
            let tries = out.attempts(down, "place-kitchen-ticket").await?;
            ensure!(
                tries.len() == 12 && tries.iter().all(|(s, _)| s == "failed"),
                "twelve failed attempts: {tries:?}"
            );
            for step in ["cancel-kitchen-ticket", "refund-payment", "cancel-order"] {
                let done = out.attempts(down, step).await?;
                ensure!(
                    done.last().is_some_and(|(s, _)| s == "completed"),
                    "compensation step {step} completed: {done:?}"
                );
            }
            let refunds = out
                .one(
                    "select count(*)::text from orders.payments where order_id = $1 and operation = 'refund'",
                    down,
                )
                .await?;
            ensure!(refunds.as_deref() == Some("1"), "one refund: {refunds:?}");
            ensure!(
                ran.stdout.contains("cancelled (reason: kitchen-unavailable)"),
                "wait_order printed the cancellation and its reason"
            );
            Ok(format!(
                "{failed} failed attempts then success; down: 12 failed, compensated, refunded, cancelled"
            ))
        }
        7 => {
            let pending: u64 = ran.var("PENDING")?.trim().parse()?;
            ensure!(pending > 0, "events waited in the outbox during the outage");
            let back: u64 = ran.var("KAFKA_BACK_AT")?.trim().parse()?;
            let orders: Vec<Uuid> = ran
                .var("ORDERS")?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            ensure!(!orders.is_empty(), "orders placed during the outage");
            let mut gaps = Vec::new();
            for order in &orders {
                out.completed(*order).await?;
                out.each_effect_once(*order).await?;
                let spans = out.spans(*order).await?;
                ensure!(
                    traces(&spans).len() == 1,
                    "order {order}: one trace across the outage"
                );
                let cooked = named(&spans, "cook.finish")
                    .iter()
                    .map(|s| s.end_unix_nano)
                    .min()
                    .context("cook.finish")?;
                let consumed = spans
                    .iter()
                    .filter(|s| s.service_name == "order" && s.name.starts_with("process kitchen.events"))
                    .map(|s| s.start_unix_nano)
                    .max()
                    .context("process kitchen.events in order")?;
                ensure!(
                    cooked < back && consumed >= back,
                    "order {order}: cooked during the outage, its order-ready consumed after Kafka came back"
                );
                gaps.push((consumed - cooked) as f64 / 1e9);
            }
            Ok(format!(
                "{} orders completed, {pending} events held in outboxes, gaps cook→consume {gaps:.1?} s",
                orders.len()
            ))
        }
        8 => {
            let order = ran.order("ORDER")?;
            out.completed(order).await?;
            let (old, new) = (ran.var("OLD_PID")?, ran.var("NEW_PID")?);
            ensure!(old != new, "a new process: {old} then {new}");
            let spans = out.spans(order).await?;
            ensure!(traces(&spans).len() == 1, "one trace across the kill");
            let executions = named(&spans, "workflow.execute order-fulfillment");
            let workers: BTreeSet<&str> = executions
                .iter()
                .filter_map(|s| s.attr_str(wf::WORKER_ID))
                .collect();
            // Both lives of the replica work under its stable name (services.sh: PIZZA_INSTANCE_ID,
            // `order-0`), which is how the new process takes back the dead one's lease at once.
            ensure!(
                workers == BTreeSet::from(["order-0"]),
                "every execution under the replica's stable name: {workers:?}"
            );
            ensure!(executions.len() >= 2, "executions before and after the kill");
            let replayed = executions
                .iter()
                .filter_map(|s| s.attr_i64(wf::REPLAYED_STEPS))
                .max()
                .unwrap_or(0);
            ensure!(
                replayed > 0,
                "the new process replayed the steps done before the kill"
            );
            let failed = out
                .attempts(order, "place-kitchen-ticket")
                .await?
                .iter()
                .filter(|(s, _)| s == "failed")
                .count();
            ensure!(failed >= 2, "mid-way: attempts failed before the kill");
            out.each_effect_once(order).await?;
            let timeline: Vec<(i32, String, Option<i16>)> = sqlx::query_as(
                "select seq, event, progress_percent from orders.timeline where order_id = $1 order by seq",
            )
            .bind(order)
            .fetch_all(&out.pool)
            .await?;
            let seqs: Vec<i32> = timeline.iter().map(|(seq, ..)| *seq).collect();
            ensure!(
                seqs == (1..=seqs.len() as i32).collect::<Vec<_>>(),
                "no gap in the timeline: {timeline:?}"
            );
            let entries: BTreeSet<(&str, Option<i16>)> =
                timeline.iter().map(|(_, e, p)| (e.as_str(), *p)).collect();
            ensure!(
                entries.len() == timeline.len(),
                "no entry twice in the timeline: {timeline:?}"
            );
            Ok(format!(
                "completed in one trace, executions by {workers:?}, {replayed} steps replayed"
            ))
        }
        9 => {
            let report = read_json(&Path::new(ran.var("REPORT")?).join("report.json"))?;
            let lost = report["orders"]["lost"].as_array().map(Vec::len);
            ensure!(lost == Some(0), "lost = 0: {:?}", report["orders"]);
            ensure!(report["pass"] == true, "the run passed");
            let accepted = report["orders"]["accepted"].as_u64().unwrap_or(0);
            ensure!(accepted > 0, "orders were placed");
            ensure!(
                ran.stdout.contains("# Load report"),
                "the Markdown report was printed"
            );
            Ok(format!(
                "{accepted} orders, lost 0, trace completeness {}",
                report["traces"]["completeness"]
            ))
        }
        other => bail!("no check written for exercise {other}"),
    }
}

// ---- the test -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exercise_runs_as_written_and_shows_what_it_promises() -> anyhow::Result<()> {
    let all = exercises(&workshop_dir())?;
    let only: Option<BTreeSet<u32>> = std::env::var("PIZZA_WORKSHOP_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let base = port_base();
    for port in base..base + 3 {
        ensure!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is busy. The workshop check starts its own shop on the demo's ports 8080 to \
             8082: stop a running demo first (`make down`, or `deploy/local/services.sh down`)."
        );
    }
    let (database_url, pool) = fresh_database().await?;
    let dir = std::env::temp_dir()
        .join("pizza-workshop-check")
        .join(Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir)?;
    let addr = |i: u16| format!("127.0.0.1:{}", base + i);
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url),
        ("PIZZA_TIME_SCALE", "0.1".into()),
        ("PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", "1000".into()),
        ("PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", "1000".into()),
        ("PIZZA_ORDER_GROUP", "workshop-check-order".into()),
        ("PIZZA_KITCHEN_GROUP", "workshop-check-kitchen".into()),
        ("PIZZA_DELIVERY_GROUP", "workshop-check-delivery".into()),
        ("PIZZA_ORDER_ADDR", addr(0)),
        ("PIZZA_KITCHEN_ADDR", addr(1)),
        ("PIZZA_DELIVERY_ADDR", addr(2)),
        ("PIZZA_KITCHEN_URL", format!("http://{}", addr(1))),
        ("PIZZA_DELIVERY_URL", format!("http://{}", addr(2))),
        ("PIZZA_ADMIN_TOKEN", TOKEN.into()),
        (
            "PIZZA_SERVICES_RUN_DIR",
            dir.join("services").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    eprintln!(
        "workshop check: shop on {} (outputs in {})",
        addr(0),
        dir.display()
    );
    let shop = Shop {
        root: repo_root(),
        env,
        dir,
    };
    let started = Instant::now();
    shop.services(&["up"])?;
    eprintln!(
        "workshop check: shop up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let outcome = Outcome {
        pool,
        jaeger: Jaeger::new(Stack::from_env().jaeger_url),
    };
    let mut results = Vec::new();
    let mut restart = false;
    for exercise in &all {
        if only.as_ref().is_some_and(|o| !o.contains(&exercise.number)) {
            continue;
        }
        let t0 = Instant::now();
        let result = async {
            shop.reset(restart).await?;
            let ran = {
                let _kafka = KafkaBack(&shop);
                run(&shop, exercise).await?
            };
            verify(exercise.number, &ran, &outcome).await
        }
        .await;
        // A failed exercise may leave a setting behind (a topology, a sampler): start clean.
        restart = result.is_err();
        let line = format!(
            "{:>2}. {} ({:.0} s): {}",
            exercise.number,
            exercise.title,
            t0.elapsed().as_secs_f64(),
            match &result {
                Ok(summary) => format!("ok, {summary}"),
                Err(e) => format!("FAILED: {e:#}"),
            }
        );
        eprintln!("{line}");
        results.push((result.is_ok(), line));
    }
    eprintln!(
        "workshop check: {} exercises in {:.0} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    drop(shop);
    let failed: Vec<&str> = results
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, l)| l.as_str())
        .collect();
    ensure!(!results.is_empty(), "no exercise ran (PIZZA_WORKSHOP_ONLY?)");
    ensure!(
        failed.is_empty(),
        "{} exercise(s) failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
    Ok(())
}
