//! Open-loop arrivals: when each order is due, independent of how fast the shop answers.
//!
//! A closed-loop tester (N workers, each sending the next request when the last one answered) slows
//! down exactly when the system slows down, and so hides the latency it should measure (the
//! "coordinated omission" Gil Tene describes). Here arrival `i` is due at `start + i / rate`, fixed
//! before the run, and its latency is measured from that due time, not from when the client got
//! round to sending it. If the client itself falls behind (the machine is busy), the arrival is sent
//! late and counted as a *late start*; if more requests are in flight than the cap allows, the
//! arrival is not sent at all and counted as *overflow*: both are reported, neither silently turns
//! the test into a closed loop.

use std::time::Duration;

/// The arrival plan of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Orders per second.
    pub rate: f64,
    /// How long arrivals go on.
    pub duration: Duration,
}

/// An arrival counts as late when it is sent more than this after its due time.
pub const LATE_START: Duration = Duration::from_millis(10);

impl Schedule {
    /// How many arrivals the run has: those due strictly before the end.
    pub fn count(&self) -> u64 {
        let exact = self.rate * self.duration.as_secs_f64();
        // Arrival i is due at i / rate; it belongs to the run when i / rate < duration.
        let n = exact.ceil() as u64;
        if n > 0 && ((n - 1) as f64) / self.rate >= self.duration.as_secs_f64() {
            n - 1
        } else {
            n
        }
    }

    /// When arrival `i` is due, counted from the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The index of the next arrival due at or after `elapsed`.
    pub fn next_index(&self, elapsed: Duration) -> u64 {
        (elapsed.as_secs_f64() * self.rate).ceil() as u64
    }
}

/// Whether an arrival sent `sent` after the start, due at `due`, is a late start.
pub fn is_late(due: Duration, sent: Duration) -> bool {
    sent.saturating_sub(due) > LATE_START
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_rate_times_duration_for_whole_numbers_and_rounds_up_otherwise() {
        let s = |rate, secs| Schedule {
            rate,
            duration: Duration::from_secs_f64(secs),
        };
        assert_eq!(s(4.0, 60.0).count(), 240);
        assert_eq!(s(1.0, 1.0).count(), 1);
        // 0, 0.4, 0.8 are due before 1 s; 1.2 is not.
        assert_eq!(s(2.5, 1.0).count(), 3);
        assert_eq!(s(0.5, 3.0).count(), 2);
        assert_eq!(s(1000.0, 0.0005).count(), 1);
    }

    #[test]
    fn arrivals_are_evenly_spaced_from_the_start_whatever_the_answers() {
        let s = Schedule {
            rate: 4.0,
            duration: Duration::from_secs(10),
        };
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(250));
        assert_eq!(s.due(40), Duration::from_secs(10));
        assert_eq!(s.next_index(Duration::from_millis(250)), 1);
        assert_eq!(s.next_index(Duration::from_millis(251)), 2);
    }

    #[test]
    fn a_send_more_than_10_ms_after_its_due_time_is_late() {
        let due = Duration::from_secs(1);
        assert!(!is_late(due, due));
        assert!(!is_late(due, due + Duration::from_millis(10)));
        assert!(is_late(due, due + Duration::from_millis(11)));
        assert!(!is_late(due, due - Duration::from_millis(5)));
    }
}
