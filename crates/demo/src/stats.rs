//! Statistics of the load: the [`Recorder`] that request tasks write into,
//! and the figures it yields (percentiles, per-second windows, counts).
//!
//! Latency is measured on the client side, through the proxy, from sending
//! the request to having the whole response; only successful requests enter
//! the latency figures, since a failure's latency (a timeout, a reset) says
//! nothing about how fast the system serves.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::resilience::Decisions;

/// The kinds of request the load generator mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET /api/...` over HTTP/1.1.
    Http1,
    /// `GET /api/...` over HTTP/2 with prior knowledge (h2c).
    Http2,
    /// `Inventory/GetItem` unary gRPC.
    Grpc,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [RequestKind::Http1, RequestKind::Http2, RequestKind::Grpc];

    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Http1 => "HTTP/1.1",
            RequestKind::Http2 => "HTTP/2",
            RequestKind::Grpc => "gRPC",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: Duration::from_micros(h.max()),
        }
    }
}

/// One second of load, as the live line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    /// Time since the scenario started, at the end of this window.
    pub elapsed: Duration,
    /// The window's length: one second, or less for the last one.
    pub window: Duration,
    /// Requests completed during the window (successes and errors).
    pub completed: u64,
    pub errors: u64,
    /// Latency of this second's successful requests.
    pub latency: Latency,
    /// Errors since the load started.
    pub total_errors: u64,
    /// The proxy's decisions during the window (retries, hedges, ...).
    pub decisions: Decisions,
}

impl Second {
    /// Completed requests per second over the window.
    pub fn rate(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    /// The live progress line: plain text, one per second, so it reads the
    /// same in a terminal and in CI logs.
    pub fn line(&self) -> String {
        format!(
            "  t={:>5.1}s  {:>6.0} req/s  p50 {:>7}  p99 {:>8}  errors {} (+{})  retries +{}  hedges +{}  ejections +{}",
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.latency.p50),
            ms(self.latency.p99),
            self.total_errors,
            self.errors,
            self.decisions.retries,
            self.decisions.hedges,
            self.decisions.ejections,
        )
    }
}

/// Counts of one request kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub requests: u64,
    pub errors: u64,
    /// Requests the generator did not send because its concurrency cap was
    /// reached (an open-loop generator must not queue them silently).
    pub shed: u64,
}

/// At most this many distinct error messages are kept for the report.
const ERROR_SAMPLES: usize = 5;

/// Shared statistics, written by request tasks and read by the live ticker.
/// One short critical section per request is negligible at demo rates.
#[derive(Debug)]
pub(crate) struct Recorder {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    total: Histogram<u64>,
    window: Histogram<u64>,
    window_completed: u64,
    window_errors: u64,
    kinds: [KindCounts; 3],
    error_samples: Vec<String>,
    seconds: Vec<Second>,
    /// Timer lateness of the load generator.
    lag: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 min at 3 significant digits; values beyond
    // are clamped by `saturating_record`.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .expect("constant histogram bounds are valid (low >= 1, high >= 2 * low, sigfig <= 5)")
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            state: Mutex::new(State {
                total: histogram(),
                window: histogram(),
                window_completed: 0,
                window_errors: 0,
                kinds: [KindCounts::default(); 3],
                error_samples: Vec::new(),
                seconds: Vec::new(),
                lag: histogram(),
            }),
        }
    }

    /// Records one completed request.
    pub(crate) fn record(&self, kind: RequestKind, latency: Duration, outcome: Result<(), String>) {
        let mut s = self.lock();
        s.kinds[kind.index()].requests += 1;
        s.window_completed += 1;
        match outcome {
            Ok(()) => {
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                s.total.saturating_record(us);
                s.window.saturating_record(us);
            }
            Err(message) => {
                s.kinds[kind.index()].errors += 1;
                s.window_errors += 1;
                let sample = format!("{}: {message}", kind.label());
                // Distinct messages only; the time taken tells a timeout or
                // a starved machine from a fast failure.
                if s.error_samples.len() < ERROR_SAMPLES
                    && !s.error_samples.iter().any(|e| e.starts_with(&sample))
                {
                    s.error_samples
                        .push(format!("{sample} (after {})", ms(latency)));
                }
            }
        }
    }

    /// Records how late a timer fired.
    pub(crate) fn lag(&self, late: Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX).max(1);
        self.lock().lag.saturating_record(us);
    }

    /// The host's scheduling delay as the load generator saw it.
    pub(crate) fn host_lag(&self) -> Latency {
        Latency::of(&self.lock().lag)
    }

    pub(crate) fn shed(&self, kind: RequestKind) {
        self.lock().kinds[kind.index()].shed += 1;
    }

    /// Closes the current window (`window` long, ending `elapsed` into the
    /// scenario, during which the proxy made `decisions`) and returns it.
    pub(crate) fn tick(&self, elapsed: Duration, window: Duration, decisions: Decisions) -> Second {
        let mut s = self.lock();
        let total_errors = s.kinds.iter().map(|k| k.errors).sum();
        let second = Second {
            elapsed,
            window,
            completed: s.window_completed,
            errors: s.window_errors,
            latency: Latency::of(&s.window),
            total_errors,
            decisions,
        };
        s.window.reset();
        s.window_completed = 0;
        s.window_errors = 0;
        s.seconds.push(second.clone());
        second
    }

    pub(crate) fn latency(&self) -> Latency {
        Latency::of(&self.lock().total)
    }

    pub(crate) fn kinds(&self) -> Vec<(RequestKind, KindCounts)> {
        let s = self.lock();
        RequestKind::ALL
            .iter()
            .map(|k| (*k, s.kinds[k.index()]))
            .collect()
    }

    /// Requests failed so far, all kinds.
    pub(crate) fn errors(&self) -> u64 {
        self.lock().kinds.iter().map(|c| c.errors).sum()
    }

    pub(crate) fn error_samples(&self) -> Vec<String> {
        self.lock().error_samples.clone()
    }

    pub(crate) fn seconds(&self) -> Vec<Second> {
        self.lock().seconds.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters stay meaningful even if a holder panicked mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds with two decimals: demo latencies are a few ms, so whole
/// milliseconds would hide every difference.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}
