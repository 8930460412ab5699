//! Shared set-up for the engine's tests: workers on a test database, telemetry exported to the real
//! Collector once per test process, and Jaeger to read traces back.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use std::future::Future;
use std::time::Duration;

use pizza_telemetry::TelemetryGuard;
use pizza_testkit::{Jaeger, Stack};
use pizza_workflow::{Engine, WorkerConfig, Workflows};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `service.name` of spans exported by the test processes.
pub const SERVICE: &str = "pizza-workflow-test";

/// Initialises telemetry once for this test process (every span sampled, logs at warn).
pub fn telemetry() -> &'static TelemetryGuard {
    pizza_testkit::telemetry::init_once(SERVICE)
}

/// Exports every buffered span now.
pub async fn flush() {
    pizza_testkit::telemetry::flush().await;
}

/// The Jaeger of the stack.
pub fn jaeger() -> Jaeger {
    Jaeger::new(Stack::from_env().jaeger_url)
}

/// Worker settings for tests: fast polling, and a lease long enough that a busy machine never lets
/// one expire under a live worker (the crash test's killed worker has its own, short lease).
pub fn worker_config(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        concurrency: 4,
    }
}

/// Workers running in the background until [`Workers::stop`].
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers of `engine` executing `workflows`, each with `config(i)`.
    pub fn start(
        engine: &Engine,
        workflows: &Workflows,
        n: usize,
        config: impl Fn(usize) -> WorkerConfig,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let handles = (0..n)
            .map(|i| {
                let worker = engine.worker(workflows.clone(), config(i));
                let mut stopped = stop.subscribe();
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    worker.run(shutdown).await.expect("worker");
                })
            })
            .collect();
        Self { stop, handles }
    }

    /// Stops the workers and waits for their executions in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            h.await.unwrap();
        }
    }
}

/// Applies the engine's migrations to a test database.
pub async fn migrated(pool: &PgPool) {
    pizza_workflow::migrate(pool).await.expect("migrations");
}

/// Polls `check` every 20 ms until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
