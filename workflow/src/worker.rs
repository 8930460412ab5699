//! Workers: claim runnable runs, execute them under a lease, and write what the execution decided.
//!
//! A worker is a loop: claim one due run (`for update skip locked`), execute it in a task while a
//! heartbeat keeps its lease, claim the next. Any number of workers, in any number of processes, share
//! one database with no coordinator: the claim gives each due run to exactly one of them, and a run
//! whose worker died becomes claimable again when its lease expires. The next worker replays the
//! workflow from its recorded steps and goes on from the step that was in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use pizza_telemetry::propagation;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::context::{ContextParts, Held, WorkflowContext};
use crate::core::{self, ExecutionOutcome, InterruptState, RunAction, RunStatus};
use crate::engine::{Shared, Workflows};
use crate::error::{Error, RunError, WorkflowError};
use crate::hooks::{HookAction, HookPoint};
use crate::store::{self, ClaimedRun, Lease};
use crate::telemetry::{self, EndedRun, RunIdentity};

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this worker in `lease_owner` and `workflow.worker.id`. A worker takes back, when it
    /// starts, the runs still leased under its name: give a replica the same name across restarts
    /// (`PIZZA_INSTANCE_ID`) and a crashed replica's runs resume as soon as it is back, instead of
    /// after their leases. Two live workers must never share a name (each would end the other's
    /// leases; fencing keeps the runs correct, but their steps would run twice).
    pub id: String,
    /// How long a claim holds a run without a heartbeat. A dead worker's runs wait this long before
    /// another worker takes them; heartbeats renew it every third of it.
    pub lease: Duration,
    /// The longest an idle worker sleeps before it looks again. Only a safety net: it wakes on
    /// notifications and at the next due time (see [`Worker::run`]).
    pub poll_interval: Duration,
    /// Executions at once.
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    /// A 30 s lease, looking at least every 5 s when idle, 4 executions at once.
    fn default() -> Self {
        Self {
            id: format!("worker-{}", &Uuid::new_v4().simple().to_string()[..8]),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            concurrency: 4,
        }
    }
}

/// A worker; see the module docs.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    workflows: Arc<Workflows>,
    config: WorkerConfig,
}

/// How often a worker counts the runs not yet ended, for `workflow.active_runs`.
const ACTIVE_RUNS_EVERY: Duration = Duration::from_secs(5);

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, workflows: Workflows, config: WorkerConfig) -> Self {
        Self {
            shared,
            workflows: Arc::new(workflows),
            config,
        }
    }

    /// Ends the leases a previous life of this worker (same [`WorkerConfig::id`]) left behind, so
    /// its runs are claimed now. A failure only logs: the leases then run out as usual.
    async fn take_back_leases(&self) {
        match store::end_leases_of(&self.shared.pool, &self.config.id).await {
            Ok(0) => {}
            Ok(runs) => tracing::info!(
                worker = %self.config.id,
                runs,
                "took back the runs this worker's previous life held; they resume now"
            ),
            Err(error) => tracing::warn!(
                worker = %self.config.id,
                %error,
                "taking back this worker's earlier leases failed; they run out instead"
            ),
        }
    }

    /// Claims and executes runs until `shutdown` resolves, then waits for the executions in flight.
    ///
    /// # How a worker wakes
    /// A worker with a free slot claims as many due runs as it has free slots, in one statement. If
    /// it got fewer than that, nothing else is due now, and it does not claim again until woken or
    /// its next timer. When nothing is due it sleeps until the earliest timer or lease expiry of its workflows, or until it
    /// is woken: by this process (a start, a signal, a child's end, a run parked here), or by any
    /// process through PostgreSQL's `NOTIFY` on [`WAKE_CHANNEL`](crate::store), which every start,
    /// signal, cancel and child's end sends when it commits. `poll_interval` is only the safety net
    /// for a notification lost while the listening connection was down, and, with an engine whose
    /// wakes stay in its process (`EngineBuilder::wakes`), how other processes' workers find a run
    /// this one made due (this process's workers take it at once).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let names = self.workflows.names();
        let concurrency = self.config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut executions = JoinSet::new();
        let mut last_count: Option<Instant> = None;
        self.take_back_leases().await;
        // Claims go through a connection of their own (see `store::claim_pool`).
        let claims = store::claim_pool(&self.shared.pool);
        // What an execution writes while its step may hold a connection (see `store::side_pool`).
        let side = store::side_pool(&self.shared.pool, concurrency);
        // An engine whose wakes stay in its process listens to nobody (see `EngineBuilder::wakes`).
        let listener = self
            .shared
            .wake_channel
            .map(|channel| tokio::spawn(listen(self.shared.clone(), channel)));
        let mut parks = self.shared.parks.subscribe();
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        'claims: loop {
            while executions.try_join_next().is_some() {}
            if last_count.is_none_or(|t| t.elapsed() >= ACTIVE_RUNS_EVERY) {
                last_count = Some(Instant::now());
                if let Ok(n) = store::count_active(&self.shared.pool).await {
                    self.shared.metrics.set_active_runs(n);
                }
            }
            let first = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let mut permits = vec![first];
            while let Ok(more) = slots.clone().try_acquire_owned() {
                permits.push(more);
            }
            // Register for a wake-up before looking, so a start between the claim and the wait is
            // not missed.
            let woken = self.shared.wake_local.notified();
            let now = self.shared.clock.now();
            let claimed = store::claim(
                &claims,
                &self.config.id,
                &names,
                now,
                self.config.lease,
                permits.len(),
            )
            .await;
            let idle_for = match claimed {
                Ok(claim) if !claim.runs.is_empty() => {
                    // Fewer runs than free slots: nothing else is due now, so this worker does not
                    // claim again until a wake-up or the next due time the claim read (an empty
                    // claim is an `update` statement; after every execution, that was half the
                    // claims).
                    let partial = claim.runs.len() < permits.len();
                    for (run, slot) in claim.runs.into_iter().zip(permits.drain(..)) {
                        let point = HookPoint::Polled {
                            worker_id: self.config.id.clone(),
                            claimed: Some(run.id),
                        };
                        self.shared.hook(point).await;
                        let execution = Execution {
                            shared: self.shared.clone(),
                            side: side.clone(),
                            workflows: self.workflows.clone(),
                            config: self.config.clone(),
                        };
                        executions.spawn(async move {
                            execution.execute(run).await;
                            drop(slot);
                        });
                    }
                    if !partial {
                        continue;
                    }
                    self.idle_for(claim.next_due)
                }
                Ok(claim) => {
                    let point = HookPoint::Polled {
                        worker_id: self.config.id.clone(),
                        claimed: None,
                    };
                    self.shared.hook(point).await;
                    self.idle_for(claim.next_due)
                }
                Err(e) => {
                    tracing::warn!(error = %e, worker = %self.config.id, "claiming a run failed; retrying");
                    self.config.poll_interval
                }
            };
            drop(permits);
            // Asleep until the next due time, a wake-up, or a run parked here that falls due sooner
            // (which shortens the sleep without a claim now; see `Shared::parked`).
            let mut deadline = tokio::time::Instant::now() + idle_for;
            tokio::pin!(woken);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = &mut woken => break,
                    Ok(()) = parks.changed() => deadline = deadline.min(*parks.borrow_and_update()),
                    () = &mut shutdown => break 'claims,
                }
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        claims.close().await;
        while executions.join_next().await.is_some() {}
        side.close().await;
        Ok(())
    }
}

impl Worker {
    /// How long an idle worker sleeps at most: until the next run of its workflows is due, or its
    /// safety-net poll.
    fn idle_for(&self, next_due: Option<Duration>) -> Duration {
        next_due.map_or(self.config.poll_interval, |due| {
            due.min(self.config.poll_interval)
        })
    }
}

/// Listens on [`store::WAKE_CHANNEL`] and wakes this process's idle workers on every notification,
/// and whenever some may have been missed (a lost connection).
///
/// The listening connection is the process's one for this database ([`pizza_notify`]), shared with
/// whatever else in the process listens there: PostgreSQL makes every listening connection of a
/// database read every notification sent in it, in a transaction of its own.
async fn listen(shared: Arc<Shared>, channel: &str) {
    let mut wakes = pizza_notify::Notifications::shared(&shared.pool).subscribe(channel);
    loop {
        // A notification or a possible miss: either way the workers look.
        wakes.recv().await;
        shared.wake_local.notify_waiters();
    }
}

struct Execution {
    shared: Arc<Shared>,
    /// The worker's [`store::side_pool`].
    side: sqlx::PgPool,
    workflows: Arc<Workflows>,
    config: WorkerConfig,
}

impl Execution {
    async fn execute(self, mut run: ClaimedRun) {
        let now = self.shared.clock.now();
        self.shared
            .metrics
            .claimed(&run.workflow_name, (now - run.due_at).as_seconds_f64());
        let lease = Lease {
            run_id: run.id,
            owner: self.config.id.clone(),
            execution: run.executions,
        };
        let identity = RunIdentity {
            run_id: run.id,
            workflow_name: run.workflow_name.clone(),
            labels: run.labels.clone(),
        };
        let span = telemetry::execute_span(
            &identity,
            &run.carrier,
            &run.wake_carrier,
            self.shared.topology,
            run.executions,
            &self.config.id,
        );
        if let Some(reason) = run.wake_reason.as_deref() {
            tracing::debug!(parent: &span, run_id = %run.id, reason, lease_expired = run.lease_expired, "execution woken");
        }
        let interrupts = InterruptState {
            delivered: run.interrupt,
            cancel_requested: run.cancel_requested,
            deadline_at: run.deadline_at,
        };
        let history = match run.history.take() {
            Some(history) => Ok(history),
            None => store::load_history(&self.shared.pool, run.id).await,
        };
        let history = match history {
            Ok(h) => h,
            Err(e) => {
                // The lease will expire and another execution will try again.
                tracing::warn!(parent: &span, error = %e, run_id = %run.id, "loading the history failed");
                telemetry::record_failure(&span, "database", &e.to_string());
                return;
            }
        };
        let ctx = WorkflowContext::new(ContextParts {
            pool: self.shared.pool.clone(),
            side: self.side.clone(),
            clock: self.shared.clock.clone(),
            lease: lease.clone(),
            identity: identity.clone(),
            execution_number: run.executions,
            history,
            execution_cx: span.context(),
            metrics: self.shared.metrics.clone(),
            wake_local: self.shared.wake_local.clone(),
            wake_channel: self.shared.wake_channel,
            hooks: self.shared.hooks.clone(),
            record_start_after: self.shared.record_start_after,
            lease_length: self.config.lease,
            interrupts,
            mailbox: std::mem::take(&mut run.mailbox),
        });
        let Some(workflow) = self.workflows.get(&run.workflow_name) else {
            // Claims only ask for registered names, so this is a bug, not an operating condition.
            tracing::error!(parent: &span, run_id = %run.id, workflow = %run.workflow_name, "claimed an unregistered workflow");
            return;
        };

        let lost = Arc::new(Notify::new());
        let heartbeat = tokio::spawn(heartbeat(
            self.shared.clone(),
            self.side.clone(),
            lease.clone(),
            self.config.lease,
            lost.clone(),
        ));
        // A panic in workflow or step code fails the run; left to unwind, it would kill the task, the
        // lease would expire, and every later execution would panic the same way, forever.
        let guarded =
            std::panic::AssertUnwindSafe(workflow(ctx.clone(), run.input.clone()).instrument(span.clone()))
                .catch_unwind()
                .map(|r| {
                    r.unwrap_or_else(|panic| Err(WorkflowError::failed("panic", panic_message(&panic))))
                });
        let result = tokio::select! {
            result = guarded => Some(result),
            () = lost.notified() => None,
        };
        heartbeat.abort();

        let summary = ctx.summary();
        span.set_attribute(
            pizza_telemetry::attributes::workflow::REPLAY,
            summary.replayed > 0,
        );
        span.set_attribute(
            pizza_telemetry::attributes::workflow::REPLAYED_STEPS,
            i64::from(summary.replayed),
        );
        let outcome = match (result, summary.suspended) {
            (None, _) => ExecutionOutcome::Returned(Err(WorkflowError::LeaseLost)),
            (Some(_), _) if summary.aborted => ExecutionOutcome::Returned(Err(WorkflowError::LeaseLost)),
            (Some(_), Some((until, _))) => ExecutionOutcome::Suspended(until),
            (Some(result), None) => ExecutionOutcome::Returned(result),
        };
        let action = core::apply(&summary.interrupts, outcome);
        let point = match action {
            RunAction::Complete(_) | RunAction::Fail(_) | RunAction::Cancel(_) => {
                Some(HookPoint::BeforeFinish {
                    worker_id: self.config.id.clone(),
                    run_id: run.id,
                })
            }
            RunAction::Park(_) => Some(HookPoint::BeforePark {
                worker_id: self.config.id.clone(),
                run_id: run.id,
            }),
            RunAction::Abandon => None,
        };
        if let Some(point) = point
            && self.shared.hook(point).await == HookAction::Crash
        {
            tracing::info!(parent: &span, run_id = %run.id, "a test hook crashed the execution before its end or park was recorded");
            return;
        }
        let reason = summary.suspended.map(|(_, r)| r.as_str()).unwrap_or("timer");
        match self
            .carry_out(
                &run,
                &lease,
                &identity,
                &span,
                action,
                (
                    reason,
                    summary.wait_start,
                    summary.ended,
                    summary.awaiting,
                    summary.held,
                ),
            )
            .await
        {
            Ok(()) => {}
            Err(WorkflowError::LeaseLost) => {
                tracing::info!(parent: &span, run_id = %run.id, "lease lost; another worker owns the run");
                telemetry::record_failure(&span, "lease_lost", "the lease on the run was lost");
            }
            Err(e) => {
                tracing::warn!(parent: &span, run_id = %run.id, error = %e, "recording the execution failed");
                telemetry::record_failure(&span, "database", &e.to_string());
            }
        }
    }

    async fn carry_out(
        &self,
        run: &ClaimedRun,
        lease: &Lease,
        identity: &RunIdentity,
        span: &tracing::Span,
        action: RunAction,
        (reason, wait, ended, awaiting, held): (
            &str,
            Option<store::WaitStart>,
            Option<store::AttemptRow>,
            Option<String>,
            Option<Held>,
        ),
    ) -> Result<(), WorkflowError> {
        // The park or the end runs inside the held transaction and commits it (see
        // `context::run`, "Held commits"); refused by the fence, both roll back.
        let (mut tx, after_commit) = match held {
            Some(Held { tx, after_commit }) => (Some(tx), after_commit),
            None => (None, Vec::new()),
        };
        let now = self.shared.clock.now();
        let (status, output, error) = match action {
            RunAction::Abandon => return Err(WorkflowError::LeaseLost),
            RunAction::Park(until) => {
                // This execution is what wakes the run next (a timer, a retry), unless a signal or a
                // child arrives first and records itself instead.
                let me = propagation::context_to_carrier(&span.context());
                let park = store::ParkArgs {
                    lease,
                    seen_wake_seq: run.wake_seq,
                    until,
                    now,
                    wake: &me,
                    reason,
                    ended: ended.as_ref(),
                    signal: awaiting.as_deref(),
                    channel: self.shared.wake_channel,
                };
                let due = store::park_waiting(&self.shared.pool, tx, park, wait.as_ref()).await?;
                after_commit.into_iter().for_each(|f| f());
                // This process's idle workers may be sleeping until a later time than this one.
                self.shared.parked(due);
                telemetry::record_ok(span);
                return Ok(());
            }
            RunAction::Complete(v) => (RunStatus::Completed, Some(v), None),
            RunAction::Fail(e) => (RunStatus::Failed, None, Some(e)),
            RunAction::Cancel(e) => (RunStatus::Cancelled, None, Some(e)),
        };
        // A child's end wakes its parent; this execution is the cause the parent links to.
        let me = propagation::context_to_carrier(&span.context());
        let end = (
            status,
            output.as_ref(),
            error.as_ref(),
            now,
            me.as_slice(),
            ended.as_ref(),
        );
        let channel = self.shared.wake_channel;
        let parent = match tx.as_mut() {
            Some(tx) => store::finish_run(&mut **tx, lease, end, channel).await?,
            None => store::finish_run(&self.shared.pool, lease, end, channel).await?,
        };
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        after_commit.into_iter().for_each(|f| f());
        if parent.is_some() {
            self.shared.wake_local.notify_waiters();
        }
        self.finished(run, identity, span, status, error.as_ref(), now);
        Ok(())
    }

    fn finished(
        &self,
        run: &ClaimedRun,
        identity: &RunIdentity,
        span: &tracing::Span,
        status: RunStatus,
        error: Option<&RunError>,
        now: time::OffsetDateTime,
    ) {
        match (status, error) {
            (RunStatus::Completed, _) | (_, None) => telemetry::record_ok(span),
            (_, Some(e)) => telemetry::record_failure(span, &e.error_type, &e.message),
        }
        telemetry::emit_run_summary(
            &run.carrier,
            identity,
            EndedRun {
                status: status.as_str(),
                executions: run.executions,
                created_at: run.created_at,
                finished_at: now,
                error: error.map(|e| (e.error_type.as_str(), e.message.as_str())),
            },
        );
        self.shared.metrics.run_ended(
            &run.workflow_name,
            status.as_str(),
            (now - run.created_at).as_seconds_f64(),
        );
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the workflow panicked".to_owned())
}

/// Renews the lease every third of its length; tells the execution when it is lost.
///
/// On the worker's side pool: a heartbeat that queued behind the shared pool's work could let the
/// lease run out while the execution is busy, and it updates the run's row, which the execution's
/// own held transaction may have locked.
async fn heartbeat(
    shared: Arc<Shared>,
    side: sqlx::PgPool,
    lease: Lease,
    length: Duration,
    lost: Arc<Notify>,
) {
    let every = length / 3;
    loop {
        tokio::time::sleep(every).await;
        let point = HookPoint::Heartbeat {
            worker_id: lease.owner.clone(),
            run_id: lease.run_id,
        };
        shared.hook(point).await;
        match store::heartbeat(&side, &lease, length).await {
            Ok(true) => {}
            Ok(false) => {
                lost.notify_one();
                return;
            }
            // A failed heartbeat is retried; if the database stays away past the lease, the writes
            // of this execution are refused by their fence anyway.
            Err(e) => tracing::warn!(error = %e, run_id = %lease.run_id, "heartbeat failed"),
        }
    }
}
