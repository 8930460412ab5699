//! The deterministic core: every decision the engine makes, as pure functions of recorded state, an
//! event and the time. No database, no clock of its own, no randomness; the I/O layer
//! ([`crate::context`], [`crate::worker`]) reads rows, asks the core what to do, and carries it out.
//!
//! Three small state machines live here:
//!
//! - **a step position** ([`decide_step`]): given what the history recorded at this position, replay
//!   the result, replay the failure, run an attempt, wait for a retry, resume a wait, or report that
//!   the code no longer matches the history;
//! - **an attempt's outcome** ([`after_attempt`]): complete, retry at a time computed by the
//!   [`RetryPolicy`], or give up;
//! - **a run** ([`apply`]): what an execution's outcome means for the run (complete, fail, cancel,
//!   park until a time).
//!
//! plus the timer math of waits ([`decide_wait`]) and of interrupts ([`decide_interrupt`]).
//!
//! # Replay
//! A workflow function runs from the top in every execution. Each step call takes the next position
//! (0, 1, 2, ...) and looks up what the history recorded there. A completed step returns its recorded
//! output without running: that is what makes a workflow durable (a crash loses only the step in
//! flight) and also why the workflow must be deterministic apart from its steps: the n-th call must be
//! the same step in every execution. Positions are matched by order *and* name, so a workflow changed
//! under a running run fails loudly instead of feeding one step's result to another.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{RunError, StepError, WorkflowError};

// ---- names --------------------------------------------------------------------------------------------

/// The kinds of step a workflow can take (`workflow.step.kind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum StepKind {
    /// Run code with side effects, under a retry policy.
    Run,
    /// A durable sleep.
    Sleep,
    /// Start a child workflow and wait for it.
    RunWorkflow,
    /// Wait for a signal, or a timeout.
    WaitForSignal,
    /// Send a signal to another run.
    SendSignal,
}

impl StepKind {
    /// The spelling in the database and on spans.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A run's status (`workflow.runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RunStatus {
    /// Created, never executed yet.
    Pending,
    /// Held by a worker under a lease.
    Running,
    /// Parked until `available_at` (a timer, a retry) or until something wakes it (a signal, a child).
    Sleeping,
    /// Ended with an output.
    Completed,
    /// Ended with an error.
    Failed,
    /// Ended by cancellation.
    Cancelled,
}

impl RunStatus {
    /// The spelling in the database and on spans.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

// ---- retry policy -------------------------------------------------------------------------------------

/// When to try a failed step again: exponential back-off, capped, for a bounded number of attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt.
    pub initial_interval: Duration,
    /// Each further wait is the previous one times this (2.0 doubles).
    pub backoff_coefficient: f64,
    /// No wait is longer than this.
    pub maximum_interval: Duration,
    /// Attempts in all, the first included; 1 means never retry.
    pub maximum_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, at most 60 s apart, 5 attempts.
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(60),
            maximum_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// One attempt only.
    pub fn no_retry() -> Self {
        Self {
            maximum_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based):
    /// `min(initial_interval * backoff_coefficient^(attempt - 1), maximum_interval)`, computed by the
    /// platform's one back-off ([`pizza_retry::Backoff`]), which never overflows.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let backoff = pizza_retry::Backoff {
            initial: self.initial_interval,
            max: self.maximum_interval,
            multiplier: self.backoff_coefficient,
        };
        backoff.delay(attempt.max(1))
    }
}

// ---- history ------------------------------------------------------------------------------------------

/// The status of one recorded attempt (`workflow.step_attempts.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AttemptStatus {
    /// Started and not finished: in flight, or its worker died.
    Running,
    /// A wait that has begun and not resolved.
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error (`retry_at` says whether another attempt follows).
    Failed,
}

impl AttemptStatus {
    /// The spelling in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One recorded attempt of one step, as replay sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The step's position in the workflow, 0-based.
    pub step_index: u32,
    /// The step's name.
    pub step_name: String,
    /// The step's kind.
    pub kind: StepKind,
    /// 1-based.
    pub attempt: u32,
    /// Where it stands.
    pub status: AttemptStatus,
    /// The recorded result of a completed attempt.
    pub output: Option<Value>,
    /// The error of a failed attempt.
    pub error: Option<StepError>,
    /// A failed attempt with `retry_at` is retried then; without it the step failed for good.
    pub retry_at: Option<OffsetDateTime>,
    /// A wait's timer.
    pub wake_at: Option<OffsetDateTime>,
    /// The child of a `run_workflow` step.
    pub child_run_id: Option<Uuid>,
    /// When the attempt (or the wait) began: a wait span's real start time.
    pub started_at: OffsetDateTime,
}

/// A run's recorded steps, by position, attempts in order.
#[derive(Debug, Clone, Default)]
pub struct History {
    steps: BTreeMap<u32, Vec<AttemptRecord>>,
}

impl History {
    /// Groups attempt rows by position.
    pub fn new(attempts: impl IntoIterator<Item = AttemptRecord>) -> Self {
        let mut steps: BTreeMap<u32, Vec<AttemptRecord>> = BTreeMap::new();
        for a in attempts {
            steps.entry(a.step_index).or_default().push(a);
        }
        for attempts in steps.values_mut() {
            attempts.sort_by_key(|a| a.attempt);
        }
        Self { steps }
    }

    /// The attempts recorded at `index`, oldest first.
    pub fn at(&self, index: u32) -> &[AttemptRecord] {
        self.steps.get(&index).map(Vec::as_slice).unwrap_or(&[])
    }
}

// ---- a step position ----------------------------------------------------------------------------------

/// What to do at one step position.
#[derive(Debug, Clone, PartialEq)]
pub enum StepDecision {
    /// The step completed in an earlier execution: return this output without running anything and
    /// without a span (the execution counts it in `workflow.replayed_steps`).
    Replay(Value),
    /// The step failed for good in an earlier execution: return the same failure, so compensation
    /// code takes the same path it took then.
    ReplayFailure {
        /// The last attempt's error.
        error: StepError,
        /// Attempts made.
        attempts: u32,
    },
    /// Run this attempt now (the first, a retry that is due).
    Execute {
        /// 1-based.
        attempt: u32,
    },
    /// An attempt was left `running` by a worker that died (its lease expired). It counts as a failed
    /// attempt: record that, then run `attempt + 1` if the policy allows (`retry`), else fail the step.
    Abandoned {
        /// The abandoned attempt.
        attempt: u32,
        /// Whether the policy allows another attempt.
        retry: bool,
    },
    /// A retry is not due yet: park the run until then.
    RetryAt(OffsetDateTime),
    /// A wait (sleep, signal, child) began in an earlier execution and has not resolved.
    Resume(Box<AttemptRecord>),
    /// The code called a different step than the one recorded here.
    Mismatch {
        /// `(name, kind)` recorded.
        recorded: (String, String),
    },
}

/// Decides what the step call `name` of kind `kind` at a position does, from what the history
/// recorded there.
pub fn decide_step(
    recorded: &[AttemptRecord],
    name: &str,
    kind: StepKind,
    policy: &RetryPolicy,
    now: OffsetDateTime,
) -> StepDecision {
    let Some(last) = recorded.last() else {
        return StepDecision::Execute { attempt: 1 };
    };
    if last.step_name != name || last.kind != kind {
        return StepDecision::Mismatch {
            recorded: (last.step_name.clone(), last.kind.as_str().to_owned()),
        };
    }
    if let Some(done) = recorded.iter().find(|a| a.status == AttemptStatus::Completed) {
        return StepDecision::Replay(done.output.clone().unwrap_or(Value::Null));
    }
    match last.status {
        AttemptStatus::Completed => unreachable!("found above"),
        AttemptStatus::Waiting => StepDecision::Resume(Box::new(last.clone())),
        AttemptStatus::Running => StepDecision::Abandoned {
            attempt: last.attempt,
            retry: last.attempt < policy.maximum_attempts,
        },
        AttemptStatus::Failed => match last.retry_at {
            Some(at) if at <= now => StepDecision::Execute {
                attempt: last.attempt + 1,
            },
            Some(at) => StepDecision::RetryAt(at),
            None => StepDecision::ReplayFailure {
                error: last
                    .error
                    .clone()
                    .unwrap_or_else(|| StepError::permanent("unknown", "no error recorded")),
                attempts: last.attempt,
            },
        },
    }
}

/// What to record after an attempt ran.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptAction {
    /// The step completed with this output.
    Complete(Value),
    /// The attempt failed with `error` and another one runs at `at`.
    RetryAt {
        /// When the next attempt runs.
        at: OffsetDateTime,
        /// This attempt's error.
        error: StepError,
    },
    /// The step failed for good.
    GiveUp(StepError),
}

/// The retry state machine: an attempt's result, under `policy`, at `now`.
pub fn after_attempt(
    policy: &RetryPolicy,
    attempt: u32,
    result: Result<Value, StepError>,
    now: OffsetDateTime,
) -> AttemptAction {
    match result {
        Ok(v) => AttemptAction::Complete(v),
        Err(e) if !e.retryable || attempt >= policy.maximum_attempts => AttemptAction::GiveUp(e),
        Err(error) => AttemptAction::RetryAt {
            at: now + policy.backoff(attempt),
            error,
        },
    }
}

// ---- waits --------------------------------------------------------------------------------------------

/// Where a wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitDecision {
    /// The wait is over: by its event, or by its timer (`timed_out`).
    Resolved {
        /// The timer ended it, not the event.
        timed_out: bool,
    },
    /// Not yet: park until the timer (an event may wake the run earlier).
    ParkUntil(OffsetDateTime),
}

/// A wait with a timer at `wake_at`, whose event (a signal, a child's end) has or has not happened.
/// A sleep is a wait whose event never happens and whose timer is not a time-out.
pub fn decide_wait(event_happened: bool, wake_at: OffsetDateTime, now: OffsetDateTime) -> WaitDecision {
    if event_happened {
        WaitDecision::Resolved { timed_out: false }
    } else if now >= wake_at {
        WaitDecision::Resolved { timed_out: true }
    } else {
        WaitDecision::ParkUntil(wake_at)
    }
}

// ---- interrupts ---------------------------------------------------------------------------------------

/// Something that stops a workflow from outside, delivered to its code as an error at a step boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Interrupt {
    /// `cancel` was called.
    Cancelled,
    /// The run's deadline passed.
    DeadlineExceeded,
}

impl Interrupt {
    /// The spelling in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The error workflow code sees.
    pub fn to_error(self) -> WorkflowError {
        match self {
            Interrupt::Cancelled => WorkflowError::Cancelled,
            Interrupt::DeadlineExceeded => WorkflowError::DeadlineExceeded,
        }
    }
}

/// What the run knows about interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterruptState {
    /// An interrupt already delivered, and the step position whose call received it.
    pub delivered: Option<(Interrupt, u32)>,
    /// `cancel` was called.
    pub cancel_requested: bool,
    /// The run's deadline.
    pub deadline_at: Option<OffsetDateTime>,
}

/// What a step call at `index` sees of interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptDecision {
    /// Go on with the step.
    None,
    /// Return this interrupt's error instead of the step: replayed (it was delivered here before).
    Replay(Interrupt),
    /// Return this interrupt's error instead of the step, and record that it was delivered here.
    Deliver(Interrupt),
}

/// Decides whether the step call at `index` receives an interrupt instead of running.
///
/// One interrupt per run, delivered once: the workflow may catch it and run compensation steps, which
/// must not be interrupted again. A new interrupt is only delivered at a position that has no settled
/// record (`settled`: completed, or failed for good): delivering it at a replayed position would make
/// the compensation that follows collide with recorded steps. Replay re-delivers a recorded interrupt
/// at exactly its recorded position, so every execution takes the same path.
pub fn decide_interrupt(
    state: &InterruptState,
    index: u32,
    settled: bool,
    now: OffsetDateTime,
) -> InterruptDecision {
    match state.delivered {
        Some((interrupt, at)) if at == index => InterruptDecision::Replay(interrupt),
        Some(_) => InterruptDecision::None,
        None if settled => InterruptDecision::None,
        None if state.cancel_requested => InterruptDecision::Deliver(Interrupt::Cancelled),
        None if state.deadline_at.is_some_and(|d| now >= d) => {
            InterruptDecision::Deliver(Interrupt::DeadlineExceeded)
        }
        None => InterruptDecision::None,
    }
}

// ---- a run --------------------------------------------------------------------------------------------

/// How one execution of a workflow function ended.
#[derive(Debug)]
pub enum ExecutionOutcome {
    /// The function returned.
    Returned(Result<Value, WorkflowError>),
    /// A step parked the run until this time (something may wake it earlier).
    Suspended(OffsetDateTime),
}

/// What to do with the run after an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAction {
    /// End `completed` with this output.
    Complete(Value),
    /// End `failed`.
    Fail(RunError),
    /// End `cancelled`.
    Cancel(RunError),
    /// Park (`sleeping`) until this time.
    Park(OffsetDateTime),
    /// Write nothing: the database failed or the lease is gone. The lease expires and another
    /// execution replays from the last recorded step.
    Abandon,
}

/// The run state machine: an execution's outcome, for a run with these interrupts, at `now`.
pub fn apply(interrupts: &InterruptState, outcome: ExecutionOutcome) -> RunAction {
    match outcome {
        ExecutionOutcome::Suspended(until) => {
            // A deadline not yet delivered wakes the run so the next step boundary can deliver it.
            let until = match interrupts.deadline_at {
                Some(d) if interrupts.delivered.is_none() && d < until => d,
                _ => until,
            };
            RunAction::Park(until)
        }
        ExecutionOutcome::Returned(Ok(output)) => RunAction::Complete(output),
        ExecutionOutcome::Returned(Err(e)) => match e {
            WorkflowError::Database(_) | WorkflowError::LeaseLost => RunAction::Abandon,
            WorkflowError::Cancelled => RunAction::Cancel(e.to_run_error()),
            // A suspension whose time was lost cannot happen (the context records it); treat it as a
            // bug in the workflow code that swallowed the marker and returned it late.
            other => RunAction::Fail(other.to_run_error()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    fn attempt(n: u32, status: AttemptStatus) -> AttemptRecord {
        AttemptRecord {
            step_index: 0,
            step_name: "charge".into(),
            kind: StepKind::Run,
            attempt: n,
            status,
            output: None,
            error: None,
            retry_at: None,
            wake_at: None,
            child_run_id: None,
            started_at: t(0),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(10),
            maximum_attempts: 3,
        }
    }

    #[test]
    fn backoff_grows_by_the_coefficient_and_stops_at_the_maximum_interval() {
        let p = RetryPolicy {
            maximum_attempts: 10,
            ..policy()
        };
        let waits: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        let flat = RetryPolicy {
            backoff_coefficient: 1.0,
            ..p
        };
        assert_eq!(flat.backoff(5), Duration::from_secs(1));
        assert_eq!(
            p.backoff(1000),
            Duration::from_secs(10),
            "huge attempt numbers do not overflow"
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_after_its_backoff_until_the_attempts_run_out() {
        let p = policy();
        let err = StepError::retryable("timeout", "kitchen slow");
        assert_eq!(
            after_attempt(&p, 1, Err(err.clone()), t(100)),
            AttemptAction::RetryAt {
                at: t(101),
                error: err.clone()
            }
        );
        assert_eq!(
            after_attempt(&p, 2, Err(err.clone()), t(100)),
            AttemptAction::RetryAt {
                at: t(102),
                error: err.clone()
            }
        );
        assert_eq!(
            after_attempt(&p, 3, Err(err.clone()), t(100)),
            AttemptAction::GiveUp(err)
        );
        assert_eq!(
            after_attempt(&p, 1, Ok(Value::from(7)), t(100)),
            AttemptAction::Complete(Value::from(7))
        );
    }

    #[test]
    fn a_permanent_error_gives_up_at_once_whatever_the_policy() {
        let err = StepError::permanent("invalid_order", "no such pizza");
        assert_eq!(
            after_attempt(&policy(), 1, Err(err.clone()), t(0)),
            AttemptAction::GiveUp(err)
        );
    }

    #[test]
    fn an_unrecorded_position_runs_its_first_attempt() {
        assert_eq!(
            decide_step(&[], "charge", StepKind::Run, &policy(), t(0)),
            StepDecision::Execute { attempt: 1 }
        );
    }

    #[test]
    fn a_completed_step_replays_its_recorded_output_without_running() {
        let mut failed = attempt(1, AttemptStatus::Failed);
        failed.retry_at = Some(t(1));
        let mut done = attempt(2, AttemptStatus::Completed);
        done.output = Some(serde_json::json!({"receipt": 42}));
        let d = decide_step(&[failed, done], "charge", StepKind::Run, &policy(), t(50));
        assert_eq!(d, StepDecision::Replay(serde_json::json!({"receipt": 42})));
    }

    #[test]
    fn a_retry_runs_when_due_and_parks_the_run_until_then() {
        let mut failed = attempt(1, AttemptStatus::Failed);
        failed.retry_at = Some(t(10));
        let recorded = [failed];
        assert_eq!(
            decide_step(&recorded, "charge", StepKind::Run, &policy(), t(9)),
            StepDecision::RetryAt(t(10))
        );
        assert_eq!(
            decide_step(&recorded, "charge", StepKind::Run, &policy(), t(10)),
            StepDecision::Execute { attempt: 2 }
        );
    }

    #[test]
    fn a_step_that_failed_for_good_replays_its_failure() {
        let mut failed = attempt(3, AttemptStatus::Failed);
        failed.error = Some(StepError::retryable("timeout", "slow"));
        let d = decide_step(&[failed], "charge", StepKind::Run, &policy(), t(0));
        assert_eq!(
            d,
            StepDecision::ReplayFailure {
                error: StepError::retryable("timeout", "slow"),
                attempts: 3
            }
        );
    }

    #[test]
    fn an_attempt_left_running_by_a_dead_worker_counts_as_failed_and_is_retried_while_attempts_remain() {
        let d = decide_step(
            &[attempt(1, AttemptStatus::Running)],
            "charge",
            StepKind::Run,
            &policy(),
            t(0),
        );
        assert_eq!(
            d,
            StepDecision::Abandoned {
                attempt: 1,
                retry: true
            }
        );
        let d = decide_step(
            &[attempt(3, AttemptStatus::Running)],
            "charge",
            StepKind::Run,
            &policy(),
            t(0),
        );
        assert_eq!(
            d,
            StepDecision::Abandoned {
                attempt: 3,
                retry: false
            }
        );
    }

    #[test]
    fn a_different_step_at_a_recorded_position_is_reported_not_replayed() {
        let mut done = attempt(1, AttemptStatus::Completed);
        done.output = Some(Value::Null);
        let d = decide_step(&[done], "refund", StepKind::Run, &policy(), t(0));
        assert_eq!(
            d,
            StepDecision::Mismatch {
                recorded: ("charge".into(), "run".into())
            }
        );
    }

    #[test]
    fn a_wait_in_progress_is_resumed() {
        let mut waiting = attempt(1, AttemptStatus::Waiting);
        waiting.kind = StepKind::Sleep;
        waiting.wake_at = Some(t(60));
        match decide_step(&[waiting], "charge", StepKind::Sleep, &policy(), t(0)) {
            StepDecision::Resume(a) => assert_eq!(a.wake_at, Some(t(60))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wait_resolves_by_its_event_or_by_its_timer_and_parks_otherwise() {
        assert_eq!(decide_wait(false, t(60), t(59)), WaitDecision::ParkUntil(t(60)));
        assert_eq!(
            decide_wait(false, t(60), t(60)),
            WaitDecision::Resolved { timed_out: true }
        );
        assert_eq!(
            decide_wait(true, t(60), t(1)),
            WaitDecision::Resolved { timed_out: false }
        );
        assert_eq!(
            decide_wait(true, t(60), t(61)),
            WaitDecision::Resolved { timed_out: false },
            "the event wins"
        );
    }

    #[test]
    fn a_cancel_is_delivered_once_at_an_unsettled_position_and_replayed_there() {
        let mut s = InterruptState {
            cancel_requested: true,
            ..Default::default()
        };
        assert_eq!(
            decide_interrupt(&s, 0, true, t(0)),
            InterruptDecision::None,
            "never at a replayed step"
        );
        assert_eq!(
            decide_interrupt(&s, 1, false, t(0)),
            InterruptDecision::Deliver(Interrupt::Cancelled)
        );
        s.delivered = Some((Interrupt::Cancelled, 1));
        assert_eq!(
            decide_interrupt(&s, 1, false, t(0)),
            InterruptDecision::Replay(Interrupt::Cancelled)
        );
        assert_eq!(
            decide_interrupt(&s, 2, false, t(0)),
            InterruptDecision::None,
            "compensation runs"
        );
    }

    #[test]
    fn a_deadline_is_delivered_once_it_has_passed() {
        let s = InterruptState {
            deadline_at: Some(t(30)),
            ..Default::default()
        };
        assert_eq!(decide_interrupt(&s, 0, false, t(29)), InterruptDecision::None);
        assert_eq!(
            decide_interrupt(&s, 0, false, t(30)),
            InterruptDecision::Deliver(Interrupt::DeadlineExceeded)
        );
    }

    #[test]
    fn a_run_completes_fails_cancels_or_parks_by_its_executions_outcome() {
        let s = InterruptState::default();
        assert_eq!(
            apply(&s, ExecutionOutcome::Returned(Ok(Value::from(1)))),
            RunAction::Complete(Value::from(1))
        );
        assert!(matches!(
            apply(&s, ExecutionOutcome::Returned(Err(WorkflowError::Cancelled))),
            RunAction::Cancel(_)
        ));
        match apply(
            &s,
            ExecutionOutcome::Returned(Err(WorkflowError::failed("invalid_order", "no"))),
        ) {
            RunAction::Fail(e) => assert_eq!(e.error_type, "invalid_order"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            apply(&s, ExecutionOutcome::Suspended(t(5))),
            RunAction::Park(t(5))
        );
        assert_eq!(
            apply(&s, ExecutionOutcome::Returned(Err(WorkflowError::LeaseLost))),
            RunAction::Abandon
        );
    }

    #[test]
    fn a_parked_run_wakes_for_its_deadline_before_a_later_timer() {
        let s = InterruptState {
            deadline_at: Some(t(10)),
            ..Default::default()
        };
        assert_eq!(
            apply(&s, ExecutionOutcome::Suspended(t(60))),
            RunAction::Park(t(10))
        );
        let delivered = InterruptState {
            delivered: Some((Interrupt::DeadlineExceeded, 0)),
            ..s
        };
        assert_eq!(
            apply(&delivered, ExecutionOutcome::Suspended(t(60))),
            RunAction::Park(t(60))
        );
    }
}
