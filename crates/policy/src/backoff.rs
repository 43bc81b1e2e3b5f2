//! Exponential backoff with full jitter: the n-th retry waits a uniformly
//! random time in `[0, min(max, base · 2ⁿ))`. Full jitter spreads retries of
//! many clients that failed together, which fixed or "equal" jitter does not
//! (AWS Architecture Blog, "Exponential Backoff And Jitter").

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// The ceiling of the wait before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// A random wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(fastrand::u64(0..nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_max() {
        let b = Backoff::new(Duration::from_millis(25), Duration::from_millis(250));
        let c: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(c, [25, 50, 100, 200, 250, 250]);
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let samples: Vec<Duration> = (0..1000).map(|_| b.delay(2)).collect();
        assert!(samples.iter().all(|d| *d < Duration::from_millis(200)));
        let mean = samples.iter().sum::<Duration>() / 1000;
        assert!(
            mean > Duration::from_millis(80) && mean < Duration::from_millis(120),
            "{mean:?}"
        );
        assert!(samples.iter().any(|d| *d < Duration::from_millis(20)));
    }
}
