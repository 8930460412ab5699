//! Time, injectable.
//!
//! Every workflow timer of the engine (sleep ends, signal and child timeouts, retry back-off,
//! deadlines) is computed from a [`Clock`] and stored as a timestamp in the database; nothing waits
//! on a Tokio timer for durable time. Production uses [`SystemClock`]; tests use [`ManualClock`] and
//! move time by hand, so a one-hour sleep is tested in microseconds. The SQL compares those timers
//! with the clock's `now`, passed as a parameter: one source of workflow time for the pure core and
//! the I/O layer.
//!
//! Leases are the exception, on purpose: they are set, renewed and expired on the database's clock
//! (`clock_timestamp()`), never on a worker's. Whether a run's holder is still alive is a question of
//! safety (two workers running one step's side effects), and the answer must not depend on which
//! replica's clock asks. A worker whose clock is skewed fires timers early or late by its skew, which
//! costs punctuality, never a second execution; it cannot take a live run, because the lease it would
//! have to see as expired is measured by the one clock every worker shares. See
//! `store::claim`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        // Microseconds: what PostgreSQL's timestamptz keeps, so a value read back compares equal.
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(truncate_to_micros(start))),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("manual clock lock");
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: OffsetDateTime) {
        *self.now.lock().expect("manual clock lock") = truncate_to_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().expect("manual clock lock")
    }
}

/// Drops the nanoseconds PostgreSQL would drop.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let other = clock.clone();
        assert_eq!(clock.now(), OffsetDateTime::UNIX_EPOCH);
        other.advance(Duration::from_secs(3600));
        assert_eq!(
            clock.now(),
            OffsetDateTime::UNIX_EPOCH + Duration::from_secs(3600)
        );
    }

    #[test]
    fn the_system_clock_keeps_microseconds_like_postgresql() {
        assert_eq!(SystemClock.now().nanosecond() % 1000, 0);
    }
}
