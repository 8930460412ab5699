//! Exponential back-off between retries.
//!
//! Pure arithmetic, so it is tested without clocks. There is no jitter: one relay, consumer or HTTP
//! client per process retries against one peer, and the synchronized-retry storms jitter prevents
//! need many clients failing at the same instant, which the platform's scale does not reach. The
//! workflow engine's retries are spread anyway: each is a parked run that any worker claims when due.

use std::time::Duration;

/// Delays that grow by `multiplier` from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per failure (2.0 doubles; below 1.0 counts as 1.0, so delays never shrink).
    pub multiplier: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 5 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure (1-based; 0 means no failure yet):
    /// `min(initial * multiplier^(failures - 1), max)`. Never panics, whatever the inputs.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(failures - 1).unwrap_or(i32::MAX));
        // `mul_f64` panics on overflow or non-finite input; cap before multiplying.
        let max_factor = self.max.as_secs_f64() / self.initial.as_secs_f64().max(f64::MIN_POSITIVE);
        if !factor.is_finite() || factor >= max_factor {
            return self.max;
        }
        self.initial.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_initial_value_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        };
        let delays: Vec<u128> = (0..7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn huge_failure_counts_and_odd_settings_never_panic() {
        let b = Backoff::default();
        assert_eq!(b.delay(u32::MAX), b.max);
        let flat = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            multiplier: 0.5,
        };
        assert_eq!(
            flat.delay(10),
            Duration::from_millis(50),
            "a multiplier below 1 never shrinks delays"
        );
        let zero = Backoff {
            initial: Duration::ZERO,
            max: Duration::from_millis(10),
            multiplier: 2.0,
        };
        assert!(zero.delay(3) <= Duration::from_millis(10));
        let nan = Backoff {
            multiplier: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(nan.delay(4), nan.initial, "a NaN multiplier counts as 1");
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: f64::MAX,
        };
        assert_eq!(huge.delay(2), Duration::MAX);
    }
}
