//! [`WorkflowContext::run`]: a step with side effects, retried under its policy by parking the run.
//!
//! # How a step is recorded, and what a crash costs
//! A step that returns quickly (within the engine's `record_start_after`, 100 ms by default) costs
//! one statement: its attempt and its result, fenced by the lease, in one commit. A step still
//! running then is recorded as `running` while it goes on, and closed when it returns: two commits.
//! Either way its result is durable before the workflow's next step starts, so the next step's
//! input never depends on an unrecorded result.
//!
//! What a crash costs: a step whose process dies before its result is recorded runs again, under the
//! same idempotency key (the at-least-once contract every step already has). A slow step's crashed
//! attempt is on record and counts against its retry policy (`worker_lost`); a quick step's crashed
//! attempt left no row, so it is simply run again as the same attempt. The price of the one-commit
//! path: a step that kills its process within its first 100 ms, every time, is retried without end
//! instead of given up after its attempts (the loop shows as a growing `workflow.run.executions`,
//! one execution span per crash). An engine built with `record_start_after(Duration::ZERO)` records
//! every attempt that does not finish at once before it goes on, and counts every crash.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::{ParkReason, StepContext, WorkflowContext};
use crate::core::{self, AttemptAction, RetryPolicy, StepDecision, StepKind};
use crate::error::{StepError, WorkflowError};
use crate::hooks::HookPoint;
use crate::store::{self, AttemptEnd, RecordedAttempt};
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
                // If this fails the step's future is dropped here, as a crash would stop it.
                store::record_attempt(&self.inner.pool, &self.inner.lease, running).await?;
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
        if recorded_running {
            store::close_attempt(&self.inner.pool, &self.inner.lease, index, attempt, end, now).await?;
        } else {
            let row = RecordedAttempt {
                step_index: index,
                step_name: name,
                kind: StepKind::Run,
                attempt,
                started_at,
                end: Some((end, now)),
            };
            store::record_attempt(&self.inner.pool, &self.inner.lease, row).await?;
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
