//! Retry budgets: retries may add at most `ratio` of the requests seen over
//! the last `ttl`, plus `min_per_second` always (so that quiet clients can
//! still retry). When the budget is spent, the failure is returned instead of
//! retried, which is what keeps a brown-out from turning into a retry storm.
//!
//! Lock-free: deposits and withdrawals go into ten time slots of `ttl / 10`
//! each, stamped with their window number, so expiry is a compare of stamps
//! rather than a sweep under a lock.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

const SLOTS: u64 = 10;

/// A sliding-window budget shared by every request of a cluster.
#[derive(Debug)]
pub struct Budget {
    epoch: Instant,
    window: Duration,
    ratio: f64,
    /// Tokens granted by the floor over one full `ttl`.
    reserve: f64,
    deposits: Slots,
    withdrawals: Slots,
}

/// Ten counters, each packed as `window number << 32 | count`.
#[derive(Debug)]
struct Slots([AtomicU64; SLOTS as usize]);

impl Slots {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn add(&self, window: u64) {
        let slot = &self.0[(window % SLOTS) as usize];
        let stamp = window & 0xffff_ffff;
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == stamp {
                cur.saturating_add(1)
            } else {
                (stamp << 32) | 1
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The sum over the last `SLOTS` windows, including the current one.
    fn sum(&self, window: u64) -> u64 {
        let oldest = window.saturating_sub(SLOTS - 1);
        self.0
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|v| {
                let stamp = v >> 32;
                // Stamps are the low 32 bits of the window number; compare in
                // that space (wrapping after ~13 years of 100ms windows).
                let w = window & 0xffff_ffff;
                let o = oldest & 0xffff_ffff;
                if o <= w {
                    stamp >= o && stamp <= w
                } else {
                    stamp >= o || stamp <= w
                }
            })
            .map(|v| v & 0xffff_ffff)
            .sum()
    }
}

impl Budget {
    /// `ratio` in 0..=1 (0.2 allows one retry per five requests),
    /// `min_per_second` always allowed, counted over `ttl` (≥ 1s).
    pub fn new(ratio: f64, min_per_second: u32, ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_secs(1));
        Self {
            epoch: Instant::now(),
            window: ttl / SLOTS as u32,
            ratio: ratio.clamp(0.0, 1000.0),
            reserve: f64::from(min_per_second) * ttl.as_secs_f64(),
            deposits: Slots::new(),
            withdrawals: Slots::new(),
        }
    }

    fn window(&self) -> u64 {
        let nanos = self.epoch.elapsed().as_nanos() / self.window.as_nanos().max(1);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Records an original request (not a retry).
    pub fn deposit(&self) {
        self.deposits.add(self.window());
    }

    /// Asks for one retry; `true` takes it from the budget.
    pub fn withdraw(&self) -> bool {
        let w = self.window();
        let earned = self.deposits.sum(w) as f64 * self.ratio + self.reserve;
        let spent = self.withdrawals.sum(w) as f64;
        if earned - spent >= 1.0 {
            self.withdrawals.add(w);
            true
        } else {
            false
        }
    }

    /// Retries still available now, for the admin API.
    pub fn remaining(&self) -> f64 {
        let w = self.window();
        let earned = self.deposits.sum(w) as f64 * self.ratio + self.reserve;
        (earned - self.withdrawals.sum(w) as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_second_over_ttl() {
        let b = Budget::new(0.0, 2, Duration::from_secs(10));
        let allowed = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_recent_requests() {
        let b = Budget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..100 {
            b.deposit();
        }
        let allowed = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_ttl() {
        let b = Budget::new(0.5, 0, Duration::from_secs(10));
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 5);
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        // Old deposits are gone, and so are old withdrawals.
        assert!(!b.withdraw());
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides_gradually() {
        let b = Budget::new(1.0, 0, Duration::from_secs(10));
        for _ in 0..10 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..10 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_millis(5500)).await;
        // The first ten have expired; the second ten remain.
        assert_eq!((0..30).filter(|_| b.withdraw()).count(), 10);
    }
}
