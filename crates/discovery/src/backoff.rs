//! Jittered exponential backoff for retrying a failed source.
//!
//! "Equal jitter": half of each delay is fixed and half random, so retries
//! never come back-to-back (as full jitter can) while a fleet of proxies
//! that lost the same registry at the same moment still spreads out instead
//! of reconnecting in lockstep.

use std::time::Duration;

/// Backoff settings; [`Backoff::delay`] gives the pause before a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Default 100ms: a registry restart or an etcd leader change is
    /// usually over within a few hundred milliseconds.
    pub base: Duration,
    /// Default 5s: caps how stale a set can stay after discovery recovers,
    /// while a long outage costs one attempt per few seconds per source.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The pause before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max).max(Duration::from_millis(1));
        let half = capped / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_half_to_full_of_the_cap() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let full = b
                .base
                .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
                .min(b.max);
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert!(b.delay(0) <= Duration::from_millis(100));
        assert!(b.delay(30) >= Duration::from_millis(2500));
    }
}
