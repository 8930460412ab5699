//! The service host: everything a pizza service does that is not its business, written once.
//!
//! A service says what it is by implementing [`Service`]: its name and schema, its settings (a
//! `clap` struct that flattens [`ServiceConfig`]), its migrations, how it builds itself from what
//! the host prepared ([`Context`]), its routes, what it consumes with which handler, and its
//! background loops. The host does the rest, the same way for every service:
//!
//! 1. [`main`] parses the settings (flags or environment), starts telemetry from them, checks that
//!    the admin token may be used on the listen address ([`crate::faults::admin_access`]: the
//!    workshop's published token only on loopback) and binds the listen address;
//! 2. [`Host::connect`] connects the pool, and [`Host::with_pool`] migrates the service's schema
//!    (its tables, its outbox and inbox, each with its own history), sets the initial fault plan
//!    and builds the service;
//! 3. [`Host::run`] serves the service's routes inside the layers every service has (health probes,
//!    HTTP faults, the fault plan's admin API, problem+json fallbacks, a body limit, the SERVER span)
//!    and runs the outbox relay, the idempotent consumer and the service's background loops beside
//!    them until shutdown ([`background::run`]);
//! 4. [`main`] flushes telemetry and, when asked to, writes the span pipeline's counters
//!    (`PIZZA_SPAN_STATS_FILE`).
//!
//! Tests take the same path from step 2 on: [`Host::with_pool`] on a test's database, then
//! [`Host::router`] for handler tests or [`Host::run`] on a listener bound to port 0 with a shutdown
//! future of the test's own.
//!
//! # One place for each setting
//! The trace topology and whether an inbound `traceparent` is trusted are read once, with every other
//! setting, and handed from here to whoever draws the edges: the consumer's `process` spans, the
//! SERVER spans of the HTTP layer, and (through [`Context::topology`]) the workflow engine. A service
//! cannot forget to pass one on and silently run with the default.
//!
//! # Telemetry before the service
//! [`main`] starts telemetry before it builds the service: the workflow engine's instruments bind
//! to the meter provider in force when the engine is built, so an engine built first would record
//! into a no-op for the life of the process.
//!
//! ```text
//! // services/kitchen/src/main.rs: the whole binary
//! fn main() -> std::process::ExitCode {
//!     pizza_servicekit::host::main::<pizza_kitchen::Kitchen>()
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use pizza_messaging::{ConsumerConfig, Handler, Outbox, Schema};
use pizza_telemetry::{TelemetryGuard, Topology};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::background::{self, Messaging, RunError, Stop};
use crate::config::ServiceConfig;
use crate::effects::Effects;
use crate::faults::{AdminAccess, AdminTokenError, FaultError, Faults, admin_access};
use crate::http::AppState;
use crate::store::MigrateError;

/// What a service's [`Service::build`] may fail with: whatever its own parts report.
pub use pizza_messaging::BoxError;

/// Connections per service process unless the service asks for more
/// ([`Service::max_connections`]): enough for the HTTP handlers, the background loops, the relay and
/// the consumer at once.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A pizza service, as the host runs it. See the module docs.
pub trait Service: fmt::Debug + Sized + Send + 'static {
    /// The name: `service.name` unless `OTEL_SERVICE_NAME` says otherwise, and the name in log lines.
    const NAME: &'static str;
    /// `service.version` (the implementing crate's `CARGO_PKG_VERSION`).
    const VERSION: &'static str;
    /// The PostgreSQL schema holding the service's tables, its migration history, its outbox and its
    /// inbox.
    const SCHEMA: &'static str;
    /// Whether the service is at the edge: there the HTTP layer continues a caller's `traceparent`
    /// only when `PIZZA_TRUST_INBOUND_TRACEPARENT` says so (else it starts a new trace linked to it);
    /// an internal service always continues its caller's trace.
    const EDGE: bool;
    /// The largest request body the service reads; larger ones are answered 413.
    const MAX_BODY_BYTES: usize;
    /// How the service's relay and loops learn of new rows: from PostgreSQL's `NOTIFY` (the
    /// default), or, for a service whose outbox rows and loop work are only ever written by its own
    /// process, from that process's announcements after each commit
    /// ([`Source::Process`](pizza_messaging::Source::Process)): no listening connection, and its
    /// outbox sends no `NOTIFY` (the host sets the trigger to match at every start).
    const WAKES: pizza_messaging::Source = pizza_messaging::Source::Database;

    /// The service's settings: a `clap` command that flattens [`ServiceConfig`].
    type Config: clap::Parser + Clone + fmt::Debug + Send + Sync + 'static;
    /// What the consumer does with each record of [`Service::consumes`].
    type Handler: Handler;

    /// The settings every service has, inside [`Service::Config`].
    fn common(config: &Self::Config) -> &ServiceConfig;

    /// Where the HTTP API listens.
    fn addr(config: &Self::Config) -> SocketAddr;

    /// How many PostgreSQL connections the process may hold.
    fn max_connections(config: &Self::Config) -> u32 {
        let _ = config;
        DEFAULT_MAX_CONNECTIONS
    }

    /// The service's own migrations (`sqlx::migrate!("./migrations")`), applied in
    /// [`Service::SCHEMA`] before the messaging tables.
    fn migrations() -> Migrator;

    /// Builds the service from its settings and what the host prepared. Runs after the migrations
    /// and, in a process, after telemetry has started.
    fn build(config: &Self::Config, context: Context) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// The service's own routes; the host adds the health probes and the common layers.
    fn routes(&self) -> Router<AppState>;

    /// The outbox relay's safety net: how long it waits at most for a notification of new rows
    /// before it looks anyway (it wakes on the outbox's `NOTIFY`; see `pizza_messaging::relay`).
    /// The relay's default unless a service has a reason to look more often.
    fn relay_poll(&self) -> Duration {
        pizza_messaging::RelayConfig::default().poll_interval
    }

    /// The topics the service consumes, its consumer group, and the handler of their records.
    fn consumes(&self) -> Consumes<Self::Handler>;

    /// The service's background loops, run beside the HTTP API until `stop` completes.
    fn background(self, stop: Stop) -> impl Future<Output = ()> + Send + 'static;
}

/// What the host hands [`Service::build`]: the service's share of the process.
#[derive(Debug, Clone)]
pub struct Context {
    /// The database pool, the service's schema migrated.
    pub pool: PgPool,
    /// The live fault plan (the admin API changes the same one).
    pub faults: Faults,
    /// The outbox in the service's schema.
    pub outbox: Outbox,
    /// How asynchronous edges are drawn (`PIZZA_TRACE_TOPOLOGY`), for a workflow engine.
    pub topology: Topology,
}

impl Context {
    /// Where a background loop's effects go: this database, this fault plan, and events from
    /// `source` to `topic` through this outbox.
    pub fn effects(&self, topic: &str, source: &'static str) -> Effects {
        Effects {
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            outbox: self.outbox.clone(),
            topic: topic.to_owned(),
            source,
        }
    }
}

/// The consuming side of a service ([`Service::consumes`]).
#[derive(Debug)]
pub struct Consumes<H> {
    /// The Kafka consumer group (it also scopes the inbox).
    pub group: String,
    /// The topics (each one's dead letters go to `<topic>.dlq`).
    pub topics: Vec<String>,
    /// What is done with each record.
    pub handler: H,
}

/// Why a service could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A telemetry setting could not be understood.
    #[error(transparent)]
    TelemetryConfig(#[from] pizza_telemetry::ConfigError),
    /// Telemetry could not start.
    #[error(transparent)]
    Telemetry(#[from] pizza_telemetry::InitError),
    /// The admin token may not be used on the listen address: the workshop's published token, or a
    /// short one, on a service reachable beyond loopback.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// PostgreSQL could not be reached.
    #[error("connecting to PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The initial fault plan is invalid.
    #[error("invalid fault plan: {0}")]
    Faults(#[from] FaultError),
    /// A Kafka client could not be created.
    #[error("creating a Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The service could not build itself.
    #[error("building the service: {0}")]
    Build(#[source] BoxError),
    /// The relay or the consumer could not be created, serving HTTP failed, or a background task
    /// panicked.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The span counters could not be written to `PIZZA_SPAN_STATS_FILE`.
    #[error("writing the span counters to {path}: {source}")]
    SpanStats {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A service ready to run: its schema migrated, its fault plan set, itself built.
#[derive(Debug)]
pub struct Host<S: Service> {
    config: S::Config,
    pool: PgPool,
    faults: Faults,
    schema: Schema,
    service: S,
}

impl<S: Service> Host<S> {
    /// Connects a pool of [`Service::max_connections`] to the configured database and prepares the
    /// service on it (see [`Host::with_pool`]).
    pub async fn connect(config: S::Config) -> Result<Self, Error> {
        let pool = S::common(&config).connect(S::max_connections(&config)).await?;
        Self::with_pool(config, pool).await
    }

    /// Prepares the service on `pool`: applies its migrations and the messaging tables in
    /// [`Service::SCHEMA`], sets the initial fault plan, and builds the service.
    pub async fn with_pool(config: S::Config, pool: PgPool) -> Result<Self, Error> {
        let schema = Schema::new(S::SCHEMA).map_err(MigrateError::from)?;
        crate::store::migrate(&pool, S::migrations(), S::SCHEMA).await?;
        pizza_messaging::outbox_wake(&pool, &schema, S::WAKES)
            .await
            .map_err(|e| MigrateError::Messaging(e.into()))?;
        let common = S::common(&config);
        let faults = common.initial_faults()?;
        let context = Context {
            pool: pool.clone(),
            faults: faults.clone(),
            outbox: Outbox::new(schema.clone()),
            topology: common.telemetry.topology,
        };
        let service = S::build(&config, context).await.map_err(Error::Build)?;
        Ok(Self {
            config,
            pool,
            faults,
            schema,
            service,
        })
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The live fault plan (the admin API changes the same one).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The outbox in the service's schema.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.schema.clone())
    }

    /// The whole HTTP API and nothing else (no relay, consumer or background loop): the service's
    /// routes inside the layers every service has (see [`crate::http::router`]).
    pub fn router(&self) -> Result<Router, Error> {
        let common = S::common(&self.config);
        let state = AppState::new(self.pool.clone(), self.faults.clone(), common)?;
        // Only a service at the edge may refuse a caller's trace: see `Service::EDGE`.
        let trust_inbound = !S::EDGE || common.telemetry.trust_inbound_traceparent;
        Ok(crate::http::router(
            S::NAME,
            self.service.routes(),
            state,
            common.admin_token.clone(),
            S::MAX_BODY_BYTES,
            trust_inbound,
        ))
    }

    /// Serves the API on `listener` and runs the service's background loops, the outbox relay and
    /// the consumer until `shutdown` completes; then lets in-flight requests finish, stops the
    /// background work (the loops finish their round, the relay its round, the consumer commits its
    /// offsets) and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let router = self.router()?;
        let common = S::common(&self.config);
        let Consumes {
            group,
            topics,
            handler,
        } = self.service.consumes();
        let messaging = Messaging {
            pool: self.pool.clone(),
            schema: self.schema.clone(),
            kafka: common.kafka(),
            relay_poll: self.service.relay_poll(),
            wakes: S::WAKES,
            // The replica's stable name makes the consumer a static group member and lets the relay
            // take its claims back after a restart (see `ServiceConfig::instance_id`).
            consumer: ConsumerConfig {
                instance_id: common.instance_id.clone(),
                ..ConsumerConfig::new(group, topics, common.telemetry.topology)
            },
            handler,
            faults: self.faults.clone(),
        };
        let service = self.service;
        let stats = background::run(listener, router, shutdown, messaging, move |stop| {
            service.background(stop)
        })
        .await?;
        tracing::info!(
            relay_stats = ?stats.relay,
            consumer_stats = ?stats.consumer,
            consumer_restarts = stats.consumer_restarts,
            "{} stopped",
            S::NAME
        );
        Ok(())
    }
}

/// The whole binary of service `S`: settings, telemetry, listen, prepare, run until SIGTERM or
/// Ctrl-C, flush telemetry, write the span counters. Bad settings end the process with `clap`'s
/// message; any other failure is logged, printed, and ends it with a failure status.
pub fn main<S: Service>() -> ExitCode {
    let config = <S::Config as clap::Parser>::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Run(RunError::Serve(source)))
        .and_then(|runtime| runtime.block_on(process::<S>(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            // The one line a process manager shows, whether or not logging had started.
            eprintln!("pizza-{}: {message}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

/// The process of service `S` inside a runtime: [`main`] without the settings and the runtime.
async fn process<S: Service>(config: S::Config) -> Result<(), Error> {
    let telemetry = &S::common(&config).telemetry;
    let stats_file = telemetry.span_stats_file().map(Path::to_path_buf);
    // Telemetry first: the workflow engine's instruments bind to the provider in force when built.
    let guard = pizza_telemetry::init(&telemetry.config(S::NAME, S::VERSION)?)?;
    let result = async {
        let addr = S::addr(&config);
        // Before anything is reachable: a shop beyond loopback never runs with a published token.
        let admin = admin_access(S::common(&config).admin_token.as_deref(), addr)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "{} listening", S::NAME);
        match admin {
            AdminAccess::Off => tracing::info!(
                admin_api = %admin,
                "the fault admin API is off: set PIZZA_ADMIN_TOKEN, the same for order, kitchen and \
                 delivery, to change fault plans at run time"
            ),
            AdminAccess::On => {
                tracing::info!(admin_api = %admin, "the fault admin API is on (PIZZA_ADMIN_TOKEN)")
            }
        }
        Host::<S>::connect(config)
            .await?
            .run(listener, crate::serve::shutdown_signal())
            .await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(%error, "{} stopped with an error", S::NAME);
    }
    let finished = tokio::task::spawn_blocking(move || finish(guard, stats_file))
        .await
        .map_err(|e| Error::Run(RunError::Task(e)))?;
    result.and(finished)
}

/// Flushes, records the span counters when asked to, shuts telemetry down (blocking work).
fn finish(guard: TelemetryGuard, stats_file: Option<PathBuf>) -> Result<(), Error> {
    guard.flush();
    let stats = guard.span_stats();
    guard.shutdown();
    let Some(path) = stats_file else {
        return Ok(());
    };
    let json = serde_json::json!({
        "ended": stats.ended,
        "exported": stats.exported,
        "queue_full": stats.queue_full,
        "retries": stats.retries,
        "export_failed": stats.export_failed,
    });
    std::fs::write(&path, json.to_string()).map_err(|source| Error::SpanStats { path, source })
}
