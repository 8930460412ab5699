//! The whole shop as real processes: `pizza-kitchen`, `pizza-delivery` and `pizza-order` started
//! from their binaries, each on a free port, on a database and Kafka topics of the shop's own,
//! exporting telemetry to the real Collector.
//!
//! This is the one way a program starts the shop: the end-to-end tests, the order service's
//! browser and fuzz tests, and the load tester's managed platform all use it (people start theirs
//! with `deploy/local/services.sh`, see `docs/decisions.md`). Real processes because in-process
//! services share one tracer provider, one propagator and one set of dropped edges: they cannot show
//! what a trace looks like when three processes with three SDKs hand it to each other, and they
//! cannot be killed. A shop gets:
//!
//! - [`Shop::open`]: creates the topics (and their `.dlq`), a fresh database or a private broker if
//!   asked, starts kitchen, delivery and order in that order (each one's peers listen before it
//!   starts) and waits until each answers `GET /readyz`;
//! - [`Shop::url`]: where a service listens; [`Shop::set_faults`] changes its fault plan at run
//!   time ([`Options::faults`] sets the one it starts with);
//! - [`Shop::kill_hard`]: `SIGKILL`, no clean-up, no telemetry flush: a crash;
//! - [`Shop::start`]: starts a stopped or killed service again, with the same environment and port;
//! - [`Shop::stop_broker`] and [`Shop::start_broker`]: a Kafka outage, on a private broker;
//! - [`Shop::terminate`] (one service), [`Shop::stop_all`] and [`Shop::stop`]: `SIGTERM` and a
//!   bounded wait (then `SIGKILL`, and an error): a graceful stop that flushes telemetry, after which
//!   [`Shop::span_stats`] reads each service's span counters;
//! - [`Shop::log`]: what a process wrote on stdout and stderr, kept in a directory printed on
//!   failure.
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
//! The binaries next to the running program (`target/<profile>/`), built by `cargo build -p
//! pizza-kitchen -p pizza-delivery -p pizza-order` in its profile on first use in the process, so a
//! test never runs a stale kitchen after `cargo test -p pizza-order` rebuilt only the order service.
//! The build is a no-op when they are fresh (what `cargo test --workspace` leaves behind).
//! `PIZZA_SHOP_BIN_DIR` names another directory instead (for example release binaries for a load
//! test); then nothing is built, and a missing binary is an error naming the command to run.
//!
//! # Environment
//! Each process gets only what this harness sets (plus `PATH` and `HOME`), so a variable of the test
//! runner's (`OTEL_SDK_DISABLED`, `RUST_LOG`, ...) cannot change what is tested. The settings are the
//! variables of the services' `Config` (telemetry's, `pizza_telemetry::TelemetryArgs`, among them);
//! see [`Options`]. Each
//! service writes its span counters to `<log dir>/<service>.spans.json` when it stops gracefully
//! (`PIZZA_SPAN_STATS_FILE`).
//!
//! # Layout
//! - [`options`]: [`Options`], [`Service`], [`Topics`], [`database_url_of`].
//! - `binaries`: finding and building the service binaries.

mod binaries;
pub mod options;

use crate::ports::free_port;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::PgPool;

pub use options::{Options, Service, Topics, database_url_of, database_url_on};

use crate::broker::PrivateBroker;
use crate::kafka;

/// The admin token of every service of a shop (`Authorization: Bearer ...` on `/admin/faults`).
pub const ADMIN_TOKEN: &str = "shop-e2e-token";

/// How long a process may take to answer `/readyz` after it started.
const READY_LIMIT: Duration = Duration::from_secs(90);
/// How long a process may take to exit after `SIGTERM` before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// One service process: what it needs to be started (again), and the child while it runs.
#[derive(Debug)]
struct Process {
    binary: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    span_stats: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// A database the shop created ([`Options::fresh_database`]) and drops when it stops.
#[derive(Debug)]
struct FreshDatabase {
    server_url: String,
    name: String,
}

/// Three service processes; see the module docs.
#[derive(Debug)]
pub struct Shop {
    /// The topics of this shop.
    pub topics: Topics,
    database_url: String,
    fresh_database: Option<FreshDatabase>,
    kafka_bootstrap: String,
    broker: Option<PrivateBroker>,
    log_dir: PathBuf,
    own_log_dir: bool,
    processes: BTreeMap<Service, Process>,
    http: reqwest::Client,
    stopped_cleanly: bool,
}

impl Shop {
    /// Creates what the options ask for (database, broker, topics), starts kitchen, delivery and
    /// order, and waits until each is ready.
    pub async fn open(options: Options) -> anyhow::Result<Self> {
        let bin_dir = tokio::task::spawn_blocking(binaries::binaries)
            .await?
            .map_err(anyhow::Error::msg)?;
        let (log_dir, own_log_dir) = match &options.log_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir()
                    .join("pizza-shop")
                    .join(uuid::Uuid::new_v4().simple().to_string()),
                true,
            ),
        };
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        // Test output is shown only when a test fails: that is when this line is read.
        eprintln!("shop: service logs in {}", log_dir.display());

        let fresh_database = if options.fresh_database {
            Some(FreshDatabase::create(&options.database_url).await?)
        } else {
            None
        };
        let database_url = match &fresh_database {
            Some(db) => options::with_database(&db.server_url, &db.name)?,
            None => options.database_url.clone(),
        };
        let broker = if options.private_broker {
            Some(PrivateBroker::start().await?)
        } else {
            None
        };
        let kafka_bootstrap = broker
            .as_ref()
            .map_or_else(|| options.kafka_bootstrap.clone(), PrivateBroker::bootstrap);
        let topics = options.topics.clone();
        let mut all: Vec<(String, i32)> = Vec::new();
        for topic in topics.all() {
            all.push((topic.to_owned(), options.partitions));
            all.push((format!("{topic}.dlq"), 1));
        }
        let specs: Vec<(&str, i32)> = all.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        kafka::create_topics(&kafka_bootstrap, &specs).await?;

        let ports: BTreeMap<Service, u16> = Service::ALL
            .iter()
            .map(|s| Ok((*s, free_port()?)))
            .collect::<std::io::Result<_>>()?;
        let url = |s: Service| format!("http://127.0.0.1:{}", ports[&s]);
        let group = uuid::Uuid::new_v4().simple().to_string();
        let mut processes = BTreeMap::new();
        for service in Service::ALL {
            let span_stats = log_dir.join(format!("{service}.spans.json"));
            let mut env: Vec<(String, String)> = vec![
                ("DATABASE_URL".into(), database_url.clone()),
                ("PIZZA_KAFKA_BOOTSTRAP".into(), kafka_bootstrap.clone()),
                ("PIZZA_TIME_SCALE".into(), options.time_scale.to_string()),
                ("PIZZA_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                // One replica per service, restarted under the same name: a killed one resumes at
                // once (its groups are the shop's own, so the name meets no other shop's).
                ("PIZZA_INSTANCE_ID".into(), format!("{service}-0")),
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
                ("OTEL_SDK_DISABLED".into(), options.sdk_disabled.to_string()),
                ("PIZZA_TRACE_TOPOLOGY".into(), options.topology.as_str().into()),
                // Spans, logs and metrics leave the process quickly, so Jaeger has them soon after
                // the order ends (SDK defaults: 5 s, 1 s, 60 s).
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_BLRP_SCHEDULE_DELAY".into(), "200".into()),
                ("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into()),
                ("PIZZA_LOG_FORMAT".into(), "json".into()),
                ("PIZZA_SPAN_STATS_FILE".into(), span_stats.display().to_string()),
                ("RUST_LOG".into(), "info".into()),
                ("RUST_BACKTRACE".into(), "1".into()),
            ];
            let specific: Vec<(&str, String)> = match service {
                Service::Kitchen => vec![
                    ("PIZZA_KITCHEN_GROUP", format!("kitchen-shop-{group}")),
                    ("PIZZA_KITCHEN_COOK_SECONDS", "8".into()),
                    ("PIZZA_KITCHEN_OVENS", "4".into()),
                ],
                Service::Delivery => vec![
                    ("PIZZA_DELIVERY_GROUP", format!("delivery-shop-{group}")),
                    ("PIZZA_KITCHEN_URL", url(Service::Kitchen)),
                    ("PIZZA_DELIVERY_LEG_SECONDS", "3".into()),
                    ("PIZZA_DELIVERY_UPDATES", "3".into()),
                    ("PIZZA_DELIVERY_PICKUP_RETRY_SECONDS", "2".into()),
                    ("PIZZA_DELIVERY_PICKUP_ATTEMPTS", "1000".into()),
                ],
                Service::Order => vec![
                    ("PIZZA_ORDER_GROUP", format!("order-shop-{group}")),
                    ("PIZZA_KITCHEN_URL", url(Service::Kitchen)),
                    ("PIZZA_DELIVERY_URL", url(Service::Delivery)),
                    ("PIZZA_JAEGER_UI_URL", options.jaeger_url.clone()),
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
            processes.insert(
                service,
                Process {
                    binary: bin_dir.join(service.binary()),
                    env,
                    port: ports[&service],
                    log: log_dir.join(format!("{service}.log")),
                    span_stats,
                    child: None,
                    starts: 0,
                },
            );
        }
        let mut shop = Self {
            topics,
            database_url,
            fresh_database,
            kafka_bootstrap,
            broker,
            log_dir,
            own_log_dir,
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

    /// The database the services use.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The Kafka bootstrap servers the services use (the private broker's, if there is one).
    pub fn kafka_bootstrap(&self) -> &str {
        &self.kafka_bootstrap
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

    /// The span counters each service wrote when it last stopped gracefully (`ended`, `exported`,
    /// `queue_full`, `export_failed`); a service killed or never stopped has none.
    pub fn span_stats(&self) -> BTreeMap<Service, serde_json::Value> {
        self.processes
            .iter()
            .filter_map(|(service, process)| {
                let text = std::fs::read_to_string(&process.span_stats).ok()?;
                Some((*service, serde_json::from_str(&text).ok()?))
            })
            .collect()
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

    /// Stops `service` with `SIGTERM` (it finishes in-flight work, flushes its telemetry and writes
    /// its span counters) and waits for it to exit, at most 30 s; past that it is killed and this is
    /// an error.
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

    /// Stops the private broker (SIGTERM, keeping its data): a Kafka outage for this shop alone.
    pub async fn stop_broker(&mut self) -> anyhow::Result<()> {
        self.private_broker()?.stop().await?;
        Ok(())
    }

    /// Starts the private broker again after [`Self::stop_broker`], on the same port and data.
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        self.private_broker()?.up().await?;
        Ok(())
    }

    fn private_broker(&mut self) -> anyhow::Result<&mut PrivateBroker> {
        self.broker
            .as_mut()
            .context("this shop uses the shared broker; open it with `private_broker` set")
    }

    /// Stops every running service gracefully (order, delivery, kitchen), failing if one does not
    /// exit in time or exits with an error. The shop stays, so its logs and span counters can still
    /// be read; a log directory of the shop's own is removed when it is dropped (unless
    /// `PIZZA_SHOP_KEEP_LOGS` is set), and kept, its place printed, when a test fails before this
    /// succeeded.
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

    /// [`Self::stop_all`], then stops the private broker and drops the shop's own database, if it
    /// has them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all().await?;
        if let Some(mut broker) = self.broker.take() {
            broker.stop().await?;
        }
        if let Some(database) = self.fresh_database.take() {
            database.drop_it().await?;
        }
        Ok(())
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
        if !self.own_log_dir {
            return;
        }
        let keep = std::env::var_os("PIZZA_SHOP_KEEP_LOGS").is_some();
        if self.stopped_cleanly && !keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        } else {
            eprintln!("shop: the services' logs are in {}", self.log_dir.display());
        }
    }
}

impl FreshDatabase {
    /// Creates `pizza_shop_<id>` on the server of `url`.
    async fn create(url: &str) -> anyhow::Result<Self> {
        let name = format!("pizza_shop_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = PgPool::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(Self {
            server_url: url.to_owned(),
            name,
        })
    }

    /// Drops it, whoever is still connected.
    async fn drop_it(self) -> anyhow::Result<()> {
        let admin = PgPool::connect(&self.server_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.name
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// The last `lines` lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
