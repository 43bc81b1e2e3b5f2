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
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use switchyard_config::ClusterConfig;
use switchyard_stack::cluster::{ClusterSnapshot, EndpointSnapshot};
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
/// At most this many routes, and endpoints per cluster, go into a snapshot.
/// A dashboard cannot show more, and a gateway with 100,000 host routes or
/// a cluster of 10,000 endpoints should not render them all every second.
/// Up to this many, all are shown; beyond, the routes that have served
/// (the busiest in the window first) and the endpoints not active (then the
/// busiest), with totals in [`Summary`] and per cluster.
pub(crate) const FEED_ROUTES: usize = 100;
pub(crate) const FEED_ENDPOINTS: usize = 100;
/// Clusters likewise: beyond this many, those with an endpoint out of
/// rotation first, then the busiest.
pub(crate) const FEED_CLUSTERS: usize = 100;

/// Each endpoint's state, by cluster and address.
type States = HashMap<String, HashMap<SocketAddr, &'static str>>;

/// Cumulative figures at one tick. The history keeps only what was used:
/// a route or endpoint that recorded nothing is left out and reads as zero,
/// so a proxy with 100,000 routes keeps the history of the few that serve.
struct Sample {
    at: Instant,
    /// By listener, then route.
    routes: HashMap<Arc<str>, HashMap<Arc<str>, LiveSnapshot>>,
    /// By cluster, then address.
    endpoints: HashMap<String, HashMap<SocketAddr, EndpointSample>>,
    decisions: HashMap<String, BTreeMap<&'static str, u64>>,
}

impl Sample {
    fn route(&self, listener: &str, route: &str) -> Option<&LiveSnapshot> {
        self.routes.get(listener)?.get(route)
    }

    fn endpoint(&self, cluster: &str, address: SocketAddr) -> Option<&EndpointSample> {
        self.endpoints.get(cluster)?.get(&address)
    }

    /// Drops what recorded nothing, before the sample joins the history
    /// (and the room it took: a map keeps its capacity when emptied).
    fn compact(&mut self) {
        for routes in self.routes.values_mut() {
            routes.retain(|_, s| !s.is_empty());
            routes.shrink_to_fit();
        }
        self.routes.retain(|_, r| !r.is_empty());
        self.routes.shrink_to_fit();
        for endpoints in self.endpoints.values_mut() {
            endpoints.retain(|_, e| !e.is_idle());
            endpoints.shrink_to_fit();
        }
        self.endpoints.retain(|_, e| !e.is_empty());
        self.endpoints.shrink_to_fit();
    }
}

/// One endpoint's cumulative figures at one tick.
#[derive(Default)]
struct EndpointSample {
    /// Requests sent to the endpoint (connections or sessions for L4).
    requests: u64,
    /// Its live stats.
    live: LiveSnapshot,
    /// Bytes received from and sent to it, for L4 clusters.
    bytes: (u64, u64),
}

impl EndpointSample {
    fn is_idle(&self) -> bool {
        self.requests == 0 && self.live.is_empty() && self.bytes == (0, 0)
    }
}

/// The state the feed keeps between ticks.
pub(crate) struct Sampler {
    started: Instant,
    history: VecDeque<Sample>,
    /// Each endpoint's state at the previous tick; `None` before the first.
    states: Option<States>,
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
    /// Over every route and endpoint, including those left out below.
    summary: Summary,
    listeners: Vec<ListenerView>,
    /// In configuration order; see [`FEED_ROUTES`].
    routes: Vec<RouteView>,
    clusters: Vec<ClusterView>,
    /// Newest first.
    changes: Vec<Change>,
}

/// Totals over everything, shown or not.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Requests per second over all routes.
    rps: f64,
    error_rate: Option<f64>,
    /// The highest route p99.
    p99_ms: Option<f64>,
    routes: usize,
    routes_shown: usize,
    clusters: usize,
    clusters_shown: usize,
    endpoints: usize,
    endpoints_available: usize,
}

#[derive(Debug, Serialize)]
struct ListenerView {
    name: String,
    protocol: &'static str,
    address: String,
    /// The routes of this listener that the snapshot shows.
    routes: Vec<String>,
    routes_total: usize,
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
    endpoints_total: usize,
    endpoints_available: usize,
    /// How many endpoints are in each state.
    endpoint_states: BTreeMap<&'static str, usize>,
    /// In the cluster's order; see [`FEED_ENDPOINTS`].
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
        let mut route_stats: HashMap<Arc<str>, HashMap<Arc<str>, LiveSnapshot>> = HashMap::new();
        // A large configuration shows only routes that have served: read
        // just those, not every idle route every second.
        let configured: usize = view.config.listeners.iter().map(|l| l.routes.len()).sum();
        let lives = if configured > FEED_ROUTES {
            state.metrics.served_route_live()
        } else {
            state.metrics.route_live()
        };
        for r in lives {
            route_stats
                .entry(r.listener)
                .or_default()
                .insert(r.route, r.stats.snapshot());
        }
        let mut sample = Sample {
            at: now,
            routes: route_stats,
            endpoints: clusters
                .iter()
                .map(|c| {
                    let endpoints = c
                        .endpoints
                        .iter()
                        .map(|e| {
                            let sample = EndpointSample {
                                requests: e.requests,
                                live: e.live.clone(),
                                bytes: e.bytes_rx.zip(e.bytes_tx).unwrap_or((0, 0)),
                            };
                            (e.address, sample)
                        })
                        .collect();
                    (c.name.clone(), endpoints)
                })
                .collect(),
            // Only the decisions made so far: most clusters of a large
            // configuration have none.
            decisions: clusters
                .iter()
                .filter_map(|c| {
                    let made: BTreeMap<&'static str, u64> = c
                        .decisions
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(d, n)| (*d, *n))
                        .collect();
                    (!made.is_empty()).then(|| (c.name.clone(), made))
                })
                .collect(),
        };
        let base = self.history.front();
        let secs = base.map_or(0.0, |b| (now - b.at).as_secs_f64());
        let (routes, mut summary) = routes(&view, &sample, base, secs);
        let configs: HashMap<&str, &ClusterConfig> = view
            .config
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let clusters_view: Vec<ClusterView> = clusters
            .iter()
            .map(|c| cluster_view(&configs, c, base, secs))
            .collect();
        summary.endpoints = clusters_view.iter().map(|c| c.endpoints_total).sum();
        summary.endpoints_available = clusters_view.iter().map(|c| c.endpoints_available).sum();
        summary.clusters = clusters_view.len();
        let mut clusters_view = clusters_view;
        keep_highest(&mut clusters_view, FEED_CLUSTERS, |c| {
            let requests = c.endpoints.iter().map(|e| e.requests).sum();
            (c.endpoints_available < c.endpoints_total, c.rps, requests)
        });
        summary.clusters_shown = clusters_view.len();
        let snapshot = FeedSnapshot {
            time_ms: unix_ms(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            version: env!("CARGO_PKG_VERSION"),
            ready: state.is_ready(),
            window_s: secs,
            summary,
            listeners: listeners(&view, &routes),
            routes,
            clusters: clusters_view,
            changes: Vec::new(),
        };
        self.detect_changes(&clusters);
        sample.compact();
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
        let current: States = clusters
            .iter()
            .map(|c| {
                let states = c.endpoints.iter().map(|e| (e.address, e.state)).collect();
                (c.name.clone(), states)
            })
            .collect();
        // The first tick has nothing to compare with: everything that exists
        // at start-up is the baseline, not a change.
        if let Some(previous) = self.states.take() {
            let time_ms = unix_ms();
            let state_in = |states: &States, cluster: &str, endpoint: &SocketAddr| {
                states.get(cluster).and_then(|s| s.get(endpoint)).copied()
            };
            let mut found = Vec::new();
            for (cluster, endpoints) in &current {
                for (endpoint, to) in endpoints {
                    let from = state_in(&previous, cluster, endpoint);
                    if from != Some(*to) {
                        found.push((cluster, *endpoint, from, Some(*to)));
                    }
                }
            }
            for (cluster, endpoints) in &previous {
                for (endpoint, from) in endpoints {
                    if state_in(&current, cluster, endpoint).is_none() {
                        found.push((cluster, *endpoint, Some(*from), None));
                    }
                }
            }
            // Hash-map order is arbitrary; a stable order reads better.
            found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            for (cluster, endpoint, from, to) in found {
                if self.changes.len() == CHANGES_KEPT {
                    self.changes.pop_front();
                }
                self.changes.push_back(Change {
                    time_ms,
                    cluster: cluster.clone(),
                    endpoint,
                    from,
                    to,
                });
            }
        }
        self.states = Some(current);
    }
}

fn listeners(view: &View, shown: &[RouteView]) -> Vec<ListenerView> {
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
                routes: shown
                    .iter()
                    .filter(|r| r.listener == l.name)
                    .map(|r| r.name.clone())
                    .collect(),
                routes_total: l.routes.len(),
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

/// The routes to show (see [`FEED_ROUTES`]) and the totals over all.
fn routes(
    view: &View,
    now: &Sample,
    base: Option<&Sample>,
    secs: f64,
) -> (Vec<RouteView>, Summary) {
    // (listener, route, cumulative, window) of every built route.
    let mut all = Vec::new();
    for l in &view.config.listeners {
        for r in &l.routes {
            let Some(cur) = now.route(&l.name, &r.name) else {
                continue;
            };
            // A route missing from the base sample had recorded nothing (or
            // was built since): it started from zero.
            let empty = LiveSnapshot::default();
            let rates = if cur.is_empty() {
                Rates::default()
            } else {
                let prev = base.map(|b| b.route(&l.name, &r.name).unwrap_or(&empty));
                window_rates(cur, prev, secs)
            };
            all.push((l, r, cur.requests, rates));
        }
    }
    let mut summary = Summary {
        routes: view.config.listeners.iter().map(|l| l.routes.len()).sum(),
        ..Summary::default()
    };
    let mut errors = 0.0;
    for (_, _, _, rates) in &all {
        summary.rps += rates.rps;
        errors += rates.error_rate.unwrap_or(0.0) * rates.rps;
        if rates.p99_ms > summary.p99_ms {
            summary.p99_ms = rates.p99_ms;
        }
    }
    summary.error_rate = (summary.rps > 0.0).then(|| errors / summary.rps);
    if summary.routes > FEED_ROUTES {
        all.retain(|(_, _, requests, _)| *requests > 0);
        // The busiest in the window, then in all.
        keep_highest(&mut all, FEED_ROUTES, |(_, _, requests, rates)| {
            (false, rates.rps, *requests)
        });
    }
    summary.routes_shown = all.len();
    let views = all
        .into_iter()
        .map(|(l, r, requests, rates)| RouteView {
            listener: l.name.clone(),
            name: r.name.clone(),
            clusters: route_clusters(r).into_iter().map(str::to_owned).collect(),
            requests,
            rates,
        })
        .collect();
    (views, summary)
}

fn cluster_view(
    configs: &HashMap<&str, &ClusterConfig>,
    c: &ClusterSnapshot,
    base: Option<&Sample>,
    secs: f64,
) -> ClusterView {
    let cfg = configs.get(c.name.as_str());
    let per_sec = |delta: u64| if secs > 0.0 { delta as f64 / secs } else { 0.0 };
    let decision_rates = match base {
        // A cluster or decision missing from the base sample was at zero.
        Some(b) => {
            let before = b.decisions.get(&c.name);
            c.decisions
                .iter()
                .map(|(d, n)| {
                    let was = before.and_then(|m| m.get(d)).copied().unwrap_or(0);
                    (*d, n.saturating_sub(was))
                })
                .filter(|(_, delta)| *delta > 0)
                .map(|(d, delta)| (d, per_sec(delta)))
                .collect()
        }
        None => BTreeMap::new(),
    };
    // Only the HTTP path records endpoints' outcomes and latency;
    // connections and sessions have none.
    let recorded = matches!(c.protocol, "http1" | "http2");
    let idle = EndpointSample::default();
    // Every endpoint's window figures first (cheap); views are built only
    // for those shown.
    let mut figures: Vec<EndpointFigures<'_>> = c
        .endpoints
        .iter()
        .map(|e| {
            // An endpoint missing from the base sample had served nothing
            // (or joined since): it started from zero.
            let before = base.map(|b| b.endpoint(&c.name, e.address).unwrap_or(&idle));
            let mut rates = if recorded {
                window_rates(&e.live, before.map(|b| &b.live), secs)
            } else {
                Rates::default()
            };
            // The request counter is always there; it sets the rate even
            // when no live stats are recorded for the endpoint.
            rates.rps = per_sec(
                e.requests
                    .saturating_sub(before.map_or(e.requests, |b| b.requests)),
            );
            // Like the request rate: no rate before a base sample has it.
            let byte_rates = e.bytes_rx.zip(e.bytes_tx).map(|(rx, tx)| {
                let (rx0, tx0) = before.map_or((rx, tx), |b| b.bytes);
                (
                    per_sec(rx.saturating_sub(rx0)),
                    per_sec(tx.saturating_sub(tx0)),
                )
            });
            (e, rates, byte_rates)
        })
        .collect();
    let rps = figures.iter().map(|(_, r, _)| r.rps).sum();
    let endpoints_total = figures.len();
    let endpoints_available = c.endpoints.iter().filter(|e| e.available).count();
    let mut endpoint_states = BTreeMap::new();
    for e in &c.endpoints {
        *endpoint_states.entry(e.state).or_insert(0) += 1;
    }
    // At most FEED_ENDPOINTS: those not active first (what an operator
    // looks for), then the busiest.
    keep_highest(&mut figures, FEED_ENDPOINTS, |(e, rates, _)| {
        (e.state != "active", rates.rps, e.requests)
    });
    let endpoints = figures
        .into_iter()
        .map(|(e, rates, byte_rates)| EndpointView {
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
            recorded,
            rates,
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
        rps,
        decisions: c.decisions.clone(),
        decision_rates,
        endpoints_total,
        endpoints_available,
        endpoint_states,
        endpoints,
    }
}

/// An endpoint, its window rates and its byte rates (L4 clusters).
type EndpointFigures<'a> = (&'a EndpointSnapshot, Rates, Option<(f64, f64)>);

/// Keeps the `n` items that rank highest, in their order.
fn keep_highest<T>(items: &mut Vec<T>, n: usize, rank: impl Fn(&T) -> (bool, f64, u64)) {
    if items.len() <= n {
        return;
    }
    let mut ranked: Vec<usize> = (0..items.len()).collect();
    ranked.sort_by(|&a, &b| {
        rank(&items[b])
            .partial_cmp(&rank(&items[a]))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut keep = vec![false; items.len()];
    for &i in &ranked[..n] {
        keep[i] = true;
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}
