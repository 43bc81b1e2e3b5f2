//! The admin listener: what an operator (or an orchestrator) asks a running
//! Switchyard process.
//!
//! # Layout
//! - `GET /ready`: 200 once every listener is serving, 503 while starting or
//!   draining — for load balancers and Kubernetes readiness probes.
//! - `GET /live`: 200 while the process is up — for liveness probes.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /clusters`: every cluster with its endpoints, their state and load.
//! - `GET /config`: the effective configuration, defaults filled in.
//!
//! Loopback by default (see `switchyard_config::AdminConfig`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use switchyard_config::Config;
use switchyard_stack::cluster::{Cluster, ClusterSnapshot};
use switchyard_telemetry::Metrics;
use tokio::net::TcpListener;

/// Shared state the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub clusters: Vec<Arc<Cluster>>,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl AdminState {
    pub fn new(config: Arc<Config>, clusters: Vec<Arc<Cluster>>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            clusters,
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the process ready (listeners serving) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Copies live cluster state into the gauges just before a scrape.
    fn refresh_gauges(&self) {
        use switchyard_telemetry::metrics::{ClusterLabels, EndpointLabels};
        for c in &self.clusters {
            let snap = c.snapshot();
            let cl = ClusterLabels {
                cluster: snap.name.clone(),
            };
            let open: usize = snap.endpoints.iter().map(|e| e.connections_open).sum();
            self.metrics
                .upstream_connections
                .get_or_create(&cl)
                .set(i64::try_from(open).unwrap_or(i64::MAX));
            self.metrics
                .endpoints
                .get_or_create(&cl)
                .set(i64::try_from(snap.endpoints.len()).unwrap_or(i64::MAX));
            for e in &snap.endpoints {
                let el = EndpointLabels {
                    cluster: snap.name.clone(),
                    endpoint: e.address.to_string(),
                };
                self.metrics
                    .endpoint_in_flight
                    .get_or_create(&el)
                    .set(i64::from(e.in_flight));
                self.metrics
                    .endpoint_available
                    .get_or_create(&el)
                    .set(i64::from(e.available));
                self.metrics
                    .endpoint_latency_ewma
                    .get_or_create(&el)
                    .set(e.latency_ewma_ms / 1000.0);
            }
        }
    }
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/live", get(live))
        .route("/metrics", get(metrics))
        .route("/clusters", get(clusters))
        .route("/config", get(config))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    state.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Serialize)]
struct ClustersBody {
    clusters: Vec<ClusterSnapshot>,
}

async fn clusters(State(state): State<Arc<AdminState>>) -> Json<ClustersBody> {
    Json(ClustersBody {
        clusters: state.clusters.iter().map(|c| c.snapshot()).collect(),
    })
}

async fn config(State(state): State<Arc<AdminState>>) -> Json<Arc<Config>> {
    Json(state.config.clone())
}
