//! One snapshot of the live feed, computed by diffing cumulative counters.
//!
//! Every tick reads the clusters' snapshots and the routes' and endpoints'
//! cumulative [`LiveStats`](switchyard_telemetry::live::LiveStats) and keeps
//! them; rates, error rates and percentiles are the difference between now
//! and the oldest kept sample (a sliding window of [`WINDOW_TICKS`] ticks),
//! so the request path records nothing extra for the feed. Endpoint state
//! changes are found the same way, by comparing each tick's states with the
//! previous tick's, and the last [`CHANGES_KEPT`] are kept for the dashboard.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use switchyard_stack::cluster::ClusterSnapshot;
use switchyard_telemetry::live::LiveSnapshot;

use crate::{
    AdminState, View,
    routes::{protocol_name, route_clusters},
};

/// Ticks in the sliding window: five one-second ticks smooth the figures of
/// a lightly loaded route without hiding a change for long.
pub(crate) const WINDOW_TICKS: usize = 5;
/// State changes kept for the dashboard; enough for a screenful.
pub(crate) const CHANGES_KEPT: usize = 50;

type EndpointKey = (String, SocketAddr);

/// Cumulative figures at one tick.
struct Sample {
    at: Instant,
    routes: HashMap<(String, String), LiveSnapshot>,
    endpoints: HashMap<EndpointKey, EndpointSample>,
    decisions: HashMap<String, BTreeMap<&'static str, u64>>,
}

/// One endpoint's cumulative figures at one tick.
struct EndpointSample {
    /// Requests sent to the endpoint (connections or sessions for L4).
    requests: u64,
    /// Its live stats, if recorded.
    live: Option<LiveSnapshot>,
    /// Bytes received from and sent to it, for L4 clusters.
    bytes: Option<(u64, u64)>,
}

/// The state the feed keeps between ticks.
pub(crate) struct Sampler {
    started: Instant,
    history: VecDeque<Sample>,
    /// Each endpoint's state at the previous tick; `None` before the first.
    states: Option<HashMap<EndpointKey, &'static str>>,
    /// Oldest first.
    changes: VecDeque<Change>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("samples", &self.history.len())
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

/// A change of an endpoint's state; `None` means absent (joined or left).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Change {
    time_ms: u64,
    cluster: String,
    endpoint: SocketAddr,
    from: Option<&'static str>,
    to: Option<&'static str>,
}

/// What `/events` sends and `/snapshot` answers.
#[derive(Debug, Serialize)]
pub(crate) struct FeedSnapshot {
    time_ms: u64,
    uptime_s: f64,
    version: &'static str,
    ready: bool,
    /// The span the rates and percentiles cover (0 on the first tick).
    window_s: f64,
    listeners: Vec<ListenerView>,
    routes: Vec<RouteView>,
    clusters: Vec<ClusterView>,
    /// Newest first.
    changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
struct ListenerView {
    name: String,
    protocol: &'static str,
    address: String,
    routes: Vec<String>,
    /// Clusters the listener reaches (through its routes, or directly).
    clusters: Vec<String>,
}

/// Window figures shared by routes and endpoints.
#[derive(Debug, Default, Serialize)]
struct Rates {
    rps: f64,
    error_rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Rates {
    fn of(window: &LiveSnapshot, secs: f64) -> Self {
        let ms = |q| window.percentile(q).map(|d| d.as_secs_f64() * 1000.0);
        Rates {
            rps: window.requests as f64 / secs,
            error_rate: window.error_rate(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
struct RouteView {
    listener: String,
    name: String,
    clusters: Vec<String>,
    requests: u64,
    #[serde(flatten)]
    rates: Rates,
}

#[derive(Debug, Serialize)]
struct ClusterView {
    name: String,
    balance: &'static str,
    protocol: &'static str,
    active_requests: usize,
    max_requests: Option<usize>,
    active_retries: usize,
    retry_budget_remaining: f64,
    health_checked: bool,
    outlier_detection: bool,
    /// Attempts per second over all endpoints.
    rps: f64,
    decisions: BTreeMap<&'static str, u64>,
    /// Decisions per second over the window, only those that happened.
    decision_rates: BTreeMap<&'static str, f64>,
    endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
struct EndpointView {
    address: SocketAddr,
    state: &'static str,
    available: bool,
    weight: u32,
    in_flight: u32,
    requests: u64,
    latency_ewma_ms: f64,
    ejections: u64,
    consecutive_failures: u32,
    connections_open: usize,
    /// TCP connections / UDP sessions so far, for clusters of tcp/udp
    /// listeners (each also counts in `requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_sessions: Option<u64>,
    /// Bytes received from / sent to the endpoint so far (L4 clusters).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_rx: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_tx: Option<u64>,
    /// The same over the window, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    rx_bytes_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tx_bytes_per_s: Option<f64>,
    /// Whether the request path records this endpoint's outcomes; without
    /// that, `p50_ms`, `p99_ms` and `error_rate` stay `null`.
    recorded: bool,
    /// Request rate from the endpoint's request counter; latency and errors
    /// from its live stats when recorded.
    #[serde(flatten)]
    rates: Rates,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Sampler {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            history: VecDeque::with_capacity(WINDOW_TICKS + 1),
            states: None,
            changes: VecDeque::with_capacity(CHANGES_KEPT),
        }
    }

    /// Reads the live state and returns the next snapshot.
    pub(crate) fn tick(&mut self, state: &AdminState) -> FeedSnapshot {
        let now = Instant::now();
        let view = state.view();
        let clusters: Vec<ClusterSnapshot> = view.clusters.iter().map(|c| c.snapshot()).collect();
        let sample = Sample {
            at: now,
            routes: state
                .metrics
                .route_live()
                .into_iter()
                .map(|r| ((r.listener, r.route), r.stats.snapshot()))
                .collect(),
            endpoints: clusters
                .iter()
                .flat_map(|c| {
                    c.endpoints.iter().map(|e| {
                        let live = state
                            .metrics
                            .endpoint_live(&c.name, &e.address.to_string())
                            .map(|s| s.snapshot());
                        let sample = EndpointSample {
                            requests: e.requests,
                            live,
                            bytes: e.bytes_rx.zip(e.bytes_tx),
                        };
                        ((c.name.clone(), e.address), sample)
                    })
                })
                .collect(),
            decisions: clusters
                .iter()
                .map(|c| (c.name.clone(), c.decisions.clone()))
                .collect(),
        };
        let base = self.history.front();
        let secs = base.map_or(0.0, |b| (now - b.at).as_secs_f64());
        let snapshot = FeedSnapshot {
            time_ms: unix_ms(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            version: env!("CARGO_PKG_VERSION"),
            ready: state.is_ready(),
            window_s: secs,
            listeners: listeners(&view),
            routes: routes(&view, &sample, base, secs),
            clusters: clusters
                .iter()
                .map(|c| cluster_view(&view, c, &sample, base, secs))
                .collect(),
            changes: Vec::new(),
        };
        self.detect_changes(&clusters);
        self.history.push_back(sample);
        while self.history.len() > WINDOW_TICKS {
            self.history.pop_front();
        }
        FeedSnapshot {
            changes: self.changes.iter().rev().cloned().collect(),
            ..snapshot
        }
    }

    fn detect_changes(&mut self, clusters: &[ClusterSnapshot]) {
        let current: HashMap<EndpointKey, &'static str> = clusters
            .iter()
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .map(|e| ((c.name.clone(), e.address), e.state))
            })
            .collect();
        // The first tick has nothing to compare with: everything that exists
        // at start-up is the baseline, not a change.
        if let Some(previous) = self.states.take() {
            let time_ms = unix_ms();
            let mut found = Vec::new();
            for (key, to) in &current {
                let from = previous.get(key).copied();
                if from != Some(*to) {
                    found.push((key.clone(), from, Some(*to)));
                }
            }
            for (key, from) in &previous {
                if !current.contains_key(key) {
                    found.push((key.clone(), Some(*from), None));
                }
            }
            // Hash-map order is arbitrary; a stable order reads better.
            found.sort_by(|a, b| a.0.cmp(&b.0));
            for ((cluster, endpoint), from, to) in found {
                if self.changes.len() == CHANGES_KEPT {
                    self.changes.pop_front();
                }
                self.changes.push_back(Change {
                    time_ms,
                    cluster,
                    endpoint,
                    from,
                    to,
                });
            }
        }
        self.states = Some(current);
    }
}

fn listeners(view: &View) -> Vec<ListenerView> {
    view.config
        .listeners
        .iter()
        .map(|l| {
            let mut clusters: Vec<String> = Vec::new();
            for c in l
                .routes
                .iter()
                .flat_map(route_clusters)
                .chain(l.cluster.as_deref())
            {
                if !clusters.iter().any(|known| known == c) {
                    clusters.push(c.to_owned());
                }
            }
            ListenerView {
                name: l.name.clone(),
                protocol: protocol_name(l.protocol),
                address: view.listener_addr(&l.name, l.listen).to_string(),
                routes: l.routes.iter().map(|r| r.name.clone()).collect(),
                clusters,
            }
        })
        .collect()
}

/// Figures over the window: `now - base`, or nothing on the first tick.
fn window_rates(now: &LiveSnapshot, base: Option<&LiveSnapshot>, secs: f64) -> Rates {
    match base {
        Some(b) if secs > 0.0 => Rates::of(&now.since(b), secs),
        _ => Rates::default(),
    }
}

fn routes(view: &View, now: &Sample, base: Option<&Sample>, secs: f64) -> Vec<RouteView> {
    let mut out = Vec::new();
    for l in &view.config.listeners {
        for r in &l.routes {
            let key = (l.name.clone(), r.name.clone());
            let Some(cur) = now.routes.get(&key) else {
                continue;
            };
            // A route built after the base sample started from zero.
            let empty = LiveSnapshot::default();
            let prev = base.map(|b| b.routes.get(&key).unwrap_or(&empty));
            out.push(RouteView {
                listener: l.name.clone(),
                name: r.name.clone(),
                clusters: route_clusters(r).into_iter().map(str::to_owned).collect(),
                requests: cur.requests,
                rates: window_rates(cur, prev, secs),
            });
        }
    }
    out
}

fn cluster_view(
    view: &View,
    c: &ClusterSnapshot,
    now: &Sample,
    base: Option<&Sample>,
    secs: f64,
) -> ClusterView {
    let cfg = view.config.clusters.iter().find(|cc| cc.name == c.name);
    let per_sec = |delta: u64| if secs > 0.0 { delta as f64 / secs } else { 0.0 };
    let decision_rates = match base.and_then(|b| b.decisions.get(&c.name)) {
        Some(before) => c
            .decisions
            .iter()
            .map(|(d, n)| (*d, n.saturating_sub(before.get(d).copied().unwrap_or(0))))
            .filter(|(_, delta)| *delta > 0)
            .map(|(d, delta)| (d, per_sec(delta)))
            .collect(),
        None => BTreeMap::new(),
    };
    let endpoints: Vec<EndpointView> = c
        .endpoints
        .iter()
        .map(|e| {
            let key = (c.name.clone(), e.address);
            let before = base.and_then(|b| b.endpoints.get(&key));
            let live = now.endpoints.get(&key).and_then(|s| s.live.as_ref());
            let mut rates = match live {
                Some(l) => window_rates(l, before.map(|b| b.live.as_ref().unwrap_or(l)), secs),
                None => Rates::default(),
            };
            // The request counter is always there; it sets the rate even
            // when no live stats are recorded for the endpoint.
            rates.rps = per_sec(
                e.requests
                    .saturating_sub(before.map_or(e.requests, |b| b.requests)),
            );
            // Like the request rate: no rate before a base sample has it.
            let byte_rates = e.bytes_rx.zip(e.bytes_tx).map(|(rx, tx)| {
                let (rx0, tx0) = before.and_then(|b| b.bytes).unwrap_or((rx, tx));
                (
                    per_sec(rx.saturating_sub(rx0)),
                    per_sec(tx.saturating_sub(tx0)),
                )
            });
            EndpointView {
                address: e.address,
                state: e.state,
                available: e.available,
                weight: e.weight,
                in_flight: e.in_flight,
                requests: e.requests,
                latency_ewma_ms: e.latency_ewma_ms,
                ejections: e.ejections,
                consecutive_failures: e.consecutive_failures,
                connections_open: e.connections_open,
                tcp_connections: e.tcp_connections,
                udp_sessions: e.udp_sessions,
                bytes_rx: e.bytes_rx,
                bytes_tx: e.bytes_tx,
                rx_bytes_per_s: byte_rates.map(|r| r.0),
                tx_bytes_per_s: byte_rates.map(|r| r.1),
                recorded: live.is_some(),
                rates,
            }
        })
        .collect();
    ClusterView {
        name: c.name.clone(),
        balance: c.balance,
        protocol: c.protocol,
        active_requests: c.active_requests,
        max_requests: cfg.map(|cc| cc.limits.max_requests),
        active_retries: c.active_retries,
        retry_budget_remaining: c.retry_budget_remaining,
        health_checked: cfg.is_some_and(|cc| cc.health.is_some()),
        outlier_detection: cfg.is_some_and(|cc| cc.outlier.is_some()),
        rps: endpoints.iter().map(|e| e.rates.rps).sum(),
        decisions: c.decisions.clone(),
        decision_rates,
        endpoints,
    }
}
