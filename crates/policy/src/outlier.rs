//! Endpoint health: passive outlier ejection and active health checks,
//! combined into one `available()` answer the balancer reads on every pick.
//!
//! Passive: `consecutive_failures` failures in a row, or a failure ratio over
//! `window` (with at least [`MIN_REQUESTS_FOR_RATE`] requests), eject the
//! endpoint for `base_ejection · 2ⁿ⁻¹` (capped at `max_ejection`), where n
//! counts ejections in a row. When the time is up the endpoint is on
//! probation: it receives exactly one probe request; success restores it,
//! failure ejects it again for twice as long. The cluster decides whether an
//! ejection is allowed (max ejection percent) through a callback.
//!
//! Active: the first check result sets the state directly; after that,
//! `healthy` successes in a row make an unhealthy endpoint healthy again and
//! `unhealthy` failures in a row make a healthy one unhealthy.
//!
//! Every field is an atomic: recording and reading never block.

use std::{
    sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;
use tokio::time::Instant;

/// Below this many requests in a window, a failure ratio means little.
pub const MIN_REQUESTS_FOR_RATE: u32 = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct OutlierSettings {
    pub consecutive_failures: u32,
    pub failure_rate: Option<f64>,
    pub window: Duration,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

/// What an endpoint's health currently allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    /// Passively ejected; no traffic until the ejection time is over.
    Ejected,
    /// Ejection over; the next request is a probe.
    Probation,
    /// Failing active health checks.
    Unhealthy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A change of state worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Ejected for `duration` after `reason`.
    Ejected {
        duration: Duration,
        reason: EjectReason,
    },
    /// The probe failed; ejected again for longer.
    ProbeFailed { duration: Duration },
    /// The probe succeeded; the endpoint is back.
    Restored,
    /// Active checks now say unhealthy.
    Unhealthy,
    /// Active checks now say healthy.
    Healthy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectReason {
    ConsecutiveFailures,
    FailureRate,
}

impl EjectReason {
    /// The reason in words, for logs and displays.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::ConsecutiveFailures => "consecutive failures",
            EjectReason::FailureRate => "failure rate",
        }
    }
}

impl std::fmt::Display for EjectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct EndpointHealth {
    epoch: Instant,
    consecutive: AtomicU32,
    /// Ejections in a row, for the growing ejection time.
    streak: AtomicU32,
    /// Milliseconds since `epoch` (plus one) until which the endpoint is
    /// ejected; 0 when it is not.
    ejected_until: AtomicU64,
    probing: AtomicBool,
    ejections: AtomicU64,
    window_start: AtomicU64,
    window_ok: AtomicU32,
    window_failed: AtomicU32,
    active_healthy: AtomicBool,
    active_known: AtomicBool,
    /// Positive: successes in a row; negative: failures in a row.
    active_run: AtomicI32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointHealth {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            ejections: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
            window_ok: AtomicU32::new(0),
            window_failed: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
            active_known: AtomicBool::new(false),
            active_run: AtomicI32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// May the balancer pick this endpoint now?
    pub fn available(&self) -> bool {
        if !self.active_healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        self.now_ms() >= until && !self.probing.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> HealthState {
        if !self.active_healthy.load(Ordering::Relaxed) {
            return HealthState::Unhealthy;
        }
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => HealthState::Healthy,
            until if self.now_ms() < until => HealthState::Ejected,
            _ => HealthState::Probation,
        }
    }

    pub fn is_ejected(&self) -> bool {
        matches!(self.state(), HealthState::Ejected | HealthState::Probation)
    }

    /// Total ejections so far (for metrics).
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Called when a request is sent to this endpoint; returns `true` when it
    /// is the probation probe.
    pub fn on_dispatch(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0
            && self.now_ms() >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Gives the probation probe back when its request ended without an
    /// outcome that says anything about the endpoint (cancelled by a winning
    /// hedge or the route deadline, refused by a local limit). Without this
    /// the endpoint would wait for a verdict forever.
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    fn ejection_time(&self, settings: &OutlierSettings) -> Duration {
        let n = self.streak.fetch_add(1, Ordering::AcqRel).min(20);
        settings
            .base_ejection
            .saturating_mul(1u32 << n)
            .min(settings.max_ejection)
    }

    fn eject_for(&self, d: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2));
        self.ejected_until.store(until, Ordering::Release);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.window_ok.store(0, Ordering::Relaxed);
        self.window_failed.store(0, Ordering::Relaxed);
    }

    /// Records the outcome of a request; `may_eject` asks the cluster whether
    /// one more ejection stays within its limit.
    pub fn record(
        &self,
        outcome: Outcome,
        settings: &OutlierSettings,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 {
            if self.now_ms() < until || !self.probing.load(Ordering::Acquire) {
                // A response to a request sent before the ejection.
                return None;
            }
            self.probing.store(false, Ordering::Release);
            return Some(match outcome {
                Outcome::Success => {
                    self.ejected_until.store(0, Ordering::Release);
                    self.streak.store(0, Ordering::Relaxed);
                    self.consecutive.store(0, Ordering::Relaxed);
                    Transition::Restored
                }
                Outcome::Failure => {
                    let d = self.ejection_time(settings);
                    self.eject_for(d);
                    Transition::ProbeFailed { duration: d }
                }
            });
        }
        self.roll_window(settings.window);
        match outcome {
            Outcome::Success => {
                self.consecutive.store(0, Ordering::Relaxed);
                self.window_ok.fetch_add(1, Ordering::Relaxed);
                None
            }
            Outcome::Failure => {
                let c = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                let failed = self.window_failed.fetch_add(1, Ordering::Relaxed) + 1;
                let total = failed + self.window_ok.load(Ordering::Relaxed);
                let reason =
                    if settings.consecutive_failures > 0 && c >= settings.consecutive_failures {
                        EjectReason::ConsecutiveFailures
                    } else if settings.failure_rate.is_some_and(|r| {
                        total >= MIN_REQUESTS_FOR_RATE && f64::from(failed) / f64::from(total) >= r
                    }) {
                        EjectReason::FailureRate
                    } else {
                        return None;
                    };
                if !may_eject() {
                    return None;
                }
                // Only one concurrent failure performs the ejection.
                let d = settings.base_ejection;
                if self
                    .ejected_until
                    .compare_exchange(0, u64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    return None;
                }
                let d = self
                    .ejection_time(settings)
                    .max(d.min(settings.max_ejection));
                self.eject_for(d);
                Some(Transition::Ejected {
                    duration: d,
                    reason,
                })
            }
        }
    }

    fn roll_window(&self, window: Duration) {
        let now = self.now_ms();
        let start = self.window_start.load(Ordering::Relaxed);
        let len = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(start) >= len
            && self
                .window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.window_ok.store(0, Ordering::Relaxed);
            self.window_failed.store(0, Ordering::Relaxed);
        }
    }

    /// Records an active health-check result.
    pub fn record_check(&self, ok: bool, healthy: u32, unhealthy: u32) -> Option<Transition> {
        let was = self.active_healthy.load(Ordering::Acquire);
        if !self.active_known.swap(true, Ordering::AcqRel) {
            // The first result decides at once: a dead endpoint at start-up
            // should not wait for `unhealthy` intervals.
            self.active_run
                .store(if ok { 1 } else { -1 }, Ordering::Relaxed);
            self.active_healthy.store(ok, Ordering::Release);
            return (was != ok).then_some(if ok {
                Transition::Healthy
            } else {
                Transition::Unhealthy
            });
        }
        let run = self.active_run.load(Ordering::Relaxed);
        let run = if ok { run.max(0) + 1 } else { run.min(0) - 1 };
        self.active_run.store(run, Ordering::Relaxed);
        if ok && !was && run >= healthy as i32 {
            self.active_healthy.store(true, Ordering::Release);
            Some(Transition::Healthy)
        } else if !ok && was && -run >= unhealthy as i32 {
            self.active_healthy.store(false, Ordering::Release);
            Some(Transition::Unhealthy)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            failure_rate: None,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_probe_restores() {
        let h = EndpointHealth::new();
        let s = settings();
        assert_eq!(h.record(Outcome::Failure, &s, || true), None);
        assert_eq!(h.record(Outcome::Failure, &s, || true), None);
        let t = h.record(Outcome::Failure, &s, || true);
        assert_eq!(
            t,
            Some(Transition::Ejected {
                duration: Duration::from_secs(10),
                reason: EjectReason::ConsecutiveFailures
            })
        );
        assert!(!h.available());
        assert_eq!(h.state(), HealthState::Ejected);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(h.state(), HealthState::Probation);
        assert!(h.available());
        assert!(h.on_dispatch(), "first request is the probe");
        assert!(!h.available(), "only one probe at a time");
        assert!(!h.on_dispatch());
        assert_eq!(
            h.record(Outcome::Success, &s, || true),
            Some(Transition::Restored)
        );
        assert!(h.available());
        assert_eq!(h.state(), HealthState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_can_be_sent_again() {
        let h = EndpointHealth::new();
        let s = settings();
        for _ in 0..3 {
            h.record(Outcome::Failure, &s, || true);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.on_dispatch());
        assert!(!h.available());
        h.release_probe();
        assert!(h.available(), "the next request probes");
        assert!(h.on_dispatch());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_doubles_the_ejection() {
        let h = EndpointHealth::new();
        let s = settings();
        for _ in 0..3 {
            h.record(Outcome::Failure, &s, || true);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.on_dispatch());
        assert_eq!(
            h.record(Outcome::Failure, &s, || true),
            Some(Transition::ProbeFailed {
                duration: Duration::from_secs(20)
            })
        );
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(!h.available());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(h.available());
        assert_eq!(h.ejections(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped() {
        let h = EndpointHealth::new();
        let s = settings();
        for _ in 0..3 {
            h.record(Outcome::Failure, &s, || true);
        }
        let mut last = Duration::ZERO;
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(61)).await;
            assert!(h.on_dispatch());
            if let Some(Transition::ProbeFailed { duration }) =
                h.record(Outcome::Failure, &s, || true)
            {
                last = duration;
            }
        }
        assert_eq!(last, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn cluster_may_refuse_an_ejection() {
        let h = EndpointHealth::new();
        let s = settings();
        for _ in 0..10 {
            assert_eq!(h.record(Outcome::Failure, &s, || false), None);
        }
        assert!(h.available());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_ejects_with_enough_volume() {
        let h = EndpointHealth::new();
        let s = OutlierSettings {
            consecutive_failures: 0,
            failure_rate: Some(0.5),
            ..settings()
        };
        let mut t = None;
        for i in 0..20 {
            let o = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            if let Some(x) = h.record(o, &s, || true) {
                t = Some(x);
                break;
            }
        }
        assert!(matches!(
            t,
            Some(Transition::Ejected {
                reason: EjectReason::FailureRate,
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_consecutive_count() {
        let h = EndpointHealth::new();
        let s = settings();
        for _ in 0..10 {
            h.record(Outcome::Failure, &s, || true);
            h.record(Outcome::Failure, &s, || true);
            h.record(Outcome::Success, &s, || true);
        }
        assert!(h.available());
    }

    #[test]
    fn active_checks_use_thresholds_after_the_first_result() {
        let h = EndpointHealth::new();
        assert_eq!(h.record_check(false, 2, 3), Some(Transition::Unhealthy));
        assert!(!h.available());
        assert_eq!(h.record_check(true, 2, 3), None);
        assert_eq!(h.record_check(true, 2, 3), Some(Transition::Healthy));
        assert!(h.available());
        assert_eq!(h.record_check(false, 2, 3), None);
        assert_eq!(h.record_check(false, 2, 3), None);
        assert_eq!(h.record_check(false, 2, 3), Some(Transition::Unhealthy));
        assert_eq!(h.state(), HealthState::Unhealthy);
    }
}
