//! Errors: what step code returns ([`StepError`]), what workflow code sees and returns
//! ([`WorkflowError`]), what a run ends with ([`RunError`]), and what the engine's API returns
//! ([`Error`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a step attempt failed. Step code decides whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct StepError {
    /// Whether another attempt may succeed (a timeout, a 503) or not (a validation failure).
    pub retryable: bool,
    /// A low-cardinality class for `error.type` (`timeout`, `http_503`, `invalid_order`).
    pub error_type: String,
    /// What happened, for people.
    pub message: String,
}

impl StepError {
    /// A failure worth another attempt, under the step's retry policy.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// A failure no retry can fix: the step fails at once.
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

/// Why a run ended `failed` or `cancelled`, as stored in `workflow.runs.error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct RunError {
    /// A low-cardinality class (`step_failed`, `cancelled`, `deadline_exceeded`, or the workflow's own).
    pub error_type: String,
    /// What happened.
    pub message: String,
}

/// What a workflow's context methods return on failure, and what a workflow function returns.
///
/// Workflow code propagates these with `?` or catches them to compensate: a compensation is ordinary
/// code in a `match` on [`WorkflowError::Cancelled`] or [`WorkflowError::StepFailed`].
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A step failed for good: a permanent error, or its last allowed attempt failed.
    #[error("step {step} failed after {attempts} attempt(s): {error}")]
    StepFailed {
        /// The step's name.
        step: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: StepError,
    },
    /// The run was asked to stop. Raised once, at the next step boundary; the workflow may still run
    /// compensation steps after catching it. Returning it ends the run `cancelled`.
    #[error("the run was cancelled")]
    Cancelled,
    /// The run's deadline passed. Raised once, at the next step boundary, like [`Self::Cancelled`].
    #[error("the run's deadline passed")]
    DeadlineExceeded,
    /// A child workflow ended `failed` or `cancelled`.
    #[error("child run {run_id} ended {status}: {error}")]
    ChildFailed {
        /// The child run.
        run_id: Uuid,
        /// `failed` or `cancelled`.
        status: String,
        /// The child's error.
        error: RunError,
    },
    /// A child workflow did not finish within its timeout; it has been asked to cancel.
    #[error("child run {run_id} did not finish in time")]
    ChildTimedOut {
        /// The child run.
        run_id: Uuid,
    },
    /// The workflow's own failure, with a class and a message.
    #[error("{0}")]
    Failed(RunError),
    /// The execution parked (a sleep, a wait, a retry not yet due). Workflow code must let this
    /// propagate (`?`); the engine ends the execution and resumes the run later by replay.
    #[error("the execution is suspended until the run is woken")]
    Suspended,
    /// The code called a different step than the one recorded at this position: the workflow changed
    /// under a running run, or it branches on something that is not a step result.
    #[error(
        "non-deterministic workflow: step {index} is recorded as {recorded:?} but the code called {called:?}"
    )]
    NonDeterministic {
        /// The step position.
        index: u32,
        /// `(name, kind)` recorded.
        recorded: (String, String),
        /// `(name, kind)` called now.
        called: (String, String),
    },
    /// A value could not be turned into JSON or back (input, output, step result, signal payload).
    #[error("workflow data: {0}")]
    Data(#[from] serde_json::Error),
    /// The database failed during the execution; the run is left to its lease and resumed elsewhere.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another worker owns the run now (this worker's lease expired); nothing more is written.
    #[error("the lease on the run was lost")]
    LeaseLost,
}

impl WorkflowError {
    /// The workflow's own failure.
    pub fn failed(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed(RunError {
            error_type: error_type.into(),
            message: message.into(),
        })
    }

    /// The error a run ends with when the workflow returns `self`.
    pub fn to_run_error(&self) -> RunError {
        let error_type = match self {
            Self::StepFailed { .. } => "step_failed",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ChildFailed { .. } => "child_failed",
            Self::ChildTimedOut { .. } => "child_timed_out",
            Self::Failed(e) => return e.clone(),
            Self::Suspended => "suspended",
            Self::NonDeterministic { .. } => "non_deterministic",
            Self::Data(_) => "data",
            Self::Database(_) => "database",
            Self::LeaseLost => "lease_lost",
        };
        RunError {
            error_type: error_type.to_owned(),
            message: self.to_string(),
        }
    }
}

/// What the engine's API (start, signal, cancel, status, migrations, workers) returns on failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The engine's migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An input, output or payload could not be turned into JSON or back.
    #[error("data: {0}")]
    Data(#[from] serde_json::Error),
    /// No run has this id.
    #[error("no run {0}")]
    NotFound(Uuid),
    /// The run already ended, so it can take no signal.
    #[error("run {0} already ended")]
    RunFinished(Uuid),
    /// The run did not end within the time given.
    #[error("run {run_id} still {status} after {waited:?}")]
    Timeout {
        /// The run.
        run_id: Uuid,
        /// Its status at the end of the wait.
        status: String,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// A value read from the database is not what the engine wrote (a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}
