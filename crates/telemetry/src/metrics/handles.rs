//! Pre-resolved handles: what the request path, health checker, discovery
//! and span exporter hold so that recording is a few atomic operations and
//! never a label lookup.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use std::sync::OnceLock;

use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};

use super::{
    RouteLabels, RouteLives,
    labels::{
        Decision, DecisionLabels, GRPC_CODES, GrpcLabels, RequestLabels, StatusClass,
        grpc_code_name, grpc_is_server_error,
    },
};
use crate::live::LiveStats;

/// The families a route's series live in, shared by every route.
#[derive(Debug)]
pub(super) struct RouteFamilies {
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(super) grpc: Family<GrpcLabels, Counter>,
}

/// Handles for one route, resolved once when the route is built; cloning
/// shares them.
///
/// A proxy may carry 100,000 routes of which few serve at any moment, so a
/// route pays for its series by use: the request counters and the latency
/// histogram are created in their families by its first request, each
/// `grpc-status` series by its first call with that status, and the live
/// statistics' histogram by its first recorded latency. Until then a route
/// exports nothing and holds under 200 bytes here.
#[derive(Clone, Debug)]
pub struct RouteMetrics(Arc<RouteSeries>);

#[derive(Debug)]
struct RouteSeries {
    families: Arc<RouteFamilies>,
    /// Where the route is listed for the admin feed, told on its first
    /// request.
    lives: (Arc<Mutex<RouteLives>>, usize),
    listener: Arc<str>,
    route: Arc<str>,
    /// Read by the admin feed for live rates and percentiles.
    live: Arc<LiveStats>,
    requests: OnceLock<RequestSeries>,
    grpc: OnceLock<Box<[OnceLock<Counter>; GRPC_CODES.len()]>>,
}

/// A route's request series, created together by its first request.
#[derive(Debug)]
struct RequestSeries {
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub(super) fn new(
        families: Arc<RouteFamilies>,
        lives: (Arc<Mutex<RouteLives>>, usize),
        listener: Arc<str>,
        route: Arc<str>,
        live: Arc<LiveStats>,
    ) -> Self {
        Self(Arc::new(RouteSeries {
            families,
            lives,
            listener,
            route,
            live,
            requests: OnceLock::new(),
            grpc: OnceLock::new(),
        }))
    }

    /// Records one answered request: the Prometheus counter and histogram,
    /// and the live stats of the dashboard (three relaxed additions).
    pub fn record(&self, status: u16, elapsed: Duration) {
        let route = &*self.0;
        let series = route.requests.get_or_init(|| route.request_series());
        series.by_class[StatusClass::of(status).index()].inc();
        series.duration.observe(elapsed.as_secs_f64());
        route.live.record(status, elapsed);
    }

    /// Records the `grpc-status` a gRPC call ended with (the call itself was
    /// counted by [`RouteMetrics::record`] when its head was sent); a
    /// server-side failure counts as an error in the live stats.
    pub fn record_grpc(&self, code: u32) {
        let route = &*self.0;
        let name = grpc_code_name(code);
        // `grpc_code_name` maps every code outside the table to `unknown`.
        let index = GRPC_CODES.iter().position(|c| *c == name).unwrap_or(2);
        let codes = route
            .grpc
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        codes[index]
            .get_or_init(|| {
                route.families.grpc.get_or_create_owned(&GrpcLabels {
                    listener: route.listener.to_string(),
                    route: route.route.to_string(),
                    code: name.to_owned(),
                })
            })
            .inc();
        if grpc_is_server_error(code) {
            route.live.count_error();
        }
    }
}

impl RouteSeries {
    fn request_series(&self) -> RequestSeries {
        let (lives, index) = &self.lives;
        lives
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .served(*index);
        let by_class = StatusClass::ALL.map(|class| {
            self.families.requests.get_or_create_owned(&RequestLabels {
                listener: self.listener.to_string(),
                route: self.route.to_string(),
                class: class.as_str().to_owned(),
            })
        });
        let duration = self.families.duration.get_or_create_owned(&RouteLabels {
            listener: self.listener.to_string(),
            route: self.route.to_string(),
        });
        RequestSeries { by_class, duration }
    }
}

/// Pre-resolved handles for one listener.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub(super) errors: Vec<(String, Counter)>,
}

impl ListenerMetrics {
    pub fn error(&self, kind: &str) {
        if let Some((_, c)) = self.errors.iter().find(|(k, _)| k == kind) {
            c.inc();
        }
    }
}

/// The injected-fault counters of one route
/// (`switchyard_faults_injected_total{listener,route,kind}`).
#[derive(Clone, Debug)]
pub struct FaultCounters {
    pub abort: Counter,
    pub delay: Counter,
}

/// Decision counters of one cluster; cloning shares them. Each series is
/// created by the first decision of its kind, so the many clusters of a
/// large configuration that never retry, hedge or shed export (and hold)
/// none.
#[derive(Clone, Debug)]
pub struct ClusterMetrics(Arc<ClusterDecisions>);

#[derive(Debug)]
struct ClusterDecisions {
    family: Family<DecisionLabels, Counter>,
    cluster: Arc<str>,
    counters: [OnceLock<Counter>; Decision::ALL.len()],
}

impl ClusterMetrics {
    /// The counters of `cluster`, taking over the series it already has
    /// (a cluster rebuilt by a reload goes on counting where it was).
    pub(super) fn new(family: Family<DecisionLabels, Counter>, cluster: &str) -> Self {
        let counters = Decision::ALL.map(|d| {
            let known = OnceLock::new();
            if let Some(counter) = family.get(&Self::labels(cluster, d)) {
                let _ = known.set(counter.clone());
            }
            known
        });
        Self(Arc::new(ClusterDecisions {
            family,
            cluster: Arc::from(cluster),
            counters,
        }))
    }

    fn labels(cluster: &str, d: Decision) -> DecisionLabels {
        DecisionLabels {
            cluster: cluster.to_owned(),
            decision: d.as_str().to_owned(),
        }
    }

    pub fn count(&self, d: Decision) {
        let c = &*self.0;
        c.counters[d.index()]
            .get_or_init(|| c.family.get_or_create_owned(&Self::labels(&c.cluster, d)))
            .inc();
    }

    pub fn get(&self, d: Decision) -> u64 {
        self.0.counters[d.index()].get().map_or(0, Counter::get)
    }

    /// Every decision with its count, for the admin API.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        Decision::ALL
            .iter()
            .map(|d| (d.as_str(), self.get(*d)))
            .collect()
    }
}

/// Active health-check results of one cluster
/// (`switchyard_health_checks_total{cluster,result}`).
#[derive(Clone, Debug)]
pub struct HealthCheckMetrics {
    pub(super) passed: Counter,
    pub(super) failed: Counter,
}

impl HealthCheckMetrics {
    /// Counts one check of one endpoint.
    pub fn record(&self, passed: bool) {
        if passed {
            self.passed.inc();
        } else {
            self.failed.inc();
        }
    }
}

/// Discovery activity of one cluster: how often its endpoint set was
/// refreshed, how often the source failed, and (at scrape time) how long ago
/// the last refresh was — the lag an operator alerts on.
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    pub(super) updates: Counter,
    pub(super) errors: Counter,
    pub(super) last_update: Arc<UpdateStamp>,
}

impl DiscoveryMetrics {
    /// The source delivered an endpoint set (changed or not) and it was
    /// applied to the cluster: counts it and restarts the age gauge.
    pub fn updated(&self) {
        self.updates.inc();
        self.last_update.stamp();
    }

    /// The source failed to answer (connection refused, bad response, watch
    /// broken); the cluster keeps its last known endpoints.
    pub fn failed(&self) {
        self.errors.inc();
    }

    pub fn updates(&self) -> u64 {
        self.updates.get()
    }
}

/// When a cluster's discovery last delivered, as nanoseconds after a shared
/// epoch; zero means never, so the age gauge is only exported once the
/// first update has arrived.
#[derive(Debug)]
pub(super) struct UpdateStamp {
    epoch: Instant,
    nanos: AtomicU64,
}

impl UpdateStamp {
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            nanos: AtomicU64::new(0),
        }
    }

    fn stamp(&self) {
        let n = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // `max(1)`: zero is reserved for "never".
        self.nanos.store(n.max(1), Ordering::Relaxed);
    }

    /// Time since the last update, `None` before the first.
    pub(super) fn age(&self) -> Option<Duration> {
        let n = self.nanos.load(Ordering::Relaxed);
        (n != 0).then(|| self.epoch.elapsed().saturating_sub(Duration::from_nanos(n)))
    }
}

/// Configuration reloads: `switchyard_config_reloads_total{result}` and
/// `switchyard_config_generation`.
#[derive(Clone, Debug)]
pub struct ConfigMetrics {
    pub(super) reloads_succeeded: Counter,
    pub(super) reloads_failed: Counter,
    pub(super) generation: Gauge,
}

impl ConfigMetrics {
    /// A reload applied: `generation` now serves.
    pub fn reloaded(&self, generation: u64) {
        self.reloads_succeeded.inc();
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A reload refused; the running configuration stays.
    pub fn refused(&self) {
        self.reloads_failed.inc();
    }

    pub fn succeeded_total(&self) -> u64 {
        self.reloads_succeeded.get()
    }

    pub fn failed_total(&self) -> u64 {
        self.reloads_failed.get()
    }
}

/// Trace export outcome counters; the span exporter holds a clone.
#[derive(Clone, Debug)]
pub struct SpanMetrics {
    pub(super) dropped: Counter,
    pub(super) exported: Counter,
}

impl SpanMetrics {
    /// Spans dropped because the export queue was full or the collector
    /// rejected them.
    pub fn dropped(&self, spans: u64) {
        self.dropped.inc_by(spans);
    }

    /// Spans the collector accepted.
    pub fn exported(&self, spans: u64) {
        self.exported.inc_by(spans);
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.get()
    }

    pub fn exported_total(&self) -> u64 {
        self.exported.get()
    }
}
