//! What workflow code talks to: [`WorkflowContext`], the durable steps of one execution.
//!
//! Each method is one step. It takes the next step position, asks the deterministic core
//! ([`crate::core`]) what the history says about that position, and then either returns the recorded
//! result (replay: nothing runs, nothing is traced), or does the work and records it before returning.
//!
//! A step that cannot finish in this execution (a sleep not over, a signal not arrived, a child still
//! running, a retry not yet due) records what it waits for and returns [`WorkflowError::Suspended`].
//! Workflow code lets that propagate with `?`; the engine then parks the run by setting its
//! `available_at` and ends the execution. Nothing waits in memory, so a parked run costs one row, and
//! any worker can resume it: by running the function again from the top.
//!
//! Steps must be awaited one after another: positions are handed out in call order, which is only
//! the same in every execution if the calls are.
//!
//! # Layout
//! - this module: the context itself, what every step does first ([`WorkflowContext`]'s `begin`:
//!   its position, interrupts, the replay decision), and the interrupts' delivery;
//! - `run`: [`WorkflowContext::run`], a step with side effects under a retry policy;
//! - `wait`: [`WorkflowContext::sleep`] and [`WorkflowContext::wait_for_signal`], the waits that park
//!   the run;
//! - `signal`: [`WorkflowContext::send_signal`];
//! - `child`: [`WorkflowContext::run_workflow`], a child run and the wait for its end.

mod child;
mod run;

pub(crate) use run::AfterCommit;
pub use run::{StepTransaction, StepTx};
mod signal;
mod wait;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Clock;
use crate::core::{
    self, AttemptRecord, History, InterruptDecision, InterruptState, RetryPolicy, StepDecision, StepKind,
};
use crate::error::{StepError, WorkflowError};
use crate::hooks::{HookAction, HookPoint, Hooks};
use crate::store::{self, AttemptEnd, AttemptRow, Lease, WaitStart};
use crate::telemetry::{Metrics, RunIdentity};

/// What step code receives: where it runs and the key that makes its side effects idempotent.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The run.
    pub run_id: Uuid,
    /// The step's name.
    pub step_name: String,
    /// The step's position in the workflow.
    pub step_index: u32,
    /// 1-based; more than 1 on a retry, or after a worker died inside the step.
    pub attempt: u32,
    /// `run_id/step_name/step_index`: the same for every attempt of this step, in every execution.
    /// A step may run more than once (its worker can die after the side effect and before the result
    /// is recorded), so side effects must be keyed by this: an HTTP `Idempotency-Key`, a unique
    /// column, an outbox row id.
    pub idempotency_key: String,
}

/// Why a run parked, as the next execution's link reason says.
#[derive(Debug, Clone, Copy, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum ParkReason {
    /// A retry's back-off.
    Retry,
    /// A sleep or a wait's timeout.
    Timer,
}

impl ParkReason {
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug)]
struct ExecState {
    next_index: u32,
    replayed: u32,
    interrupts: InterruptState,
    suspended: Option<(OffsetDateTime, ParkReason)>,
    /// The wait the execution parks for, if it began in this execution: its row is written with the
    /// park (one transaction where there were two).
    wait_start: Option<WaitStart>,
    /// A quick step's attempt whose row waits for this execution's next write (see `run`, "Deferred
    /// records"): the next step writes it before it does anything, a park or the run's end writes it
    /// in its own statement.
    ended: Option<AttemptRow>,
    /// A transaction that recorded a step's end and waits for the execution's next write to commit
    /// (see `run`, "Held commits"): the next step commits it before it does anything, a park or the
    /// run's end commits it with their own statement.
    held: Option<Held>,
    /// The names of the signals in the mailbox, as the claim saw them, less those this execution
    /// took: where a wait looks before it parks (see `wait_for_signal`).
    mailbox: Vec<String>,
    /// The signal the execution parks waiting for, if it does: the park checks the mailbox for it.
    awaiting: Option<String>,
    /// The database failed or the lease was lost: nothing more may be written by this execution.
    aborted: bool,
}

/// How an execution's context ended, read by the worker.
#[derive(Debug)]
pub(crate) struct ContextSummary {
    pub replayed: u32,
    pub interrupts: InterruptState,
    pub suspended: Option<(OffsetDateTime, ParkReason)>,
    pub wait_start: Option<WaitStart>,
    pub ended: Option<AttemptRow>,
    pub held: Option<Held>,
    pub awaiting: Option<String>,
    pub aborted: bool,
}

/// A step's transaction whose commit waits for the execution's next write (see `run`, "Held
/// commits"), with what runs once it has committed. Dropped, it rolls back: as a crash would.
pub(crate) struct Held {
    pub tx: Transaction<'static, Postgres>,
    pub after_commit: Vec<AfterCommit>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("after_commit", &self.after_commit.len())
            .finish_non_exhaustive()
    }
}

/// `BEGIN` for a transaction that may be held, in the same round trip: PostgreSQL ends the session
/// if it sits idle in the transaction longer than the worker's lease. A held transaction's record
/// holds a share lock on the run's row, and the claim skips locked rows, so without the bound a
/// worker that hung (alive, connection open) between a step and its park would keep every other
/// worker from taking the run over; with it the run is free once the lease has run out, as it is
/// after a crash. A step's own code that sits idle in its transaction that long is ended too, and
/// its attempt fails as a database error would.
fn begin_held(lease: Duration) -> String {
    format!(
        "begin; set local idle_in_transaction_session_timeout = {}",
        lease.as_millis().clamp(1, i32::MAX as u128)
    )
}

impl Held {
    /// Commits, then runs what waited for the commit.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        for f in self.after_commit {
            f();
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// Where a running step's attempt is recorded (see [`store::side_pool`]).
    side: PgPool,
    clock: Arc<dyn Clock>,
    lease: Lease,
    identity: RunIdentity,
    execution_number: i32,
    history: History,
    execution_cx: opentelemetry::Context,
    metrics: Metrics,
    wake_local: Arc<Notify>,
    wake_channel: store::WakeChannel,
    hooks: Option<Arc<dyn Hooks>>,
    record_start_after: Duration,
    /// `BEGIN` for a transaction that may be held (see `run`, "Held commits").
    begin_held: String,
    state: Mutex<ExecState>,
}

/// The durable steps of one execution of a workflow. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkflowContext {
    inner: Arc<Inner>,
}

/// What every context constructor needs.
#[derive(Debug)]
pub(crate) struct ContextParts {
    pub pool: PgPool,
    /// The worker's [`store::side_pool`].
    pub side: PgPool,
    pub clock: Arc<dyn Clock>,
    pub lease: Lease,
    pub identity: RunIdentity,
    pub execution_number: i32,
    pub history: Vec<AttemptRecord>,
    pub execution_cx: opentelemetry::Context,
    pub metrics: Metrics,
    pub wake_local: Arc<Notify>,
    pub wake_channel: store::WakeChannel,
    pub hooks: Option<Arc<dyn Hooks>>,
    pub record_start_after: Duration,
    /// The worker's lease: how long a held transaction may sit idle before the server ends it.
    pub lease_length: Duration,
    pub interrupts: InterruptState,
    pub mailbox: Vec<String>,
}

impl WorkflowContext {
    pub(crate) fn new(parts: ContextParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: parts.pool,
                side: parts.side,
                clock: parts.clock,
                lease: parts.lease,
                identity: parts.identity,
                execution_number: parts.execution_number,
                history: History::new(parts.history),
                execution_cx: parts.execution_cx,
                metrics: parts.metrics,
                wake_local: parts.wake_local,
                wake_channel: parts.wake_channel,
                hooks: parts.hooks,
                record_start_after: parts.record_start_after,
                begin_held: begin_held(parts.lease_length),
                state: Mutex::new(ExecState {
                    next_index: 0,
                    replayed: 0,
                    interrupts: parts.interrupts,
                    suspended: None,
                    wait_start: None,
                    ended: None,
                    held: None,
                    mailbox: parts.mailbox,
                    awaiting: None,
                    aborted: false,
                }),
            }),
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.inner.identity.run_id
    }

    /// The workflow's name.
    pub fn workflow_name(&self) -> &str {
        &self.inner.identity.workflow_name
    }

    /// Which execution of the run this is, 1-based. Not deterministic across executions: never
    /// branch on it.
    pub fn execution_number(&self) -> u32 {
        self.inner.execution_number as u32
    }

    /// How the execution ended; the deferred attempt row, if any, moves into it (the park or the
    /// run's end writes it).
    pub(crate) fn summary(&self) -> ContextSummary {
        let mut s = self.state();
        ContextSummary {
            replayed: s.replayed,
            interrupts: s.interrupts,
            suspended: s.suspended,
            wait_start: s.wait_start.clone(),
            ended: s.ended.take(),
            held: s.held.take(),
            awaiting: s.awaiting.take(),
            aborted: s.aborted,
        }
    }

    /// Leaves a quick step's attempt row for the execution's next write (see `run`, "Deferred
    /// records").
    fn defer(&self, row: AttemptRow) {
        let earlier = self.state().ended.replace(row);
        debug_assert!(
            earlier.is_none(),
            "every step writes the deferred row before it runs"
        );
    }

    /// Begins a transaction that may be held for the execution's next write (see `run`, "Held
    /// commits").
    async fn begin_held(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.inner
            .pool
            .begin_with(sqlx::AssertSqlSafe(self.inner.begin_held.clone()))
            .await
    }

    /// Holds `tx`, in which a step's end is recorded, for the execution's next write to commit
    /// (see `run`, "Held commits").
    fn hold(&self, held: Held) {
        let earlier = self.state().held.replace(held);
        debug_assert!(
            earlier.is_none(),
            "every step commits the held transaction before it runs"
        );
    }

    /// Writes what waits for the execution's next write, now: the held transaction (with the
    /// deferred row in it, if there is one) commits, or the deferred row is written in one statement
    /// fenced by the lease. Every step calls this before it writes anything or runs any code of its
    /// own; only a wait that parks at once leaves both to its park.
    async fn write_deferred(&self) -> Result<(), WorkflowError> {
        let (row, held) = {
            let mut s = self.state();
            (s.ended.take(), s.held.take())
        };
        match (held, row) {
            (Some(mut held), row) => {
                if let Some(row) = row {
                    store::record_row(&mut *held.tx, &self.inner.lease, &row).await?;
                }
                Ok(held.commit().await?)
            }
            (None, Some(row)) => store::record_row(&self.inner.pool, &self.inner.lease, &row).await,
            (None, None) => Ok(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.inner.state.lock().expect("workflow context lock")
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    fn suspend(&self, until: OffsetDateTime, reason: ParkReason) -> WorkflowError {
        self.state().suspended = Some((until, reason));
        WorkflowError::Suspended
    }

    /// Awaits the test hooks at `point`; on [`HookAction::Crash`] the execution stops as if its
    /// process had died: nothing more is written, and the worker abandons the run to its lease.
    async fn hook(&self, point: HookPoint) -> Result<(), WorkflowError> {
        let Some(hooks) = &self.inner.hooks else {
            return Ok(());
        };
        match hooks.at(point).await {
            HookAction::Continue => Ok(()),
            HookAction::Crash => {
                tracing::info!(run_id = %self.run_id(), "a test hook crashed the execution");
                self.state().aborted = true;
                Err(WorkflowError::LeaseLost)
            }
        }
    }

    /// Remembers infrastructure failures, so that workflow code that swallows them cannot make the
    /// engine write a terminal state over a run it no longer owns.
    fn guard<T>(&self, result: Result<T, WorkflowError>) -> Result<T, WorkflowError> {
        if let Err(WorkflowError::Database(_) | WorkflowError::LeaseLost) = &result {
            self.state().aborted = true;
        }
        result
    }

    /// The common start of every step: position, interrupts, replay decision.
    async fn begin(
        &self,
        name: &str,
        kind: StepKind,
        policy: &RetryPolicy,
    ) -> Result<(u32, StepDecision), WorkflowError> {
        let (index, interrupts) = {
            let mut s = self.state();
            if s.suspended.is_some() || s.aborted {
                // The execution is over; whatever the code does next must not touch the history.
                return Err(WorkflowError::Suspended);
            }
            let index = s.next_index;
            s.next_index += 1;
            (index, s.interrupts)
        };
        // A wait may park without another write, and its park then carries the row; every other
        // step writes it first, so its own code never runs on an unrecorded result.
        let parks_first = matches!(
            kind,
            StepKind::Sleep | StepKind::WaitForSignal | StepKind::RunWorkflow
        );
        if !parks_first {
            self.write_deferred().await?;
        }
        let now = self.now();
        let recorded = self.inner.history.at(index);
        let decision = core::decide_step(recorded, name, kind, policy, now);
        if let StepDecision::Mismatch { recorded } = decision {
            return Err(WorkflowError::NonDeterministic {
                index,
                recorded,
                called: (name.to_owned(), kind.as_str().to_owned()),
            });
        }
        let settled = matches!(
            decision,
            StepDecision::Replay(_) | StepDecision::ReplayFailure { .. }
        );
        match core::decide_interrupt(&interrupts, index, settled, now) {
            InterruptDecision::None => {}
            InterruptDecision::Replay(interrupt) => return Err(interrupt.to_error()),
            InterruptDecision::Deliver(interrupt) => {
                self.guard(self.write_deferred().await)?;
                self.guard(self.deliver_interrupt(interrupt, index, &decision).await)?;
                self.state().interrupts.delivered = Some((interrupt, index));
                return Err(interrupt.to_error());
            }
        }
        if matches!(decision, StepDecision::Replay(_)) {
            self.state().replayed += 1;
        }
        Ok((index, decision))
    }

    async fn deliver_interrupt(
        &self,
        interrupt: core::Interrupt,
        index: u32,
        decision: &StepDecision,
    ) -> Result<(), WorkflowError> {
        let mut tx = self.inner.pool.begin().await?;
        store::record_interrupt(&mut tx, &self.inner.lease, interrupt, index).await?;
        if let StepDecision::Resume(wait) = decision {
            // The wait in progress ends here, failed; a child it waited for is asked to stop too.
            let error = StepError::permanent(interrupt.as_str(), "interrupted while waiting");
            let end = AttemptEnd::Failed {
                error: &error,
                retry_at: None,
            };
            store::close_attempt(&mut *tx, &self.inner.lease, index, wait.attempt, end, self.now()).await?;
            if let Some(child) = wait.child_run_id {
                store::request_cancel(&mut tx, child, self.now(), self.inner.wake_channel).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A record at this position that the step's kind can never have written.
    fn unexpected(&self, index: u32, decision: StepDecision) -> WorkflowError {
        WorkflowError::failed(
            "corrupt_history",
            format!("step {index}: unexpected record {decision:?}"),
        )
    }
}
