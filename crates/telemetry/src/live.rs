//! Live request statistics for the admin feed and dashboard.
//!
//! Prometheus histograms answer "how was latency over the last five minutes"
//! once a server has scraped them; the dashboard needs "what is happening
//! now", computed inside the process every second. [`LiveStats`] keeps
//! cumulative counts only — requests, server errors and a log-scale latency
//! histogram — so that recording is three relaxed atomic additions and the
//! reader derives rates and percentiles by subtracting two snapshots
//! ([`LiveSnapshot::since`]). Nothing is ever reset, so any number of readers
//! can window the same stats independently.
//!
//! A proxy may have 100,000 routes and a cluster 10,000 endpoints, most of
//! them idle at any moment, so both halves are paid for by use: the latency
//! histogram (1 KiB) is allocated on the first recorded request, and a
//! snapshot keeps only the buckets between its first and last non-empty one
//! (none for an idle route or endpoint).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Sub-buckets per power of two: four keep the relative error of a
/// percentile under ~12% (half a sub-bucket), plenty for a dashboard, with
/// 128 buckets covering 1µs to about 2.4 hours.
const SUB_BITS: u32 = 2;
const SUBS: usize = 1 << SUB_BITS;
/// Number of latency buckets; samples beyond the last bucket are clamped.
pub const BUCKETS: usize = 128;

/// Cumulative counters of one route or endpoint; see the module docs.
#[derive(Debug, Default)]
pub struct LiveStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Allocated by the first [`LiveStats::record`].
    buckets: OnceLock<Box<[AtomicU64; BUCKETS]>>,
}

impl LiveStats {
    /// Records one finished request. Relaxed ordering: the counters are
    /// independent and readers tolerate a sample that is counted in one field
    /// a moment before another.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let buckets = self
            .buckets
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error found after the request was recorded: a gRPC call
    /// whose failure arrived in its trailers.
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The cumulative counts so far.
    pub fn snapshot(&self) -> LiveSnapshot {
        let counts = self.buckets.get().map(|b| {
            let mut counts = [0u64; BUCKETS];
            for (count, bucket) in counts.iter_mut().zip(b.iter()) {
                *count = bucket.load(Ordering::Relaxed);
            }
            counts
        });
        LiveSnapshot::trimmed(
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            counts.as_ref().map_or(&[][..], |c| &c[..]),
            0,
        )
    }
}

/// Cumulative counts read from a [`LiveStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSnapshot {
    pub requests: u64,
    /// Responses with a 5xx status, including the proxy's own 502/503/504.
    pub errors: u64,
    /// The bucket index of `buckets[0]`.
    first: usize,
    /// Counts of the buckets from `first` to the last non-empty one; empty
    /// when no sample was recorded.
    buckets: Vec<u64>,
}

impl LiveSnapshot {
    /// A snapshot of `counts` (bucket `first + i` at `i`) without the empty
    /// buckets at either end.
    fn trimmed(requests: u64, errors: u64, counts: &[u64], first: usize) -> Self {
        let (buckets, first) = match counts.iter().position(|n| *n != 0) {
            Some(lo) => {
                let hi = counts.iter().rposition(|n| *n != 0).unwrap_or(lo);
                (counts[lo..=hi].to_vec(), first + lo)
            }
            None => (Vec::new(), 0),
        };
        LiveSnapshot {
            requests,
            errors,
            first,
            buckets,
        }
    }

    /// The count of bucket `index`.
    fn bucket(&self, index: usize) -> u64 {
        index
            .checked_sub(self.first)
            .and_then(|i| self.buckets.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// What happened between `earlier` and `self`. Saturating, so that a
    /// stats object replaced in between (an endpoint that left and came back)
    /// reads as an empty window rather than an underflow.
    pub fn since(&self, earlier: &LiveSnapshot) -> LiveSnapshot {
        // Counts only grow, so the window's buckets lie within `self`'s.
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.bucket(self.first + i)))
            .collect();
        LiveSnapshot::trimmed(
            self.requests.saturating_sub(earlier.requests),
            self.errors.saturating_sub(earlier.errors),
            &counts,
            self.first,
        )
    }

    /// Whether nothing was recorded: an idle route or endpoint, which a
    /// reader keeping history need not keep (it equals the default).
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.errors == 0 && self.buckets.is_empty()
    }

    /// The latency below which a fraction `q` (0..=1) of the samples fall,
    /// estimated as the middle of the bucket holding that rank; `None`
    /// without samples.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the sample at quantile q, 1-based, at least the first.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(self.first + i);
                return Some(Duration::from_nanos((lo + hi) * 500));
            }
        }
        None
    }

    /// Server errors over requests, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The bucket of a latency in microseconds: values below `SUBS` map to
/// themselves, every power of two above is split into `SUBS` equal parts.
fn bucket_of(micros: u64) -> usize {
    if micros < SUBS as u64 {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = ((micros >> shift) as usize) & (SUBS - 1);
    let index = SUBS + (shift as usize) * SUBS + sub;
    index.min(BUCKETS - 1)
}

/// The half-open range `[lo, hi)` of microseconds a bucket holds.
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUBS {
        return (index as u64, index as u64 + 1);
    }
    let shift = ((index - SUBS) / SUBS) as u32;
    let sub = ((index - SUBS) % SUBS) as u64;
    let lo = (SUBS as u64 + sub) << shift;
    (lo, lo + (1u64 << shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for v in (0..5000u64).chain([65_535, 1 << 20, 3_000_000]) {
            let (lo, hi) = bucket_bounds(bucket_of(v));
            assert!(lo <= v && v < hi, "{v} not in [{lo}, {hi})");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn windows_give_rates_and_percentiles() {
        let s = LiveStats::default();
        s.record(200, Duration::from_millis(50));
        let before = s.snapshot();
        for i in 0..100u64 {
            let status = if i < 5 { 503 } else { 200 };
            s.record(status, Duration::from_millis(i + 1));
        }
        let w = s.snapshot().since(&before);
        assert_eq!(w.requests, 100);
        assert_eq!(w.errors, 5);
        assert_eq!(w.error_rate(), Some(0.05));
        let p50 = w.percentile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = w.percentile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((44.0..=57.0).contains(&p50), "p50 {p50}");
        assert!((88.0..=113.0).contains(&p99), "p99 {p99}");
        assert_eq!(LiveSnapshot::default().percentile(0.5), None);
        assert_eq!(before.since(&s.snapshot()).requests, 0);
    }

    #[test]
    fn idle_stats_hold_no_histogram_and_snapshots_keep_only_used_buckets() {
        let s = LiveStats::default();
        assert!(s.buckets.get().is_none());
        let idle = s.snapshot();
        assert!(idle.is_empty());
        assert_eq!(idle, LiveSnapshot::default());

        s.record(200, Duration::from_millis(2));
        s.record(200, Duration::from_millis(40));
        let a = s.snapshot();
        assert!(!a.is_empty());
        assert_eq!(a.first, bucket_of(2_000));
        assert_eq!(a.first + a.buckets.len() - 1, bucket_of(40_000));
        // A window over only the later sample starts at its bucket.
        s.record(200, Duration::from_millis(40));
        let w = s.snapshot().since(&a);
        assert_eq!(
            (w.requests, w.first, w.buckets.as_slice()),
            (1, bucket_of(40_000), &[1][..])
        );
        // The window from an idle start is everything; to itself, nothing.
        assert_eq!(s.snapshot().since(&idle), s.snapshot());
        assert!(s.snapshot().since(&s.snapshot()).is_empty());
    }
}
