//! Recent latency, for hedging delays expressed as a percentile.
//!
//! Log-spaced buckets (about 9% apart, 100µs to ~100s) in two generations
//! that rotate every `period`; a percentile reads both, so it always covers
//! between one and two periods of history. Recording is one atomic add.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

const BUCKETS: usize = 160;
const MIN_NANOS: f64 = 100_000.0;
/// Growth factor between bucket bounds: 100µs · 1.09^160 ≈ 100 s.
const FACTOR: f64 = 1.09;

#[derive(Debug)]
pub struct LatencyWindow {
    epoch: Instant,
    period: Duration,
    /// The generation number each half currently holds.
    stamps: [AtomicU64; 2],
    buckets: [[AtomicU64; BUCKETS]; 2],
}

fn bucket_of(d: Duration) -> usize {
    let n = d.as_nanos() as f64;
    if n <= MIN_NANOS {
        return 0;
    }
    let i = ((n / MIN_NANOS).ln() / FACTOR.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

fn upper_bound(i: usize) -> Duration {
    Duration::from_nanos((MIN_NANOS * FACTOR.powi(i as i32)) as u64)
}

impl LatencyWindow {
    pub fn new(period: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            period: period.max(Duration::from_millis(100)),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    fn generation(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos() / self.period.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Makes sure half `generation_no % 2` holds generation `generation_no`, clearing it if it
    /// held an older one. Racing recorders may lose a few samples at the
    /// boundary, which a latency estimate tolerates.
    fn half(&self, generation_no: u64) -> usize {
        let h = (generation_no % 2) as usize;
        let stamp = self.stamps[h].load(Ordering::Acquire);
        if stamp != generation_no
            && self.stamps[h]
                .compare_exchange(stamp, generation_no, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for b in &self.buckets[h] {
                b.store(0, Ordering::Relaxed);
            }
        }
        h
    }

    pub fn record(&self, latency: Duration) {
        let h = self.half(self.generation());
        self.buckets[h][bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `p`-th percentile (0–100) of recent latencies, or `None` with
    /// fewer than `min_samples` samples (too little to trust).
    pub fn percentile(&self, p: f64, min_samples: u64) -> Option<Duration> {
        let current = self.generation();
        let mut counts = [0u64; BUCKETS];
        for h in 0..2 {
            let stamp = self.stamps[h].load(Ordering::Acquire);
            if stamp == current || stamp + 1 == current {
                for (c, b) in counts.iter_mut().zip(&self.buckets[h]) {
                    *c += b.load(Ordering::Relaxed);
                }
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 || total < min_samples {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percentiles_within_bucket_precision() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        for i in 1..=1000u64 {
            w.record(Duration::from_micros(i * 100)); // 0.1ms .. 100ms
        }
        let p50 = w.percentile(50.0, 1).unwrap().as_secs_f64() * 1000.0;
        let p95 = w.percentile(95.0, 1).unwrap().as_secs_f64() * 1000.0;
        assert!((50.0..=55.0).contains(&p50), "{p50}");
        assert!((95.0..=104.0).contains(&p95), "{p95}");
        assert_eq!(w.percentile(50.0, 5000), None);
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_age_out() {
        let w = LatencyWindow::new(Duration::from_secs(1));
        for _ in 0..100 {
            w.record(Duration::from_millis(500));
        }
        tokio::time::advance(Duration::from_millis(1100)).await;
        for _ in 0..100 {
            w.record(Duration::from_millis(1));
        }
        // Both generations still count.
        assert!(w.percentile(99.0, 1).unwrap() >= Duration::from_millis(400));
        tokio::time::advance(Duration::from_secs(1)).await;
        w.record(Duration::from_millis(1));
        // The 500ms generation has been replaced.
        assert!(w.percentile(99.0, 1).unwrap() < Duration::from_millis(2));
    }
}
