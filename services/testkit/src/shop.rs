//! The whole shop as real processes: `pizza-kitchen`, `pizza-delivery` and `pizza-order` started
//! from their binaries, each on a free port, on the test's own database and Kafka topics, exporting
//! telemetry to the real Collector.
//!
//! In-process services (see [`crate::app`]) share one tracer provider, one propagator and one set of
//! dropped edges: they cannot show what a trace looks like when three processes with three SDKs hand
//! it to each other, and they cannot be killed. This harness can do both. A test gets:
//!
//! - [`Shop::open`]: creates the topics (and their `.dlq`), starts kitchen, delivery and order in that
//!   order (each one's peers listen before it starts) and waits until each answers `GET /readyz`;
//! - [`Shop::url`]: where a service listens; [`Shop::set_faults`] changes its fault plan at run
//!   time ([`Options::faults`] sets the one it starts with);
//! - [`Shop::kill_hard`]: `SIGKILL`, no clean-up, no telemetry flush: a crash;
//! - [`Shop::start`]: starts a stopped or killed service again, with the same environment and port;
//! - [`Shop::terminate`] (one service), [`Shop::stop_all`] and [`Shop::stop`]: `SIGTERM` and a
//!   bounded wait (then `SIGKILL`, and an error): a graceful stop that flushes telemetry;
//! - [`Shop::log`]: what a process wrote on stdout and stderr (JSON log lines), kept in a directory
//!   printed on failure.
//!
//! Dropping a shop kills whatever still runs, so a failing test leaves no process behind.
//!
//! ```no_run
//! # async fn example(pool: sqlx::PgPool) -> anyhow::Result<()> {
//! use pizza_testkit::shop::{Options, Service, Shop, database_url_of};
//!
//! let options = Options::new(database_url_of(&pool)?)
//!     .faults(Service::Kitchen, serde_json::json!({"http_error_rate": 0.5, "seed": 7}));
//! let mut shop = Shop::open(options).await?;
//! let orders = format!("{}/orders", shop.url(Service::Order));
//! // ... place orders, then crash the order service and bring it back:
//! shop.kill_hard(Service::Order).await?;
//! shop.start(Service::Order).await?;
//! shop.stop().await
//! # }
//! ```
//!
//! # Which binaries
//! The binaries next to the running test (`target/<profile>/`), built by `cargo build -p
//! pizza-kitchen -p pizza-delivery -p pizza-order` in the test's profile on first use in the process,
//! so a test never runs a stale kitchen after `cargo test -p pizza-order` rebuilt only the order
//! service. The build is a no-op when they are fresh (what `cargo test --workspace` leaves behind).
//! `PIZZA_SHOP_BIN_DIR` names another directory instead (for example release binaries for a load
//! test); then nothing is built, and a missing binary is an error naming the command to run.
//!
//! # Environment
//! Each process gets only what this harness sets (plus `PATH` and `HOME`), so a variable of the test
//! runner's (`OTEL_SDK_DISABLED`, `RUST_LOG`, ...) cannot change what is tested. The settings are the
//! variables of the services' `Config` and of `pizza_telemetry::TelemetryConfig`; see [`Options`].

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pizza_telemetry::Topology;
use sqlx::PgPool;

use crate::{Stack, kafka};

/// The admin token of every service of a shop (`Authorization: Bearer ...` on `/admin/faults`).
pub const ADMIN_TOKEN: &str = "shop-e2e-token";

/// How long a process may take to answer `/readyz` after it started.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after `SIGTERM` before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// How long building the binaries may take (a clean build of three binaries on two cores).
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `pizza-kitchen`: tickets and ovens.
    Kitchen,
    /// `pizza-delivery`: deliveries and drivers.
    Delivery,
    /// `pizza-order`: the API, the workflow, the consumers.
    Order,
}

impl Service {
    /// In start order: each one's peers first.
    pub const ALL: [Service; 3] = [Service::Kitchen, Service::Delivery, Service::Order];

    /// The name (`kitchen`), which is also its `service.name` in traces.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kitchen => "kitchen",
            Service::Delivery => "delivery",
            Service::Order => "order",
        }
    }

    /// The binary's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Kitchen => "pizza-kitchen",
            Service::Delivery => "pizza-delivery",
            Service::Order => "pizza-order",
        }
    }

    /// The variable its listen address is read from.
    fn addr_var(self) -> &'static str {
        match self {
            Service::Kitchen => "PIZZA_KITCHEN_ADDR",
            Service::Delivery => "PIZZA_DELIVERY_ADDR",
            Service::Order => "PIZZA_ORDER_ADDR",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to run the shop. [`Options::new`] gives test settings: time scaled down to 5%, waits on the
/// kitchen and the driver stretched far beyond a scaled cook or drive (so a slow machine delays an
/// order but never times it out), a 3 s workflow lease (a killed order service's runs are taken over
/// quickly), spans exported every 200 ms and metrics every second.
#[derive(Debug, Clone)]
pub struct Options {
    /// The database all three use, each in its own schemas (see [`database_url_of`]).
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_bootstrap: String,
    /// The topics, named uniquely by [`Options::new`] and created by [`Shop::open`]; known before
    /// the shop starts, so a fault plan can name one (`"drop_trace_context": ["kafka:<topic>"]`).
    pub topics: Topics,
    /// `PIZZA_TRACE_TOPOLOGY`.
    pub topology: Topology,
    /// `PIZZA_TIME_SCALE`.
    pub time_scale: f64,
    /// `PIZZA_WORKFLOW_LEASE_SECONDS` of the order service.
    pub lease_seconds: f64,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
    pub otlp_protocol: String,
    /// `PIZZA_FAULTS` per service: the fault plan each starts with (JSON, see
    /// `pizza_servicekit::FaultPlan`).
    pub faults: BTreeMap<Service, serde_json::Value>,
    /// More variables per service; they override the harness's own.
    pub env: BTreeMap<Service, Vec<(String, String)>>,
}

impl Options {
    /// Test settings (see the type's docs) on `database_url`, with the stack's Kafka and Collector.
    pub fn new(database_url: impl Into<String>) -> Self {
        let stack = Stack::from_env();
        Self {
            database_url: database_url.into(),
            kafka_bootstrap: stack.kafka_bootstrap,
            topics: Topics::unique(),
            topology: Topology::Continuous,
            time_scale: 0.05,
            lease_seconds: 3.0,
            otlp_endpoint: stack.otlp_grpc_endpoint,
            otlp_protocol: "grpc".to_owned(),
            faults: BTreeMap::new(),
            env: BTreeMap::new(),
        }
    }

    /// With this trace topology.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// With `service` starting under this fault plan.
    pub fn faults(mut self, service: Service, plan: serde_json::Value) -> Self {
        self.faults.insert(service, plan);
        self
    }

    /// With one more variable for `service`.
    pub fn env(mut self, service: Service, name: &str, value: impl Into<String>) -> Self {
        self.env
            .entry(service)
            .or_default()
            .push((name.to_owned(), value.into()));
        self
    }
}

/// The URL of the database behind `pool` (for example the fresh one of a `#[sqlx::test]`): the
/// stack's `DATABASE_URL` with its database name replaced.
pub fn database_url_of(pool: &PgPool) -> anyhow::Result<String> {
    let base = Stack::from_env().database_url;
    let name = pool
        .connect_options()
        .get_database()
        .context("the pool names no database")?
        .to_owned();
    let (server, _) = base
        .rsplit_once('/')
        .context("DATABASE_URL has no database path")?;
    Ok(format!("{server}/{name}"))
}

/// The Kafka topics of one shop, each created with its dead-letter topic.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The kitchen publishes here (`PIZZA_KITCHEN_EVENTS_TOPIC`).
    pub kitchen_events: String,
    /// The order service's own events (`PIZZA_ORDERS_EVENTS_TOPIC`).
    pub orders_events: String,
    /// Delivery commands (`PIZZA_DELIVERY_REQUESTS_TOPIC`).
    pub delivery_requests: String,
    /// The delivery service publishes here (`PIZZA_DELIVERY_EVENTS_TOPIC`).
    pub delivery_events: String,
}

impl Topics {
    /// Four names no other test uses (`kitchen.events.<uuid>`, ...).
    pub fn unique() -> Self {
        Self {
            kitchen_events: kafka::unique_topic("kitchen.events"),
            orders_events: kafka::unique_topic("orders.events"),
            delivery_requests: kafka::unique_topic("delivery.requests"),
            delivery_events: kafka::unique_topic("delivery.events"),
        }
    }

    /// The four topics.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.kitchen_events,
            &self.orders_events,
            &self.delivery_requests,
            &self.delivery_events,
        ]
    }
}

/// One service process: what it needs to be started (again), and the child while it runs.
#[derive(Debug)]
struct Process {
    binary: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// Three service processes; see the module docs.
#[derive(Debug)]
pub struct Shop {
    /// The topics of this shop.
    pub topics: Topics,
    log_dir: PathBuf,
    processes: BTreeMap<Service, Process>,
    http: reqwest::Client,
    stopped_cleanly: bool,
}

impl Shop {
    /// Creates the topics, starts kitchen, delivery and order, and waits until each is ready.
    pub async fn open(options: Options) -> anyhow::Result<Self> {
        let bin_dir = tokio::task::spawn_blocking(binaries)
            .await?
            .map_err(anyhow::Error::msg)?;
        let topics = options.topics.clone();
        let mut all: Vec<String> = Vec::new();
        for topic in topics.all() {
            all.push(topic.to_owned());
            all.push(format!("{topic}.dlq"));
        }
        let specs: Vec<(&str, i32)> = all.iter().map(|t| (t.as_str(), 1)).collect();
        kafka::create_topics(&options.kafka_bootstrap, &specs).await?;

        let log_dir = std::env::temp_dir()
            .join("pizza-shop")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        // Test output is shown only when a test fails: that is when this line is read.
        eprintln!("shop: service logs in {}", log_dir.display());

        let ports: BTreeMap<Service, u16> = Service::ALL
            .iter()
            .map(|s| Ok((*s, free_port()?)))
            .collect::<std::io::Result<_>>()?;
        let url = |s: Service| format!("http://127.0.0.1:{}", ports[&s]);
        let stack = Stack::from_env();
        let group = uuid::Uuid::new_v4().simple().to_string();
        let mut processes = BTreeMap::new();
        for service in Service::ALL {
            let mut env: Vec<(String, String)> = vec![
                ("DATABASE_URL".into(), options.database_url.clone()),
                ("PIZZA_KAFKA_BOOTSTRAP".into(), options.kafka_bootstrap.clone()),
                ("PIZZA_TIME_SCALE".into(), options.time_scale.to_string()),
                ("PIZZA_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                (
                    service.addr_var().into(),
                    format!("127.0.0.1:{}", ports[&service]),
                ),
                ("PIZZA_KITCHEN_EVENTS_TOPIC".into(), topics.kitchen_events.clone()),
                ("PIZZA_ORDERS_EVENTS_TOPIC".into(), topics.orders_events.clone()),
                (
                    "PIZZA_DELIVERY_REQUESTS_TOPIC".into(),
                    topics.delivery_requests.clone(),
                ),
                (
                    "PIZZA_DELIVERY_EVENTS_TOPIC".into(),
                    topics.delivery_events.clone(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    options.otlp_endpoint.clone(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                    options.otlp_protocol.clone(),
                ),
                ("PIZZA_TRACE_TOPOLOGY".into(), options.topology.as_str().into()),
                // Spans, logs and metrics leave the process quickly, so Jaeger has them soon after
                // the order ends (SDK defaults: 5 s, 1 s, 60 s).
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_BLRP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into()),
                ("PIZZA_LOG_FORMAT".into(), "json".into()),
                ("RUST_LOG".into(), "info".into()),
                ("RUST_BACKTRACE".into(), "1".into()),
            ];
            let specific: Vec<(&str, String)> = match service {
                Service::Kitchen => vec![
                    ("PIZZA_KITCHEN_GROUP", format!("kitchen-shop-{group}")),
                    ("PIZZA_KITCHEN_COOK_SECONDS", "8".into()),
                    ("PIZZA_KITCHEN_OVENS", "4".into()),
                    ("PIZZA_KITCHEN_TICK_MS", "25".into()),
                ],
                Service::Delivery => vec![
                    ("PIZZA_DELIVERY_GROUP", format!("delivery-shop-{group}")),
                    ("PIZZA_KITCHEN_URL", url(Service::Kitchen)),
                    ("PIZZA_DELIVERY_LEG_SECONDS", "3".into()),
                    ("PIZZA_DELIVERY_UPDATES", "3".into()),
                    ("PIZZA_DELIVERY_PICKUP_RETRY_SECONDS", "2".into()),
                    ("PIZZA_DELIVERY_PICKUP_ATTEMPTS", "1000".into()),
                    ("PIZZA_DELIVERY_TICK_MS", "25".into()),
                ],
                Service::Order => vec![
                    ("PIZZA_ORDER_GROUP", format!("order-shop-{group}")),
                    ("PIZZA_KITCHEN_URL", url(Service::Kitchen)),
                    ("PIZZA_DELIVERY_URL", url(Service::Delivery)),
                    ("PIZZA_JAEGER_UI_URL", stack.jaeger_url.clone()),
                    ("PIZZA_WORKFLOW_CONCURRENCY", "4".into()),
                    ("PIZZA_WORKFLOW_LEASE_SECONDS", options.lease_seconds.to_string()),
                    // 600 s x 0.05 = 30 s: far beyond a scaled cook or drive.
                    ("PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", "600".into()),
                    ("PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", "600".into()),
                ],
            };
            env.extend(specific.into_iter().map(|(k, v)| (k.to_owned(), v)));
            if let Some(plan) = options.faults.get(&service) {
                env.push(("PIZZA_FAULTS".into(), plan.to_string()));
            }
            for (name, value) in options.env.get(&service).into_iter().flatten() {
                env.retain(|(k, _)| k != name);
                env.push((name.clone(), value.clone()));
            }
            let binary = bin_dir.join(service.binary());
            processes.insert(
                service,
                Process {
                    binary,
                    env,
                    port: ports[&service],
                    log: log_dir.join(format!("{service}.log")),
                    child: None,
                    starts: 0,
                },
            );
        }
        let mut shop = Self {
            topics,
            log_dir,
            processes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            stopped_cleanly: false,
        };
        for service in Service::ALL {
            shop.start(service).await?;
        }
        Ok(shop)
    }

    /// `http://127.0.0.1:<port>` of `service` (the same across restarts).
    pub fn url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.processes[&service].port)
    }

    /// The process id of `service`, if it runs.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.processes[&service].child.as_ref().map(Child::id)
    }

    /// The variables `service` is started with (to start the same service by other means).
    pub fn env_of(&self, service: Service) -> &[(String, String)] {
        &self.processes[&service].env
    }

    /// The directory holding the services' logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The file `service` writes its stdout and stderr to, across restarts.
    pub fn log_path(&self, service: Service) -> &Path {
        &self.processes[&service].log
    }

    /// What `service` wrote so far, every run of it.
    pub fn log(&self, service: Service) -> anyhow::Result<String> {
        let path = self.log_path(service);
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    /// Replaces the fault plan of `service` through its admin API (`PUT /admin/faults`); `{}`
    /// clears it.
    pub async fn set_faults(&self, service: Service, plan: &serde_json::Value) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/admin/faults", self.url(service)))
            .bearer_auth(ADMIN_TOKEN)
            .json(plan)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "PUT {service} /admin/faults answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Starts `service` (first start, or again after [`Self::kill_hard`] or [`Self::terminate`]) with
    /// its environment and port, and waits until it answers `GET /readyz` with 200.
    pub async fn start(&mut self, service: Service) -> anyhow::Result<()> {
        let process = self.processes.get_mut(&service).context("unknown service")?;
        if let Some(child) = process.child.as_mut()
            && child.try_wait()?.is_none()
        {
            bail!("{service} runs already (pid {})", child.id());
        }
        process.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .with_context(|| format!("opening {}", process.log.display()))?;
        writeln!(log, "=== shop: start #{} of {service} ===", process.starts)?;
        let mut command = Command::new(&process.binary);
        command.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        command
            .envs(process.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", process.binary.display()))?;
        process.child = Some(child);
        self.wait_ready(service).await
    }

    async fn wait_ready(&mut self, service: Service) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.url(service));
        let started = Instant::now();
        loop {
            let process = self.processes.get_mut(&service).context("unknown service")?;
            let child = process.child.as_mut().context("not started")?;
            if let Some(status) = child.try_wait()? {
                process.child = None;
                bail!(
                    "{service} exited before it was ready ({status}); its log ({}) ends:\n{}",
                    process.log.display(),
                    tail(&process.log, 30)
                );
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > READY_LIMIT {
                let log = self.processes[&service].log.clone();
                bail!(
                    "{service} did not answer {url} with 200 within {READY_LIMIT:?}; its log ({}) ends:\n{}",
                    log.display(),
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills `service` with `SIGKILL`: no shutdown, no telemetry flush, like a crash or an OOM kill.
    /// Returns how it ended (killed by signal 9).
    ///
    /// Restarted at once, the service's Kafka consumer rejoins its group, but the broker assigns it
    /// the partitions only once the killed member's session has timed out (librdkafka's default
    /// `session.timeout.ms`, 45 s): records wait that long. The order service's workflow leases
    /// (`PIZZA_WORKFLOW_LEASE_SECONDS`, 3 s here) expire much sooner.
    pub async fn kill_hard(&mut self, service: Service) -> anyhow::Result<ExitStatus> {
        let process = self.processes.get_mut(&service).context("unknown service")?;
        let mut child = process
            .child
            .take()
            .with_context(|| format!("{service} is not running"))?;
        child.kill().with_context(|| format!("killing {service}"))?;
        Ok(tokio::task::spawn_blocking(move || child.wait()).await??)
    }

    /// Stops `service` with `SIGTERM` (it finishes in-flight work and flushes its telemetry) and
    /// waits for it to exit, at most 20 s; past that it is killed and this is an error.
    pub async fn terminate(&mut self, service: Service) -> anyhow::Result<ExitStatus> {
        let process = self.processes.get_mut(&service).context("unknown service")?;
        let mut child = process
            .child
            .take()
            .with_context(|| format!("{service} is not running"))?;
        if child.try_wait()?.is_none() {
            // std only sends SIGKILL; `kill` sends the polite one (and this crate forbids `unsafe`).
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .context("running kill -TERM")?;
            anyhow::ensure!(status.success(), "kill -TERM {} failed: {status}", child.id());
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > STOP_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{service} did not exit within {STOP_LIMIT:?} of SIGTERM; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every running service gracefully (order, delivery, kitchen), failing if one does not
    /// exit in time or exits with an error. The shop stays, so its logs can still be read; the logs
    /// are removed when it is dropped (unless `PIZZA_SHOP_KEEP_LOGS` is set), and kept, their place
    /// printed, when a test fails before this succeeded.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for service in Service::ALL.into_iter().rev() {
            if self.processes[&service].child.is_none() {
                continue;
            }
            match self.terminate(service).await {
                Ok(status) if status.success() => {}
                Ok(status) => failures.push(format!(
                    "{service} exited with {status}; its log ends:\n{}",
                    tail(&self.processes[&service].log, 20)
                )),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if !failures.is_empty() {
            bail!("stopping the shop: {}", failures.join("\n"));
        }
        self.stopped_cleanly = true;
        Ok(())
    }

    /// [`Self::stop_all`], then drops the shop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all().await
    }
}

impl Drop for Shop {
    /// Kills what still runs. Keeps the logs (and says where) unless [`Shop::stop_all`] succeeded.
    fn drop(&mut self) {
        for process in self.processes.values_mut() {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let keep = std::env::var_os("PIZZA_SHOP_KEEP_LOGS").is_some();
        if self.stopped_cleanly && !keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        } else {
            eprintln!("shop: the services' logs are in {}", self.log_dir.display());
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    // Free when we look; the service binds it moments later. Good enough on a test machine.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `lines` lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The directory holding the three binaries, built once per test process (see the module docs).
fn binaries() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PIZZA_SHOP_BIN_DIR").map(PathBuf::from) {
            return check(
                &dir,
                "PIZZA_SHOP_BIN_DIR names a directory without it; build it there",
            );
        }
        let exe = std::env::current_exe().map_err(|e| format!("the test's own path: {e}"))?;
        // target/<profile>/deps/<test binary>, or target/<profile>/<binary> for a binary.
        let mut dir = exe
            .parent()
            .ok_or("the test binary has no directory")?
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no profile directory above the test binary")?
            .to_owned();
        let target = dir.parent().ok_or("no target directory")?.to_path_buf();
        let mut args = vec![
            "build",
            "--locked",
            "-p",
            "pizza-kitchen",
            "-p",
            "pizza-delivery",
            "-p",
            "pizza-order",
            "--bins",
        ];
        match profile.as_str() {
            "debug" => {}
            "release" => args.push("--release"),
            other => args.extend(["--profile", other]),
        }
        let shown = format!("cargo {} (CARGO_TARGET_DIR={})", args.join(" "), target.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut child = Command::new(cargo)
            .args(&args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(Stack::repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {shown}: {e}"))?;
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
            text
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < BUILD_LIMIT => std::thread::sleep(Duration::from_millis(200)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown} did not finish within {BUILD_LIMIT:?}"));
                }
                Err(e) => return Err(format!("waiting for {shown}: {e}")),
            }
        };
        let output = reader.join().unwrap_or_default();
        if !status.success() {
            return Err(format!("{shown} failed ({status}):\n{output}"));
        }
        eprintln!("shop: {shown} took {:?}", started.elapsed());
        check(&dir, &format!("run {shown}"))
    })
    .clone()
}

/// `dir` if it holds the three binaries, else an error saying which is missing and what to do.
fn check(dir: &Path, hint: &str) -> Result<PathBuf, String> {
    for service in Service::ALL {
        let path = dir.join(service.binary());
        if !path.is_file() {
            return Err(format!("{} is missing: {hint}", path.display()));
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_add_faults_and_variables_per_service() {
        let options = Options::new("postgres://x/db")
            .topology(Topology::Linked)
            .faults(Service::Kitchen, serde_json::json!({"http_error_rate": 1.0}))
            .env(Service::Order, "PIZZA_WORKFLOW_CONCURRENCY", "1");
        assert_eq!(options.topology, Topology::Linked);
        assert_eq!(options.faults[&Service::Kitchen]["http_error_rate"], 1.0);
        assert_eq!(
            options.env[&Service::Order],
            [("PIZZA_WORKFLOW_CONCURRENCY".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            Service::ALL.map(Service::binary),
            ["pizza-kitchen", "pizza-delivery", "pizza-order"]
        );
    }

    #[test]
    fn a_directory_without_the_binaries_is_refused_with_the_file_named() {
        let err = check(Path::new("/nonexistent"), "build them").unwrap_err();
        assert!(
            err.contains("/nonexistent/pizza-kitchen is missing: build them"),
            "{err}"
        );
    }
}
