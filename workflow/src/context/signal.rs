//! [`WorkflowContext::send_signal`]: a signal to another run, sent once.

use serde::Serialize;
use tracing::Instrument as _;
use uuid::Uuid;

use super::WorkflowContext;
use crate::core::{AttemptStatus, RetryPolicy, StepDecision, StepKind};
use crate::error::{StepError, WorkflowError};
use crate::store::{self, AttemptEnd, NewAttempt};
use crate::telemetry::{self, RunIdentity};

impl WorkflowContext {
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
                    let channel = self.inner.wake_channel;
                    let signal = store::NewSignal {
                        run_id: target,
                        name,
                        payload,
                        idempotency_key: Some(&key),
                        sender,
                    };
                    store::insert_signal(&mut tx, signal, now, channel).await?;
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
                    store::close_attempt(&mut *tx, &self.inner.lease, index, 1, end, now).await?;
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
}
