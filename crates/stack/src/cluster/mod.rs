//! Clusters: a balancer over a live set of endpoints, with the cluster-wide
//! policies — limits, the retry budget, outlier ejection — and the feedback
//! loop from every response into endpoint load and health.

pub mod connect;
pub mod discovery;
mod endpoint;
pub mod health;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use http::{Request, Response};
use serde::Serialize;
use switchyard_balance::{Balancer, BalancerConfig, Pick, Strategy, Target};
use switchyard_config::{
    BalanceStrategy, ClusterConfig, HashOn, HealthCheck, ProxyProtocolVersion, UpstreamProtocol,
};
use switchyard_policy::{
    Budget, LatencyWindow, Limit, OutlierSettings, Permit,
    outlier::{HealthState, Outcome, Transition},
};
use switchyard_telemetry::{ClusterMetrics, Decision, Metrics};
use tokio::time::Instant;
use tracing::{info, warn};

/// One endpoint of the set, with what an update compares inline, so that
/// merging a set of 10,000 into the members reads two arrays in order
/// instead of every endpoint's memory (see `Cluster::members`).
#[derive(Clone, Debug)]
struct Member {
    addr: SocketAddr,
    /// As the endpoint has it: at least 1.
    weight: u32,
    ep: Arc<Endpoint>,
}

pub use endpoint::{Endpoint, L4Stats};

use crate::{
    body::Body,
    error::{ErrorKind, ProxyError},
    server::tls::TlsError,
    upstream::{PoolSettings, ResponseGuard, UpstreamTls},
};

/// How long latency samples count towards hedging percentiles.
const LATENCY_PERIOD: Duration = Duration::from_secs(10);

/// A named set of interchangeable endpoints and how to reach them.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    balancer: Balancer<Endpoint>,
    settings: Arc<PoolSettings>,
    hash_on: Option<HashOn>,
    metrics: Arc<Metrics>,
    decisions: ClusterMetrics,
    budget: Budget,
    requests: Arc<Limit>,
    retries: Arc<Limit>,
    outlier: Option<(OutlierSettings, u32)>,
    health: Option<HealthCheck>,
    /// Recent latencies, for percentile hedging delays and returning
    /// endpoints; allocated (2.5 KiB) by the first response, so a cluster
    /// that never serves (a sidecar knows every service) pays nothing.
    latency: OnceLock<Box<LatencyWindow>>,
    /// Every endpoint by address, so that an update keeps the `Arc` (and thus
    /// the load statistics, health and pooled connections) of endpoints that
    /// stay: sorted by address, without duplicates or draining endpoints.
    /// Only touched by updates, never on the request path. Sorted rather
    /// than hashed because discovery sets come sorted: an update is one
    /// merge of two ordered lists, where hash lookups of 10,000 addresses
    /// (three per endpoint) were most of the cost of a large cluster's
    /// update.
    members: Mutex<Vec<Member>>,
    /// The [`L4Protocol`] bits of the tcp/udp listeners using the cluster;
    /// 0 for a cluster only HTTP routes use.
    l4: AtomicU8,
    /// The PROXY protocol header tcp connections to endpoints start with.
    proxy_protocol: Option<ProxyProtocolVersion>,
}

/// The kind of an L4 listener that sends its connections or datagrams to
/// a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl L4Protocol {
    fn bit(self) -> u8 {
        match self {
            L4Protocol::Tcp => 1,
            L4Protocol::Udp => 2,
        }
    }
}

/// A discovered endpoint: where it is, its share of traffic, and whether it
/// asked for no new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Draining (shutting down): kept out of the balancer, so it gets no
    /// new requests even in panic mode; requests in flight finish.
    pub draining: bool,
}

impl EndpointSpec {
    /// An endpoint that takes traffic.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self {
            addr,
            weight,
            draining: false,
        }
    }
}

impl Cluster {
    /// Builds the cluster, reading its TLS files when it has `tls`; fails
    /// only when they cannot be used.
    pub fn new(config: &ClusterConfig, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let mut settings = PoolSettings::new(
            config.protocol,
            config.connect_timeout,
            config.idle_timeout,
            config.max_idle_per_endpoint,
            config.limits.max_connections,
            config.limits.max_pending,
        );
        settings.tls = config
            .tls
            .as_ref()
            .map(|tls| UpstreamTls::new(tls, config.protocol))
            .transpose()?;
        settings.proxy_protocol = config.proxy_protocol;
        let settings = Arc::new(settings);
        let balancer = Balancer::new(BalancerConfig {
            strategy: strategy(config.balance),
            panic_threshold: config.panic_threshold,
            ..BalancerConfig::default()
        });
        let rb = &config.retry_budget;
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            balancer,
            settings,
            hash_on: config.hash.clone(),
            decisions: metrics.cluster(&config.name),
            metrics,
            budget: Budget::new(rb.ratio, rb.min_per_second, rb.ttl),
            requests: Limit::new(config.limits.max_requests),
            retries: Limit::new(config.limits.max_retries),
            outlier: config.outlier.as_ref().map(|o| {
                (
                    OutlierSettings {
                        consecutive_failures: o.consecutive_failures,
                        failure_rate: o.failure_rate,
                        window: o.window,
                        base_ejection: o.base_ejection,
                        max_ejection: o.max_ejection,
                    },
                    o.max_ejection_percent,
                )
            }),
            health: config.health.clone(),
            latency: OnceLock::new(),
            members: Mutex::default(),
            l4: AtomicU8::new(0),
            proxy_protocol: config.proxy_protocol,
        })
    }

    /// Whether two configurations of a cluster open and pool connections
    /// to endpoints the same way (protocol, timeouts, pool sizes, TLS, the
    /// PROXY protocol), so
    /// that a reload can hand the endpoints over with their pools and state
    /// ([`Cluster::adopt_endpoints`]). Mirrors what [`Cluster::new`] puts in
    /// the pool settings.
    pub fn connects_alike(a: &ClusterConfig, b: &ClusterConfig) -> bool {
        a.protocol == b.protocol
            && a.connect_timeout == b.connect_timeout
            && a.idle_timeout == b.idle_timeout
            && a.max_idle_per_endpoint == b.max_idle_per_endpoint
            && a.limits.max_connections == b.limits.max_connections
            && a.limits.max_pending == b.limits.max_pending
            && a.tls == b.tls
            && a.proxy_protocol == b.proxy_protocol
    }

    /// Whether connections to endpoints start with a PROXY protocol
    /// header naming the client (then the request path passes the
    /// client's addresses down as a [`ClientAddrs`](crate::upstream::ClientAddrs) extension).
    pub fn sends_proxy_protocol(&self) -> bool {
        self.proxy_protocol.is_some()
    }

    /// Starts with `previous`'s endpoints, as they are: their load, latency
    /// estimate, ejection and health state and pooled connections carry
    /// over, and requests in flight on them keep counting. For a reload
    /// that changed a cluster's policy but not how it connects
    /// ([`Cluster::connects_alike`]); the next discovery update applies to
    /// the adopted set as it would have to the old one.
    pub fn adopt_endpoints(&mut self, previous: &Cluster) {
        // The endpoints' pools hold the old settings, which are equal.
        self.settings = previous.settings.clone();
        let members = previous
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // In the balancer's order, which round-robin follows.
        let list = previous.endpoints().to_vec();
        *self
            .members
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = members;
        self.balancer.update(list);
    }

    /// Records that a tcp or udp listener uses this cluster: `/clusters`
    /// then reports it as `tcp`/`udp` instead of its HTTP upstream
    /// protocol, and its endpoints count connections, sessions and bytes
    /// (`switchyard_endpoint_bytes_total`). Idempotent; call it when the
    /// listener is built, before it serves, so the series exist from the
    /// start. `serve_tcp`/`serve_udp` call it too.
    pub fn set_l4(&self, protocol: L4Protocol) {
        let before = self.l4.fetch_or(protocol.bit(), Ordering::AcqRel);
        if before != 0 {
            return;
        }
        // Endpoints discovered before the role was known get their counters
        // now; `update` attaches them to later ones. The flag is set before
        // taking the lock, so an update racing with this sees one or the
        // other.
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        for m in members.iter() {
            self.attach_l4(&m.ep);
        }
    }

    /// Whether a tcp or udp listener uses this cluster.
    pub fn is_l4(&self) -> bool {
        self.l4.load(Ordering::Acquire) != 0
    }

    fn uses(&self, protocol: L4Protocol) -> bool {
        self.l4.load(Ordering::Acquire) & protocol.bit() != 0
    }

    fn attach_l4(&self, ep: &Endpoint) {
        ep.attach_l4(|| {
            self.metrics
                .endpoint_bytes(&self.name, &ep.addr().to_string())
        });
    }

    /// The metrics this cluster records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.settings.protocol
    }

    /// What `/clusters` calls the cluster's protocol: `tcp`, `udp` or
    /// `tcp+udp` for a cluster that tcp/udp listeners use, else its HTTP
    /// upstream protocol (`http1`, `http2`).
    pub fn protocol_name(&self) -> &'static str {
        match (self.uses(L4Protocol::Tcp), self.uses(L4Protocol::Udp)) {
            (true, true) => "tcp+udp",
            (true, false) => "tcp",
            (false, true) => "udp",
            (false, false) => match self.settings.protocol {
                UpstreamProtocol::Http1 => "http1",
                UpstreamProtocol::Http2 => "http2",
            },
        }
    }

    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health.as_ref()
    }

    pub fn decisions(&self) -> &ClusterMetrics {
        &self.decisions
    }

    /// Counts an original request against the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Asks the retry budget and the concurrent-retry limit for one retry;
    /// counts and names the reason when refused.
    pub fn admit_retry(&self) -> Result<Permit, Decision> {
        let Some(permit) = self.retries.try_acquire() else {
            self.decisions.count(Decision::RetryLimited);
            return Err(Decision::RetryLimited);
        };
        if !self.budget.withdraw() {
            self.decisions.count(Decision::BudgetExhausted);
            return Err(Decision::BudgetExhausted);
        }
        self.decisions.count(Decision::Retry);
        Ok(permit)
    }

    /// The recent latency percentile, for hedging delays.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        // Fewer than 20 samples say little about a tail.
        self.latency.get()?.percentile(p, 20)
    }

    /// Replaces the endpoint set. Endpoints that stay keep their state;
    /// removed and draining ones finish their in-flight requests (the
    /// requests hold an `Arc`) and receive no new ones. An endpoint that
    /// stops draining comes back with fresh state.
    pub fn update(&self, specs: &[EndpointSpec]) {
        // Discovery sets come sorted by address (and without duplicates);
        // a configuration's list may not. Stable, so the first of
        // duplicates is the one kept, as the balancer keeps it.
        let mut sorted: Vec<&EndpointSpec> = specs.iter().collect();
        if !sorted.is_sorted_by_key(|s| s.addr) {
            sorted.sort_by_key(|s| s.addr);
        }
        sorted.dedup_by_key(|s| s.addr);
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::take(&mut *members);
        let seed = Endpoint::seed_rtt(old.iter().map(|m| &m.ep));
        let mut next = Vec::with_capacity(sorted.len());
        let mut old = old.into_iter().peekable();
        for spec in sorted {
            // Members before this address are gone from the set.
            while let Some(gone) = old.next_if(|m| m.addr < spec.addr) {
                self.forget(&gone);
            }
            let same = old.next_if(|m| m.addr == spec.addr);
            if spec.draining {
                // Left out like a removed endpoint; `set_accepting(false)`
                // also turns away a pick that loaded the previous set.
                if let Some(m) = same {
                    m.ep.set_accepting(false);
                    self.forget(&m);
                }
                continue;
            }
            let weight = spec.weight.max(1);
            let member = match same {
                Some(m) if m.weight == weight => m,
                // New, or its weight changed: fresh state (the endpoint's
                // series are found again by address).
                _ => Member {
                    addr: spec.addr,
                    weight,
                    ep: Arc::new(Endpoint::new(
                        spec.addr,
                        spec.weight,
                        self.settings.clone(),
                        self.metrics
                            .endpoint_requests(&self.name, &spec.addr.to_string()),
                        seed,
                    )),
                },
            };
            if self.is_l4() {
                self.attach_l4(&member.ep);
            }
            next.push(member);
        }
        for gone in old {
            self.forget(&gone);
        }
        let list = next.iter().map(|m| m.ep.clone()).collect();
        *members = next;
        self.balancer.update(list);
    }

    /// Drops the series of an endpoint that left the set.
    fn forget(&self, gone: &Member) {
        self.metrics
            .forget_endpoint(&self.name, &gone.addr.to_string());
    }

    /// All endpoints currently in the set.
    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        self.balancer.endpoints()
    }

    /// Picks an endpoint, preferring ones not in `avoid`.
    pub fn pick(
        &self,
        hash: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Result<Arc<Endpoint>, ProxyError> {
        self.balancer
            .pick(&Pick { hash, avoid })
            .ok_or_else(|| ProxyError::new(ErrorKind::NoEndpoints))
    }

    /// Sends one attempt of a request to one endpoint of this cluster, and
    /// feeds the outcome back into the endpoint's load and health.
    pub async fn send_to(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(request_permit) = self.requests.try_acquire() else {
            self.decisions.count(Decision::Overloaded);
            return Err(ProxyError::new(ErrorKind::Overloaded).at(endpoint.addr()));
        };
        let mut probe = ProbeRelease(endpoint.health().on_dispatch().then_some(endpoint));
        if probe.0.is_some() {
            self.decisions.count(Decision::Probe);
            info!(cluster = %self.name, endpoint = %endpoint.addr(), "probing ejected endpoint");
        }
        let in_flight = endpoint.load().start();
        endpoint.count_request();
        let started = Instant::now();
        let downstream = req.body().downstream_state();
        match endpoint.pool().send(req).await {
            Ok((resp, checkin)) => {
                let elapsed = started.elapsed();
                endpoint.load().observe(elapsed);
                let failed = is_failure(&resp);
                if !failed {
                    self.latency
                        .get_or_init(|| Box::new(LatencyWindow::new(LATENCY_PERIOD)))
                        .record(elapsed);
                }
                endpoint
                    .stats()
                    .record(if failed { 503 } else { resp.status().as_u16() }, elapsed);
                // A gRPC answer without a status in its head has it in the
                // trailers: its outcome is recorded when they pass, so that
                // a stream that fails after its messages counts as a failure
                // (and a success at the head does not reset the count).
                let deferred = self.outlier.is_some()
                    && !failed
                    && is_grpc(&resp)
                    && !resp.headers().contains_key("grpc-status");
                if !deferred {
                    self.record(
                        endpoint,
                        if failed {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        },
                    );
                }
                let (parts, body) = resp.into_parts();
                let mut guard = ResponseGuard::new(checkin, in_flight, Some(request_permit));
                if deferred {
                    guard.defer_outcome(DeferredOutcome {
                        cluster: self.clone(),
                        endpoint: endpoint.clone(),
                    });
                }
                Ok(Response::from_parts(parts, Body::upstream(body, guard)))
            }
            Err(e) => {
                // An attempt broken by the client's body is the client's
                // failure whatever the upstream connection reported: never
                // blamed on the endpoint, never retried.
                let e = match downstream {
                    Some(d) if d.failed() => e.reclassified(ErrorKind::DownstreamBody),
                    _ => e,
                };
                if e.kind().blames_endpoint() {
                    // A failure is a strong signal: record it as a slow
                    // response so that peak-EWMA steers away at once.
                    endpoint
                        .load()
                        .observe(started.elapsed().max(FAILURE_PENALTY));
                    endpoint.stats().record(502, started.elapsed());
                    self.record(endpoint, Outcome::Failure);
                    probe.0 = None;
                } else if e.kind() == ErrorKind::Overloaded {
                    self.decisions.count(Decision::Overloaded);
                }
                Err(e)
            }
        }
    }

    /// An attempt to `endpoint` ran out of its per-try timeout: as much a
    /// failure of the endpoint as a reset.
    pub fn record_timeout(&self, endpoint: &Endpoint, elapsed: Duration) {
        endpoint.load().observe(FAILURE_PENALTY);
        endpoint.stats().record(504, elapsed);
        self.record(endpoint, Outcome::Failure);
    }

    /// Feeds a request outcome into outlier detection.
    fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some((settings, max_percent)) = &self.outlier else {
            return;
        };
        let may_eject = || {
            let all = self.balancer.endpoints();
            let ejected = all.iter().filter(|e| e.health().is_ejected()).count();
            (ejected + 1) * 100 <= all.len() * (*max_percent as usize)
        };
        if let Some(t) = endpoint.health().record(outcome, settings, may_eject) {
            self.transition(endpoint, t);
        }
    }

    /// Logs and counts a change of an endpoint's state.
    pub fn transition(&self, endpoint: &Endpoint, t: Transition) {
        let ep = endpoint.addr();
        match t {
            Transition::Ejected { duration, reason } => {
                self.decisions.count(Decision::Ejection);
                warn!(cluster = %self.name, endpoint = %ep, %reason, ejected_for_s = duration.as_secs_f64(), "endpoint ejected");
            }
            Transition::ProbeFailed { duration } => {
                self.decisions.count(Decision::Ejection);
                warn!(cluster = %self.name, endpoint = %ep, ejected_for_s = duration.as_secs_f64(), "probe failed; endpoint ejected again");
            }
            Transition::Restored => {
                self.forget_penalty(endpoint);
                self.decisions.count(Decision::Restored);
                info!(cluster = %self.name, endpoint = %ep, "probe succeeded; endpoint restored");
            }
            Transition::Unhealthy => {
                self.decisions.count(Decision::Unhealthy);
                warn!(cluster = %self.name, endpoint = %ep, "health check failing; endpoint unhealthy");
            }
            Transition::Healthy => {
                self.forget_penalty(endpoint);
                self.decisions.count(Decision::Healthy);
                info!(cluster = %self.name, endpoint = %ep, "health check passing; endpoint healthy");
            }
        }
    }

    /// Resets a returning endpoint's latency estimate to the cluster's
    /// recent median, so that peak-EWMA gives it traffic again at once
    /// instead of waiting for the failure penalty to decay.
    fn forget_penalty(&self, endpoint: &Endpoint) {
        let typical = self
            .latency
            .get()
            .and_then(|l| l.percentile(50.0, 1))
            .unwrap_or(DEFAULT_RETURN_RTT);
        endpoint.load().reset(typical);
    }

    /// Picks an endpoint and sends the request there.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        hash: Option<u64>,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = self.pick(hash, &[])?;
        self.send_to(&endpoint, req).await
    }

    pub fn connect_timeout(&self) -> Duration {
        self.settings.connect_timeout
    }

    pub fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }

    /// A point-in-time view for the admin API and metrics.
    pub fn snapshot(&self) -> ClusterSnapshot {
        self.snapshot_range(|all| 0..all).0
    }

    /// The view with only the endpoints in the range `page` picks from
    /// their count, and that count: a page of a 10,000-endpoint cluster
    /// costs the page, not 10,000 endpoint views.
    pub fn snapshot_range(
        &self,
        page: impl FnOnce(usize) -> std::ops::Range<usize>,
    ) -> (ClusterSnapshot, usize) {
        let all = self.balancer.endpoints();
        let total = all.len();
        let range = page(total);
        let endpoints = all
            .get(range)
            .unwrap_or_default()
            .iter()
            .map(|ep| {
                let health = ep.health().state();
                EndpointSnapshot {
                    address: ep.addr(),
                    weight: ep.weight(),
                    state: if !ep.is_accepting() {
                        "draining"
                    } else {
                        match health {
                            HealthState::Healthy => "active",
                            HealthState::Ejected => "ejected",
                            HealthState::Probation => "probation",
                            HealthState::Unhealthy => "unhealthy",
                        }
                    },
                    available: ep.available(),
                    in_flight: ep.load().in_flight(),
                    latency_ewma_ms: ep.load().ewma().as_secs_f64() * 1000.0,
                    requests: ep.requests(),
                    ejections: ep.health().ejections(),
                    consecutive_failures: ep.health().consecutive_failures(),
                    connections_open: ep.pool().open_connections(),
                    connections_idle: ep.pool().idle_connections(),
                    live: ep.stats().snapshot(),
                    tcp_connections: ep
                        .l4()
                        .filter(|_| self.uses(L4Protocol::Tcp))
                        .map(L4Stats::connections),
                    udp_sessions: ep
                        .l4()
                        .filter(|_| self.uses(L4Protocol::Udp))
                        .map(L4Stats::sessions),
                    bytes_rx: ep.l4().map(L4Stats::rx),
                    bytes_tx: ep.l4().map(L4Stats::tx),
                }
            })
            .collect();
        let snapshot = ClusterSnapshot {
            name: self.name.to_string(),
            balance: self.balancer.strategy().as_str(),
            protocol: self.protocol_name(),
            active_requests: self.requests.current(),
            active_retries: self.retries.current(),
            retry_budget_remaining: self.budget.remaining(),
            decisions: self.decisions.all().into_iter().collect(),
            endpoints,
        };
        (snapshot, total)
    }
}

/// Whether a response counts as a failure of the endpoint for outlier
/// detection: any 5xx, or a gRPC trailers-only `UNAVAILABLE`/`INTERNAL`.
fn is_failure<B>(resp: &Response<B>) -> bool {
    if resp.status().is_server_error() {
        return true;
    }
    grpc_failure(resp.headers())
}

/// A gRPC `UNAVAILABLE` or `INTERNAL`: the statuses that say something
/// about the endpoint rather than the call.
fn grpc_failure(h: &http::HeaderMap) -> bool {
    matches!(
        h.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"14") | Some(b"13")
    )
}

fn is_grpc<B>(resp: &Response<B>) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The outlier outcome of a gRPC response, recorded from its trailers.
/// Dropped without trailers (the client went away, a hedge lost), it
/// records nothing: the call said nothing about the endpoint.
#[derive(Debug)]
pub(crate) struct DeferredOutcome {
    cluster: Arc<Cluster>,
    endpoint: Arc<Endpoint>,
}

impl DeferredOutcome {
    pub(crate) fn trailers(self, t: &http::HeaderMap) {
        let failed = grpc_failure(t);
        if failed {
            self.endpoint.stats().count_error();
        }
        self.cluster.record(
            &self.endpoint,
            if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        );
    }
}

/// Latency assumed for a returning endpoint when the cluster has no recent
/// samples.
const DEFAULT_RETURN_RTT: Duration = Duration::from_millis(5);

/// Gives an unanswered probation probe back when its attempt ends without a
/// verdict on the endpoint (dropped by a winning hedge, the deadline, or a
/// local limit); disarmed once an outcome was recorded.
struct ProbeRelease<'a>(Option<&'a Arc<Endpoint>>);

impl Drop for ProbeRelease<'_> {
    fn drop(&mut self) {
        if let Some(ep) = self.0 {
            ep.health().release_probe();
        }
    }
}

/// Latency recorded for a failed attempt: large enough to push peak-EWMA's
/// cost of the endpoint above healthy peers for several seconds.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

fn strategy(b: BalanceStrategy) -> Strategy {
    match b {
        BalanceStrategy::RoundRobin => Strategy::RoundRobin,
        BalanceStrategy::LeastRequest => Strategy::LeastRequest,
        BalanceStrategy::Random => Strategy::Random,
        BalanceStrategy::RingHash => Strategy::RingHash,
        BalanceStrategy::Maglev => Strategy::Maglev,
        BalanceStrategy::P2cPeakEwma => Strategy::PeakEwma,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterSnapshot {
    pub name: String,
    pub balance: &'static str,
    /// `http1` or `http2` (the upstream protocol of HTTP routes), or `tcp`,
    /// `udp`, `tcp+udp` for a cluster that tcp/udp listeners use.
    pub protocol: &'static str,
    pub active_requests: usize,
    pub active_retries: usize,
    pub retry_budget_remaining: f64,
    pub decisions: std::collections::BTreeMap<&'static str, u64>,
    pub endpoints: Vec<EndpointSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointSnapshot {
    pub address: SocketAddr,
    pub weight: u32,
    /// `active`, `draining`, `ejected`, `probation` or `unhealthy`.
    pub state: &'static str,
    /// Whether the balancer may pick it now.
    pub available: bool,
    pub in_flight: u32,
    pub latency_ewma_ms: f64,
    pub requests: u64,
    pub ejections: u64,
    pub consecutive_failures: u32,
    pub connections_open: usize,
    pub connections_idle: usize,
    /// The endpoint's live statistics, for the admin feed's windows (not
    /// part of `/clusters`).
    #[serde(skip)]
    pub live: switchyard_telemetry::live::LiveSnapshot,
    /// TCP connections proxied to the endpoint so far (clusters of tcp
    /// listeners only; each also counts once in `requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_connections: Option<u64>,
    /// UDP sessions pinned to the endpoint so far (clusters of udp
    /// listeners only; each also counts once in `requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_sessions: Option<u64>,
    /// Bytes received from the endpoint (tcp/udp clusters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_rx: Option<u64>,
    /// Bytes sent to the endpoint (tcp/udp clusters only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_tx: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(metrics: &Arc<Metrics>) -> Cluster {
        let config = switchyard_config::parse(
            "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"c\"\n\n\
             [[clusters]]\nname = \"c\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\n",
            "test.toml",
        )
        .expect("valid config");
        Cluster::new(&config.clusters[0], metrics.clone()).expect("no TLS files to read")
    }

    #[test]
    fn an_added_endpoint_starts_at_its_peers_latency() {
        let metrics = Arc::new(Metrics::new());
        let c = cluster(&metrics);
        c.update(&[spec(1)]);
        let first = c.endpoints()[0].clone();
        // A new cluster has nothing to go by.
        assert_eq!(first.load().ewma().as_millis(), 30);
        // Peak-EWMA takes a slower answer at once.
        first.load().observe(Duration::from_millis(100));
        c.update(&[spec(1), spec(2)]);
        let added = c
            .endpoints()
            .iter()
            .find(|e| e.addr().port() == 2)
            .unwrap()
            .clone();
        let (peer, seeded) = (first.load().ewma(), added.load().ewma());
        assert!(peer > Duration::from_millis(90), "{peer:?}");
        assert!(
            seeded.abs_diff(peer) < Duration::from_millis(2),
            "{seeded:?} vs {peer:?}"
        );
    }

    fn spec(port: u16) -> EndpointSpec {
        EndpointSpec::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn ports(c: &Cluster) -> Vec<u16> {
        c.endpoints().iter().map(|e| e.addr().port()).collect()
    }

    #[test]
    fn an_update_keeps_what_stays_and_renews_what_changed() {
        let metrics = Arc::new(Metrics::new());
        let c = cluster(&metrics);
        // Unsorted, with a duplicate: the set is sorted and the first of
        // the duplicates kept.
        let heavy = EndpointSpec::new(([127, 0, 0, 1], 2).into(), 5);
        c.update(&[spec(3), heavy, spec(1), spec(2)]);
        assert_eq!(ports(&c), [1, 2, 3]);
        assert_eq!(c.endpoints()[1].weight(), 5);
        let before = c.endpoints();

        // 1 stays, 2 changes weight, 3 drains, 4 is new, 5 is new.
        let mut draining = spec(3);
        draining.draining = true;
        c.update(&[spec(5), spec(4), draining, spec(2), spec(1)]);
        let after = c.endpoints();
        assert_eq!(ports(&c), [1, 2, 4, 5]);
        assert!(
            Arc::ptr_eq(&before[0], &after[0]),
            "an endpoint that stays keeps its state"
        );
        assert!(
            !Arc::ptr_eq(&before[1], &after[1]),
            "a new weight is a fresh endpoint"
        );
        assert_eq!(after[1].weight(), 1);
        assert!(
            !before[2].is_accepting(),
            "a draining endpoint turns away picks of the old set"
        );

        // Everything leaves but 5; 1 comes back as a fresh endpoint.
        c.update(&[spec(5)]);
        assert_eq!(ports(&c), [5]);
        assert!(Arc::ptr_eq(&after[3], &c.endpoints()[0]));
        c.update(&[spec(1), spec(5)]);
        assert!(!Arc::ptr_eq(&before[0], &c.endpoints()[0]));
        assert_eq!(ports(&c), [1, 5]);
        c.update(&[]);
        assert!(c.endpoints().is_empty());
    }

    #[test]
    fn the_l4_role_reaches_endpoints_discovered_before_and_after_it() {
        let metrics = Arc::new(Metrics::new());
        let c = cluster(&metrics);
        c.update(&[spec(1)]);
        assert_eq!(c.snapshot().protocol, "http1");
        assert!(
            c.endpoints()[0].l4().is_none(),
            "an HTTP cluster has no L4 stats"
        );

        c.set_l4(L4Protocol::Udp);
        c.update(&[spec(1), spec(2)]);
        let snap = c.snapshot();
        assert_eq!(snap.protocol, "udp");
        for ep in &snap.endpoints {
            assert_eq!((ep.udp_sessions, ep.tcp_connections), (Some(0), None));
            assert_eq!((ep.bytes_rx, ep.bytes_tx), (Some(0), Some(0)));
        }
        c.set_l4(L4Protocol::Tcp);
        assert_eq!(c.snapshot().protocol, "tcp+udp");

        let ep = c.endpoints()[1].clone();
        ep.count_session();
        ep.count_connection();
        let l4 = ep.l4().expect("attached");
        l4.received(10);
        l4.sent(3);
        let snap = c.snapshot();
        let e = snap
            .endpoints
            .iter()
            .find(|e| e.address == ep.addr())
            .unwrap();
        assert_eq!(e.requests, 2);
        assert_eq!(
            (e.tcp_connections, e.udp_sessions, e.bytes_rx, e.bytes_tx),
            (Some(1), Some(1), Some(10), Some(3))
        );
        let text = metrics.render();
        let series = format!(
            "switchyard_endpoint_bytes_total{{cluster=\"c\",endpoint=\"{}\",direction=\"rx\"}} 10",
            ep.addr()
        );
        assert!(text.contains(&series), "{text}");

        // An endpoint that leaves takes its byte series along.
        c.update(&[spec(1)]);
        let text = metrics.render();
        assert!(
            !text.contains(&format!("endpoint=\"{}\"", ep.addr())),
            "{text}"
        );
    }
}
