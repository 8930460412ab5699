//! Hooks through which a fault plan reaches the relay and the consumer.
//!
//! The seeded fault plan lives in `pizza-servicekit`, which depends on this crate, so this crate
//! cannot name it. It defines the two questions it asks instead, as a trait: the service kit
//! implements it for its live plan and hands it over in [`RelayConfig::faults`] and
//! [`ConsumerConfig::faults`]; tests implement it with whatever sequence they need.
//!
//! The hooks only decide *when*; *what* happens is the code path a real failure takes, so an injected
//! fault exercises the recovery a real one would get:
//!
//! - [`FaultHooks::fail_publish`]: the relay treats the row as a send the producer refused at once:
//!   it stays pending, the later rows of its key wait for the next round, and the failure is counted
//!   with `error.type = injected` (see [`crate::relay`]).
//! - [`FaultHooks::crash_before_commit`]: after a record's effect committed and before its offset is
//!   stored, the consumer stops as a crashed process would, so the record is delivered again and the
//!   inbox absorbs it (see [`crate::consumer`]).
//!
//! [`RelayConfig::faults`]: crate::RelayConfig::faults
//! [`ConsumerConfig::faults`]: crate::ConsumerConfig::faults

use std::fmt::Debug;
use std::sync::Arc;

/// The fault decisions the relay and the consumer ask for. Both default to "no fault", so an
/// implementation overrides only what it injects. Called once per publish attempt and once per
/// applied record respectively, from the relay's or the consumer's task.
pub trait FaultHooks: Send + Sync + Debug {
    /// Should this Kafka publish fail before it reaches the broker? Asked once for each outbox row
    /// the relay is about to hand to the producer.
    fn fail_publish(&self) -> bool {
        false
    }

    /// Should the consumer crash now, after this record's effect committed and before its offset is
    /// stored? Asked once for each record whose effect was applied (not for duplicates or dead
    /// letters); an implementation that counts crashes down uses one up per `true`.
    fn crash_before_commit(&self) -> bool {
        false
    }

    /// Could [`crash_before_commit`](Self::crash_before_commit) say yes now? While it could, the
    /// consumer applies one record per transaction, so an injected crash comes after exactly one
    /// record's effect (see `crate::consumer`). Asked before each batch; the default, `true`, is
    /// the safe answer for hooks that do not know.
    fn may_crash_consumer(&self) -> bool {
        true
    }

    /// Should the relay crash now, after the broker stored records and before their rows are marked
    /// published? Asked before each mark that would include a stored record. The relay
    /// then stops as a killed process would: its claims stay, and the rows are published again by
    /// whoever takes them next (a relay with the same instance id at once, any other once the
    /// claims expire), which the consumers' inbox absorbs. Not part of the fault plan: for tests.
    fn crash_relay_before_mark(&self) -> bool {
        false
    }
}

/// `hooks`, or no crash when there are none.
pub(crate) fn may_crash_consumer(hooks: &SharedFaultHooks) -> bool {
    hooks.as_ref().is_some_and(|h| h.may_crash_consumer())
}

/// `hooks`, or no relay crash when there are none.
pub(crate) fn crash_relay_before_mark(hooks: &SharedFaultHooks) -> bool {
    hooks.as_ref().is_some_and(|h| h.crash_relay_before_mark())
}

/// The hooks a relay or consumer consults: `None` means no faults, and costs nothing.
pub type SharedFaultHooks = Option<Arc<dyn FaultHooks>>;

/// `hooks`, or no fault when there are none.
pub(crate) fn fail_publish(hooks: &SharedFaultHooks) -> bool {
    hooks.as_ref().is_some_and(|h| h.fail_publish())
}

/// `hooks`, or no crash when there are none.
pub(crate) fn crash_before_commit(hooks: &SharedFaultHooks) -> bool {
    hooks.as_ref().is_some_and(|h| h.crash_before_commit())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Nothing;
    impl FaultHooks for Nothing {}

    #[derive(Debug, Default)]
    struct Counting(AtomicU32);
    impl FaultHooks for Counting {
        fn fail_publish(&self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    #[test]
    fn no_hooks_and_default_hooks_inject_nothing() {
        assert!(!fail_publish(&None));
        assert!(!crash_before_commit(&None));
        let nothing: SharedFaultHooks = Some(Arc::new(Nothing));
        assert!(!fail_publish(&nothing));
        assert!(!crash_before_commit(&nothing));
        assert!(!crash_relay_before_mark(&nothing));
    }

    #[test]
    fn each_question_asks_the_hooks_once() {
        let counting = Arc::new(Counting::default());
        let hooks: SharedFaultHooks = Some(counting.clone());
        assert!(fail_publish(&hooks));
        assert!(!crash_before_commit(&hooks));
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    }
}
