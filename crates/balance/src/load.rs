//! Per-endpoint load statistics: in-flight requests and peak-EWMA latency.
//!
//! Every picker on every thread reads these on the hot path, so they are
//! plain atomics. The EWMA and its timestamp are packed into one `AtomicU64`
//! (an `f32` estimate in the high half, a millisecond stamp in the low half)
//! so that an update is a single compare-and-swap and a reader can never see
//! an estimate paired with the wrong timestamp.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// linkerd's default RTT prior for an endpoint that has not answered yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// linkerd's default EWMA decay time constant.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The time source for [`Load`]. Production code uses [`Clock::System`];
/// tests drive a [`ManualClock`] to exercise decay without sleeping.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// Monotonic wall time (`Instant`).
    #[default]
    System,
    /// Time that only moves when [`ManualClock::advance`] is called.
    Manual(ManualClock),
}

/// A manually advanced clock shared by every [`Load`] built from it.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::AcqRel);
    }

    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

/// Per-endpoint load statistics, shared by all pickers; lock-free.
///
/// The RTT estimate is Finagle/linkerd "peak EWMA": a slower response than
/// the estimate replaces it outright (peaks are believed immediately), a
/// faster one is blended in with weight `1 - exp(-elapsed / decay)`, and
/// between observations the estimate read by [`Load::cost`] and
/// [`Load::ewma`] decays toward zero, so an endpoint that has not been
/// measured for a while is given another chance.
///
/// Timestamps have millisecond resolution and wrap after about 49 days; an
/// endpoint silent for (within a minute of) a multiple of that period is
/// read as if its last observation were recent, which only delays its decay.
pub struct Load {
    shared: Arc<Shared>,
}

struct Shared {
    in_flight: AtomicU32,
    /// `(ewma_ns as f32).to_bits() << 32 | stamp_ms as u32`.
    estimate: AtomicU64,
    decay_ms: f64,
    clock: Clock,
}

/// How far in the future a stamp may be and still be read as a race with a
/// concurrent update rather than as a wrapped, ancient stamp.
const FUTURE_STAMP_SLACK_MS: u32 = 60_000;

/// Process-wide origin of system-clock stamps, shared by every `Load` so a
/// picker can read the clock once and compare two endpoints with it.
static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Load {
    /// `default_rtt` seeds the estimate before the first observation;
    /// `decay` is the EWMA time constant.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self::with_clock(default_rtt, decay, Clock::System)
    }

    pub fn with_clock(default_rtt: Duration, decay: Duration, clock: Clock) -> Self {
        // A zero decay would divide by zero; a microsecond already means
        // "no memory" at millisecond stamp resolution.
        let decay_ms = (decay.as_secs_f64() * 1e3).max(1e-3);
        let shared = Shared {
            in_flight: AtomicU32::new(0),
            estimate: AtomicU64::new(0),
            decay_ms,
            clock,
        };
        let now = shared.now_ms(Instant::now);
        shared
            .estimate
            .store(pack(nanos_f32(default_rtt), now), Ordering::Relaxed);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Marks a request as started; the returned guard ends it on drop.
    pub fn start(&self) -> InFlight {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Folds one measured round-trip time into the peak-EWMA estimate.
    pub fn observe(&self, rtt: Duration) {
        let shared = &*self.shared;
        let rtt_ns = rtt.as_nanos() as f64;
        let mut current = shared.estimate.load(Ordering::Acquire);
        loop {
            // The clock is read after the state so `now >= stamp` holds even
            // when another thread just stored a newer stamp.
            let now = shared.now_ms(Instant::now);
            let (ewma, stamp) = unpack(current);
            let ewma = f64::from(ewma);
            let next = if rtt_ns > ewma {
                rtt_ns
            } else {
                let w = shared.weight(now, stamp);
                ewma * w + rtt_ns * (1.0 - w)
            };
            match shared.estimate.compare_exchange_weak(
                current,
                pack(next as f32, now),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Replaces the estimate with `rtt`, e.g. when an endpoint comes back
    /// from an ejection: the penalty of its failures says nothing about the
    /// restarted process, and keeping it would shut the endpoint out until
    /// the estimate decays.
    pub fn reset(&self, rtt: Duration) {
        let now = self.shared.now_ms(Instant::now);
        self.shared
            .estimate
            .store(pack(nanos_f32(rtt), now), Ordering::Release);
    }

    /// Peak-EWMA cost: the decayed RTT estimate in nanoseconds times
    /// `in_flight + 1`, so queueing at an endpoint raises its cost before
    /// any slow response comes back.
    pub fn cost(&self) -> f64 {
        self.cost_at(Instant::now)
    }

    /// [`Load::cost`] with the system time supplied by the caller, so a
    /// picker comparing endpoints reads the clock once.
    pub(crate) fn cost_at(&self, now: impl FnOnce() -> Instant) -> f64 {
        self.decayed_ns(now) * f64::from(self.in_flight().saturating_add(1))
    }

    /// The RTT estimate, decayed to now (the value [`Load::cost`] uses).
    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.decayed_ns(Instant::now) as u64)
    }

    fn decayed_ns(&self, now: impl FnOnce() -> Instant) -> f64 {
        let shared = &*self.shared;
        let (ewma, stamp) = unpack(shared.estimate.load(Ordering::Acquire));
        f64::from(ewma) * shared.weight(shared.now_ms(now), stamp)
    }
}

impl Default for Load {
    /// linkerd's defaults: 30ms prior, 10s decay.
    fn default() -> Self {
        Self::new(DEFAULT_RTT, DEFAULT_DECAY)
    }
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("in_flight", &self.in_flight())
            .field("ewma", &self.ewma())
            .finish()
    }
}

impl Shared {
    /// `now` is only called for the system clock.
    fn now_ms(&self, now: impl FnOnce() -> Instant) -> u32 {
        let ms = match &self.clock {
            Clock::System => {
                let epoch = *EPOCH.get_or_init(Instant::now);
                now().saturating_duration_since(epoch).as_millis()
            }
            Clock::Manual(m) => u128::from(m.nanos.load(Ordering::Acquire) / 1_000_000),
        };
        // Truncation is the documented ~49-day wrap; elapsed time is always
        // computed with wrapping subtraction.
        ms as u32
    }

    /// Weight of the old estimate after `now - stamp` milliseconds.
    fn weight(&self, now: u32, stamp: u32) -> f64 {
        let elapsed = now.wrapping_sub(stamp);
        // A stamp just *ahead* of `now` was stored by another thread after
        // this one read the clock: no time has elapsed, not ~49 days (which
        // would make the endpoint look free).
        let elapsed = if elapsed > u32::MAX - FUTURE_STAMP_SLACK_MS {
            0
        } else {
            elapsed
        };
        (-f64::from(elapsed) / self.decay_ms).exp()
    }
}

/// Guard for one in-flight request; dropping it ends the request.
///
/// Owns a reference to the counter, so it is `'static` and can move into
/// the response future.
pub struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

fn nanos_f32(d: Duration) -> f32 {
    d.as_nanos() as f32
}

fn pack(ewma_ns: f32, stamp_ms: u32) -> u64 {
    (u64::from(ewma_ns.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(word: u64) -> (f32, u32) {
    (f32::from_bits((word >> 32) as u32), word as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual(default_rtt_ms: u64, decay_s: u64) -> (Load, ManualClock) {
        let clock = ManualClock::new();
        let load = Load::with_clock(
            Duration::from_millis(default_rtt_ms),
            Duration::from_secs(decay_s),
            clock.clock(),
        );
        (load, clock)
    }

    fn ms(load: &Load) -> f64 {
        load.ewma().as_secs_f64() * 1e3
    }

    #[test]
    fn guards_count_in_flight() {
        let load = Load::default();
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        drop(a);
        assert_eq!(load.in_flight(), 1);
        let moved = std::thread::spawn(move || drop(b));
        moved.join().unwrap();
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn starts_at_default_rtt() {
        let (load, _clock) = manual(30, 10);
        assert!((ms(&load) - 30.0).abs() < 1e-3);
        assert!((load.cost() - 30e6).abs() < 1.0);
    }

    #[test]
    fn peaks_are_taken_immediately() {
        let (load, _clock) = manual(30, 10);
        load.observe(Duration::from_millis(250));
        assert!((ms(&load) - 250.0).abs() < 1e-3);
    }

    #[test]
    fn lower_rtts_blend_by_elapsed_time() {
        let (load, clock) = manual(100, 10);
        // No time elapsed: the old estimate keeps all its weight.
        load.observe(Duration::from_millis(10));
        assert!((ms(&load) - 100.0).abs() < 1e-3);
        // One time constant later: weight exp(-1) on the old estimate. The
        // read itself decays by the same factor until the next observation.
        clock.advance(Duration::from_secs(10));
        load.observe(Duration::from_millis(10));
        let w = (-1.0f64).exp();
        let expected = 100.0 * w + 10.0 * (1.0 - w);
        assert!((ms(&load) - expected).abs() < 1e-3, "{}", ms(&load));
    }

    #[test]
    fn reads_decay_toward_zero_and_cost_scales_with_in_flight() {
        let (load, clock) = manual(30, 10);
        load.observe(Duration::from_millis(100));
        clock.advance(Duration::from_secs(20));
        let expected = 100.0 * (-2.0f64).exp();
        assert!((ms(&load) - expected).abs() < 1e-3);
        let _a = load.start();
        let _b = load.start();
        assert!((load.cost() - 3.0 * expected * 1e6).abs() < 10.0);
    }

    #[test]
    fn stamp_ahead_of_a_stale_clock_read_is_not_ancient() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(100));
        let load = Load::with_clock(Duration::from_millis(30), DEFAULT_DECAY, clock.clock());
        let shared = &*load.shared;
        let stamp = shared.now_ms(Instant::now);
        assert_eq!(shared.weight(stamp - 3, stamp), 1.0);
        assert_eq!(shared.weight(stamp, stamp), 1.0);
        assert!(shared.weight(stamp + 10_000, stamp) < 0.5);
    }

    #[test]
    fn concurrent_observers_do_not_lose_peaks() {
        // With the clock frozen, lower observations carry no weight, so the
        // estimate must end at exactly the largest RTT any thread saw.
        let (load, _clock) = manual(1, 10);
        let load = Arc::new(load);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let load = Arc::clone(&load);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        load.observe(Duration::from_micros((i * 7919 + t) % 5_000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let max_seen = (0..4u64)
            .flat_map(|t| (0..20_000u64).map(move |i| (i * 7919 + t) % 5_000))
            .max()
            .unwrap();
        let expected = Duration::from_micros(max_seen).as_secs_f64() * 1e3;
        assert!(
            (ms(&load) - expected).abs() < 1e-3,
            "{} vs {expected}",
            ms(&load)
        );
    }
}
