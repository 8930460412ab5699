//! The waits that park a run: [`WorkflowContext::sleep`] and [`WorkflowContext::wait_for_signal`].
//! A wait records its start and its timer; the run parks until the timer or until something wakes
//! it; the execution that finds the wait resolved records the end and emits its `workflow.wait` span.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Held, ParkReason, WorkflowContext};
use crate::core::{self, AttemptRecord, AttemptStatus, RetryPolicy, StepDecision, StepKind, WaitDecision};
use crate::error::WorkflowError;
use crate::store::{self, AttemptEnd, NewAttempt, RecordedAttempt, WaitStart};
use crate::telemetry::{self, ResolvedWait, link_reason};

impl WorkflowContext {
    /// Parks the run for a wait that begins in this execution: its `waiting` row is written with the
    /// park, in one transaction (see `store::park_waiting`), and the record replay will read is
    /// returned by the next execution's history.
    pub(super) fn park_new_wait(&self, start: WaitStart, until: OffsetDateTime) -> WorkflowError {
        self.state().wait_start = Some(start);
        self.suspend(until, ParkReason::Timer)
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
        let now = self.now();
        let (attempt, started_at, wake_at, new) = match decision {
            StepDecision::Replay(_) => return Ok(()),
            StepDecision::Execute { .. } => (1, now, now + duration, true),
            StepDecision::Resume(w) => (w.attempt, w.started_at, w.wake_at.unwrap_or(now), false),
            other => return Err(self.unexpected(index, other)),
        };
        match core::decide_wait(false, wake_at, now) {
            WaitDecision::ParkUntil(until) if new => {
                let start = WaitStart::new(index, name, StepKind::Sleep, started_at, wake_at);
                Err(self.park_new_wait(start, until))
            }
            WaitDecision::ParkUntil(until) => Err(self.suspend(until, ParkReason::Timer)),
            WaitDecision::Resolved { .. } => {
                self.write_deferred().await?;
                let end = AttemptEnd::Completed(&Value::Null);
                if new {
                    // Over before it began (a zero sleep): recorded done, in one statement.
                    let row = RecordedAttempt {
                        step_index: index,
                        step_name: name,
                        kind: StepKind::Sleep,
                        attempt,
                        started_at,
                        end: Some((end, now)),
                    };
                    store::record_attempt(&self.inner.pool, &self.inner.lease, row).await?;
                } else {
                    store::close_attempt(&self.inner.pool, &self.inner.lease, index, attempt, end, now)
                        .await?;
                }
                self.emit_wait(ResolvedWait {
                    kind: "sleep",
                    step_name: name,
                    started_at,
                    ended_at: now,
                    timed_out: false,
                    signal_name: None,
                    link: None,
                });
                Ok(())
            }
        }
    }

    pub(super) fn emit_wait(&self, wait: ResolvedWait<'_>) {
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
        // Nothing to take and the timeout ahead (the common case of a wait that begins): park, with
        // no read and no transaction of its own. The claim read the mailbox; a signal it did not
        // show (sent after its snapshot) either moved the run's `wake_seq` since or is found by the
        // park's own look at the mailbox, and the park then makes the run due at once. So a signal
        // that lands while the execution runs costs one more execution, and no wait costs a read.
        if let WaitDecision::ParkUntil(until) = core::decide_wait(false, wake_at, now)
            && !self.in_mailbox(name)
        {
            self.state().awaiting = Some(name.to_owned());
            if !new {
                return Err(self.suspend(until, ParkReason::Timer));
            }
            let start = WaitStart::new(index, name, StepKind::WaitForSignal, started_at, wake_at);
            return Err(self.park_new_wait(start, until));
        }
        self.write_deferred().await?;
        let mut tx = self.begin_held().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
        // Taking the signal and completing the wait commit together: a crash in between loses neither.
        let signal = store::consume_signal(&mut tx, self.run_id(), name, index, now).await?;
        if signal.is_some() {
            self.taken_from_mailbox(name);
        }
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
                // The park commits it (see `run`, "Held commits").
                self.hold(Held {
                    tx,
                    after_commit: Vec::new(),
                });
                self.state().awaiting = Some(name.to_owned());
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
                    let end = AttemptEnd::Completed(&output);
                    store::close_attempt(&mut *tx, &self.inner.lease, index, attempt, end, now).await?;
                }
                // Committed by the execution's next write, as a transactional step's is (see `run`,
                // "Held commits"): a park that follows the wait (a sleep after a delivery, say)
                // commits both at once.
                self.hold(Held {
                    tx,
                    after_commit: Vec::new(),
                });
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
}

impl WorkflowContext {
    /// Whether the mailbox, as the claim saw it, holds a signal `name` this execution has not taken.
    fn in_mailbox(&self, name: &str) -> bool {
        self.state().mailbox.iter().any(|n| n == name)
    }

    /// A signal `name` was taken: the oldest of that name leaves the mailbox's picture.
    fn taken_from_mailbox(&self, name: &str) {
        let mut state = self.state();
        if let Some(i) = state.mailbox.iter().position(|n| n == name) {
            state.mailbox.remove(i);
        }
    }
}

pub(super) fn waiting_record(
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
