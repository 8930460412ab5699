//! A service's live fault plan: the one the admin API replaces and the service's code asks for
//! decisions (should this request fail, this publish, this oven), each drawn from the plan's seeded
//! sequence.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::plan::{FaultError, FaultPlan};
use super::rng::SplitMix64;

#[derive(Debug)]
struct Inner {
    plan: RwLock<FaultPlan>,
    rng: Mutex<SplitMix64>,
    crashes_left: AtomicU32,
}

/// A service's live fault plan. Cheap to clone; every clone sees changes.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Inner>);

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self(Arc::new(Inner {
            plan: RwLock::new(FaultPlan::default()),
            rng: Mutex::new(SplitMix64(0)),
            crashes_left: AtomicU32::new(0),
        }))
    }

    /// Starts with `plan`.
    pub fn new(plan: FaultPlan) -> Result<Self, FaultError> {
        let faults = Self::none();
        faults.set(plan)?;
        Ok(faults)
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.0.plan.read().expect("fault plan lock").clone()
    }

    /// Replaces the plan and restarts the decision sequence from its seed. The dropped trace-context
    /// edges take effect in the process's propagation at once.
    pub fn set(&self, plan: FaultPlan) -> Result<(), FaultError> {
        plan.validate()?;
        pizza_telemetry::propagation::set_dropped_edges(plan.drop_trace_context.iter().cloned());
        *self.0.rng.lock().expect("fault rng lock") = SplitMix64(plan.seed);
        self.0
            .crashes_left
            .store(plan.consumer_crash_before_commit, Ordering::SeqCst);
        *self.0.plan.write().expect("fault plan lock") = plan;
        Ok(())
    }

    /// One decision: true with probability `rate`.
    fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        self.0.rng.lock().expect("fault rng lock").next_f64() < rate
    }

    /// Should this business HTTP request fail with a 500?
    pub fn http_error(&self) -> bool {
        let rate = self.0.plan.read().expect("fault plan lock").http_error_rate;
        self.roll(rate)
    }

    /// Latency to add to a business HTTP request.
    pub fn http_latency(&self) -> Duration {
        Duration::from_millis(self.0.plan.read().expect("fault plan lock").http_latency_ms)
    }

    /// Should this Kafka publish fail?
    pub fn kafka_publish_failure(&self) -> bool {
        let rate = self
            .0
            .plan
            .read()
            .expect("fault plan lock")
            .kafka_publish_failure_rate;
        self.roll(rate)
    }

    /// Should the consumer crash now, after the effect and before storing the offset? Each `true`
    /// uses up one of the plan's `consumer_crash_before_commit`.
    pub fn take_consumer_crash(&self) -> bool {
        self.0
            .crashes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Latency to add before a database transaction.
    pub fn db_latency(&self) -> Duration {
        Duration::from_millis(self.0.plan.read().expect("fault plan lock").db_latency_ms)
    }

    /// Should this business operation of `kind` (`oven`, `driver`, `payment`) fail?
    pub fn business_failure(&self, kind: &str) -> bool {
        let rate = self
            .0
            .plan
            .read()
            .expect("fault plan lock")
            .business_failure_rate
            .get(kind)
            .copied()
            .unwrap_or(0.0);
        self.roll(rate)
    }
}

/// The Kafka part of the plan, as the relay and the consumer of `pizza-messaging` ask for it
/// (`pizza-messaging` cannot name this crate, which depends on it). `background::run` hands the
/// service's live plan to both, so a plan set through the admin API takes effect at the next publish
/// or the next applied record.
impl pizza_messaging::FaultHooks for Faults {
    fn fail_publish(&self) -> bool {
        self.kafka_publish_failure()
    }

    fn crash_before_commit(&self) -> bool {
        self.take_consumer_crash()
    }

    fn may_crash_consumer(&self) -> bool {
        self.0.crashes_left.load(Ordering::SeqCst) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> FaultPlan {
        FaultPlan::from_json(json).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_failures_and_another_seed_others() {
        let run = |seed: u64| {
            let f = Faults::new(FaultPlan {
                seed,
                http_error_rate: 0.5,
                ..Default::default()
            })
            .unwrap();
            (0..64).map(|_| f.http_error()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let failures = run(7).iter().filter(|&&b| b).count();
        assert!((16..=48).contains(&failures), "about half of 64 fail: {failures}");
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        let f = Faults::new(plan(r#"{"business_failure_rate":{"oven":1.0,"driver":0.0}}"#)).unwrap();
        assert!((0..100).all(|_| f.business_failure("oven")));
        assert!((0..100).all(|_| !f.business_failure("driver")));
        assert!(!f.business_failure("payment"), "an unnamed kind never fails");
    }

    #[test]
    fn consumer_crashes_are_used_up_one_by_one() {
        let f = Faults::new(plan(r#"{"consumer_crash_before_commit":2}"#)).unwrap();
        assert_eq!(
            (0..4).map(|_| f.take_consumer_crash()).collect::<Vec<_>>(),
            vec![true, true, false, false]
        );
    }

    #[test]
    fn the_messaging_hooks_follow_the_live_plan() {
        use pizza_messaging::FaultHooks as _;
        let f = Faults::none();
        assert!(
            !f.fail_publish() && !f.crash_before_commit(),
            "no plan, no faults"
        );
        f.set(plan(
            r#"{"kafka_publish_failure_rate":1.0,"consumer_crash_before_commit":1}"#,
        ))
        .unwrap();
        assert!(f.fail_publish());
        assert!(
            f.may_crash_consumer(),
            "a crash is armed: the consumer goes one record at a time"
        );
        assert!(f.crash_before_commit());
        assert!(!f.crash_before_commit(), "the one crash is used up");
        assert!(!f.may_crash_consumer(), "and the consumer may batch again");
        let seeded = |seed: u64| {
            let f = Faults::new(FaultPlan {
                seed,
                kafka_publish_failure_rate: 0.5,
                ..Default::default()
            })
            .unwrap();
            (0..64).map(|_| f.fail_publish()).collect::<Vec<_>>()
        };
        assert_eq!(seeded(3), seeded(3), "the same seed fails the same publishes");
    }
}
