//! Metric families and hot-path handles.
//!
//! Labels come only from configuration and discovery (listener, route,
//! cluster, endpoint) or closed enums (status class, error kind, decision,
//! endpoint state, check result), never from request data, so the number of
//! series is bounded by the configuration. The request path holds
//! pre-resolved handles ([`RouteMetrics`], [`ListenerMetrics`]) so that
//! recording a request is a few atomic operations, not a label lookup.
//! docs/metrics.md lists every family.
//!
//! # Layout
//! - `labels.rs`: label sets and the bounded enums behind label values.
//! - `handles.rs`: the pre-resolved handles that code outside holds.
//! - `register.rs`: [`Metrics::new`], every family with its help text.
//! - `text.rs`: OpenMetrics → Prometheus 0.0.4 text.

mod handles;
mod labels;
mod register;
mod text;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Instant,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub use handles::{
    ClusterMetrics, ConfigMetrics, DiscoveryMetrics, FaultCounters, HealthCheckMetrics,
    ListenerMetrics, RouteMetrics, SpanMetrics,
};
pub use labels::*;

use crate::{live::LiveStats, process};
use handles::{RouteFamilies, UpdateStamp};

/// Latency buckets in seconds: from half a millisecond, where a proxy hop on
/// a LAN lives, to ten seconds, beyond which requests are timing out anyway.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// The live stats of one route, for the admin feed.
#[derive(Clone, Debug)]
pub struct RouteLive {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub stats: Arc<LiveStats>,
}

/// Live stats of every route, in the order routes were built, and where
/// each is in that list by listener and route (a listener may have 100,000
/// routes: no scan). The names are shared with the routes' handles.
#[derive(Debug, Default)]
pub(crate) struct RouteLives {
    ordered: Vec<RouteLive>,
    at: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    /// Places in `ordered` of the routes that have served, in the order
    /// they first did, so that the admin feed reads those and not 100,000
    /// idle ones every second.
    served: Vec<usize>,
    /// Whether each route is in `served` (a rebuilt route is not listed twice).
    listed: Vec<bool>,
}

impl RouteLives {
    /// Route `index` served a request.
    pub(crate) fn served(&mut self, index: usize) {
        if let Some(listed) = self.listed.get_mut(index)
            && !*listed
        {
            *listed = true;
            self.served.push(index);
        }
    }
}

/// Every metric family Switchyard exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    route_families: Arc<RouteFamilies>,
    faults: Family<FaultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    connections_total: Family<ListenerLabels, Counter>,
    connections_active: Family<ListenerLabels, Gauge>,
    /// Gauges below are set from live state just before each scrape.
    pub upstream_connections: Family<ClusterLabels, Gauge>,
    pub endpoints: Family<ClusterLabels, Gauge>,
    pub endpoint_in_flight: Family<EndpointLabels, Gauge>,
    pub endpoint_available: Family<EndpointLabels, Gauge>,
    pub endpoint_latency_ewma: Family<EndpointLabels, F64Gauge>,
    /// One series per endpoint and state in [`ENDPOINT_STATES`]; 1 for the
    /// current state.
    pub endpoint_state: Family<EndpointStateLabels, Gauge>,
    endpoint_requests: Family<EndpointLabels, Counter>,
    endpoint_bytes: Family<EndpointBytesLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    health_checks: Family<HealthCheckLabels, Counter>,
    discovery_updates: Family<ClusterLabels, Counter>,
    discovery_errors: Family<ClusterLabels, Counter>,
    discovery_age: Family<ClusterLabels, F64Gauge>,
    spans: SpanMetrics,
    config: ConfigMetrics,
    process_resident: Gauge,
    process_virtual: Gauge,
    process_fds: Gauge,
    process_threads: Gauge,
    process_cpu: F64Gauge,
    /// Origin of discovery update stamps.
    epoch: Instant,
    discovery_stamps: Mutex<Vec<(String, Arc<UpdateStamp>)>>,
    route_live: Arc<Mutex<RouteLives>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Handles for one route, resolved once when the route is built.
    pub fn route(&self, listener: &str, route: &str) -> RouteMetrics {
        let mut lives = lock(&self.route_live);
        // A route built twice (a rebuilt router) keeps one set of live stats,
        // as it keeps one set of Prometheus series.
        let known = lives
            .at
            .get(listener)
            .and_then(|routes| routes.get(route))
            .map(|&i| (i, lives.ordered[i].clone()));
        let (index, live) = match known {
            Some(live) => live,
            None => {
                let listener = lives
                    .at
                    .get_key_value(listener)
                    .map_or_else(|| Arc::from(listener), |(name, _)| name.clone());
                let live = RouteLive {
                    listener: listener.clone(),
                    route: Arc::from(route),
                    stats: Arc::new(LiveStats::default()),
                };
                let at = lives.ordered.len();
                lives
                    .at
                    .entry(listener)
                    .or_default()
                    .insert(live.route.clone(), at);
                lives.ordered.push(live.clone());
                lives.listed.push(false);
                (at, live)
            }
        };
        drop(lives);
        RouteMetrics::new(
            self.route_families.clone(),
            (self.route_live.clone(), index),
            live.listener,
            live.route,
            live.stats,
        )
    }

    /// Live stats of every route, in the order routes were built.
    pub fn route_live(&self) -> Vec<RouteLive> {
        lock(&self.route_live).ordered.clone()
    }

    /// The live stats of the routes that have served a request, in the
    /// order they first did.
    pub fn served_route_live(&self) -> Vec<RouteLive> {
        let lives = lock(&self.route_live);
        lives
            .served
            .iter()
            .map(|&i| lives.ordered[i].clone())
            .collect()
    }

    /// Counters of the faults a route injects; only routes with a fault
    /// policy ask, so only they export the series.
    pub fn route_faults(&self, listener: &str, route: &str) -> FaultCounters {
        let series = |kind: &str| {
            self.faults.get_or_create_owned(&FaultLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                kind: kind.to_owned(),
            })
        };
        FaultCounters {
            abort: series("abort"),
            delay: series("delay"),
        }
    }

    /// Handles for one listener, resolved once when it starts.
    pub fn listener(&self, listener: &str, error_kinds: &[&str]) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: listener.to_owned(),
        };
        let errors = error_kinds
            .iter()
            .map(|kind| {
                let c = self.errors.get_or_create_owned(&ErrorLabels {
                    listener: listener.to_owned(),
                    kind: (*kind).to_owned(),
                });
                ((*kind).to_owned(), c)
            })
            .collect();
        ListenerMetrics {
            connections_total: self.connections_total.get_or_create_owned(&labels),
            connections_active: self.connections_active.get_or_create_owned(&labels),
            errors,
        }
    }

    /// Decision counters of one cluster, resolved when the cluster is built.
    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        ClusterMetrics::new(self.decisions.clone(), cluster)
    }

    /// Health-check result counters of one cluster, for its checker task.
    pub fn health_checks(&self, cluster: &str) -> HealthCheckMetrics {
        let result = |result: &str| {
            self.health_checks.get_or_create_owned(&HealthCheckLabels {
                cluster: cluster.to_owned(),
                result: result.to_owned(),
            })
        };
        HealthCheckMetrics {
            passed: result("passed"),
            failed: result("failed"),
        }
    }

    /// Discovery counters of one cluster, for the task that feeds it. Call
    /// once per cluster; a second call shares the same series.
    pub fn discovery(&self, cluster: &str) -> DiscoveryMetrics {
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        let mut stamps = lock(&self.discovery_stamps);
        let last_update = match stamps.iter().find(|(c, _)| c == cluster) {
            Some((_, s)) => s.clone(),
            None => {
                let s = Arc::new(UpdateStamp::new(self.epoch));
                stamps.push((cluster.to_owned(), s.clone()));
                s
            }
        };
        DiscoveryMetrics {
            updates: self.discovery_updates.get_or_create_owned(&labels),
            errors: self.discovery_errors.get_or_create_owned(&labels),
            last_update,
        }
    }

    /// Configuration reload counters and the serving generation.
    pub fn config(&self) -> &ConfigMetrics {
        &self.config
    }

    /// Span export counters, for the trace exporter.
    pub fn spans(&self) -> SpanMetrics {
        self.spans.clone()
    }

    /// The request counter of one endpoint, resolved when the endpoint joins.
    pub fn endpoint_requests(&self, cluster: &str, endpoint: &str) -> Counter {
        self.endpoint_requests.get_or_create_owned(&EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }

    /// The byte counters of one endpoint of an L4 (tcp/udp) cluster,
    /// `[rx, tx]`: received from the endpoint and sent to it. Only L4
    /// clusters resolve them, so HTTP endpoints export no byte series.
    pub fn endpoint_bytes(&self, cluster: &str, endpoint: &str) -> [Counter; 2] {
        ["rx", "tx"].map(|direction| {
            self.endpoint_bytes
                .get_or_create_owned(&EndpointBytesLabels {
                    cluster: cluster.to_owned(),
                    endpoint: endpoint.to_owned(),
                    direction: direction.to_owned(),
                })
        })
    }

    /// Removes the gauges of a cluster a reload removed, and its endpoints'
    /// series, so that `/metrics` does not keep reporting what no longer
    /// exists. Its counters stay (they only ever grow).
    pub fn forget_cluster<'a>(&self, cluster: &str, endpoints: impl IntoIterator<Item = &'a str>) {
        for endpoint in endpoints {
            self.forget_endpoint(cluster, endpoint);
        }
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        self.upstream_connections.remove(&labels);
        self.endpoints.remove(&labels);
        self.discovery_age.remove(&labels);
    }

    /// Drops every series of an endpoint that left its cluster, so that churn
    /// in discovery does not grow the exposition forever.
    pub fn forget_endpoint(&self, cluster: &str, endpoint: &str) {
        let labels = EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        self.endpoint_requests.remove(&labels);
        for direction in ["rx", "tx"] {
            self.endpoint_bytes.remove(&EndpointBytesLabels {
                cluster: cluster.to_owned(),
                endpoint: endpoint.to_owned(),
                direction: direction.to_owned(),
            });
        }
        self.endpoint_in_flight.remove(&labels);
        self.endpoint_available.remove(&labels);
        self.endpoint_latency_ewma.remove(&labels);
        for state in ENDPOINT_STATES {
            self.endpoint_state.remove(&EndpointStateLabels {
                cluster: cluster.to_owned(),
                endpoint: endpoint.to_owned(),
                state: state.to_owned(),
            });
        }
    }

    /// Renders every family in the Prometheus text exposition format (0.0.4),
    /// which both Prometheus and `promtool check metrics` accept.
    pub fn render(&self) -> String {
        let p = process::stats();
        self.process_resident.set(saturating_i64(p.resident_bytes));
        self.process_virtual.set(saturating_i64(p.virtual_bytes));
        self.process_fds.set(saturating_i64(p.open_fds));
        self.process_threads.set(saturating_i64(p.threads));
        self.process_cpu.set(p.cpu_seconds);
        for (cluster, stamp) in lock(&self.discovery_stamps).iter() {
            if let Some(age) = stamp.age() {
                self.discovery_age
                    .get_or_create(&ClusterLabels {
                        cluster: cluster.clone(),
                    })
                    .set(age.as_secs_f64());
            }
        }
        let mut open_metrics = String::with_capacity(16 * 1024);
        {
            let registry = lock(&self.registry);
            // Writing into a String cannot fail.
            let _ = encode(&mut open_metrics, &registry);
        }
        text::openmetrics_to_prometheus(&open_metrics)
    }
}

/// Locks a mutex that guards plain data: a panic elsewhere while holding it
/// leaves nothing half-updated that matters, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_counter_suffixes() {
        let m = Metrics::new();
        m.route("public", "public/0")
            .record(200, std::time::Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("# TYPE switchyard_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_requests_total{listener=\"public\",route=\"public/0\",class=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        assert!(text.contains("switchyard_request_duration_seconds_count"));
        assert_eq!(m.route_live()[0].stats.snapshot().requests, 1);
    }

    #[test]
    fn a_route_exports_its_series_from_its_first_request_and_a_rebuilt_one_shares_them() {
        let m = Metrics::new();
        let idle = m.route("edge", "idle");
        let busy = m.route("edge", "busy");
        let text = m.render();
        assert!(!text.contains("route=\"idle\""), "{text}");
        assert!(!text.contains("route=\"busy\""), "{text}");
        busy.record(503, std::time::Duration::from_millis(2));
        // The same route built again (a reload) counts into the same series
        // and the same live stats.
        m.route("edge", "busy")
            .record(200, std::time::Duration::from_millis(2));
        let text = m.render();
        for line in [
            "switchyard_requests_total{listener=\"edge\",route=\"busy\",class=\"5xx\"} 1",
            "switchyard_requests_total{listener=\"edge\",route=\"busy\",class=\"2xx\"} 1",
            "switchyard_requests_total{listener=\"edge\",route=\"busy\",class=\"4xx\"} 0",
            "switchyard_request_duration_seconds_count{listener=\"edge\",route=\"busy\"} 2",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("route=\"idle\""), "{text}");
        let lives = m.route_live();
        assert_eq!(lives.len(), 2);
        assert_eq!(lives[1].stats.snapshot().requests, 2);
        assert!(lives[0].stats.snapshot().is_empty());
        // The feed reads only what served, each route once.
        let served = m.served_route_live();
        assert_eq!(served.len(), 1);
        assert_eq!(&*served[0].route, "busy");
        drop(idle);
    }

    #[test]
    fn a_cluster_exports_a_decision_from_its_first_and_a_rebuilt_one_counts_on() {
        let m = Metrics::new();
        let c = m.cluster("api");
        assert!(!m.render().contains("switchyard_cluster_decisions_total{"));
        c.count(Decision::Retry);
        c.count(Decision::Retry);
        let text = m.render();
        assert!(
            text.contains(
                "switchyard_cluster_decisions_total{cluster=\"api\",decision=\"retry\"} 2"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("switchyard_cluster_decisions_total{").count(),
            1
        );
        // The cluster rebuilt (a reload): the same series, counting on.
        let rebuilt = m.cluster("api");
        assert_eq!(rebuilt.get(Decision::Retry), 2);
        rebuilt.count(Decision::Retry);
        assert_eq!(c.get(Decision::Retry), 3);
        assert_eq!(rebuilt.get(Decision::Hedge), 0);
    }

    #[test]
    fn grpc_outcomes_count_by_code_and_errors_reach_live_stats() {
        let m = Metrics::new();
        let r = m.route("public", "grpc");
        // No gRPC call yet: no series (created on first use).
        assert!(!m.render().contains("switchyard_grpc_requests_total{"));
        r.record(200, std::time::Duration::from_millis(1));
        r.record_grpc(14);
        r.record(200, std::time::Duration::from_millis(1));
        r.record_grpc(0);
        r.record(200, std::time::Duration::from_millis(1));
        r.record_grpc(99);
        let text = m.render();
        for line in [
            "switchyard_grpc_requests_total{listener=\"public\",route=\"grpc\",code=\"unavailable\"} 1",
            "switchyard_grpc_requests_total{listener=\"public\",route=\"grpc\",code=\"ok\"} 1",
            "switchyard_grpc_requests_total{listener=\"public\",route=\"grpc\",code=\"unknown\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        let live = m.route_live()[0].stats.snapshot();
        assert_eq!((live.requests, live.errors), (3, 2));
    }

    #[test]
    fn health_discovery_and_span_families() {
        let m = Metrics::new();
        let hc = m.health_checks("api");
        hc.record(true);
        hc.record(false);
        hc.record(false);
        let d = m.discovery("api");
        let text = m.render();
        // No age before the first update: a gauge of "never" would be a lie.
        assert!(!text.contains("switchyard_discovery_last_update_age_seconds{"));
        d.updated();
        d.failed();
        m.spans().dropped(3);
        m.spans().exported(7);
        let text = m.render();
        for line in [
            "switchyard_health_checks_total{cluster=\"api\",result=\"passed\"} 1",
            "switchyard_health_checks_total{cluster=\"api\",result=\"failed\"} 2",
            "switchyard_discovery_updates_total{cluster=\"api\"} 1",
            "switchyard_discovery_errors_total{cluster=\"api\"} 1",
            "switchyard_discovery_last_update_age_seconds{cluster=\"api\"} ",
            "switchyard_trace_spans_dropped_total 3",
            "switchyard_trace_spans_exported_total 7",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
