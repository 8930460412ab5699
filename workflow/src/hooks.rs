//! Test hooks: places in a worker's life where a test can stop it, or make it crash.
//!
//! The engine's promises are about interleavings: a worker that stalls past its lease while another
//! takes over, a process that dies after a step's side effect and before its result is recorded.
//! Sleeping until such a moment comes is slow and flaky, so the engine offers the moments
//! themselves: [`EngineBuilder::hooks`](crate::EngineBuilder::hooks) installs a [`Hooks`], and the
//! worker awaits it at each [`HookPoint`]. A test blocks there on a barrier of its own (the worker is
//! then stalled exactly at that point, with everything before it written and nothing after), and
//! releases it when the other side of the interleaving has happened; or it answers
//! [`HookAction::Crash`], and the execution stops there as if its process had died: it writes
//! nothing more, and its run waits for its lease to expire.
//!
//! Production engines have no hooks; the points then cost one `Option` check.

use std::fmt;

use futures::future::BoxFuture;
use uuid::Uuid;

/// Where a worker is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookPoint {
    /// A worker looked for a due run; `claimed` is the run it took, if any.
    Polled {
        /// The worker.
        worker_id: String,
        /// The run it claimed.
        claimed: Option<Uuid>,
    },
    /// An execution is about to renew its lease.
    Heartbeat {
        /// The worker.
        worker_id: String,
        /// The run.
        run_id: Uuid,
    },
    /// A `run` step's code returned (its side effects are done) and its result is not recorded yet.
    StepReturned {
        /// The worker.
        worker_id: String,
        /// The run.
        run_id: Uuid,
        /// The step's name.
        step_name: String,
        /// The attempt, 1-based.
        attempt: u32,
    },
    /// An execution's workflow function returned and the run's end is not recorded yet.
    BeforeFinish {
        /// The worker.
        worker_id: String,
        /// The run.
        run_id: Uuid,
    },
    /// An execution suspended (a wait, a sleep, a retry's back-off) and its park, with the wait's
    /// row, is not recorded yet.
    BeforePark {
        /// The worker.
        worker_id: String,
        /// The run.
        run_id: Uuid,
    },
}

/// What the worker does after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Go on.
    Continue,
    /// Stop this execution here as if its process had died: nothing more is written, the heartbeat
    /// stops, and the run is taken over once its lease expires. Only `StepReturned`, `BeforeFinish`
    /// and `BeforePark` can crash; elsewhere it means `Continue`.
    Crash,
}

/// A test's hooks. Called at every [`HookPoint`]; the worker waits for the returned future.
pub trait Hooks: Send + Sync + fmt::Debug {
    /// The worker reached `point`.
    fn at(&self, point: HookPoint) -> BoxFuture<'static, HookAction>;
}
