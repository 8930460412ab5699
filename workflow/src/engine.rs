//! The engine from outside: register workflows, start runs, signal and cancel them, read their
//! status and step history, and build workers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use pizza_notify::Source;
use pizza_telemetry::Topology;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::context::WorkflowContext;
use crate::core::{AttemptStatus, RunStatus, StepKind};
use crate::error::{Error, RunError, StepError, WorkflowError};
use crate::hooks::{HookAction, HookPoint, Hooks};
use crate::labels::Labels;
use crate::store::{self, NewRun};
use crate::telemetry::{self, Metrics, RunIdentity};
use crate::worker::{Worker, WorkerConfig};

type BoxedWorkflow =
    Arc<dyn Fn(WorkflowContext, Value) -> BoxFuture<'static, Result<Value, WorkflowError>> + Send + Sync>;

/// The workflow functions a worker can execute, by name.
#[derive(Clone, Default)]
pub struct Workflows {
    map: BTreeMap<String, BoxedWorkflow>,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

impl Workflows {
    /// No workflows yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` as the workflow `name`: an async function of its context and its input.
    ///
    /// It must be deterministic apart from its steps: the same input and the same step results must
    /// lead to the same step calls in the same order. Read time, randomness and the outside world
    /// only inside steps.
    pub fn register<I, O, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, WorkflowError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let boxed: BoxedWorkflow = Arc::new(move |ctx, input| {
            let f = f.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input)?;
                let output = f(ctx, input).await?;
                Ok(serde_json::to_value(output)?)
            })
        });
        self.map.insert(name.to_owned(), boxed);
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<BoxedWorkflow> {
        self.map.get(name).cloned()
    }

    /// The registered names.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Starting again with the same key (for the same workflow) returns the first run instead of a
    /// new one: a retried `POST /orders` starts one order workflow.
    pub idempotency_key: Option<String>,
    /// The run must end within this; past it, the next step boundary raises
    /// [`WorkflowError::DeadlineExceeded`].
    pub deadline: Option<Duration>,
    /// What the run belongs to, as span attributes on every span of the run and of its children
    /// (see [`Labels`]).
    pub labels: Labels,
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's id.
    pub id: Uuid,
    /// The workflow's name.
    pub workflow_name: String,
    /// Where it stands.
    pub status: RunStatus,
    /// Its input.
    pub input: Value,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its error, once failed or cancelled.
    pub error: Option<RunError>,
    /// The key it was started with.
    pub idempotency_key: Option<String>,
    /// The run that started it as a child.
    pub parent_run_id: Option<Uuid>,
    /// How many times a worker claimed it.
    pub executions: u32,
    /// The create span's `traceparent`.
    pub traceparent: Option<String>,
    /// Its labels.
    pub labels: Labels,
    /// Created.
    pub created_at: OffsetDateTime,
    /// First claimed.
    pub started_at: Option<OffsetDateTime>,
    /// Ended.
    pub finished_at: Option<OffsetDateTime>,
    /// Due (pending, sleeping) or lease expiry (running).
    pub available_at: OffsetDateTime,
    /// Its deadline.
    pub deadline_at: Option<OffsetDateTime>,
    /// Whether cancellation was asked for.
    pub cancel_requested: bool,
}

/// One recorded step attempt (or wait), as [`Engine::history`] returns it.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// The step's position.
    pub step_index: u32,
    /// The step's name.
    pub step_name: String,
    /// Its kind.
    pub kind: StepKind,
    /// 1-based.
    pub attempt: u32,
    /// Where it stands.
    pub status: AttemptStatus,
    /// Its recorded result.
    pub output: Option<Value>,
    /// Its error.
    pub error: Option<StepError>,
    /// When it is retried, if it failed and will be.
    pub retry_at: Option<OffsetDateTime>,
    /// A wait's timer.
    pub wake_at: Option<OffsetDateTime>,
    /// A child run.
    pub child_run_id: Option<Uuid>,
    /// Started.
    pub started_at: OffsetDateTime,
    /// Finished.
    pub finished_at: Option<OffsetDateTime>,
}

/// See [`EngineBuilder::record_start_after`].
const DEFAULT_RECORD_START_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Shared {
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    pub topology: Topology,
    pub metrics: Metrics,
    /// Wakes this process's idle workers at once when this process starts or signals a run; workers
    /// in other processes find it at their next poll.
    pub wake_local: Arc<Notify>,
    /// The earliest due time of the runs parked here that the idle workers may not know of yet (see
    /// [`Shared::parked`]).
    pub parks: watch::Sender<tokio::time::Instant>,
    /// Test hooks ([`crate::hooks`]); none in production.
    pub hooks: Option<Arc<dyn Hooks>>,
    /// See [`EngineBuilder::record_start_after`].
    pub record_start_after: Duration,
    /// Where this engine's writes announce a run due sooner (see [`EngineBuilder::wakes`]).
    pub wake_channel: store::WakeChannel,
}

/// The furthest ahead [`Shared::parked`] looks: an idle worker looks again at least this often anyway.
const PARK_HORIZON: Duration = Duration::from_secs(3600);

impl Shared {
    /// Tells this process's idle workers that a run parked here falls due at `due` (the engine's
    /// clock). A worker sleeping past it now wakes then; one sleeping less long sleeps on. Nothing is
    /// claimed now: waking the workers to claim after every park (as a start or a signal does) cost
    /// an empty claim, a statement and a commit, after nearly every park, since a parked run is
    /// seldom due at once.
    pub(crate) fn parked(&self, due: OffsetDateTime) {
        let wait = Duration::try_from(due - self.clock.now()).unwrap_or(Duration::ZERO);
        let now = tokio::time::Instant::now();
        let at = now + wait.min(PARK_HORIZON);
        // Earlier than any due time the workers have not seen yet, unless that one is past (and so
        // seen, or about to be: a worker claims as soon as it looks).
        self.parks.send_modify(|earliest| {
            *earliest = if *earliest > now { (*earliest).min(at) } else { at };
        });
    }

    /// Awaits the test hooks at `point`, if any.
    pub(crate) async fn hook(&self, point: HookPoint) -> HookAction {
        match &self.hooks {
            Some(hooks) => hooks.at(point).await,
            None => HookAction::Continue,
        }
    }
}

/// The engine: a handle on the database with the tracing topology and the clock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
}

/// Builds an [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    topology: Topology,
    metrics: Option<Metrics>,
    hooks: Option<Arc<dyn Hooks>>,
    record_start_after: Duration,
    wakes: Source,
}

impl EngineBuilder {
    /// How other processes' workers learn that this engine made a run due sooner (a start, a
    /// signal, a cancel, a child's end). [`Source::Database`] (the default): a `NOTIFY` at the
    /// writer's commit, and this engine's workers listen for everyone's. [`Source::Process`]: no
    /// `NOTIFY` and no listening; the workers of this process are woken in memory, and those of other
    /// processes find the run at their safety-net poll.
    ///
    /// `Process` is for a host whose every process runs workers for the workflows it starts and
    /// signals (the order service): the run is then always taken at once by the process that made it
    /// due, and no process pays for hearing the others. PostgreSQL makes every listening connection
    /// of a database read every notification sent in it in a transaction of its own, whatever its
    /// channel: a listener costs a commit per notifying commit of the whole database. A
    /// [`signal_in`](Engine::signal_in) caller must then call [`Engine::wake`] after its
    /// transaction commits.
    pub fn wakes(mut self, source: Source) -> Self {
        self.wakes = source;
        self
    }

    /// How executions are drawn: children of the create span (`continuous`) or new traces linked to
    /// it (`linked`). Default `continuous`.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The instruments (default: on the global meter provider).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Test hooks: the workers of this engine await them at each [`HookPoint`], so a test can stall
    /// a worker at an exact point or crash an execution there (see [`crate::hooks`]).
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// How long a `run` step may take before its attempt is recorded as running (default 100 ms).
    /// A step that returns sooner is recorded once, attempt and result in one commit; a slower one
    /// is recorded when this passes and again when it returns, so a crash inside it is counted as a
    /// failed attempt (see `WorkflowContext::run`). `Duration::ZERO` records every attempt that does
    /// not finish at once.
    pub fn record_start_after(mut self, after: Duration) -> Self {
        self.record_start_after = after;
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            shared: Arc::new(Shared {
                pool: self.pool,
                clock: self.clock,
                topology: self.topology,
                metrics: self.metrics.unwrap_or_else(Metrics::global),
                wake_local: Arc::new(Notify::new()),
                parks: watch::Sender::new(tokio::time::Instant::now()),
                hooks: self.hooks,
                record_start_after: self.record_start_after,
                wake_channel: match self.wakes {
                    Source::Database => Some(store::WAKE_CHANNEL),
                    Source::Process => None,
                },
            }),
        }
    }
}

impl Engine {
    /// An engine on `pool`, with the defaults; see [`EngineBuilder`].
    pub fn builder(pool: PgPool) -> EngineBuilder {
        EngineBuilder {
            pool,
            clock: Arc::new(SystemClock),
            topology: Topology::default(),
            metrics: None,
            hooks: None,
            record_start_after: DEFAULT_RECORD_START_AFTER,
            wakes: Source::Database,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// Starts a run of `workflow` with `input`; returns its id (the existing run's, for a repeated
    /// idempotency key). Emits `workflow_run.create {workflow}` as a child of the current span and
    /// stores that span's context with the run.
    pub async fn start<I: Serialize>(
        &self,
        workflow: &str,
        input: &I,
        options: StartOptions,
    ) -> Result<Uuid, Error> {
        let mut conn = self.shared.pool.acquire().await?;
        let id = self.start_in(&mut conn, workflow, input, options).await?;
        self.wake();
        Ok(id)
    }

    /// Like [`Engine::start`], on the caller's connection or transaction (`&mut *tx`), so the run is
    /// created in the same commit as the caller's own rows: a service that accepts an order and
    /// starts its workflow in one transaction can never keep one without the other. Call
    /// [`Engine::wake`] after the commit, so this process's idle workers look at once. The create
    /// span ends here, before the caller commits: a transaction rolled back afterwards leaves a
    /// create span of a run that does not exist.
    pub async fn start_in<I: Serialize>(
        &self,
        conn: &mut sqlx::PgConnection,
        workflow: &str,
        input: &I,
        options: StartOptions,
    ) -> Result<Uuid, Error> {
        let input = serde_json::to_value(input)?;
        let identity = RunIdentity {
            run_id: Uuid::now_v7(),
            workflow_name: workflow.to_owned(),
            labels: options.labels,
        };
        let span = telemetry::create_span(&identity, None);
        let carrier = telemetry::carrier_of(&span);
        let now = self.shared.clock.now();
        let run = NewRun {
            id: identity.run_id,
            workflow_name: workflow,
            input: &input,
            idempotency_key: options.idempotency_key.as_deref(),
            parent_run_id: None,
            carrier: &carrier,
            created_at: now,
            deadline_at: options.deadline.map(|d| now + d),
            labels: &identity.labels,
            channel: self.shared.wake_channel,
        };
        let result = store::insert_run(conn, run).instrument(span.clone()).await;
        // With an idempotency key that names an existing run, the existing run's id is returned; the
        // create span keeps the id drawn above (attributes cannot be replaced once set), which the
        // run table never holds: a repeated start shows as a create span of a run that does not exist.
        let (id, _created) =
            result.inspect_err(|e| telemetry::record_failure(&span, "database", &e.to_string()))?;
        Ok(id)
    }

    /// Tells this process's idle workers to look for due runs now (workers in other processes find
    /// them at their next poll).
    pub fn wake(&self) {
        self.shared.wake_local.notify_waiters();
    }

    /// Sends the signal `name` with `payload` to a run; see
    /// [`WorkflowContext::wait_for_signal`](crate::WorkflowContext::wait_for_signal) for when a wait
    /// receives it. With an idempotency key, sending twice to the same run stores one signal (the key
    /// is the run's: another run signalled with the same key gets its own). Returns whether the
    /// signal was stored now. Emits `workflow.signal.send {name}`, a child of the current span linked
    /// to the run's create span; the wait that takes the signal links to it.
    pub async fn signal<T: Serialize>(
        &self,
        run_id: Uuid,
        name: &str,
        payload: &T,
        idempotency_key: Option<&str>,
    ) -> Result<bool, Error> {
        let mut tx = self.shared.pool.begin().await?;
        let stored = self
            .signal_in(&mut tx, run_id, name, payload, idempotency_key)
            .await?;
        tx.commit().await?;
        self.shared.wake_local.notify_waiters();
        Ok(stored)
    }

    /// [`signal`](Self::signal) in the caller's transaction: the signal is stored, and the run woken,
    /// only if that transaction commits, together with whatever else it writes (a consumer's inbox
    /// entry and the state change the event makes, say): one commit, and no signal without its cause.
    /// The run's workers learn of it from the database's notification at the commit; with
    /// [`EngineBuilder::wakes`] set to [`Source::Process`] there is none, and the caller calls
    /// [`wake`](Self::wake) once its transaction has committed.
    pub async fn signal_in<T: Serialize>(
        &self,
        conn: &mut PgConnection,
        run_id: Uuid,
        name: &str,
        payload: &T,
        idempotency_key: Option<&str>,
    ) -> Result<bool, Error> {
        let parent = tracing::Span::current();
        let signal = Signal {
            run_id,
            name,
            payload,
            idempotency_key,
            parent: &parent,
        };
        let mut answers = self.signal_all_in(conn, std::slice::from_ref(&signal)).await?;
        answers.pop().expect("an answer for each signal")
    }

    /// [`signal_in`](Self::signal_in) for many signals at once, in two statements however many
    /// there are (one reads the runs, one stores the signals and wakes their runs): for a caller
    /// that signals as it applies a batch of events, where each statement is a round trip waited
    /// for. Each signal's `workflow.signal.send` span is a child of its [`Signal::parent`]. Stored in
    /// the slice's order, each answered as `signal_in` would answer it alone (`Ok(stored now)`,
    /// [`Error::NotFound`], [`Error::RunFinished`]), in that order; `Err` for the whole batch only
    /// when the database fails, and then the caller's transaction must not commit.
    pub async fn signal_all_in<T: Serialize>(
        &self,
        conn: &mut PgConnection,
        signals: &[Signal<'_, T>],
    ) -> Result<Vec<Result<bool, Error>>, Error> {
        let mut run_ids: Vec<Uuid> = signals.iter().map(|s| s.run_id).collect();
        run_ids.sort_unstable();
        run_ids.dedup();
        let targets = store::signal_targets(&mut *conn, &run_ids).await?;
        let mut answers: Vec<Option<Result<bool, Error>>> = Vec::with_capacity(signals.len());
        let mut rows = Vec::with_capacity(signals.len());
        let mut spans = Vec::with_capacity(signals.len());
        for signal in signals {
            let Some(target) = targets.get(&signal.run_id) else {
                answers.push(Some(Err(Error::NotFound(signal.run_id))));
                continue;
            };
            if target.status.is_terminal() {
                answers.push(Some(Err(Error::RunFinished(signal.run_id))));
                continue;
            }
            let identity = RunIdentity {
                run_id: signal.run_id,
                workflow_name: target.workflow_name.clone(),
                labels: target.labels.clone(),
            };
            let span = signal
                .parent
                .in_scope(|| telemetry::signal_send_span(&identity, &target.carrier, signal.name));
            rows.push(store::NewSignal {
                run_id: signal.run_id,
                name: signal.name,
                payload: serde_json::to_value(signal.payload)?,
                idempotency_key: signal.idempotency_key,
                sender: telemetry::carrier_of(&span),
            });
            spans.push(span);
            answers.push(None);
        }
        let now = self.shared.clock.now();
        let stored = store::insert_signals(&mut *conn, &rows, now, self.shared.wake_channel).await?;
        // The send spans end with the statement that stored their signals.
        drop(spans);
        let mut stored = stored.into_iter();
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Ok(stored.next().expect("one answer per stored row"))))
            .collect())
    }

    /// Asks a run to stop. Its code receives [`WorkflowError::Cancelled`] at the next step boundary
    /// (a parked run is woken for it) and may compensate; returning the error ends it `cancelled`.
    /// Returns the run's status when asked.
    pub async fn cancel(&self, run_id: Uuid) -> Result<RunStatus, Error> {
        let mut tx = self.shared.pool.begin().await?;
        let status =
            store::request_cancel(&mut tx, run_id, self.shared.clock.now(), self.shared.wake_channel).await?;
        tx.commit().await?;
        self.shared.wake_local.notify_waiters();
        status.ok_or(Error::NotFound(run_id))
    }

    /// A run's state.
    pub async fn status(&self, run_id: Uuid) -> Result<RunInfo, Error> {
        let mut conn = self.shared.pool.acquire().await?;
        store::run_info(&mut conn, run_id)
            .await?
            .ok_or(Error::NotFound(run_id))
    }

    /// A run's step attempts and waits, in step order.
    pub async fn history(&self, run_id: Uuid) -> Result<Vec<StepRecord>, Error> {
        store::step_history(&self.shared.pool, run_id).await
    }

    /// Polls until the run ends, at most `timeout`.
    pub async fn wait_until_finished(&self, run_id: Uuid, timeout: Duration) -> Result<RunInfo, Error> {
        let started = Instant::now();
        loop {
            let run = self.status(run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    run_id,
                    status: run.status.to_string(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A worker executing `workflows`; run it with [`Worker::run`].
    pub fn worker(&self, workflows: Workflows, config: WorkerConfig) -> Worker {
        Worker::new(self.shared.clone(), workflows, config)
    }
}

/// A signal for [`Engine::signal_all_in`]: what [`Engine::signal_in`] takes, and the span its
/// `workflow.signal.send` span is a child of.
#[derive(Debug, Clone, Copy)]
pub struct Signal<'a, T> {
    /// The run.
    pub run_id: Uuid,
    /// The signal's name.
    pub name: &'a str,
    /// Its payload.
    pub payload: &'a T,
    /// See [`Engine::signal`].
    pub idempotency_key: Option<&'a str>,
    /// The send span's parent (the current span, for `signal_in`): the event that caused it, say.
    pub parent: &'a tracing::Span,
}
