//! The outcome of a demo run, [`DemoReport`], and its rendering as the
//! summary printed at the end of `switchyard demo`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::Protocol;
use crate::events::ProxyEvent;
use crate::resilience::{self, ClusterResilience};
use crate::stats::ms;
pub use crate::stats::{KindCounts, Latency, RequestKind, Second};

/// Printed under the backend table: what its columns count.
const BACKEND_LEGEND: &str = "  served: answered by the backend (its own count); failed: errors it answered on purpose\n  \
     (the scenario's error rate), which the proxy retried; proxied: attempts the proxy sent it,\n  \
     retries and hedges included; share: its part of its cluster's served requests; restarted:\n  \
     served since its last restart; -: does not apply (never restarted, or no longer in the proxy)";

/// What one backend did during the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    pub name: String,
    pub protocol: Protocol,
    /// The proxy cluster it belongs to.
    pub cluster: String,
    pub address: SocketAddr,
    /// Requests the backend answered successfully (its own count).
    pub served: u64,
    /// Requests it failed on purpose (the scenario's error rate).
    pub failed: u64,
    /// Requests served since its last restart; `None` if never restarted.
    pub served_since_restart: Option<u64>,
    /// Requests the proxy sent to this endpoint (the proxy's count, including
    /// any retries); `None` if the proxy does not list it.
    pub proxied: Option<u64>,
    /// `served` as a percentage of all requests served by backends of the
    /// same protocol (its cluster).
    pub share: f64,
}

/// One scenario event as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// When it was applied, since the scenario started.
    pub at: Duration,
    pub what: String,
    /// The backend the event acted on, if any.
    pub backend: Option<String>,
    /// Whether it was a fault (kill, slow, errors) rather than a repair.
    pub fault: bool,
}

/// One scaling step, as it went.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// A backend started and registered mid-run.
    Out {
        backend: String,
        /// When it happened, since the scenario started.
        at: Duration,
        /// From its registration to its first answered request; `None` if
        /// no request reached it in time.
        first_request_after: Option<Duration>,
    },
    /// A backend drained, deregistered and stopped mid-run.
    In {
        backend: String,
        at: Duration,
        /// From the drain request to the proxy marking the endpoint
        /// draining (no new requests); `None` if it never did in time.
        draining_seen_after: Option<Duration>,
        /// From the drain request to the backend's stop.
        stopped_after: Duration,
        /// Requests the proxy still had in flight to it when it stopped.
        in_flight_at_stop: u32,
        /// Requests it answered after the proxy marked it draining: those
        /// already sent, finishing.
        served_while_draining: u64,
        /// Client-visible errors before the drain began, so the report can
        /// count those after it.
        errors_before: u64,
    },
}

impl Scaling {
    pub fn backend(&self) -> &str {
        match self {
            Scaling::Out { backend, .. } | Scaling::In { backend, .. } => backend,
        }
    }
}

/// The outcome of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The proxy's `public` listener and admin endpoint.
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Requested load.
    pub target_rate: u32,
    /// How long load actually ran.
    pub load_duration: Duration,
    /// Requests completed (successes and errors).
    pub requests: u64,
    pub errors: u64,
    pub shed: u64,
    pub latency: Latency,
    /// How late the load generator's 5 ms timer fired: the host's scheduling
    /// delay. Hundreds of milliseconds mean the machine was overloaded, and
    /// every timeout in the system fires early relative to real work.
    pub host_lag: Latency,
    pub by_kind: Vec<(RequestKind, KindCounts)>,
    pub backends: Vec<BackendReport>,
    pub seconds: Vec<Second>,
    pub timeline: Vec<Applied>,
    /// Endpoint ejections, restorations and health changes in the proxy, as
    /// the demo saw them while load ran.
    pub events: Vec<ProxyEvent>,
    /// The proxy's decisions and endpoint states per cluster at the end.
    pub resilience: Vec<ClusterResilience>,
    /// The embedded registry the backends registered in.
    pub registry: SocketAddr,
    /// Scale-out and scale-in steps of the scenario.
    pub scaling: Vec<Scaling>,
    /// A few distinct error messages, to tell what went wrong.
    pub error_samples: Vec<String>,
    /// Whether the proxy drained every connection within its grace period.
    pub drained: bool,
    /// The delays the proxy injected on purpose (a route's fault policy).
    pub faults: InjectedFaults,
}

/// A route's injected delays: the policy, and what the proxy counted in
/// `switchyard_faults_injected_total`.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedFaults {
    pub route: String,
    /// The share of the route's requests the policy delays.
    pub ratio: f64,
    pub delay: Duration,
    /// Requests the proxy delayed.
    pub delayed: u64,
    /// Requests the load sent on that route.
    pub requests: u64,
}

impl InjectedFaults {
    /// Whether the count fits the ratio: within five standard deviations
    /// of a binomial draw (plus two, for tiny runs), so only a policy that
    /// did not apply, or applied to the wrong share, fails.
    pub fn plausible(&self) -> bool {
        let n = self.requests as f64;
        let expected = n * self.ratio;
        let sigma = (n * self.ratio * (1.0 - self.ratio)).sqrt();
        (self.delayed as f64 - expected).abs() <= 5.0 * sigma + 2.0
    }
}

impl DemoReport {
    /// The system held its promises: no request failed, every backend served
    /// traffic, every restarted backend served again, and every cluster hit
    /// by a fault shows the proxy acting on it (a retry or an ejection) — so
    /// a run whose faults silently did nothing does not pass either.
    pub fn success(&self) -> bool {
        self.problems().is_empty()
    }

    /// Errors the clients saw on idempotent requests (the HTTP GETs), which
    /// retries must hide completely.
    pub fn idempotent_errors(&self) -> (u64, u64) {
        self.count(|k| k != RequestKind::Grpc)
    }

    /// Errors the clients saw on gRPC calls (POSTs, retried because the
    /// route opts in), with the number of calls.
    pub fn grpc_errors(&self) -> (u64, u64) {
        self.count(|k| k == RequestKind::Grpc)
    }

    /// `(errors, requests)` over the request kinds `which` selects.
    fn count(&self, which: impl Fn(RequestKind) -> bool) -> (u64, u64) {
        self.by_kind
            .iter()
            .filter(|(k, _)| which(*k))
            .fold((0, 0), |(e, r), (_, c)| (e + c.errors, r + c.requests))
    }

    /// Clusters the timeline injected faults into, in first-fault order.
    pub fn faulted_clusters(&self) -> Vec<&str> {
        let mut clusters: Vec<&str> = Vec::new();
        for event in self.timeline.iter().filter(|e| e.fault) {
            let cluster = self
                .backends
                .iter()
                .find(|b| Some(&b.name) == event.backend.as_ref())
                .map(|b| b.cluster.as_str());
            if let Some(c) = cluster.filter(|c| !clusters.contains(c)) {
                clusters.push(c);
            }
        }
        clusters
    }

    /// Every broken promise, in words; empty on success.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.errors > 0 {
            let (get, gets) = self.idempotent_errors();
            let (grpc, calls) = self.grpc_errors();
            problems.push(format!(
                "{} of {} requests failed ({get} of {gets} idempotent GETs, {grpc} of {calls} gRPC calls)",
                self.errors, self.requests
            ));
        }
        let idle = self.idle_backends();
        if !idle.is_empty() {
            problems.push(format!("no traffic reached {}", idle.join(", ")));
        }
        for b in &self.backends {
            if b.served_since_restart == Some(0) {
                problems.push(format!("{} served nothing after its restart", b.name));
            }
        }
        for step in &self.scaling {
            match step {
                Scaling::Out {
                    backend,
                    first_request_after: None,
                    ..
                } => problems.push(format!("{backend} took no traffic after scaling out")),
                Scaling::In {
                    backend,
                    draining_seen_after,
                    in_flight_at_stop,
                    errors_before,
                    ..
                } => {
                    if draining_seen_after.is_none() {
                        problems.push(format!("the proxy never saw {backend} draining"));
                    }
                    if *in_flight_at_stop > 0 {
                        problems.push(format!(
                            "{backend} stopped with {in_flight_at_stop} requests in flight"
                        ));
                    }
                    let after = self.errors.saturating_sub(*errors_before);
                    if after > 0 {
                        problems.push(format!(
                            "{after} requests failed after {backend} began to drain"
                        ));
                    }
                }
                Scaling::Out { .. } => {}
            }
        }
        if !self.faults.plausible() {
            let f = &self.faults;
            problems.push(format!(
                "route {} delayed {} of {} requests, not about {:.0}%",
                f.route,
                f.delayed,
                f.requests,
                f.ratio * 100.0
            ));
        }
        for cluster in self.faulted_clusters() {
            let acted = self
                .resilience
                .iter()
                .find(|c| c.name == cluster)
                .is_some_and(|c| c.decisions.acted());
            if !acted {
                problems.push(format!(
                    "faults hit cluster {cluster} but the proxy recorded no retry or ejection"
                ));
            }
        }
        problems
    }

    /// Whether the machine was too busy for the figures to mean much: the
    /// load generator's timer fired 50 ms late or worse for 1% of its ticks,
    /// ten times a healthy answer's latency.
    pub fn host_overloaded(&self) -> bool {
        self.host_lag.p99 >= Duration::from_millis(50)
    }

    /// Completed requests per second of load.
    pub fn throughput(&self) -> f64 {
        let secs = self.load_duration.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    fn idle_backends(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.served == 0)
            .map(|b| b.name.as_str())
            .collect()
    }

    /// The summary table printed at the end of `switchyard demo`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored below.
        let _ = writeln!(out, "\nswitchyard demo — summary");
        let _ = writeln!(
            out,
            "  proxy {}   admin http://{}   load {:.1}s at {} req/s target",
            self.proxy,
            self.admin,
            self.load_duration.as_secs_f64(),
            self.target_rate
        );
        let _ = writeln!(
            out,
            "\n  requests {}   errors {}   shed {}   throughput {:.1} req/s",
            self.requests,
            self.errors,
            self.shed,
            self.throughput()
        );
        let (get, gets) = self.idempotent_errors();
        let (grpc, calls) = self.grpc_errors();
        let _ = writeln!(
            out,
            "  client-visible errors: {get} of {gets} idempotent GETs   {grpc} of {calls} gRPC calls (POST, retried by opt-in)"
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency  p50 {}   p90 {}   p99 {}   max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        );

        let _ = writeln!(
            out,
            "\n  {:<10} {:>9} {:>7} {:>6}",
            "protocol", "requests", "errors", "shed"
        );
        for (kind, c) in &self.by_kind {
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>7} {:>6}",
                kind.label(),
                c.requests,
                c.errors,
                c.shed
            );
        }

        let _ = writeln!(
            out,
            "\n  {:<14} {:<8} {:<21} {:>8} {:>7} {:>8} {:>7} {:>10}",
            "backend", "protocol", "address", "served", "failed", "proxied", "share", "restarted"
        );
        let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        for b in &self.backends {
            let _ = writeln!(
                out,
                "  {:<14} {:<8} {:<21} {:>8} {:>7} {:>8} {:>6.1}% {:>10}",
                b.name,
                b.protocol.to_string(),
                b.address.to_string(),
                b.served,
                b.failed,
                or_dash(b.proxied),
                b.share,
                or_dash(b.served_since_restart)
            );
        }
        let _ = writeln!(out, "{BACKEND_LEGEND}");

        self.render_scaling(&mut out);

        self.render_timeline(&mut out);
        resilience::render(&mut out, &self.resilience);
        let f = &self.faults;
        let _ = writeln!(
            out,
            "\n  fault injection: route {} delays {:.0}% of requests by {} ms: {} of {} delayed ({:.1}%)",
            f.route,
            f.ratio * 100.0,
            f.delay.as_millis(),
            f.delayed,
            f.requests,
            if f.requests == 0 {
                0.0
            } else {
                100.0 * f.delayed as f64 / f.requests as f64
            }
        );
        if !self.error_samples.is_empty() {
            let _ = writeln!(out, "\n  sample errors");
            for e in &self.error_samples {
                let _ = writeln!(out, "  - {e}");
            }
        }
        if self.host_overloaded() {
            let _ = writeln!(
                out,
                "\n  note: the host was overloaded (timer lag p99 {}, max {}): healthy requests took\n  that long too, so per-try timeouts may have fired on healthy backends",
                ms(self.host_lag.p99),
                ms(self.host_lag.max)
            );
        }
        if !self.drained {
            let _ = writeln!(
                out,
                "\n  note: the proxy closed connections still open after its grace period"
            );
        }
        let _ = writeln!(out, "\n{}", self.verdict());
        out
    }

    /// The scenario's events and the proxy's endpoint changes, in time
    /// order (the scenario's first when simultaneous).
    fn render_timeline(&self, out: &mut String) {
        if self.timeline.is_empty() && self.events.is_empty() {
            return;
        }
        let mut lines: Vec<(Duration, String)> = self
            .timeline
            .iter()
            .map(|e| (e.at, e.what.clone()))
            .chain(self.events.iter().map(|e| (e.at, e.describe())))
            .collect();
        // Stable: ties keep the scenario's events first.
        lines.sort_by_key(|(at, _)| *at);
        let _ = writeln!(out, "\n  timeline");
        for (at, what) in lines {
            let _ = writeln!(out, "  t={:>5.1}s  {what}", at.as_secs_f64());
        }
    }

    /// The "discovery" section: the registry, and what each scaling step
    /// did, told from the backends' own counts.
    fn render_scaling(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n  discovery: embedded registry http://{}/v1/services (backends register themselves)",
            self.registry
        );
        let served = |name: &str| {
            self.backends
                .iter()
                .find(|b| b.name == name)
                .map_or(0, |b| b.served)
        };
        for step in &self.scaling {
            match step {
                Scaling::Out {
                    backend,
                    at,
                    first_request_after,
                } => {
                    let first = first_request_after.map_or_else(
                        || "no request reached it".to_owned(),
                        |d| format!("first answer {} after registering", ms(d)),
                    );
                    let _ = writeln!(
                        out,
                        "  scale out t={:>5.1}s  {backend}: {first}; served {} requests in all",
                        at.as_secs_f64(),
                        served(backend)
                    );
                }
                Scaling::In {
                    backend,
                    at,
                    draining_seen_after,
                    stopped_after,
                    in_flight_at_stop,
                    served_while_draining,
                    errors_before,
                } => {
                    let seen = draining_seen_after.map_or_else(
                        || "never marked draining".to_owned(),
                        |d| format!("no new requests after {}", ms(d)),
                    );
                    let _ = writeln!(
                        out,
                        "  scale in  t={:>5.1}s  {backend}: drained, {seen}, {served_while_draining} in flight answered, {in_flight_at_stop} cut; stopped after {}; failed requests since: {}",
                        at.as_secs_f64(),
                        ms(*stopped_after),
                        self.errors.saturating_sub(*errors_before)
                    );
                }
            }
        }
    }

    fn verdict(&self) -> String {
        let problems = self.problems();
        if !problems.is_empty() {
            return format!("verdict: FAILED — {}", problems.join("; "));
        }
        let mut verdict = format!(
            "verdict: OK — {} requests, 0 errors, all {} backends served traffic",
            self.requests,
            self.backends.len()
        );
        let scaled: Vec<String> = self
            .scaling
            .iter()
            .map(|s| match s {
                Scaling::Out { backend, .. } => format!("{backend} scaled out"),
                Scaling::In { backend, .. } => format!("{backend} scaled in with a drain"),
            })
            .collect();
        if !scaled.is_empty() {
            let _ = write!(verdict, "; {}", scaled.join(", "));
        }
        let faulted = self.faulted_clusters();
        if !faulted.is_empty() {
            let _ = write!(
                verdict,
                "; faults in {} handled by the proxy",
                faulted.join(", ")
            );
        }
        verdict
    }
}
