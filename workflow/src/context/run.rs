//! [`WorkflowContext::run`]: a step with side effects, recorded before it runs (so a crash inside it
//! is seen) and after (its result), retried under its policy by parking the run.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::{ParkReason, StepContext, WorkflowContext};
use crate::core::{self, AttemptAction, AttemptStatus, RetryPolicy, StepDecision, StepKind};
use crate::error::{StepError, WorkflowError};
use crate::hooks::HookPoint;
use crate::store::{self, AttemptEnd, NewAttempt};
use crate::telemetry::{self};

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
        self.hook(HookPoint::StepReturned {
            worker_id: self.inner.lease.owner.clone(),
            run_id: self.run_id(),
            step_name: name.to_owned(),
            attempt,
        })
        .await?;

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
