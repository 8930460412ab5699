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

/// A gate a test opens once; hooks wait at it.
#[derive(Debug, Clone)]
pub struct Gate(std::sync::Arc<watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self(std::sync::Arc::new(watch::channel(false).0))
    }

    /// Lets every waiter through, now and later.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn passed(&self) {
        let mut open = self.0.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }
}

/// What a [`ScriptedHooks`] does at a point.
#[derive(Debug, Clone)]
pub enum Reaction {
    /// Go on at once.
    Go,
    /// Stall until the gate opens.
    Wait(Gate),
    /// Crash the execution there.
    Crash,
}

type Decide = dyn Fn(&pizza_workflow::HookPoint) -> Reaction + Send + Sync;

/// Test hooks: a function of the test decides what each point does, and every point is reported on
/// a channel, so the test can wait until a worker has reached one.
pub struct ScriptedHooks {
    decide: Box<Decide>,
    seen: tokio::sync::mpsc::UnboundedSender<pizza_workflow::HookPoint>,
}

impl std::fmt::Debug for ScriptedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedHooks").finish_non_exhaustive()
    }
}

impl ScriptedHooks {
    /// Hooks deciding by `decide`, and the channel of the points they see.
    pub fn new(
        decide: impl Fn(&pizza_workflow::HookPoint) -> Reaction + Send + Sync + 'static,
    ) -> (
        std::sync::Arc<Self>,
        tokio::sync::mpsc::UnboundedReceiver<pizza_workflow::HookPoint>,
    ) {
        let (seen, points) = tokio::sync::mpsc::unbounded_channel();
        let hooks = Self {
            decide: Box::new(decide),
            seen,
        };
        (std::sync::Arc::new(hooks), points)
    }
}

impl pizza_workflow::Hooks for ScriptedHooks {
    fn at(
        &self,
        point: pizza_workflow::HookPoint,
    ) -> futures::future::BoxFuture<'static, pizza_workflow::HookAction> {
        use futures::FutureExt as _;
        let reaction = (self.decide)(&point);
        let _ = self.seen.send(point);
        match reaction {
            Reaction::Go => futures::future::ready(pizza_workflow::HookAction::Continue).boxed(),
            Reaction::Crash => futures::future::ready(pizza_workflow::HookAction::Crash).boxed(),
            Reaction::Wait(gate) => async move {
                gate.passed().await;
                pizza_workflow::HookAction::Continue
            }
            .boxed(),
        }
    }
}

/// Waits until `points` reports a point that `wanted` accepts, at most 30 s.
pub async fn reached(
    points: &mut tokio::sync::mpsc::UnboundedReceiver<pizza_workflow::HookPoint>,
    what: &str,
    wanted: impl Fn(&pizza_workflow::HookPoint) -> bool,
) -> pizza_workflow::HookPoint {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(point) = points.recv().await {
            if wanted(&point) {
                return Some(point);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(point)) => point,
        _ => panic!("{what}: not reached within 30 s"),
    }
}
