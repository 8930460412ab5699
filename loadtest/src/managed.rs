//! A shop of the load tester's own: the three services as child processes, in a fresh database,
//! with topics, consumer groups and (optionally) a Kafka broker nobody else uses.
//!
//! The tests and the benchmark use it so that a SIGKILLed order service, a stopped broker or a run of
//! 500 orders a second can never disturb another test on the shared native stack. The services are
//! real processes running this checkout's service libraries (`pizza-load serve NAME`, the same
//! 20 lines as each service's `main`), so a kill is a real `kill -9` and each exports its own
//! `service.name` to the real Collector and Jaeger.
//!
//! Simulated time runs at [`ManagedOptions::time_scale`] (an order takes a few seconds), while the
//! order workflow's kitchen and delivery timeouts (100 s at the default scale) and the delivery's
//! pickup attempts are set so far out that a 20 s outage (which lasts about 55 s on a 2-core machine:
//! the broker takes half a minute to come back) delays orders instead of cancelling them: the scenarios test that nothing
//! is lost, not the timeout paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pizza_testkit::broker::PrivateBroker;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::faults::ProcessOp;
use crate::target::Target;

/// The services, in start order (the order service needs the kitchen's URL, not its presence).
pub const SERVICES: &[&str] = &["kitchen", "delivery", "order"];

/// How to start the shop.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    /// The `pizza-load` binary (its `serve` subcommand runs a service).
    pub exe: PathBuf,
    /// PostgreSQL URL of an existing database; a new database is created beside it.
    pub database_url: String,
    /// The shared broker, used when `private_broker` is false.
    pub kafka_bootstrap: String,
    /// Run a broker of our own (needed to stop Kafka without stopping everyone's).
    pub private_broker: bool,
    /// Jaeger's query service (not started here).
    pub jaeger_url: String,
    /// `PIZZA_TIME_SCALE` of the services.
    pub time_scale: f64,
    /// `PIZZA_TRACE_TOPOLOGY`.
    pub topology: String,
    /// `OTEL_SDK_DISABLED=true` for the services.
    pub sdk_disabled: bool,
    /// Kitchen ovens (capacity).
    pub ovens: u32,
    /// Where the services' logs and span statistics go.
    pub log_dir: PathBuf,
}

impl ManagedOptions {
    /// Defaults for `exe`: the native stack, a time scale of 0.1 (an order takes about 5 s, and the
    /// longest timeout the services accept, 1000 s, becomes 100 s), the continuous topology, and
    /// logs under `target/loadtest-logs/<id>` next to the binary.
    pub fn new(exe: PathBuf) -> Self {
        let stack = pizza_testkit::Stack::from_env();
        let log_dir = exe
            .parent()
            .unwrap_or(Path::new("."))
            .join("loadtest-logs")
            .join(Uuid::new_v4().simple().to_string());
        Self {
            exe,
            database_url: stack.database_url,
            kafka_bootstrap: stack.kafka_bootstrap,
            private_broker: false,
            jaeger_url: stack.jaeger_url,
            time_scale: 0.1,
            topology: "continuous".into(),
            sdk_disabled: false,
            ovens: 64,
            log_dir,
        }
    }
}

#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    port: u16,
}

/// The running shop. Dropping it kills what is left of it; [`ManagedStack::shutdown`] stops it
/// gracefully, collects the span statistics and removes the database.
#[derive(Debug)]
pub struct ManagedStack {
    options: ManagedOptions,
    id: String,
    database: String,
    database_url: String,
    admin_url: String,
    broker: Mutex<Option<PrivateBroker>>,
    bootstrap: String,
    topics: BTreeMap<String, String>,
    procs: Mutex<BTreeMap<String, Proc>>,
    admin_token: String,
}

/// Span statistics a service wrote at its graceful exit.
pub type SpanStatsByService = BTreeMap<String, serde_json::Value>;

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ManagedStack {
    /// Creates the database, broker and topics, starts the three services and waits until each
    /// answers `GET /readyz` with 200.
    pub async fn start(options: ManagedOptions) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let database = format!("pizza_load_{id}");
        let admin = sqlx::PgPool::connect(&options.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let mut url = reqwest::Url::parse(&options.database_url)?;
        url.set_path(&format!("/{database}"));
        let (broker, bootstrap) = if options.private_broker {
            let broker = PrivateBroker::start().await?;
            let bootstrap = broker.bootstrap();
            (Some(broker), bootstrap)
        } else {
            (None, options.kafka_bootstrap.clone())
        };
        let topics: BTreeMap<String, String> = pizza_contracts::topics::ALL
            .iter()
            .map(|t| ((*t).to_owned(), format!("{t}.load-{id}")))
            .collect();
        let mut create: Vec<(String, i32)> = Vec::new();
        for real in topics.values() {
            create.push((real.clone(), 2));
            create.push((pizza_contracts::topics::dead_letter(real), 1));
        }
        let create_refs: Vec<(&str, i32)> = create.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        pizza_testkit::kafka::create_topics(&bootstrap, &create_refs).await?;
        std::fs::create_dir_all(&options.log_dir)?;
        let mut procs = BTreeMap::new();
        for name in SERVICES {
            procs.insert(
                (*name).to_owned(),
                Proc {
                    child: None,
                    port: free_port()?,
                },
            );
        }
        let stack = Self {
            admin_url: options.database_url.clone(),
            options,
            database,
            database_url: url.to_string(),
            broker: Mutex::new(broker),
            bootstrap,
            topics,
            procs: Mutex::new(procs),
            admin_token: format!("load-{id}"),
            id,
        };
        for name in SERVICES {
            stack.spawn(name).await?;
        }
        for name in SERVICES {
            stack.wait_ready(name, Duration::from_secs(90)).await?;
        }
        Ok(stack)
    }

    /// The endpoints of this shop.
    pub fn target(&self) -> Target {
        let procs = self
            .procs
            .try_lock()
            .expect("not locked while building the target");
        let url = |n: &str| format!("http://127.0.0.1:{}", procs[n].port);
        Target {
            order_url: url("order"),
            kitchen_url: url("kitchen"),
            delivery_url: url("delivery"),
            admin_token: Some(self.admin_token.clone()),
            database_url: self.database_url.clone(),
            kafka_bootstrap: self.bootstrap.clone(),
            jaeger_url: self.options.jaeger_url.clone(),
            topics: self.topics.clone(),
        }
    }

    /// Where the services' logs are.
    pub fn log_dir(&self) -> &Path {
        &self.options.log_dir
    }

    async fn env(&self, name: &str) -> Vec<(String, String)> {
        let procs = self.procs.lock().await;
        let port = |n: &str| procs[n].port;
        let topic = |t: &str| self.topics[t].clone();
        let mut env = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("PIZZA_KAFKA_BOOTSTRAP", self.bootstrap.clone()),
            ("PIZZA_TIME_SCALE", self.options.time_scale.to_string()),
            ("PIZZA_ADMIN_TOKEN", self.admin_token.clone()),
            ("PIZZA_TRACE_TOPOLOGY", self.options.topology.clone()),
            ("OTEL_SDK_DISABLED", self.options.sdk_disabled.to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "500".into()),
            ("PIZZA_ORDER_ADDR", format!("127.0.0.1:{}", port("order"))),
            ("PIZZA_KITCHEN_ADDR", format!("127.0.0.1:{}", port("kitchen"))),
            ("PIZZA_DELIVERY_ADDR", format!("127.0.0.1:{}", port("delivery"))),
            (
                "PIZZA_KITCHEN_URL",
                format!("http://127.0.0.1:{}", port("kitchen")),
            ),
            (
                "PIZZA_DELIVERY_URL",
                format!("http://127.0.0.1:{}", port("delivery")),
            ),
            ("PIZZA_ORDERS_EVENTS_TOPIC", topic("orders.events")),
            ("PIZZA_KITCHEN_EVENTS_TOPIC", topic("kitchen.events")),
            ("PIZZA_DELIVERY_REQUESTS_TOPIC", topic("delivery.requests")),
            ("PIZZA_DELIVERY_EVENTS_TOPIC", topic("delivery.events")),
            ("PIZZA_ORDER_GROUP", format!("order-load-{}", self.id)),
            ("PIZZA_KITCHEN_GROUP", format!("kitchen-load-{}", self.id)),
            ("PIZZA_DELIVERY_GROUP", format!("delivery-load-{}", self.id)),
            // Outages delay orders; they must not time them out (see the module docs).
            ("PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", "1000".into()),
            ("PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", "1000".into()),
            ("PIZZA_DELIVERY_PICKUP_ATTEMPTS", "100000".into()),
            ("PIZZA_ORDER_FEEDBACK_DELAY_SECONDS", "2".into()),
            ("PIZZA_KITCHEN_OVENS", self.options.ovens.to_string()),
            ("PIZZA_KITCHEN_TICK_MS", "50".into()),
            ("PIZZA_DELIVERY_TICK_MS", "50".into()),
            ("PIZZA_LOG_FORMAT", "text".into()),
            (
                "PIZZA_LOAD_SPAN_STATS",
                self.options
                    .log_dir
                    .join(format!("{name}.spans.json"))
                    .display()
                    .to_string(),
            ),
        ];
        if std::env::var_os("RUST_LOG").is_none() {
            env.push(("RUST_LOG", "warn".into()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    async fn spawn(&self, name: &str) -> anyhow::Result<()> {
        let env = self.env(name).await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.options.log_dir.join(format!("{name}.log")))?;
        let child = Command::new(&self.options.exe)
            .arg("serve")
            .arg(name)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve {name}", self.options.exe.display()))?;
        self.procs
            .lock()
            .await
            .get_mut(name)
            .context("unknown service")?
            .child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let port = self.procs.lock().await[name].port;
        let client = crate::driver::http_client(Duration::from_secs(2));
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(proc) = self.procs.lock().await.get_mut(name)
                && let Some(child) = proc.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{name} exited with {status} before it was ready; see {}",
                    self.options.log_dir.join(format!("{name}.log")).display()
                );
            }
            if started.elapsed() > limit {
                bail!("{name} not ready after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills, stops or starts a service or the private broker.
    pub async fn process(&self, name: &str, op: ProcessOp) -> anyhow::Result<()> {
        match name {
            "kafka" => {
                let mut broker = self.broker.lock().await;
                let broker = broker
                    .as_mut()
                    .context("this shop uses the shared broker; start it with a private broker")?;
                match op {
                    ProcessOp::Kill | ProcessOp::Stop => broker.stop().await?,
                    ProcessOp::Start => broker.up().await?,
                }
                Ok(())
            }
            "order" | "kitchen" | "delivery" => match op {
                ProcessOp::Kill => self.kill(name, true).await,
                ProcessOp::Stop => self.kill(name, false).await,
                ProcessOp::Start => {
                    self.spawn(name).await?;
                    self.wait_ready(name, Duration::from_secs(90)).await
                }
            },
            other => bail!("a managed shop cannot {op:?} {other} (it shares the Collector)"),
        }
    }

    /// SIGKILL (`hard`) or SIGTERM, then waits for the process to end.
    async fn kill(&self, name: &str, hard: bool) -> anyhow::Result<()> {
        let mut procs = self.procs.lock().await;
        let proc = procs.get_mut(name).context("unknown service")?;
        let Some(mut child) = proc.child.take() else {
            bail!("{name} is not running");
        };
        if hard {
            child.start_kill()?;
        } else if let Some(pid) = child.id() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
            if !status.success() {
                bail!("kill -TERM {pid} failed");
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                child.start_kill()?;
                bail!("{name} did not stop within 30 s of SIGTERM; killed")
            }
        }
    }

    /// Stops every service gracefully (so each flushes its spans and writes its span statistics),
    /// reads those statistics, drops the database and stops the private broker.
    pub async fn shutdown(self) -> anyhow::Result<SpanStatsByService> {
        let mut stats = SpanStatsByService::new();
        for name in SERVICES.iter().rev() {
            if self.procs.lock().await[*name].child.is_some() {
                self.kill(name, false).await?;
            }
            let path = self.options.log_dir.join(format!("{name}.spans.json"));
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(value) = serde_json::from_str(&text)
            {
                stats.insert((*name).to_owned(), value);
            }
        }
        if let Some(mut broker) = self.broker.lock().await.take() {
            broker.stop().await?;
        }
        let admin = sqlx::PgPool::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.database
        )))
        .execute(&admin)
        .await?;
        Ok(stats)
    }
}
