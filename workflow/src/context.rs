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

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::clock::Clock;
use crate::core::{
    self, AttemptAction, AttemptRecord, AttemptStatus, History, InterruptDecision, InterruptState,
    RetryPolicy, StepDecision, StepKind, WaitDecision,
};
use crate::error::{RunError, StepError, WorkflowError};
use crate::store::{self, AttemptEnd, Lease, NewAttempt, NewRun};
use crate::telemetry::{self, Metrics, ResolvedWait, RunIdentity, link_reason};

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
#[derive(Debug, Clone, Copy)]
pub(crate) enum ParkReason {
    /// A retry's back-off.
    Retry,
    /// A sleep or a wait's timeout.
    Timer,
}

impl ParkReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ParkReason::Retry => "retry",
            ParkReason::Timer => "timer",
        }
    }
}

#[derive(Debug)]
struct ExecState {
    next_index: u32,
    replayed: u32,
    interrupts: InterruptState,
    suspended: Option<(OffsetDateTime, ParkReason)>,
    /// The database failed or the lease was lost: nothing more may be written by this execution.
    aborted: bool,
}

/// How an execution's context ended, read by the worker.
#[derive(Debug)]
pub(crate) struct ContextSummary {
    pub replayed: u32,
    pub interrupts: InterruptState,
    pub suspended: Option<(OffsetDateTime, ParkReason)>,
    pub aborted: bool,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    lease: Lease,
    identity: RunIdentity,
    execution_number: i32,
    history: History,
    execution_cx: opentelemetry::Context,
    metrics: Metrics,
    wake_local: Arc<Notify>,
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
    pub clock: Arc<dyn Clock>,
    pub lease: Lease,
    pub identity: RunIdentity,
    pub execution_number: i32,
    pub history: Vec<AttemptRecord>,
    pub execution_cx: opentelemetry::Context,
    pub metrics: Metrics,
    pub wake_local: Arc<Notify>,
    pub interrupts: InterruptState,
}

impl WorkflowContext {
    pub(crate) fn new(parts: ContextParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: parts.pool,
                clock: parts.clock,
                lease: parts.lease,
                identity: parts.identity,
                execution_number: parts.execution_number,
                history: History::new(parts.history),
                execution_cx: parts.execution_cx,
                metrics: parts.metrics,
                wake_local: parts.wake_local,
                state: Mutex::new(ExecState {
                    next_index: 0,
                    replayed: 0,
                    interrupts: parts.interrupts,
                    suspended: None,
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

    pub(crate) fn summary(&self) -> ContextSummary {
        let s = self.state();
        ContextSummary {
            replayed: s.replayed,
            interrupts: s.interrupts,
            suspended: s.suspended,
            aborted: s.aborted,
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
            store::finish_attempt(&mut tx, self.run_id(), index, wait.attempt, end, self.now()).await?;
            if let Some(child) = wait.child_run_id {
                store::request_cancel(&mut tx, child, self.now()).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

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
        let result = self.run_inner(name, policy, f).await;
        self.guard(result)
    }

    async fn run_inner<T, F, Fut>(&self, name: &str, policy: RetryPolicy, f: F) -> Result<T, WorkflowError>
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
                let mut tx = self.inner.pool.begin().await?;
                store::fence(&mut tx, &self.inner.lease).await?;
                let end = AttemptEnd::Failed {
                    error: &error,
                    retry_at,
                };
                store::finish_attempt(&mut tx, self.run_id(), index, attempt, end, self.now()).await?;
                tx.commit().await?;
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

        // Record the attempt before running it: if this process dies inside `f`, the row stays
        // `running`, and whoever takes the run over knows an attempt was in flight.
        let started_at = self.now();
        let mut tx = self.inner.pool.begin().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
        let row = NewAttempt {
            step_index: index,
            step_name: name,
            kind: StepKind::Run,
            attempt,
            status: AttemptStatus::Running,
            output: None,
            wake_at: None,
            child_run_id: None,
            started_at,
        };
        store::insert_attempt(&mut tx, self.run_id(), row).await?;
        tx.commit().await?;

        let span = telemetry::step_span(&self.inner.identity, name, StepKind::Run, attempt);
        let step = StepContext {
            run_id: self.run_id(),
            step_name: name.to_owned(),
            step_index: index,
            attempt,
            idempotency_key: format!("{}/{name}/{index}", self.run_id()),
        };
        let result = f(step).instrument(span.clone()).await;
        let result = match result {
            Ok(v) => {
                serde_json::to_value(v).map_err(|e| StepError::permanent("serialization", e.to_string()))
            }
            Err(e) => Err(e),
        };
        telemetry::record_step(&span, result.as_ref().map(|_| ()));
        drop(span);

        let now = self.now();
        let action = core::after_attempt(&policy, attempt, result, now);
        let mut tx = self.inner.pool.begin().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
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
        store::finish_attempt(&mut tx, self.run_id(), index, attempt, end, now).await?;
        tx.commit().await?;
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

impl WorkflowContext {
    fn unexpected(&self, index: u32, decision: StepDecision) -> WorkflowError {
        WorkflowError::failed(
            "corrupt_history",
            format!("step {index}: unexpected record {decision:?}"),
        )
    }

    /// Records the start of a wait; returns the record replay would have read.
    async fn begin_wait(
        &self,
        index: u32,
        name: &str,
        kind: StepKind,
        wake_at: OffsetDateTime,
        child_run_id: Option<Uuid>,
    ) -> Result<AttemptRecord, WorkflowError> {
        let started_at = self.now();
        let mut tx = self.inner.pool.begin().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
        let row = NewAttempt {
            step_index: index,
            step_name: name,
            kind,
            attempt: 1,
            status: AttemptStatus::Waiting,
            output: None,
            wake_at: Some(wake_at),
            child_run_id,
            started_at,
        };
        store::insert_attempt(&mut tx, self.run_id(), row).await?;
        tx.commit().await?;
        Ok(waiting_record(
            index,
            name,
            kind,
            started_at,
            wake_at,
            child_run_id,
        ))
    }

    // ---- sleep ----------------------------------------------------------------------------------------

    /// A durable sleep: the run parks (no task, no timer in memory) and any worker resumes it once
    /// `duration` has passed. On resolution a `workflow.wait sleep` span covers the whole sleep.
    pub async fn sleep(&self, name: &str, duration: Duration) -> Result<(), WorkflowError> {
        let result = self.sleep_inner(name, duration).await;
        self.guard(result)
    }

    async fn sleep_inner(&self, name: &str, duration: Duration) -> Result<(), WorkflowError> {
        let (index, decision) = self
            .begin(name, StepKind::Sleep, &RetryPolicy::no_retry())
            .await?;
        let wait = match decision {
            StepDecision::Replay(_) => return Ok(()),
            StepDecision::Execute { .. } => {
                self.begin_wait(index, name, StepKind::Sleep, self.now() + duration, None)
                    .await?
            }
            StepDecision::Resume(w) => *w,
            other => return Err(self.unexpected(index, other)),
        };
        let now = self.now();
        match core::decide_wait(false, wait.wake_at.unwrap_or(now), now) {
            WaitDecision::ParkUntil(until) => Err(self.suspend(until, ParkReason::Timer)),
            WaitDecision::Resolved { .. } => {
                let mut tx = self.inner.pool.begin().await?;
                store::fence(&mut tx, &self.inner.lease).await?;
                store::finish_attempt(
                    &mut tx,
                    self.run_id(),
                    index,
                    wait.attempt,
                    AttemptEnd::Completed(&Value::Null),
                    now,
                )
                .await?;
                tx.commit().await?;
                self.emit_wait(ResolvedWait {
                    kind: "sleep",
                    step_name: name,
                    started_at: wait.started_at,
                    ended_at: now,
                    timed_out: false,
                    signal_name: None,
                    link: None,
                });
                Ok(())
            }
        }
    }

    fn emit_wait(&self, wait: ResolvedWait<'_>) {
        telemetry::emit_wait(&self.inner.execution_cx, &self.inner.identity, wait);
    }

    // ---- signals --------------------------------------------------------------------------------------

    /// Waits for the signal `name`, at most `timeout`; `None` means the timeout passed first.
    ///
    /// **The signal rule:** signals wait in the run's mailbox. A wait takes the oldest signal of its
    /// name that no earlier wait took, whenever it was sent: before the run started, before this wait
    /// began, or while the run slept. So a signal that arrives early is never lost, and two signals of
    /// the same name feed two waits in send order. A signal that no wait takes stays in the mailbox.
    pub async fn wait_for_signal<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<T>, WorkflowError> {
        let result = self.wait_for_signal_inner(name, timeout).await;
        self.guard(result)
    }

    async fn wait_for_signal_inner<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<T>, WorkflowError> {
        let (index, decision) = self
            .begin(name, StepKind::WaitForSignal, &RetryPolicy::no_retry())
            .await?;
        let now = self.now();
        let (attempt, started_at, wake_at, new) = match decision {
            StepDecision::Replay(v) => return signal_result(v),
            StepDecision::ReplayFailure { error, attempts } => {
                return Err(WorkflowError::StepFailed {
                    step: name.to_owned(),
                    attempts,
                    error,
                });
            }
            StepDecision::Execute { .. } => (1, now, now + timeout, true),
            StepDecision::Resume(w) => (w.attempt, w.started_at, w.wake_at.unwrap_or(now), false),
            other => return Err(self.unexpected(index, other)),
        };
        let mut tx = self.inner.pool.begin().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
        // Taking the signal and completing the wait commit together: a crash in between loses neither.
        let signal = store::consume_signal(&mut tx, self.run_id(), name, index, now).await?;
        match core::decide_wait(signal.is_some(), wake_at, now) {
            WaitDecision::ParkUntil(until) => {
                if new {
                    let row = NewAttempt {
                        step_index: index,
                        step_name: name,
                        kind: StepKind::WaitForSignal,
                        attempt,
                        status: AttemptStatus::Waiting,
                        output: None,
                        wake_at: Some(wake_at),
                        child_run_id: None,
                        started_at,
                    };
                    store::insert_attempt(&mut tx, self.run_id(), row).await?;
                }
                tx.commit().await?;
                Err(self.suspend(until, ParkReason::Timer))
            }
            WaitDecision::Resolved { timed_out } => {
                let output = json!({
                    "timed_out": timed_out,
                    "payload": signal.as_ref().map(|s| s.payload.clone()),
                });
                if new {
                    let row = NewAttempt {
                        step_index: index,
                        step_name: name,
                        kind: StepKind::WaitForSignal,
                        attempt,
                        status: AttemptStatus::Completed,
                        output: Some(&output),
                        wake_at: Some(wake_at),
                        child_run_id: None,
                        started_at,
                    };
                    store::insert_attempt(&mut tx, self.run_id(), row).await?;
                } else {
                    store::finish_attempt(
                        &mut tx,
                        self.run_id(),
                        index,
                        attempt,
                        AttemptEnd::Completed(&output),
                        now,
                    )
                    .await?;
                }
                tx.commit().await?;
                self.emit_wait(ResolvedWait {
                    kind: "signal",
                    step_name: name,
                    started_at,
                    ended_at: now,
                    timed_out,
                    signal_name: Some(name),
                    link: signal
                        .as_ref()
                        .map(|s| (s.sender.as_slice(), link_reason::SIGNAL)),
                });
                signal_result(output)
            }
        }
    }

    /// Sends the signal `name` to the run `target`, once: the step's record makes a replay skip it,
    /// and the signal's idempotency key (`run_id/index`) makes a crash between sending and recording
    /// store it only once.
    pub async fn send_signal<T: Serialize>(
        &self,
        name: &str,
        target: Uuid,
        payload: &T,
    ) -> Result<(), WorkflowError> {
        let result = self.send_signal_inner(name, target, payload).await;
        self.guard(result)
    }

    async fn send_signal_inner<T: Serialize>(
        &self,
        name: &str,
        target: Uuid,
        payload: &T,
    ) -> Result<(), WorkflowError> {
        let (index, decision) = self
            .begin(name, StepKind::SendSignal, &RetryPolicy::no_retry())
            .await?;
        match decision {
            StepDecision::Replay(_) => return Ok(()),
            StepDecision::ReplayFailure { error, attempts } => {
                return Err(WorkflowError::StepFailed {
                    step: name.to_owned(),
                    attempts,
                    error,
                });
            }
            StepDecision::Execute { .. } => {}
            other => return Err(self.unexpected(index, other)),
        }
        let payload = serde_json::to_value(payload)?;
        let span = telemetry::step_span(&self.inner.identity, name, StepKind::SendSignal, 1);
        let result = async {
            let now = self.now();
            let mut tx = self.inner.pool.begin().await?;
            store::fence(&mut tx, &self.inner.lease).await?;
            let mut row = NewAttempt {
                step_index: index,
                step_name: name,
                kind: StepKind::SendSignal,
                attempt: 1,
                status: AttemptStatus::Completed,
                output: None,
                wake_at: None,
                child_run_id: None,
                started_at: now,
            };
            let target_run = store::signal_target(&mut tx, target).await?;
            match target_run {
                Some(t) if !t.status.is_terminal() => {
                    let identity = RunIdentity {
                        run_id: target,
                        workflow_name: t.workflow_name,
                        labels: t.labels,
                    };
                    let send = telemetry::signal_send_span(&identity, &t.carrier, name);
                    let sender = telemetry::carrier_of(&send);
                    let key = format!("{}/{index}", self.run_id());
                    store::insert_signal(&mut tx, target, name, &payload, Some(&key), &sender, now).await?;
                    store::insert_attempt(&mut tx, self.run_id(), row).await?;
                    tx.commit().await?;
                    self.inner.wake_local.notify_waiters();
                    Ok(Ok(()))
                }
                other => {
                    let error = StepError::permanent(
                        "run_finished",
                        if other.is_some() {
                            "the target run already ended"
                        } else {
                            "no such run"
                        },
                    );
                    row.status = AttemptStatus::Running;
                    store::insert_attempt(&mut tx, self.run_id(), row).await?;
                    let end = AttemptEnd::Failed {
                        error: &error,
                        retry_at: None,
                    };
                    store::finish_attempt(&mut tx, self.run_id(), index, 1, end, now).await?;
                    tx.commit().await?;
                    Ok(Err(error))
                }
            }
        }
        .instrument(span.clone())
        .await;
        let result: Result<Result<(), StepError>, WorkflowError> = result;
        match result? {
            Ok(()) => {
                telemetry::record_ok(&span);
                self.inner.metrics.step_attempt(self.workflow_name(), name, "ok");
                Ok(())
            }
            Err(error) => {
                telemetry::record_step(&span, Err(&error));
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), name, "failed");
                Err(WorkflowError::StepFailed {
                    step: name.to_owned(),
                    attempts: 1,
                    error,
                })
            }
        }
    }

    // ---- child workflows ------------------------------------------------------------------------------

    /// Starts the workflow `workflow` as a child of this run and waits for its output, at most
    /// `timeout` (then the child is asked to cancel and [`WorkflowError::ChildTimedOut`] is returned).
    ///
    /// The child is an ordinary run with its own executions; its create span is a child of this step,
    /// so in `continuous` it joins the parent's trace. The child's end wakes the parent.
    pub async fn run_workflow<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, WorkflowError> {
        let result = self.run_workflow_inner(workflow, input, timeout).await;
        self.guard(result)
    }

    async fn run_workflow_inner<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, WorkflowError> {
        let (index, decision) = self
            .begin(workflow, StepKind::RunWorkflow, &RetryPolicy::no_retry())
            .await?;
        let wait = match decision {
            StepDecision::Replay(v) => return child_result(v),
            StepDecision::ReplayFailure { error, attempts } => {
                return Err(WorkflowError::StepFailed {
                    step: workflow.to_owned(),
                    attempts,
                    error,
                });
            }
            StepDecision::Execute { .. } => {
                self.start_child(index, workflow, serde_json::to_value(input)?, timeout)
                    .await?
            }
            StepDecision::Resume(w) => *w,
            other => return Err(self.unexpected(index, other)),
        };
        let child_id = wait.child_run_id.ok_or_else(|| {
            WorkflowError::failed("corrupt_history", format!("step {index} has no child run"))
        })?;
        let child = {
            let mut conn = self.inner.pool.acquire().await?;
            store::run_info(&mut conn, child_id).await.map_err(|e| match e {
                crate::Error::Database(e) => WorkflowError::Database(e),
                other => WorkflowError::failed("corrupt_history", other.to_string()),
            })?
        };
        let child = child
            .ok_or_else(|| WorkflowError::failed("corrupt_history", format!("no child run {child_id}")))?;
        let now = self.now();
        match core::decide_wait(child.status.is_terminal(), wait.wake_at.unwrap_or(now), now) {
            WaitDecision::ParkUntil(until) => Err(self.suspend(until, ParkReason::Timer)),
            WaitDecision::Resolved { timed_out } => {
                let output = if timed_out {
                    json!({ "status": "timed_out", "run_id": child_id })
                } else {
                    json!({ "status": child.status, "run_id": child_id, "output": child.output, "error": child.error })
                };
                let mut tx = self.inner.pool.begin().await?;
                store::fence(&mut tx, &self.inner.lease).await?;
                store::finish_attempt(
                    &mut tx,
                    self.run_id(),
                    index,
                    wait.attempt,
                    AttemptEnd::Completed(&output),
                    now,
                )
                .await?;
                if timed_out {
                    store::request_cancel(&mut tx, child_id, now).await?;
                }
                tx.commit().await?;
                let child_create: Vec<(String, String)> = child
                    .traceparent
                    .iter()
                    .map(|tp| ("traceparent".to_owned(), tp.clone()))
                    .collect();
                self.emit_wait(ResolvedWait {
                    kind: "child",
                    step_name: workflow,
                    started_at: wait.started_at,
                    ended_at: now,
                    timed_out,
                    signal_name: None,
                    link: Some((child_create.as_slice(), link_reason::CHILD)),
                });
                child_result(output)
            }
        }
    }

    async fn start_child(
        &self,
        index: u32,
        workflow: &str,
        input: Value,
        timeout: Duration,
    ) -> Result<AttemptRecord, WorkflowError> {
        let span = telemetry::step_span(&self.inner.identity, workflow, StepKind::RunWorkflow, 1);
        let started_at = self.now();
        let wake_at = started_at + timeout;
        let result = async {
            // The child inherits the parent's labels (see `crate::labels`).
            let identity = RunIdentity {
                run_id: Uuid::now_v7(),
                workflow_name: workflow.to_owned(),
                labels: self.inner.identity.labels.clone(),
            };
            let create = telemetry::create_span(&identity, Some(self.run_id()));
            let carrier = telemetry::carrier_of(&create);
            let key = format!("{}/{index}", self.run_id());
            let mut tx = self.inner.pool.begin().await?;
            store::fence(&mut tx, &self.inner.lease).await?;
            let run = NewRun {
                id: identity.run_id,
                workflow_name: workflow,
                input: &input,
                idempotency_key: Some(&key),
                parent_run_id: Some(self.run_id()),
                carrier: &carrier,
                created_at: started_at,
                deadline_at: None,
                labels: &identity.labels,
            };
            let (child_id, _) = store::insert_run(&mut tx, run).await?;
            let row = NewAttempt {
                step_index: index,
                step_name: workflow,
                kind: StepKind::RunWorkflow,
                attempt: 1,
                status: AttemptStatus::Waiting,
                output: None,
                wake_at: Some(wake_at),
                child_run_id: Some(child_id),
                started_at,
            };
            store::insert_attempt(&mut tx, self.run_id(), row).await?;
            tx.commit().await?;
            Ok::<_, WorkflowError>(child_id)
        }
        .instrument(span.clone())
        .await;
        match &result {
            Ok(_) => {
                telemetry::record_ok(&span);
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), workflow, "ok");
            }
            Err(e) => telemetry::record_failure(&span, &e.to_run_error().error_type, &e.to_string()),
        }
        let child_id = result?;
        self.inner.wake_local.notify_waiters();
        Ok(waiting_record(
            index,
            workflow,
            StepKind::RunWorkflow,
            started_at,
            wake_at,
            Some(child_id),
        ))
    }
}

fn waiting_record(
    index: u32,
    name: &str,
    kind: StepKind,
    started_at: OffsetDateTime,
    wake_at: OffsetDateTime,
    child_run_id: Option<Uuid>,
) -> AttemptRecord {
    AttemptRecord {
        step_index: index,
        step_name: name.to_owned(),
        kind,
        attempt: 1,
        status: AttemptStatus::Waiting,
        output: None,
        error: None,
        retry_at: None,
        wake_at: Some(wake_at),
        child_run_id,
        started_at,
    }
}

/// A signal wait's recorded result: `None` for a timeout.
fn signal_result<T: DeserializeOwned>(v: Value) -> Result<Option<T>, WorkflowError> {
    if v.get("timed_out").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(
        v.get("payload").cloned().unwrap_or(Value::Null),
    )?))
}

/// A child wait's recorded result.
fn child_result<O: DeserializeOwned>(v: Value) -> Result<O, WorkflowError> {
    let run_id: Uuid = serde_json::from_value(v.get("run_id").cloned().unwrap_or(Value::Null))?;
    match v.get("status").and_then(Value::as_str) {
        Some("completed") => Ok(serde_json::from_value(
            v.get("output").cloned().unwrap_or(Value::Null),
        )?),
        Some("timed_out") => Err(WorkflowError::ChildTimedOut { run_id }),
        status => {
            let error: Option<RunError> =
                serde_json::from_value(v.get("error").cloned().unwrap_or(Value::Null))?;
            Err(WorkflowError::ChildFailed {
                run_id,
                status: status.unwrap_or("unknown").to_owned(),
                error: error.unwrap_or(RunError {
                    error_type: "unknown".into(),
                    message: String::new(),
                }),
            })
        }
    }
}
