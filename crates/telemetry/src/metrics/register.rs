//! [`Metrics::new`]: every family, its name, unit and help text, in the
//! order docs/metrics.md lists them.

use std::{
    sync::{Arc, Mutex, atomic::AtomicI64},
    time::Instant,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry, Unit},
};

use super::{
    ConfigMetrics, F64Gauge, Metrics, RouteLabels, RouteLives, SpanMetrics, handles::RouteFamilies,
    latency_histogram,
};

/// Registers `metric` and returns it, so that construction reads as one
/// list of families.
fn reg<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, m: M) -> M {
    match unit {
        Some(unit) => r.register_with_unit(name, help, unit, m.clone()),
        None => r.register(name, help, m.clone()),
    }
    m
}

fn family<L, M>() -> Family<L, M>
where
    L: Clone + std::hash::Hash + Eq,
    M: Default,
{
    Family::default()
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let r = &mut registry;
        let s = Unit::Seconds;
        let requests = reg(
            r,
            "requests",
            "Downstream requests by listener, route and response status class",
            None,
            family(),
        );
        let grpc_requests = reg(
            r,
            "grpc_requests",
            "gRPC calls by listener, route and grpc-status (from the response head or trailers)",
            None,
            family(),
        );
        let faults = reg(
            r,
            "faults_injected",
            "Faults injected by routes with a fault policy, by kind (abort, delay)",
            None,
            family(),
        );
        let request_duration = reg(
            r,
            "request_duration",
            "Time from request to response head, per route",
            Some(s.clone()),
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            ),
        );
        let errors = reg(
            r,
            "proxy_errors",
            "Requests answered by the proxy itself because of a failure, by kind",
            None,
            family(),
        );
        let connections_total = reg(
            r,
            "downstream_connections",
            "Downstream connections accepted",
            None,
            family(),
        );
        let connections_active = reg(
            r,
            "downstream_connections_active",
            "Downstream connections currently open",
            None,
            family(),
        );
        let upstream_connections = reg(
            r,
            "upstream_connections_active",
            "Upstream connections currently open, per cluster",
            None,
            family(),
        );
        let endpoints = reg(
            r,
            "cluster_endpoints",
            "Endpoints currently known, per cluster",
            None,
            family(),
        );
        let endpoint_in_flight = reg(
            r,
            "endpoint_in_flight",
            "Requests in flight to an endpoint",
            None,
            family(),
        );
        let endpoint_available = reg(
            r,
            "endpoint_available",
            "1 when the endpoint may receive new requests, 0 when ejected, unhealthy or draining",
            None,
            family(),
        );
        let endpoint_latency_ewma = reg(
            r,
            "endpoint_latency_ewma",
            "Peak-EWMA of the endpoint's response latency, as the balancer sees it",
            Some(s.clone()),
            family(),
        );
        let endpoint_state = reg(
            r,
            "endpoint_state",
            "1 for the endpoint's current state (active, probation, ejected, unhealthy, draining), 0 for the others",
            None,
            family(),
        );
        let endpoint_requests = reg(
            r,
            "endpoint_requests",
            "Requests sent to an endpoint (for tcp/udp clusters: connections or sessions)",
            None,
            family(),
        );
        let endpoint_bytes = reg(
            r,
            "endpoint_bytes",
            "Bytes a tcp/udp cluster received from (rx) or sent to (tx) an endpoint",
            None,
            family(),
        );
        let decisions = reg(
            r,
            "cluster_decisions",
            "Policy decisions per cluster: retries, spent budgets, hedges, ejections, probes, fast failures, expired deadlines, health changes",
            None,
            family(),
        );
        let health_checks = reg(
            r,
            "health_checks",
            "Active health checks of a cluster's endpoints, by result (passed, failed)",
            None,
            family(),
        );
        let discovery_updates = reg(
            r,
            "discovery_updates",
            "Endpoint sets delivered by a cluster's discovery source and applied",
            None,
            family(),
        );
        let discovery_errors = reg(
            r,
            "discovery_errors",
            "Failed attempts to read a cluster's discovery source",
            None,
            family(),
        );
        let discovery_age = reg(
            r,
            "discovery_last_update_age",
            "Time since a cluster's discovery source last delivered an endpoint set",
            Some(s.clone()),
            family(),
        );
        let spans = SpanMetrics {
            dropped: reg(
                r,
                "trace_spans_dropped",
                "Trace spans dropped because the export queue was full or the collector failed",
                None,
                Counter::default(),
            ),
            exported: reg(
                r,
                "trace_spans_exported",
                "Trace spans accepted by the collector",
                None,
                Counter::default(),
            ),
        };
        let reloads = family::<Vec<(String, String)>, Counter>();
        let reload = |result: &str| {
            reloads.get_or_create_owned(&vec![("result".to_owned(), result.to_owned())])
        };
        let config = ConfigMetrics {
            reloads_succeeded: reload("success"),
            reloads_failed: reload("failure"),
            generation: Gauge::default(),
        };
        r.register(
            "config_reloads",
            "Configuration reloads by result (success, failure)",
            reloads,
        );
        r.register(
            "config_generation",
            "Generation of the configuration serving: 1 at start, one more per successful reload",
            config.generation.clone(),
        );
        config.generation.set(1);
        let b = Unit::Bytes;
        let process_resident = reg(
            r,
            "process_resident_memory",
            "Resident memory of the process",
            Some(b.clone()),
            Gauge::<i64, AtomicI64>::default(),
        );
        let process_virtual = reg(
            r,
            "process_virtual_memory",
            "Virtual memory of the process",
            Some(b),
            Gauge::<i64, AtomicI64>::default(),
        );
        let process_fds = reg(
            r,
            "process_open_fds",
            "Open file descriptors",
            None,
            Gauge::default(),
        );
        let process_threads = reg(r, "process_threads", "OS threads", None, Gauge::default());
        let process_cpu = reg(
            r,
            "process_cpu",
            "User and system CPU time consumed",
            Some(s),
            F64Gauge::default(),
        );
        let build_info = family::<Vec<(String, String)>, Gauge>();
        build_info
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        r.register("build_info", "Switchyard version", build_info);
        Self {
            registry: Mutex::new(registry),
            route_families: Arc::new(RouteFamilies {
                requests,
                duration: request_duration,
                grpc: grpc_requests,
            }),
            faults,
            errors,
            connections_total,
            connections_active,
            upstream_connections,
            endpoints,
            endpoint_in_flight,
            endpoint_available,
            endpoint_latency_ewma,
            endpoint_state,
            endpoint_requests,
            endpoint_bytes,
            decisions,
            health_checks,
            discovery_updates,
            discovery_errors,
            discovery_age,
            spans,
            config,
            process_resident,
            process_virtual,
            process_fds,
            process_threads,
            process_cpu,
            epoch: Instant::now(),
            discovery_stamps: Mutex::new(Vec::new()),
            route_live: Arc::new(Mutex::new(RouteLives::default())),
        }
    }
}
