//! [`WorkflowContext::run`]: a step with side effects, retried under its policy by parking the run.
//!
//! # How a step is recorded, and what a crash costs
//! A step that returns quickly (within the engine's `record_start_after`, 100 ms by default) costs
//! one row: its attempt and its result, fenced by the lease, written with the execution's next write
//! (below). A step still running then is recorded as `running` while it goes on, and closed when it
//! returns: two commits. Either way its result is durable before the workflow's next step starts, so
//! the next step's input never depends on an unrecorded result.
//!
//! # Deferred records
//! A quick step's row is not written when the step returns but by whatever the execution writes
//! next, because between the two only the workflow's own deterministic code runs:
//! - the next step writes it, in one fenced statement, before it does anything of its own (the same
//!   commit the step would have cost at once);
//! - a wait that parks at once, a retry's back-off and the run's end write it inside their own
//!   statement, and only if that statement's fence holds: the last step of a run and its end are one
//!   commit, a step and the wait after it are one commit.
//!
//! A crash between the step and that write re-runs the step (the window is the workflow's code
//! between them, microseconds), as a crash between the step and its record always did.
//!
//! What a crash costs: a step whose process dies before its result is recorded runs again, under the
//! same idempotency key (the at-least-once contract every step already has). A slow step's crashed
//! attempt is on record and counts against its retry policy (`worker_lost`); a quick step's crashed
//! attempt left no row, so it is simply run again as the same attempt. The price of the one-commit
//! path: a step that kills its process within its first 100 ms, every time, is retried without end
//! instead of given up after its attempts (the loop shows as a growing `workflow.run.executions`,
//! one execution span per crash). An engine built with `record_start_after(Duration::ZERO)` records
//! every attempt that does not finish at once before it goes on, and counts every crash.
//!
//! # Transactional steps
//! [`WorkflowContext::run_tx`] is for a step whose effect is writes to the engine's own database
//! (the order's status, an outbox row, a ledger entry). Its code gets a [`StepTx`]: a transaction,
//! begun when the code first asks for it, in which the engine then records the attempt.
//! The writes and the record commit together, so the effect happens exactly once: a crash before the
//! commit loses both and the step runs again; after it, replay returns the recorded result. It is
//! also one commit where `run` plus the step's own transaction are two. A failed attempt's writes are
//! rolled back; the failure is recorded on its own. Work that is not a database write (a provider's
//! call) goes before the first `transaction()`, so no transaction is held open across it.
//!
//! # Held commits
//! A transactional step's transaction, with its record, does not commit when the step returns but
//! with the execution's next write, as a quick step's deferred row does: the next step commits it
//! before it does anything of its own (the commit the step would have cost at once), while a wait
//! that parks at once and the run's end run their own statement inside it and commit once. So the
//! step that places a ticket and the wait for the kitchen after it are one commit, and so are the
//! last step of a run and its end. Between the two only the workflow's own code runs, which must not
//! block (it is deterministic orchestration; work belongs in steps): the transaction, and the locks
//! its writes took, are held that long. A crash in between rolls the step back with the park, and
//! the step runs again under its idempotency key, as after a crash before its commit; a park or an
//! end refused by the fence rolls it back too, since the lease's new holder runs it again.
//! [`StepTx::after_commit`] callbacks run after that commit.

use std::future::Future;
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::{Held, ParkReason, StepContext, WorkflowContext};
use crate::core::{self, AttemptAction, RetryPolicy, StepDecision, StepKind};
use crate::error::{StepError, WorkflowError};
use crate::hooks::HookPoint;
use crate::store::{self, AttemptEnd, RecordedAttempt};
use crate::telemetry::{self};

/// A transactional step's transaction, as [`StepTx::transaction`] lends it: derefs to the
/// [`Transaction`] (and through it to the connection).
pub type StepTransaction =
    OwnedMappedMutexGuard<Option<Transaction<'static, Postgres>>, Transaction<'static, Postgres>>;

/// A transactional step's transaction (see [`WorkflowContext::run_tx`]). Cheap to clone; every
/// clone is the same transaction.
#[derive(Clone)]
pub struct StepTx {
    pool: PgPool,
    /// `BEGIN` for a transaction that may be held (see `context::begin_held`).
    begin: String,
    tx: Arc<Mutex<Option<Transaction<'static, Postgres>>>>,
    after_commit: Arc<std::sync::Mutex<Vec<AfterCommit>>>,
}

/// What [`StepTx::after_commit`] keeps.
pub(crate) type AfterCommit = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for StepTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepTx").finish_non_exhaustive()
    }
}

impl StepTx {
    fn new(pool: PgPool, begin: String) -> Self {
        Self {
            pool,
            begin,
            tx: Arc::new(Mutex::new(None)),
            after_commit: Arc::default(),
        }
    }

    /// Runs `f` once the step's transaction has committed (with the attempt's record, at the
    /// execution's next write: see "Held commits" in the module docs), and never if it does not: where a step whose writes hand work to a loop of its own process wakes that loop
    /// (an outbox row for the relay, say), since the commit happens in the engine, after the step's
    /// code has returned.
    pub fn after_commit(&self, f: impl FnOnce() + Send + 'static) {
        self.after_commit
            .lock()
            .expect("after-commit list")
            .push(Box::new(f));
    }

    /// The callbacks of [`after_commit`](Self::after_commit), for the engine to run after the commit.
    fn committed(&self) -> Vec<AfterCommit> {
        std::mem::take(&mut *self.after_commit.lock().expect("after-commit list"))
    }

    /// The step's transaction, begun on the first call. Hold it only while writing: the engine
    /// takes it back when the step's code returns, records the attempt in it, and commits it with the
    /// execution's next write.
    pub async fn transaction(&self) -> Result<StepTransaction, sqlx::Error> {
        // An owned guard: a borrowed one (`MappedMutexGuard<'a, _>`) is `Send` only under a `T: 'a`
        // bound that the compiler cannot prove for every lifetime inside a workflow's future, so a
        // workflow holding one across an `.await` would not be `Send`.
        let mut guard = self.tx.clone().lock_owned().await;
        if guard.is_none() {
            let begin = sqlx::AssertSqlSafe(self.begin.clone());
            *guard = Some(self.pool.begin_with(begin).await?);
        }
        Ok(OwnedMutexGuard::map(guard, |tx| {
            tx.as_mut().expect("begun above")
        }))
    }

    /// The transaction, if the step's code began one.
    async fn take(&self) -> Option<Transaction<'static, Postgres>> {
        self.tx.lock().await.take()
    }
}

impl WorkflowContext {
    // ---- run ------------------------------------------------------------------------------------------

    /// Runs `f` as the durable step `name`, at most once successfully, retried under `policy`.
    ///
    /// On replay `f` is not called: the recorded output is returned. A retryable failure parks the
    /// run until the back-off has passed and the next execution runs the next attempt; a permanent
    /// failure, or the last allowed attempt failing, returns [`WorkflowError::StepFailed`], the same
    /// in every later execution.
    pub async fn run<T, F, Fut>(&self, name: &str, policy: RetryPolicy, f: F) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepContext) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let result = self.run_inner(name, policy, f, None).await;
        self.guard(result)
    }

    /// Runs `f` as the durable step `name` in a transaction of its own, in which the attempt is
    /// recorded too: its database writes (through [`StepTx::transaction`]) happen exactly once. See the
    /// module docs; otherwise the same as [`run`](Self::run).
    pub async fn run_tx<T, F, Fut>(&self, name: &str, policy: RetryPolicy, f: F) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepContext, StepTx) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let tx = StepTx::new(self.inner.pool.clone(), self.inner.begin_held.clone());
        let handle = tx.clone();
        let result = self
            .run_inner(name, policy, move |step| f(step, handle), Some(tx))
            .await;
        self.guard(result)
    }

    async fn run_inner<T, F, Fut>(
        &self,
        name: &str,
        policy: RetryPolicy,
        f: F,
        step_tx: Option<StepTx>,
    ) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepContext) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let (index, decision) = self.begin(name, StepKind::Run, &policy).await?;
        let attempt = match decision {
            StepDecision::Replay(v) => return Ok(serde_json::from_value(v)?),
            StepDecision::ReplayFailure { error, attempts } => {
                return Err(WorkflowError::StepFailed {
                    step: name.to_owned(),
                    attempts,
                    error,
                });
            }
            StepDecision::RetryAt(at) => return Err(self.suspend(at, ParkReason::Retry)),
            StepDecision::Execute { attempt } => attempt,
            StepDecision::Abandoned { attempt, retry } => {
                // Its worker died inside the step; the lease expired and this execution took over.
                let error = StepError::retryable("worker_lost", "the worker running this attempt stopped");
                let retry_at = retry.then(|| self.now());
                let end = AttemptEnd::Failed {
                    error: &error,
                    retry_at,
                };
                store::close_attempt(
                    &self.inner.pool,
                    &self.inner.lease,
                    index,
                    attempt,
                    end,
                    self.now(),
                )
                .await?;
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), name, "abandoned");
                if !retry {
                    return Err(WorkflowError::StepFailed {
                        step: name.to_owned(),
                        attempts: attempt,
                        error,
                    });
                }
                attempt + 1
            }
            StepDecision::Resume(_) | StepDecision::Mismatch { .. } => {
                unreachable!("run steps never wait, and mismatches are returned by begin")
            }
        };

        // How an attempt is recorded: a step that returns within `record_start_after` is recorded
        // once, attempt and result together, in one statement. A step still running then is
        // recorded as `running` while it goes on (so if this process dies inside it, whoever takes
        // the run over knows an attempt was in flight and counts it), and closed when it returns.
        let started_at = self.now();
        let span = telemetry::step_span(&self.inner.identity, name, StepKind::Run, attempt);
        let step = StepContext {
            run_id: self.run_id(),
            step_name: name.to_owned(),
            step_index: index,
            attempt,
            idempotency_key: format!("{}/{name}/{index}", self.run_id()),
        };
        let work = f(step).instrument(span.clone());
        tokio::pin!(work);
        let mut recorded_running = false;
        let result = tokio::select! {
            biased;
            result = &mut work => result,
            () = tokio::time::sleep(self.inner.record_start_after) => {
                let running = RecordedAttempt {
                    step_index: index,
                    step_name: name,
                    kind: StepKind::Run,
                    attempt,
                    started_at,
                    end: None,
                };
                // If this fails the step's future is dropped here, as a crash would stop it. The
                // step's code is paused meanwhile, perhaps holding its transaction: the record goes
                // through the side pool, never waiting for a second connection of the shared one.
                store::record_attempt(&self.inner.side, &self.inner.lease, running).await?;
                recorded_running = true;
                work.await
            }
        };
        let result = match result {
            Ok(v) => {
                serde_json::to_value(v).map_err(|e| StepError::permanent("serialization", e.to_string()))
            }
            Err(e) => Err(e),
        };
        telemetry::record_step(&span, result.as_ref().map(|_| ()));
        drop(span);
        // A transactional step's writes: kept to commit with the record if it succeeded, rolled
        // back (dropped) otherwise, and by a crash here.
        let mut tx = match &step_tx {
            Some(step_tx) => step_tx.take().await,
            None => None,
        };
        if result.is_err() {
            tx = None;
        }
        self.hook(HookPoint::StepReturned {
            worker_id: self.inner.lease.owner.clone(),
            run_id: self.run_id(),
            step_name: name.to_owned(),
            attempt,
        })
        .await?;

        let now = self.now();
        let action = core::after_attempt(&policy, attempt, result, now);
        let end = match &action {
            AttemptAction::Complete(v) => AttemptEnd::Completed(v),
            AttemptAction::RetryAt { at, error } => AttemptEnd::Failed {
                error,
                retry_at: Some(*at),
            },
            AttemptAction::GiveUp(error) => AttemptEnd::Failed {
                error,
                retry_at: None,
            },
        };
        let row = RecordedAttempt {
            step_index: index,
            step_name: name,
            kind: StepKind::Run,
            attempt,
            started_at,
            end: Some((end, now)),
        };
        match tx {
            Some(mut tx) => {
                record_end(&mut *tx, &self.inner.lease, row, recorded_running).await?;
                // Committed by the execution's next write ("Held commits").
                let after_commit = step_tx.as_ref().map(StepTx::committed).unwrap_or_default();
                self.hold(Held { tx, after_commit });
            }
            // A quick step: its row waits for the execution's next write (module docs).
            None if !recorded_running => self.defer(store::AttemptRow::new(row)?),
            None => record_end(&self.inner.pool, &self.inner.lease, row, recorded_running).await?,
        }
        match action {
            AttemptAction::Complete(v) => {
                self.inner.metrics.step_attempt(self.workflow_name(), name, "ok");
                Ok(serde_json::from_value(v)?)
            }
            AttemptAction::RetryAt { at, .. } => {
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), name, "retry");
                Err(self.suspend(at, ParkReason::Retry))
            }
            AttemptAction::GiveUp(error) => {
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), name, "failed");
                Err(WorkflowError::StepFailed {
                    step: name.to_owned(),
                    attempts: attempt,
                    error,
                })
            }
        }
    }
}

/// Records an attempt's end: closes the row recorded as `running`, or records attempt and end in one.
async fn record_end<'c, E>(
    db: E,
    lease: &store::Lease,
    row: RecordedAttempt<'_>,
    recorded_running: bool,
) -> Result<(), WorkflowError>
where
    E: sqlx::PgExecutor<'c>,
{
    if recorded_running {
        let (end, now) = row.end.expect("an end to record");
        store::close_attempt(db, lease, row.step_index, row.attempt, end, now).await
    } else {
        store::record_attempt(db, lease, row).await
    }
}
