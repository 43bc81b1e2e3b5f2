//! Metric families and hot-path handles.
//!
//! Labels come only from configuration and discovery (listener, route,
//! cluster, endpoint, status class, error kind), never from request data, so
//! the number of series is bounded by the configuration. The request path
//! holds pre-resolved handles ([`RouteMetrics`], [`ListenerMetrics`]) so that
//! recording a request is a few atomic operations, not a label lookup.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicI64, AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::process;

/// Latency buckets in seconds: from half a millisecond, where a proxy hop on
/// a LAN lives, to ten seconds, beyond which requests are timing out anyway.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub listener: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub cluster: String,
    pub decision: String,
}

/// A policy decision taken on the request path. Every one is counted per
/// cluster, so an operator can see which policy tripped and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A failed attempt was retried.
    Retry,
    /// A retry was wanted but the retry budget was spent.
    BudgetExhausted,
    /// A retry was wanted but the cluster's concurrent-retry limit was hit.
    RetryLimited,
    /// A hedged attempt was sent.
    Hedge,
    /// A hedge was wanted but the extra-load cap was reached.
    HedgeBudgetExhausted,
    /// An endpoint was ejected by outlier detection.
    Ejection,
    /// An ejected endpoint received its probation probe.
    Probe,
    /// A probe succeeded and the endpoint is back.
    Restored,
    /// A request failed fast on a cluster limit.
    Overloaded,
    /// A request arrived with its deadline already passed.
    DeadlineExpired,
    /// Active health checks marked an endpoint unhealthy.
    Unhealthy,
    /// Active health checks marked an endpoint healthy.
    Healthy,
}

impl Decision {
    pub const ALL: [Decision; 12] = [
        Decision::Retry,
        Decision::BudgetExhausted,
        Decision::RetryLimited,
        Decision::Hedge,
        Decision::HedgeBudgetExhausted,
        Decision::Ejection,
        Decision::Probe,
        Decision::Restored,
        Decision::Overloaded,
        Decision::DeadlineExpired,
        Decision::Unhealthy,
        Decision::Healthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Retry => "retry",
            Decision::BudgetExhausted => "retry_budget_exhausted",
            Decision::RetryLimited => "retry_limited",
            Decision::Hedge => "hedge",
            Decision::HedgeBudgetExhausted => "hedge_budget_exhausted",
            Decision::Ejection => "ejection",
            Decision::Probe => "probe",
            Decision::Restored => "restored",
            Decision::Overloaded => "overloaded",
            Decision::DeadlineExpired => "deadline_expired",
            Decision::Unhealthy => "unhealthy",
            Decision::Healthy => "healthy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Pre-resolved decision counters of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    decisions: [Counter; 12],
}

impl ClusterMetrics {
    pub fn count(&self, d: Decision) {
        self.decisions[d.index()].inc();
    }

    pub fn get(&self, d: Decision) -> u64 {
        self.decisions[d.index()].get()
    }

    /// Every decision with its count, for the admin API.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        Decision::ALL
            .iter()
            .map(|d| (d.as_str(), self.get(*d)))
            .collect()
    }
}

/// The class of a response status, the only status label (bounded: five
/// values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every metric family Switchyard exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    connections_total: Family<ListenerLabels, Counter>,
    connections_active: Family<ListenerLabels, Gauge>,
    /// Gauges below are set from live state just before each scrape.
    pub upstream_connections: Family<ClusterLabels, Gauge>,
    pub endpoints: Family<ClusterLabels, Gauge>,
    pub endpoint_in_flight: Family<EndpointLabels, Gauge>,
    pub endpoint_available: Family<EndpointLabels, Gauge>,
    pub endpoint_latency_ewma: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    endpoint_requests: Family<EndpointLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    process_resident: Gauge,
    process_virtual: Gauge,
    process_fds: Gauge,
    process_threads: Gauge,
    process_cpu: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Downstream requests by listener, route and response status class",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "request_duration",
            "Time from request to response head, per route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "proxy_errors",
            "Requests answered by the proxy itself because of a failure, by kind",
            errors.clone(),
        );
        let connections_total = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "downstream_connections",
            "Downstream connections accepted",
            connections_total.clone(),
        );
        let connections_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "downstream_connections_active",
            "Downstream connections currently open",
            connections_active.clone(),
        );
        let upstream_connections = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "upstream_connections_active",
            "Upstream connections currently open, per cluster",
            upstream_connections.clone(),
        );
        let endpoints = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_endpoints",
            "Endpoints currently known, per cluster",
            endpoints.clone(),
        );
        let endpoint_in_flight = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_in_flight",
            "Requests in flight to an endpoint",
            endpoint_in_flight.clone(),
        );
        let endpoint_available = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_available",
            "1 when the endpoint may receive new requests, 0 when ejected, unhealthy or draining",
            endpoint_available.clone(),
        );
        let endpoint_latency_ewma = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "endpoint_latency_ewma",
            "Peak-EWMA of the endpoint's response latency, as the balancer sees it",
            Unit::Seconds,
            endpoint_latency_ewma.clone(),
        );
        let endpoint_requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "endpoint_requests",
            "Requests sent to an endpoint",
            endpoint_requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "cluster_decisions",
            "Policy decisions per cluster: retries, spent budgets, hedges, ejections, probes, fast failures, expired deadlines, health changes",
            decisions.clone(),
        );
        let process_resident = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            process_resident.clone(),
        );
        let process_virtual = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "process_virtual_memory",
            "Virtual memory of the process",
            Unit::Bytes,
            process_virtual.clone(),
        );
        let process_fds = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            process_fds.clone(),
        );
        let process_threads = Gauge::<i64, AtomicI64>::default();
        registry.register("process_threads", "OS threads", process_threads.clone());
        let process_cpu = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time consumed",
            Unit::Seconds,
            process_cpu.clone(),
        );
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        registry.register("build_info", "Switchyard version", build_info);
        Self {
            registry: Mutex::new(registry),
            requests,
            request_duration,
            errors,
            connections_total,
            connections_active,
            upstream_connections,
            endpoints,
            endpoint_in_flight,
            endpoint_available,
            endpoint_latency_ewma,
            endpoint_requests,
            decisions,
            process_resident,
            process_virtual,
            process_fds,
            process_threads,
            process_cpu,
        }
    }

    /// Handles for one route, resolved once when the route is built.
    pub fn route(&self, listener: &str, route: &str) -> RouteMetrics {
        let by_class = StatusClass::ALL.map(|class| {
            self.requests.get_or_create_owned(&RequestLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                class: class.as_str().to_owned(),
            })
        });
        let duration = self.request_duration.get_or_create_owned(&RouteLabels {
            listener: listener.to_owned(),
            route: route.to_owned(),
        });
        RouteMetrics { by_class, duration }
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
        ClusterMetrics {
            decisions: Decision::ALL.map(|d| {
                self.decisions.get_or_create_owned(&DecisionLabels {
                    cluster: cluster.to_owned(),
                    decision: d.as_str().to_owned(),
                })
            }),
        }
    }

    /// The request counter of one endpoint, resolved when the endpoint joins.
    pub fn endpoint_requests(&self, cluster: &str, endpoint: &str) -> Counter {
        self.endpoint_requests.get_or_create_owned(&EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }

    /// Drops every series of an endpoint that left its cluster, so that churn
    /// in discovery does not grow the exposition forever.
    pub fn forget_endpoint(&self, cluster: &str, endpoint: &str) {
        let labels = EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        self.endpoint_requests.remove(&labels);
        self.endpoint_in_flight.remove(&labels);
        self.endpoint_available.remove(&labels);
        self.endpoint_latency_ewma.remove(&labels);
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
        let mut open_metrics = String::with_capacity(16 * 1024);
        {
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            // Writing into a String cannot fail.
            let _ = encode(&mut open_metrics, &registry);
        }
        openmetrics_to_prometheus(&open_metrics)
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Converts the OpenMetrics text that prometheus-client writes into the
/// classic Prometheus text format: counter families are named with their
/// `_total` suffix in HELP/TYPE, and the OpenMetrics-only `# UNIT` and
/// `# EOF` lines are dropped.
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut counters: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
        }
    }
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Pre-resolved handles for one route.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, elapsed: std::time::Duration) {
        self.by_class[StatusClass::of(status).index()].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Pre-resolved handles for one listener.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub connections_total: Counter,
    pub connections_active: Gauge,
    errors: Vec<(String, Counter)>,
}

impl ListenerMetrics {
    pub fn error(&self, kind: &str) {
        if let Some((_, c)) = self.errors.iter().find(|(k, _)| k == kind) {
            c.inc();
        }
    }
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
    }
}
