//! The Switchyard proxy: listeners, clusters and the admin API assembled from
//! a validated [`Config`], with a graceful lifecycle.
//!
//! # Layout
//! - [`Proxy::bind`] builds clusters and routes and binds every socket, so
//!   that a port in use fails before anything serves; it starts each
//!   cluster's discovery ([`discovery`]) and waits briefly for the first
//!   endpoint sets.
//! - [`Proxy::run`] serves until a shutdown signal, then drains: readiness
//!   turns to 503, listeners stop accepting, HTTP/2 connections get GOAWAY
//!   and in-flight requests get the configured grace period.

pub mod discovery;

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use switchyard_admin::AdminState;
use switchyard_config::{Config, ListenerProtocol};
use switchyard_stack::{
    cluster::{Cluster, L4Protocol},
    drain,
    error::ErrorKind,
    proxy::HttpProxy,
    route::Router,
    server::{self, proxy_protocol::Trusted},
    tcp, udp,
};
use switchyard_telemetry::Metrics;
use tokio::{net::TcpListener, task::JoinSet};
use tracing::{info, warn};

use discovery::ClusterDiscovery;
pub use discovery::DiscoveryOptions;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind listener {name} on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the admin listener on {addr}: {source}")]
    BindAdmin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Route(#[from] switchyard_stack::route::UnknownCluster),
    #[error(transparent)]
    AdminToken(#[from] switchyard_admin::TokenError),
    #[error("cluster {cluster}: cannot start discovery: {source}")]
    Discovery {
        cluster: String,
        #[source]
        source: switchyard_discovery::SourceError,
    },
    #[error("listener {name}: {what}")]
    Listener { name: String, what: String },
    #[error(transparent)]
    Tracing(#[from] switchyard_telemetry::trace::TraceError),
    #[error("listener {name}: {source}")]
    Tls {
        name: String,
        // Boxed: the file paths and rustls' error make it the largest
        // variant by far.
        #[source]
        source: Box<server::tls::TlsError>,
    },
    #[error("cluster {cluster}: {source}")]
    ClusterTls {
        cluster: String,
        #[source]
        source: Box<server::tls::TlsError>,
    },
}

/// The sources a listener reads PROXY protocol headers from.
fn trusted(lc: &switchyard_config::ListenerConfig) -> Option<Trusted> {
    lc.proxy_protocol
        .as_ref()
        .map(|p| Trusted::new(p.trusted.clone()))
}

fn cluster_tls(cluster: &str, source: server::tls::TlsError) -> StartError {
    StartError::ClusterTls {
        cluster: cluster.to_owned(),
        source: Box::new(source),
    }
}

enum Bound {
    Http {
        listener: TcpListener,
        proxy: Arc<HttpProxy>,
        cfg: switchyard_config::HttpServerConfig,
        tls: Option<server::tls::TlsAcceptor>,
        trusted: Option<Trusted>,
    },
    Tcp {
        listener: TcpListener,
        trusted: Option<Trusted>,
        cluster: Arc<Cluster>,
        idle: Duration,
        tls: Option<server::tls::TlsAcceptor>,
    },
    Udp {
        socket: tokio::net::UdpSocket,
        cluster: Arc<Cluster>,
        session_timeout: Duration,
    },
}

/// A proxy with every socket bound, ready to run.
pub struct Proxy {
    config: Arc<Config>,
    admin: TcpListener,
    state: Arc<AdminState>,
    clusters: HashMap<String, Arc<Cluster>>,
    listeners: Vec<(String, SocketAddr, Bound)>,
    /// Running discovery of the dynamic clusters; stops when dropped.
    discoveries: Vec<ClusterDiscovery>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listeners", &self.listener_addrs())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds clusters and routes and binds the admin and every listener.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        Self::bind_with_metrics(config, Arc::new(Metrics::new())).await
    }

    pub async fn bind_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        Self::bind_with(config, metrics, DiscoveryOptions::default()).await
    }

    /// Like [`Proxy::bind`] with explicit metrics and discovery settings
    /// (e.g. the DNS servers to ask).
    pub async fn bind_with(
        config: Config,
        metrics: Arc<Metrics>,
        discovery_options: DiscoveryOptions,
    ) -> Result<Self, StartError> {
        // Before anything binds: an admin port beyond loopback without a
        // token must not serve even for a moment.
        let env_token = std::env::var(switchyard_admin::TOKEN_ENV).ok();
        let token = switchyard_admin::Token::resolve(&config.admin, env_token.as_deref())?;
        let config = Arc::new(config);
        let mut clusters = HashMap::new();
        let mut discoveries = Vec::new();
        for cc in &config.clusters {
            let cluster =
                Arc::new(Cluster::new(cc, metrics.clone()).map_err(|e| cluster_tls(&cc.name, e))?);
            let started =
                discovery::start(cc, cluster.clone(), &discovery_options).map_err(|source| {
                    StartError::Discovery {
                        cluster: cc.name.clone(),
                        source,
                    }
                })?;
            discoveries.extend(started);
            clusters.insert(cc.name.clone(), cluster);
        }
        // Every source resolves concurrently; this waits for the slowest,
        // bounded by one shared deadline.
        let deadline = tokio::time::Instant::now() + discovery_options.initial_wait;
        for d in &discoveries {
            d.wait_synced(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
        let tracer = match &config.tracing {
            Some(t) => Some(switchyard_telemetry::trace::Tracer::start(
                t,
                Some(metrics.spans()),
            )?),
            None => None,
        };
        let error_kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        let mut listeners = Vec::new();
        for lc in &config.listeners {
            let bind_err = |source| StartError::Bind {
                name: lc.name.clone(),
                addr: lc.listen,
                source,
            };
            let bound = match lc.protocol {
                ListenerProtocol::Http => {
                    let router = Router::new(&lc.name, &lc.routes, &clusters, &metrics)?;
                    let proxy = HttpProxy::new(
                        &lc.name,
                        router,
                        metrics.listener(&lc.name, &error_kinds),
                        config.log.access_log,
                    )
                    .with_tracer(tracer.clone())
                    .with_identity_header(
                        lc.tls.as_ref().and_then(|t| t.identity_header.as_deref()),
                    );
                    let tls = lc
                        .tls
                        .as_ref()
                        .map(|t| tls_acceptor(&lc.name, t))
                        .transpose()?;
                    Bound::Http {
                        listener: server::bind(lc.listen).map_err(bind_err)?,
                        proxy: Arc::new(proxy),
                        cfg: lc.http.clone(),
                        tls,
                        trusted: trusted(lc),
                    }
                }
                ListenerProtocol::Tcp | ListenerProtocol::Udp => {
                    let name = lc.cluster.as_deref().unwrap_or_default();
                    let cluster =
                        clusters
                            .get(name)
                            .cloned()
                            .ok_or_else(|| StartError::Listener {
                                name: lc.name.clone(),
                                what: format!("unknown cluster {name}"),
                            })?;
                    // Before anything serves: /clusters and /metrics show
                    // it as an L4 cluster from the start.
                    cluster.set_l4(if lc.protocol == ListenerProtocol::Tcp {
                        L4Protocol::Tcp
                    } else {
                        L4Protocol::Udp
                    });
                    if lc.protocol == ListenerProtocol::Tcp {
                        let tls = lc
                            .tls
                            .as_ref()
                            .map(|t| tls_acceptor(&lc.name, t))
                            .transpose()?;
                        Bound::Tcp {
                            listener: tcp::bind(lc.listen).map_err(bind_err)?,
                            cluster,
                            idle: lc.tcp_idle_timeout,
                            tls,
                            trusted: trusted(lc),
                        }
                    } else {
                        Bound::Udp {
                            socket: udp::bind(lc.listen).await.map_err(bind_err)?,
                            cluster,
                            session_timeout: lc.udp_session_timeout,
                        }
                    }
                }
            };
            let addr = match &bound {
                Bound::Http { listener, .. } | Bound::Tcp { listener, .. } => {
                    listener.local_addr().unwrap_or(lc.listen)
                }
                Bound::Udp { socket, .. } => socket.local_addr().unwrap_or(lc.listen),
            };
            listeners.push((lc.name.clone(), addr, bound));
        }
        let admin = switchyard_admin::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::BindAdmin {
                addr: config.admin.listen,
                source,
            })?;
        // In configuration order, which the admin API and dashboard show.
        let ordered = config
            .clusters
            .iter()
            .filter_map(|cc| clusters.get(&cc.name).cloned())
            .collect();
        let state = Arc::new(
            AdminState::new(config.clone(), ordered, metrics)
                .with_token(token)
                .with_listener_addrs(listeners.iter().map(|(n, a, _)| (n.clone(), *a)).collect()),
        );
        Ok(Self {
            config,
            admin,
            state,
            clusters,
            listeners,
            discoveries,
        })
    }

    /// Actual listener addresses (port 0 in the config becomes a real port).
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(n, a, _)| (n.clone(), *a))
            .collect()
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, a, _)| *a)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).cloned()
    }

    pub fn admin_state(&self) -> Arc<AdminState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains within the configured
    /// grace period. Returns whether every connection finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let grace = self.config.runtime.shutdown_grace;
        let (signal, watch) = drain::channel();
        let mut tasks = JoinSet::new();
        // Discovery keeps updating clusters until the proxy has drained.
        let _discoveries = self.discoveries;
        for (name, addr, bound) in self.listeners {
            let watch = watch.clone();
            match bound {
                Bound::Http {
                    listener,
                    proxy,
                    cfg,
                    tls,
                    trusted,
                } => {
                    info!(listener = %name, %addr, tls = tls.is_some(), proxy_protocol = trusted.is_some(), "serving http");
                    tasks.spawn(server::serve_http(
                        listener, proxy, cfg, tls, trusted, watch,
                    ));
                }
                Bound::Tcp {
                    listener,
                    cluster,
                    idle,
                    tls,
                    trusted,
                } => {
                    info!(listener = %name, %addr, cluster = cluster.name(), tls = tls.is_some(), proxy_protocol = trusted.is_some(), "serving tcp");
                    tasks.spawn(tcp::serve_tcp(listener, cluster, idle, tls, trusted, watch));
                }
                Bound::Udp {
                    socket,
                    cluster,
                    session_timeout,
                } => {
                    info!(listener = %name, %addr, cluster = cluster.name(), "serving udp");
                    tasks.spawn(udp::serve_udp(socket, cluster, session_timeout, watch));
                }
            }
        }
        // Active health checks, for clusters that configure them.
        for cluster in self.clusters.values() {
            if cluster.health_check().is_some() {
                tasks.spawn(switchyard_stack::cluster::health::run(
                    cluster.clone(),
                    watch.clone(),
                ));
            }
        }
        // Idle upstream connections are closed in the background so that they
        // do not hold file descriptors when traffic stops.
        for cluster in self.clusters.values() {
            let cluster = cluster.clone();
            let mut w = watch.clone();
            tasks.spawn(async move {
                let period = (cluster.idle_timeout() / 2).max(Duration::from_millis(100));
                let mut tick = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = tick.tick() => cluster.sweep(),
                        _ = w.signaled() => return,
                    }
                }
            });
        }
        drop(watch);
        let state = self.state.clone();
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_addr = self.admin.local_addr().ok();
        let admin = tokio::spawn(switchyard_admin::serve(self.admin, state.clone(), async {
            let _ = admin_stop_rx.await;
        }));
        info!(
            admin = admin_addr.map(tracing::field::display),
            "admin listening"
        );
        state.set_ready(true);

        shutdown.await;
        info!(grace = ?grace, "shutting down: draining connections");
        state.set_ready(false);
        let drained = tokio::time::timeout(grace, signal.drain()).await.is_ok();
        if !drained {
            warn!("grace period over with connections still open; closing them");
        }
        tasks.abort_all();
        let _ = admin_stop_tx.send(());
        let _ = admin.await;
        drained
    }
}

/// The TLS acceptor of listener `name`, or why its files cannot be used.
fn tls_acceptor(
    name: &str,
    tls: &switchyard_config::ListenerTls,
) -> Result<server::tls::TlsAcceptor, StartError> {
    server::tls::acceptor(tls).map_err(|source| StartError::Tls {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

/// The configuration's certificates (listeners', clusters' CAs and client
/// certificates) that end within [`server::tls::EXPIRY_WARNING`] or have
/// ended, each named by where it is used. `switchyard check` prints them
/// as warnings and the proxy logs them at start.
pub fn certificate_warnings(config: &Config) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let within = server::tls::EXPIRY_WARNING;
    let mut warnings = Vec::new();
    for lc in &config.listeners {
        for c in lc.tls.iter().flat_map(|t| &t.certificates) {
            if let Some(e) = server::tls::expiring(&c.cert, within, now) {
                warnings.push(format!("listener {}: {e}", lc.name));
            }
        }
    }
    for cc in &config.clusters {
        let Some(tls) = &cc.tls else { continue };
        for path in tls.ca.iter().chain(&tls.cert) {
            if let Some(e) = server::tls::expiring(path, within, now) {
                warnings.push(format!("cluster {}: {e}", cc.name));
            }
        }
    }
    warnings
}

/// Every check [`Proxy::bind`] makes before it binds anything, without
/// binding: the admin token rule, each listener's and cluster's TLS files
/// and each cluster's discovery settings. `switchyard check` runs it so that a
/// configuration it passes is one the proxy starts with. Needs a tokio
/// runtime context (the etcd client is built lazily on one).
pub fn preflight(config: &Config) -> Vec<StartError> {
    let mut errors = Vec::new();
    let env_token = std::env::var(switchyard_admin::TOKEN_ENV).ok();
    if let Err(e) = switchyard_admin::Token::resolve(&config.admin, env_token.as_deref()) {
        errors.push(StartError::AdminToken(e));
    }
    for lc in &config.listeners {
        if let Some(Err(e)) = lc.tls.as_ref().map(|t| tls_acceptor(&lc.name, t)) {
            errors.push(e);
        }
    }
    for cc in &config.clusters {
        if let Some(Err(e)) = cc
            .tls
            .as_ref()
            .map(|t| switchyard_stack::upstream::UpstreamTls::new(t, cc.protocol))
        {
            errors.push(cluster_tls(&cc.name, e));
        }
        if let Err(source) = discovery::source(cc) {
            errors.push(StartError::Discovery {
                cluster: cc.name.clone(),
                source,
            });
        }
    }
    errors
}
