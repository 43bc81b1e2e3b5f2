//! The admin listener: what an operator (or an orchestrator, or a browser)
//! asks a running Switchyard process.
//!
//! # Layout
//! - `lib.rs`: [`AdminState`], the router and the small endpoints:
//!   - `GET /ready`: 200 once every listener is serving, 503 while starting
//!     or draining — for load balancers and Kubernetes readiness probes.
//!   - `GET /live`: 200 while the process is up — for liveness probes.
//!   - `GET /metrics`: Prometheus text exposition (docs/metrics.md).
//!   - `GET /clusters`: every cluster with its endpoints, their state and load.
//!   - `GET /config`: the effective configuration, defaults filled in, with
//!     its generation (1 at start, one more per reload).
//!   - `POST /reload`: reads the configuration file again and applies it
//!     (`reload.rs`).
//! - `routes.rs`: `GET /routes`, each listener's routes in match order.
//! - `feed.rs` + `sample.rs`: `GET /events`, a server-sent-events feed with a
//!   snapshot every second (rates, percentiles, endpoint states, recent state
//!   changes), and `GET /snapshot`, the latest one as plain JSON.
//! - `dashboard.rs` + `assets/`: the dashboard at `/`, built into the binary.
//! - `auth.rs`: the bearer token, required beyond loopback.
//!
//! Loopback by default (see `switchyard_config::AdminConfig`).

mod auth;
mod dashboard;
mod feed;
mod page;
mod reload;
mod routes;
mod sample;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use switchyard_config::{AdminConfig, Config};
use switchyard_stack::cluster::{Cluster, ClusterSnapshot};
use switchyard_telemetry::Metrics;
use tokio::net::TcpListener;

pub use auth::{TOKEN_ENV, Token, TokenError};
pub use dashboard::DASHBOARD_PATH;
pub use feed::FEED_INTERVAL;
pub use reload::{ReloadChanges, ReloadOutcome, ReloadRequest, Reloader};

/// What is serving: one configuration generation and what was built from
/// it. A reload publishes a new one whole, so every endpoint reads one
/// consistent generation.
#[derive(Debug)]
pub struct View {
    pub config: Arc<Config>,
    /// In configuration order, which the admin API and dashboard show.
    pub clusters: Vec<Arc<Cluster>>,
    /// Bound listener addresses (a port 0 in the config becomes a real one).
    pub listeners: Vec<(String, SocketAddr)>,
    /// 1 for the configuration the process started with, one more per
    /// applied reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

impl View {
    /// The address a listener bound, or its configured one.
    fn listener_addr(&self, name: &str, configured: SocketAddr) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map_or(configured, |(_, a)| *a)
    }
}

/// Shared state the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    view: ArcSwap<View>,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    token: Option<Token>,
    feed: feed::Feed,
    reloader: Option<Reloader>,
}

impl AdminState {
    pub fn new(config: Arc<Config>, clusters: Vec<Arc<Cluster>>, metrics: Arc<Metrics>) -> Self {
        Self {
            view: ArcSwap::from_pointee(View {
                config,
                clusters,
                listeners: Vec::new(),
                generation: 1,
                loaded_at: SystemTime::now(),
            }),
            metrics,
            ready: AtomicBool::new(false),
            token: None,
            feed: feed::Feed::new(FEED_INTERVAL),
            reloader: None,
        }
    }

    /// Requires this bearer token on every endpoint but `/live`, `/ready`
    /// and the dashboard's static files.
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    /// The addresses listeners actually bound, shown by `/routes` and the
    /// dashboard instead of the configured ones.
    pub fn with_listener_addrs(self, listeners: Vec<(String, SocketAddr)>) -> Self {
        let view = self.view.load_full();
        self.view.store(Arc::new(View {
            config: view.config.clone(),
            clusters: view.clusters.clone(),
            listeners,
            generation: view.generation,
            loaded_at: view.loaded_at,
        }));
        self
    }

    /// Where `POST /reload` sends its requests; without one it answers 503.
    pub fn with_reloader(mut self, reloader: Reloader) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// The generation serving now.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Makes a reloaded generation the one every endpoint shows.
    pub fn publish(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// How often the live feed samples (default [`FEED_INTERVAL`]).
    pub fn with_feed_interval(mut self, interval: Duration) -> Self {
        self.feed = feed::Feed::new(interval);
        self
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
        use switchyard_telemetry::metrics::{
            ClusterLabels, ENDPOINT_STATES, EndpointLabels, EndpointStateLabels,
        };
        let m = &self.metrics;
        for c in &self.view().clusters {
            let snap = c.snapshot();
            let cl = ClusterLabels {
                cluster: snap.name.clone(),
            };
            let open: usize = snap.endpoints.iter().map(|e| e.connections_open).sum();
            m.upstream_connections.get_or_create(&cl).set(to_i64(open));
            m.endpoints
                .get_or_create(&cl)
                .set(to_i64(snap.endpoints.len()));
            for e in &snap.endpoints {
                let endpoint = e.address.to_string();
                let el = EndpointLabels {
                    cluster: snap.name.clone(),
                    endpoint: endpoint.clone(),
                };
                m.endpoint_in_flight
                    .get_or_create(&el)
                    .set(i64::from(e.in_flight));
                m.endpoint_available
                    .get_or_create(&el)
                    .set(i64::from(e.available));
                m.endpoint_latency_ewma
                    .get_or_create(&el)
                    .set(e.latency_ewma_ms / 1000.0);
                for state in ENDPOINT_STATES {
                    m.endpoint_state
                        .get_or_create(&EndpointStateLabels {
                            cluster: snap.name.clone(),
                            endpoint: endpoint.clone(),
                            state: state.to_owned(),
                        })
                        .set(i64::from(e.state == state));
                }
            }
        }
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The admin routes, behind the token check.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/live", get(live))
        .route("/metrics", get(metrics))
        .route("/clusters", get(clusters))
        .route("/config", get(config))
        .route("/reload", post(reload::reload))
        .route("/routes", get(routes::routes))
        .route("/events", get(feed::events))
        .route("/snapshot", get(feed::snapshot))
        .merge(dashboard::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

/// The admin listener's connection limit and timeouts, from `[admin]`.
pub fn serve_settings(admin: &AdminConfig) -> switchyard_serve::Settings {
    switchyard_serve::Settings {
        max_connections: admin.max_connections,
        header_read_timeout: admin.header_read_timeout,
        idle_timeout: admin.idle_timeout,
        ..switchyard_serve::Settings::default()
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves; also runs
/// the live feed's sampler, whose end closes open `/events` streams so that
/// they do not hold the graceful shutdown open.
///
/// The listener has its own connection limit and timeouts
/// (`[admin] max_connections`, `header_read_timeout`, `idle_timeout`): at
/// the limit it stops accepting and new clients wait in the kernel backlog,
/// while the data plane, with limits of its own, keeps accepting.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = serve_settings(&state.view().config.admin);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(feed::run(state.clone(), stop_rx.clone()));
    let mut server_stop = stop_rx;
    let server = switchyard_serve::serve(
        listener,
        router(state).into_service(),
        settings,
        async move {
            // Resolves when `stop_tx` sends or is dropped.
            let _ = server_stop.wait_for(|stop| *stop).await;
        },
    );
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop_tx.send(true);
            server.await
        }
    };
    // Serving ends only at shutdown; the sampler stops with it.
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    result
}

/// Binds the admin address (`SO_REUSEADDR`, a deep accept backlog where
/// clients wait while the listener is at its connection limit).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    switchyard_serve::bind(addr)
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
    /// Clusters in all (that match `name`), before the page.
    total: usize,
    clusters: Vec<ClusterPage>,
}

#[derive(Serialize)]
struct ClusterPage {
    #[serde(flatten)]
    snapshot: ClusterSnapshot,
    /// Endpoints in all, before the page.
    endpoints_total: usize,
}

/// `/clusters` parameters, all optional: one cluster by `name`; a page of
/// the clusters (`offset`, `limit`) and of each one's endpoints
/// (`endpoints_offset`, `endpoints_limit`).
#[derive(Debug, Deserialize)]
struct ClustersQuery {
    name: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    endpoints_offset: Option<usize>,
    endpoints_limit: Option<usize>,
}

async fn clusters(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<ClustersQuery>,
) -> Response {
    let view = state.view();
    let matching: Vec<&Arc<Cluster>> = view
        .clusters
        .iter()
        .filter(|c| q.name.as_deref().is_none_or(|n| c.name() == n))
        .collect();
    if let (Some(name), true) = (&q.name, matching.is_empty()) {
        return (StatusCode::NOT_FOUND, format!("no cluster {name}\n")).into_response();
    }
    let total = matching.len();
    let clusters = matching[page::range(total, q.offset, q.limit)]
        .iter()
        .map(|c| {
            let (snapshot, endpoints_total) =
                c.snapshot_range(|all| page::range(all, q.endpoints_offset, q.endpoints_limit));
            ClusterPage {
                snapshot,
                endpoints_total,
            }
        })
        .collect();
    Json(ClustersBody { total, clusters }).into_response()
}

/// `/config`: the configuration's own keys, plus which generation it is.
#[derive(Serialize)]
struct ConfigBody<'a> {
    generation: u64,
    /// When this generation started serving (Unix seconds).
    loaded_at: u64,
    #[serde(flatten)]
    config: &'a Config,
}

async fn config(State(state): State<Arc<AdminState>>) -> Response {
    let view = state.view();
    let loaded_at = view
        .loaded_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(ConfigBody {
        generation: view.generation,
        loaded_at,
        config: &view.config,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[admin]`'s defaults (in the config crate, which documents them) are
    /// those of the serving library.
    #[test]
    fn admin_defaults_are_the_serving_defaults() {
        assert_eq!(
            serve_settings(&AdminConfig::default()),
            switchyard_serve::Settings::default()
        );
    }
}
