//! [`WorkflowContext::run_workflow`]: a child run, started once, and the wait for its end.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument as _;
use uuid::Uuid;

use super::wait::waiting_record;
use super::{Held, ParkReason, WorkflowContext};
use crate::core::{self, AttemptStatus, RetryPolicy, StepDecision, StepKind, WaitDecision};
use crate::error::{RunError, WorkflowError};
use crate::store::{self, AttemptEnd, ChildStart, NewAttempt, WaitStart};
use crate::telemetry::{self, ResolvedWait, RunIdentity, link_reason};

impl WorkflowContext {
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
                let now = self.now();
                let (span, child) = self.child_start(index, workflow, serde_json::to_value(input)?);
                let start = WaitStart {
                    child: Some(child),
                    ..WaitStart::new(index, workflow, StepKind::RunWorkflow, now, now + timeout)
                };
                self.inner
                    .metrics
                    .step_attempt(self.workflow_name(), workflow, "ok");
                if let WaitDecision::ParkUntil(until) = core::decide_wait(false, start.wake_at, now) {
                    // The child is created with the park, in one transaction (see
                    // `store::park_waiting`): it runs once the parent has parked for it.
                    telemetry::record_ok(&span);
                    return Err(self.park_new_wait(start, until));
                }
                self.write_deferred().await?;
                let started = self.start_child_now(&start).instrument(span.clone()).await;
                match &started {
                    Ok(_) => telemetry::record_ok(&span),
                    Err(e) => telemetry::record_failure(&span, &e.to_run_error().error_type, &e.to_string()),
                }
                let child_id = started?;
                waiting_record(
                    index,
                    workflow,
                    StepKind::RunWorkflow,
                    start.started_at,
                    start.wake_at,
                    Some(child_id),
                )
            }
            StepDecision::Resume(w) => *w,
            other => return Err(self.unexpected(index, other)),
        };
        let child_id = wait.child_run_id.ok_or_else(|| {
            WorkflowError::failed("corrupt_history", format!("step {index} has no child run"))
        })?;
        // The child's state is read in the transaction that records the wait's end: one commit
        // for both (a read on its own was a commit of its own). Whatever waits for the execution's
        // next write is written first, on its own: this execution holds one connection at a time.
        self.write_deferred().await?;
        let mut tx = self.begin_held().await?;
        let child = store::run_info(&mut tx, child_id).await.map_err(|e| match e {
            crate::Error::Database(e) => WorkflowError::Database(e),
            other => WorkflowError::failed("corrupt_history", other.to_string()),
        })?;
        let child = child
            .ok_or_else(|| WorkflowError::failed("corrupt_history", format!("no child run {child_id}")))?;
        let now = self.now();
        match core::decide_wait(child.status.is_terminal(), wait.wake_at.unwrap_or(now), now) {
            // Woken before the child ended (and before the timeout): the read rolls back.
            WaitDecision::ParkUntil(until) => Err(self.suspend(until, ParkReason::Timer)),
            WaitDecision::Resolved { timed_out } => {
                let output = if timed_out {
                    json!({ "status": "timed_out", "run_id": child_id })
                } else {
                    json!({ "status": child.status, "run_id": child_id, "output": child.output, "error": child.error })
                };
                let end = AttemptEnd::Completed(&output);
                store::close_attempt(&mut *tx, &self.inner.lease, index, wait.attempt, end, now).await?;
                if timed_out {
                    store::request_cancel(&mut tx, child_id, now, self.inner.wake_channel).await?;
                }
                // Committed by the execution's next write (see `run`, "Held commits").
                self.hold(Held {
                    tx,
                    after_commit: Vec::new(),
                });
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

    /// The child run to start at `index`, with its create span (a child of the step's span, so in
    /// `continuous` the child joins the parent's trace).
    fn child_start(&self, index: u32, workflow: &str, input: Value) -> (tracing::Span, ChildStart) {
        let span = telemetry::step_span(&self.inner.identity, workflow, StepKind::RunWorkflow, 1);
        // The child inherits the parent's labels (see `crate::labels`).
        let identity = RunIdentity {
            run_id: Uuid::now_v7(),
            workflow_name: workflow.to_owned(),
            labels: self.inner.identity.labels.clone(),
        };
        let carrier = span.in_scope(|| {
            let create = telemetry::create_span(&identity, Some(self.run_id()));
            telemetry::carrier_of(&create)
        });
        let child = ChildStart {
            id: identity.run_id,
            workflow_name: identity.workflow_name,
            input,
            idempotency_key: format!("{}/{index}", self.run_id()),
            carrier,
            labels: identity.labels,
        };
        (span, child)
    }

    /// Starts the child now, with the wait's row, in one fenced transaction: for a wait that does
    /// not park (a zero timeout). A wait that parks has both written with its park instead.
    async fn start_child_now(&self, start: &WaitStart) -> Result<Uuid, WorkflowError> {
        let child = start.child.as_ref().expect("a child wait");
        let mut tx = self.inner.pool.begin().await?;
        store::fence(&mut tx, &self.inner.lease).await?;
        let channel = self.inner.wake_channel;
        let child_id = store::insert_child(&mut tx, self.run_id(), start.started_at, child, channel).await?;
        let row = NewAttempt {
            step_index: start.step_index,
            step_name: &start.step_name,
            kind: StepKind::RunWorkflow,
            attempt: 1,
            status: AttemptStatus::Waiting,
            output: None,
            wake_at: Some(start.wake_at),
            child_run_id: Some(child_id),
            started_at: start.started_at,
        };
        store::insert_attempt(&mut tx, self.run_id(), row).await?;
        tx.commit().await?;
        self.inner.wake_local.notify_waiters();
        Ok(child_id)
    }
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
