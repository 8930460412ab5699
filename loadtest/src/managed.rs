//! A shop of the load tester's own: the three services as child processes, in a fresh database,
//! with topics, consumer groups and (optionally) a Kafka broker nobody else uses.
//!
//! The tests and the benchmark use it so that a SIGKILLed order service, a stopped broker or a run of
//! 500 orders a second can never disturb another test on the shared native stack. It is the shop
//! every program starts, `pizza_testkit::shop::Shop`, with the load tester's settings: the services
//! are this checkout's binaries (built on first use), so a kill is a real `kill -9` and each exports
//! its own `service.name` to the real Collector and Jaeger.
//!
//! Simulated time runs at [`ManagedOptions::time_scale`] (an order takes a few seconds), while the
//! order workflow's kitchen and delivery timeouts (200 s at the default scale) and the delivery's
//! pickup attempts are set so far out that a 20 s outage delays orders instead of cancelling them:
//! the scenarios test that nothing is lost, not the timeout paths. Scaling shortens the workflow's
//! timers but not an outage: a 20 s broker outage lasts about 55 s on an idle 2-core machine (the
//! broker takes half a minute to come back) and has kept orders waiting over 100 s on one busy
//! building images, which cancelled them at the 100 s these timeouts were before. That is a
//! machine's speed, which a test must not assert; how long the recovery takes is in every report's
//! latency columns instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pizza_telemetry::Topology;
use pizza_testkit::shop::{ADMIN_TOKEN, Options, Service, Shop};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::faults::ProcessOp;
use crate::target::Target;

/// How to start the shop.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
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
    pub topology: Topology,
    /// `OTEL_SDK_DISABLED=true` for the services.
    pub sdk_disabled: bool,
    /// Kitchen ovens (capacity).
    pub ovens: u32,
    /// Where the services' logs and span statistics go.
    pub log_dir: PathBuf,
    /// More environment for the services, applied last (a private Collector's endpoint, a sampler).
    pub env: Vec<(String, String)>,
}

impl ManagedOptions {
    /// Defaults: the native stack, a time scale of 0.1 (an order takes about 5 s, and the workflow's
    /// 2000 s timeouts become 200 s), the continuous topology, and logs under
    /// `target/<profile>/loadtest-logs/<id>`.
    pub fn new() -> Self {
        let stack = pizza_testkit::Stack::from_env();
        // target/<profile>/pizza-load, or target/<profile>/deps/<test binary>.
        let exe = std::env::current_exe().unwrap_or_default();
        let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let log_dir = dir
            .join("loadtest-logs")
            .join(Uuid::new_v4().simple().to_string());
        Self {
            database_url: stack.database_url,
            kafka_bootstrap: stack.kafka_bootstrap,
            private_broker: false,
            jaeger_url: stack.jaeger_url,
            time_scale: 0.1,
            topology: Topology::Continuous,
            sdk_disabled: false,
            ovens: 64,
            log_dir,
            env: Vec::new(),
        }
    }

    /// The shop's options: the load tester's settings on top of the shop's.
    fn shop(&self) -> Options {
        let mut options = Options::new(self.database_url.clone());
        options.fresh_database = true;
        options.kafka_bootstrap = self.kafka_bootstrap.clone();
        options.private_broker = self.private_broker;
        options.partitions = 2;
        options.topology = self.topology;
        options.time_scale = self.time_scale;
        options.sdk_disabled = self.sdk_disabled;
        options.jaeger_url = self.jaeger_url.clone();
        options.log_dir = Some(self.log_dir.clone());
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
        options = options
            // The SDK's own export pace, but for spans (the shop's test pace is faster): a load
            // run measures the services, not their telemetry's chatter.
            .env_all("OTEL_BSP_SCHEDULE_DELAY", "500")
            .env_all("OTEL_BLRP_SCHEDULE_DELAY", "1000")
            .env_all("OTEL_METRIC_EXPORT_INTERVAL", "60000")
            .env_all("PIZZA_LOG_FORMAT", "text")
            .env_all("RUST_LOG", rust_log)
            // Outages delay orders; they must not time them out (see the module docs).
            .env(Service::Order, "PIZZA_ORDER_KITCHEN_TIMEOUT_SECONDS", "2000")
            .env(Service::Order, "PIZZA_ORDER_DELIVERY_TIMEOUT_SECONDS", "2000")
            .env(Service::Order, "PIZZA_ORDER_FEEDBACK_DELAY_SECONDS", "2")
            .env(Service::Order, "PIZZA_WORKFLOW_LEASE_SECONDS", "10")
            .env(Service::Order, "PIZZA_WORKFLOW_CONCURRENCY", "8")
            .env(Service::Delivery, "PIZZA_DELIVERY_PICKUP_ATTEMPTS", "100000")
            .env(Service::Delivery, "PIZZA_DELIVERY_UPDATES", "4")
            .env(Service::Kitchen, "PIZZA_KITCHEN_OVENS", self.ovens.to_string());
        for (name, value) in &self.env {
            options = options.env_all(name, value.clone());
        }
        options
    }
}

impl Default for ManagedOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The running shop. Dropping it kills what is left of it; [`ManagedStack::shutdown`] stops it
/// gracefully, collects the span statistics and removes the database.
#[derive(Debug)]
pub struct ManagedStack {
    jaeger_url: String,
    log_dir: PathBuf,
    shop: Mutex<Shop>,
}

/// Span statistics a service wrote at its graceful exit.
pub type SpanStatsByService = BTreeMap<String, serde_json::Value>;

impl ManagedStack {
    /// Creates the database, broker and topics, starts the three services and waits until each
    /// answers `GET /readyz` with 200.
    pub async fn start(options: ManagedOptions) -> anyhow::Result<Self> {
        let shop = Shop::open(options.shop()).await?;
        Ok(Self {
            jaeger_url: options.jaeger_url,
            log_dir: options.log_dir,
            shop: Mutex::new(shop),
        })
    }

    /// The endpoints of this shop.
    pub fn target(&self) -> Target {
        let shop = self
            .shop
            .try_lock()
            .expect("not locked while building the target");
        Target {
            order_url: shop.url(Service::Order),
            kitchen_url: shop.url(Service::Kitchen),
            delivery_url: shop.url(Service::Delivery),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            database_url: shop.database_url().to_owned(),
            kafka_bootstrap: shop.kafka_bootstrap().to_owned(),
            jaeger_url: self.jaeger_url.clone(),
            topics: shop.topics.by_usual_name(),
        }
    }

    /// Where the services' logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Kills, stops or starts a service or the private broker.
    pub async fn process(&self, name: &str, op: ProcessOp) -> anyhow::Result<()> {
        let mut shop = self.shop.lock().await;
        if name == "kafka" {
            return match op {
                ProcessOp::Kill | ProcessOp::Stop => shop.stop_broker().await,
                ProcessOp::Start => shop.start_broker().await,
            };
        }
        let Some(service) = Service::named(name) else {
            bail!("a managed shop cannot {op:?} {name} (it shares the Collector)");
        };
        match op {
            ProcessOp::Kill => shop.kill_hard(service).await.map(drop),
            ProcessOp::Stop => shop.terminate(service).await.map(drop),
            ProcessOp::Start => shop.start(service).await,
        }
    }

    /// The process id of each running service, by name.
    pub async fn pids(&self) -> BTreeMap<String, u32> {
        let shop = self.shop.lock().await;
        Service::ALL
            .into_iter()
            .filter_map(|service| Some((service.name().to_owned(), shop.pid(service)?)))
            .collect()
    }

    /// Stops every service gracefully and keeps the rest (the database, the broker): what is left
    /// can still be read, and [`ManagedStack::shutdown`] then only removes it.
    pub async fn stop_services(&self) -> anyhow::Result<()> {
        self.shop
            .lock()
            .await
            .stop_all()
            .await
            .context("stopping the managed shop")
    }

    /// Stops every service gracefully (so each flushes its spans and writes its span statistics),
    /// reads those statistics, stops the private broker and drops the database.
    pub async fn shutdown(self) -> anyhow::Result<SpanStatsByService> {
        let mut shop = self.shop.into_inner();
        shop.stop_all().await.context("stopping the managed shop")?;
        let stats = shop
            .span_stats()
            .into_iter()
            .map(|(service, value)| (service.name().to_owned(), value))
            .collect();
        shop.stop().await?;
        Ok(stats)
    }
}
