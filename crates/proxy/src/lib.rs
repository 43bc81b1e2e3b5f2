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
//! - While it runs, [`Proxy::reloader`] (SIGHUP, `POST /reload`) applies a
//!   new configuration without a restart ([`reload`]); the parts of one
//!   generation are built in `parts.rs`.

/// Each cluster's discovery source, applied to the cluster (shared with
/// the library's client).
pub use switchyard_stack::cluster::discovery;
mod parts;
pub mod reload;

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::SystemTime};

use switchyard_admin::{AdminState, ReloadRequest, View};
use switchyard_config::Config;
use switchyard_stack::{cluster::Cluster, server};
use switchyard_telemetry::{Metrics, trace::Tracer};
use tokio::{net::TcpListener, sync::mpsc};
use tracing::{info, warn};

pub use discovery::DiscoveryOptions;
use parts::{ClusterEntry, ListenerEntry};
pub use reload::Loader;
pub use switchyard_admin::{ReloadChanges, ReloadOutcome, Reloader};

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

fn cluster_tls(cluster: &str, source: server::tls::TlsError) -> StartError {
    StartError::ClusterTls {
        cluster: cluster.to_owned(),
        source: Box::new(source),
    }
}

/// A proxy with every socket bound, ready to run.
pub struct Proxy {
    config: Arc<Config>,
    /// Taken by the admin server when the proxy runs.
    admin: Option<TcpListener>,
    admin_addr: SocketAddr,
    state: Arc<AdminState>,
    metrics: Arc<Metrics>,
    discovery_options: DiscoveryOptions,
    tracer: Option<Arc<Tracer>>,
    /// By name; each holds its running discovery, which stops when dropped.
    clusters: HashMap<String, ClusterEntry>,
    /// In configuration order.
    listeners: Vec<ListenerEntry>,
    generation: u64,
    /// Reads the configuration again for a reload; without one a reload
    /// is refused.
    loader: Option<Loader>,
    reloader: Reloader,
    reloads: mpsc::Receiver<ReloadRequest>,
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
        let tracer = match &config.tracing {
            Some(t) => Some(Tracer::start(t, Some(metrics.spans()))?),
            None => None,
        };
        let staged = parts::stage(
            &config,
            &HashMap::new(),
            &[],
            &metrics,
            &discovery_options,
            tracer.clone(),
        )
        .await?;
        let admin = switchyard_admin::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::BindAdmin {
                addr: config.admin.listen,
                source,
            })?;
        let (clusters, listeners) = staged.into_first();
        let (reloader, reloads) = Reloader::channel();
        let state = Arc::new(
            AdminState::new(config.clone(), ordered(&config, &clusters), metrics.clone())
                .with_token(token)
                .with_listener_addrs(listener_addrs(&listeners))
                .with_reloader(reloader.clone()),
        );
        let admin_addr = admin.local_addr().unwrap_or(config.admin.listen);
        Ok(Self {
            config,
            admin: Some(admin),
            admin_addr,
            state,
            metrics,
            discovery_options,
            tracer,
            clusters,
            listeners,
            generation: 1,
            loader: None,
            reloader,
            reloads,
        })
    }

    /// Where a reload reads the configuration from (the binary passes one
    /// that reads and validates the configuration file again).
    pub fn with_loader(mut self, loader: Loader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Asks the running proxy to reload; SIGHUP and `POST /reload` use one.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Actual listener addresses (port 0 in the config becomes a real port).
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        listener_addrs(&self.listeners)
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name() == name)
            .map(ListenerEntry::addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(name).map(|c| c.cluster.clone())
    }

    pub fn admin_state(&self) -> Arc<AdminState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains within the configured
    /// grace period. Returns whether every connection finished in time.
    /// Reload requests are applied one at a time in between.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> bool {
        for listener in &mut self.listeners {
            listener.start();
        }
        // Active health checks and idle-connection sweeps.
        for cluster in self.clusters.values_mut() {
            cluster.start();
        }
        let state = self.state.clone();
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin = self.admin.take().map(|listener| {
            tokio::spawn(switchyard_admin::serve(listener, state.clone(), async {
                let _ = admin_stop_rx.await;
            }))
        });
        info!(admin = %self.admin_addr, "admin listening");
        state.set_ready(true);
        // Listeners a reload removed, finishing their connections.
        let mut retired = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(request) = self.reloads.recv() => {
                    let outcome = self.reload(&mut retired).await;
                    let _ = request.reply.send(outcome);
                }
                Some(_) = retired.join_next() => {}
            }
        }
        // No reload starts once draining has begun.
        self.reloads.close();
        let grace = self.config.runtime.shutdown_grace;
        info!(grace = ?grace, "shutting down: draining connections");
        state.set_ready(false);
        // Every listener drains at once, alongside any a reload retired.
        for listener in std::mem::take(&mut self.listeners) {
            retired.spawn(listener.drain(grace));
        }
        let mut drained = true;
        while let Some(done) = retired.join_next().await {
            drained &= done.unwrap_or(false);
        }
        if !drained {
            warn!("grace period over with connections still open; closing them");
        }
        let _ = admin_stop_tx.send(());
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        drained
    }

    /// The admin view of what serves now.
    fn publish(&self) {
        self.state.publish(View {
            config: self.config.clone(),
            clusters: ordered(&self.config, &self.clusters),
            listeners: listener_addrs(&self.listeners),
            generation: self.generation,
            loaded_at: SystemTime::now(),
        });
    }
}

/// Clusters in configuration order, which the admin API and dashboard show.
fn ordered(config: &Config, clusters: &HashMap<String, ClusterEntry>) -> Vec<Arc<Cluster>> {
    config
        .clusters
        .iter()
        .filter_map(|cc| clusters.get(&cc.name).map(|c| c.cluster.clone()))
        .collect()
}

fn listener_addrs(listeners: &[ListenerEntry]) -> Vec<(String, SocketAddr)> {
    listeners
        .iter()
        .map(|l| (l.name().to_owned(), l.addr()))
        .collect()
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
        if let Err(source) = discovery::check(cc) {
            errors.push(StartError::Discovery {
                cluster: cc.name.clone(),
                source,
            });
        }
    }
    errors
}
