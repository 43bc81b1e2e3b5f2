//! The parts one configuration generation runs on — clusters with their
//! discovery and background checks, listeners with their sockets and what
//! they serve — and how a new generation is staged on top of the running
//! one.
//!
//! Staging ([`stage`]) does everything that can fail (TLS files, discovery
//! settings, routes naming clusters, binding new sockets) without touching
//! what serves; [`Staged::commit`] then only swaps and starts, so a reload
//! applies whole or not at all.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use switchyard_admin::ReloadChanges;
use switchyard_config::{ClusterConfig, Config, ListenerConfig, ListenerProtocol};
use switchyard_stack::{
    cluster::{Cluster, L4Protocol},
    drain,
    error::ErrorKind,
    proxy::HttpProxy,
    route::Router,
    server::{self, HttpSite, proxy_protocol::Trusted},
    tcp::{self, TcpSite},
    udp::{self, UdpSite},
};
use switchyard_telemetry::{Metrics, trace::Tracer};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::{JoinHandle, JoinSet},
};
use tracing::info;

use crate::{
    DiscoveryOptions, StartError, cluster_tls,
    discovery::{self, ClusterDiscovery},
    tls_acceptor,
};

/// A cluster, its discovery and its background tasks.
#[derive(Debug)]
pub(crate) struct ClusterEntry {
    /// The generation that configures it and its place there, moved to each
    /// new generation that keeps the cluster (so no old one is kept alive):
    /// a sidecar may know thousands of clusters, whose configuration is not
    /// copied.
    generation: Arc<Config>,
    index: usize,
    pub cluster: Arc<Cluster>,
    /// Stops when dropped.
    _discovery: Option<ClusterDiscovery>,
    /// Dropping it ends the cluster's health checks and idle sweeps.
    stop: Option<drain::Signal>,
}

impl ClusterEntry {
    pub fn config(&self) -> &ClusterConfig {
        &self.generation.clusters[self.index]
    }

    /// Starts active health checks (for clusters that configure them) and
    /// the sweep that closes idle upstream connections, so that they do not
    /// hold file descriptors when traffic stops.
    pub fn start(&mut self) {
        if self.stop.is_some() {
            return;
        }
        self.stop = Some(switchyard_stack::cluster::health::start_upkeep(
            &self.cluster,
        ));
    }
}

/// What a listener serves, swapped whole by a reload.
enum Site {
    Http(Arc<ArcSwap<HttpSite>>),
    Tcp(Arc<ArcSwap<TcpSite>>),
    Udp(Arc<ArcSwap<UdpSite>>),
}

/// A listener's site as built from one generation, not yet serving.
enum SiteValue {
    Http(HttpSite),
    Tcp(TcpSite),
    Udp(UdpSite),
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A listener: its socket, what it serves and, once started, its task.
pub(crate) struct ListenerEntry {
    /// The generation that configures it and its place there: a listener's
    /// configuration (perhaps 100,000 routes) is not copied.
    generation: Arc<Config>,
    index: usize,
    addr: SocketAddr,
    site: Site,
    /// Bound but not serving yet; taken by [`ListenerEntry::start`].
    socket: Option<Socket>,
    serving: Option<(drain::Signal, JoinHandle<()>)>,
}

impl ListenerEntry {
    pub fn name(&self) -> &str {
        &self.config().name
    }

    fn config(&self) -> &ListenerConfig {
        &self.generation.listeners[self.index]
    }

    /// The bound address (port 0 in the config becomes a real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn bind(
        generation: &Arc<Config>,
        index: usize,
        value: SiteValue,
    ) -> Result<Self, StartError> {
        let lc = &generation.listeners[index];
        let bind_err = |source| StartError::Bind {
            name: lc.name.clone(),
            addr: lc.listen,
            source,
        };
        let (socket, site) = match value {
            SiteValue::Http(v) => (
                Socket::Tcp(server::bind(lc.listen).map_err(bind_err)?),
                Site::Http(Arc::new(ArcSwap::from_pointee(v))),
            ),
            SiteValue::Tcp(v) => (
                Socket::Tcp(tcp::bind(lc.listen).map_err(bind_err)?),
                Site::Tcp(Arc::new(ArcSwap::from_pointee(v))),
            ),
            SiteValue::Udp(v) => (
                Socket::Udp(udp::bind(lc.listen).await.map_err(bind_err)?),
                Site::Udp(Arc::new(ArcSwap::from_pointee(v))),
            ),
        };
        let addr = match &socket {
            Socket::Tcp(l) => l.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        }
        .unwrap_or(lc.listen);
        Ok(Self {
            generation: generation.clone(),
            index,
            addr,
            site,
            socket: Some(socket),
            serving: None,
        })
    }

    /// Starts serving its socket, under a drain signal of its own so that
    /// a reload can retire it alone.
    pub fn start(&mut self) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let (signal, watch) = drain::channel();
        let (name, addr) = (self.name(), self.addr);
        let task = match (&self.site, socket) {
            (Site::Http(site), Socket::Tcp(listener)) => {
                let s = site.load();
                info!(listener = %name, %addr, tls = s.tls.is_some(), proxy_protocol = s.trusted.is_some(), "serving http");
                tokio::spawn(server::serve_http(listener, site.clone(), watch))
            }
            (Site::Tcp(site), Socket::Tcp(listener)) => {
                let s = site.load();
                info!(listener = %name, %addr, cluster = s.cluster.name(), tls = s.tls.is_some(), proxy_protocol = s.trusted.is_some(), "serving tcp");
                tokio::spawn(tcp::serve_tcp(listener, site.clone(), watch))
            }
            (Site::Udp(site), Socket::Udp(socket)) => {
                info!(listener = %name, %addr, cluster = site.load().cluster.name(), "serving udp");
                tokio::spawn(udp::serve_udp(socket, site.clone(), watch))
            }
            // `bind` pairs each site with its kind of socket.
            _ => unreachable!("a listener's site and socket are of one protocol"),
        };
        self.serving = Some((signal, task));
    }

    /// Stops accepting and waits up to `grace` for its connections (HTTP/2
    /// gets GOAWAY, HTTP/1.1 closes after the response in flight); then
    /// closes what is left. Returns whether they all finished in time.
    pub async fn drain(self, grace: Duration) -> bool {
        let Some((signal, task)) = self.serving else {
            return true;
        };
        let drained = tokio::time::timeout(grace, signal.drain()).await.is_ok();
        // Owns the connections: aborting it closes those still open.
        task.abort();
        drained
    }

    /// Serves `value` from now on: new connections (and, for HTTP, new
    /// requests on open ones) use it; what is in flight keeps the old one.
    fn swap(&mut self, generation: &Arc<Config>, index: usize, value: SiteValue) {
        match (&self.site, value) {
            (Site::Http(site), SiteValue::Http(v)) => site.store(Arc::new(v)),
            (Site::Tcp(site), SiteValue::Tcp(v)) => site.store(Arc::new(v)),
            (Site::Udp(site), SiteValue::Udp(v)) => site.store(Arc::new(v)),
            // A listener is kept only when its protocol stays.
            _ => unreachable!("a kept listener keeps its protocol"),
        }
        self.generation = generation.clone();
        self.index = index;
    }
}

/// The sources a listener reads PROXY protocol headers from.
fn trusted(lc: &ListenerConfig) -> Option<Trusted> {
    lc.proxy_protocol
        .as_ref()
        .map(|p| Trusted::new(p.trusted.clone()))
}

/// What listener `lc` serves in this generation.
fn site(
    lc: &ListenerConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    metrics: &Arc<Metrics>,
    tracer: Option<&Arc<Tracer>>,
    access_log: bool,
) -> Result<SiteValue, StartError> {
    let tls = lc
        .tls
        .as_ref()
        .map(|t| tls_acceptor(&lc.name, t))
        .transpose()?;
    if lc.protocol == ListenerProtocol::Http {
        let error_kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        let router = Router::new(&lc.name, &lc.routes, clusters, metrics)?;
        let proxy = HttpProxy::new(
            &lc.name,
            router,
            metrics.listener(&lc.name, &error_kinds),
            access_log,
        )
        .with_tracer(tracer.cloned())
        .with_identity_header(lc.tls.as_ref().and_then(|t| t.identity_header.as_deref()));
        return Ok(SiteValue::Http(HttpSite {
            proxy: Arc::new(proxy),
            cfg: lc.http.clone(),
            tls,
            trusted: trusted(lc),
        }));
    }
    let name = lc.cluster.as_deref().unwrap_or_default();
    let cluster = clusters
        .get(name)
        .cloned()
        .ok_or_else(|| StartError::Listener {
            name: lc.name.clone(),
            what: format!("unknown cluster {name}"),
        })?;
    // Before anything serves: /clusters and /metrics show it as an L4
    // cluster from the start.
    Ok(if lc.protocol == ListenerProtocol::Tcp {
        cluster.set_l4(L4Protocol::Tcp);
        SiteValue::Tcp(TcpSite {
            cluster,
            idle_timeout: lc.tcp_idle_timeout,
            tls,
            trusted: trusted(lc),
        })
    } else {
        cluster.set_l4(L4Protocol::Udp);
        SiteValue::Udp(UdpSite {
            cluster,
            session_timeout: lc.udp_session_timeout,
        })
    })
}

enum StagedListener {
    /// The running listener at this index keeps its socket.
    Keep {
        /// Where it runs now, and where the new generation has it.
        index: usize,
        staged: usize,
        value: SiteValue,
    },
    New(ListenerEntry),
}

/// A generation built and bound, not yet serving.
pub(crate) struct Staged {
    generation: Arc<Config>,
    /// In configuration order; `None` keeps the running cluster as it is.
    clusters: Vec<(String, usize, Option<ClusterEntry>)>,
    listeners: Vec<StagedListener>,
    pub changes: ReloadChanges,
}

/// Whether the running listener `old` can serve `new` on its socket.
fn keeps_socket(old: &ListenerConfig, new: &ListenerConfig) -> bool {
    old.name == new.name && old.listen == new.listen && old.protocol == new.protocol
}

/// Builds `config`'s generation over the running one (empty at start):
/// clusters whose configuration is unchanged are kept as they are (state,
/// discovery, connections); changed ones are rebuilt and, when they still
/// connect the same way, take over the running endpoints with their state;
/// listeners that keep their name, address and protocol keep their socket;
/// new ones are bound here, so a port in use refuses the whole generation.
pub(crate) async fn stage(
    config: &Arc<Config>,
    clusters: &HashMap<String, ClusterEntry>,
    listeners: &[ListenerEntry],
    metrics: &Arc<Metrics>,
    options: &DiscoveryOptions,
    tracer: Option<Arc<Tracer>>,
) -> Result<Staged, StartError> {
    let mut changes = ReloadChanges::default();
    let mut by_name = HashMap::with_capacity(config.clusters.len());
    let mut staged_clusters = Vec::with_capacity(config.clusters.len());
    for (index, cc) in config.clusters.iter().enumerate() {
        let running = clusters.get(&cc.name);
        if let Some(entry) = running.filter(|e| e.config() == cc) {
            by_name.insert(cc.name.clone(), entry.cluster.clone());
            staged_clusters.push((cc.name.clone(), index, None));
            continue;
        }
        let mut cluster =
            Cluster::new(cc, metrics.clone()).map_err(|e| cluster_tls(&cc.name, e))?;
        match running {
            Some(entry) => {
                if Cluster::connects_alike(entry.config(), cc) {
                    cluster.adopt_endpoints(&entry.cluster);
                }
                changes.clusters_updated.push(cc.name.clone());
            }
            None => changes.clusters_added.push(cc.name.clone()),
        }
        let cluster = Arc::new(cluster);
        let started = discovery::start(cc, cluster.clone(), options).map_err(|source| {
            StartError::Discovery {
                cluster: cc.name.clone(),
                source,
            }
        })?;
        by_name.insert(cc.name.clone(), cluster.clone());
        staged_clusters.push((
            cc.name.clone(),
            index,
            Some(ClusterEntry {
                generation: config.clone(),
                index,
                cluster,
                _discovery: started,
                stop: None,
            }),
        ));
    }
    changes.clusters_removed = clusters
        .keys()
        .filter(|name| !by_name.contains_key(*name))
        .cloned()
        .collect();
    changes.clusters_removed.sort();
    // Every new source resolves concurrently; this waits for the slowest,
    // bounded by one shared deadline. A rebuilt cluster that took over its
    // endpoints serves them meanwhile, so it is not waited for.
    let deadline = tokio::time::Instant::now() + options.initial_wait;
    for (_, _, entry) in &staged_clusters {
        let Some(entry) = entry else { continue };
        if let Some(d) = &entry._discovery
            && entry.cluster.endpoints().is_empty()
        {
            d.wait_synced(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
    }

    // Addresses of running listeners this generation does not keep: they
    // stay bound until it serves, so a new listener cannot take them over.
    let kept: Vec<usize> = config
        .listeners
        .iter()
        .filter_map(|lc| listeners.iter().position(|l| keeps_socket(l.config(), lc)))
        .collect();
    let mut staged_listeners = Vec::with_capacity(config.listeners.len());
    for (staged, lc) in config.listeners.iter().enumerate() {
        let value = site(
            lc,
            &by_name,
            metrics,
            tracer.as_ref(),
            config.log.access_log,
        )?;
        if let Some(index) = listeners.iter().position(|l| keeps_socket(l.config(), lc)) {
            if listeners[index].config() != lc {
                changes.listeners_updated.push(lc.name.clone());
            }
            staged_listeners.push(StagedListener::Keep {
                index,
                staged,
                value,
            });
            continue;
        }
        let udp = lc.protocol == ListenerProtocol::Udp;
        if let Some((_, busy)) = listeners.iter().enumerate().find(|(i, l)| {
            !kept.contains(i)
                && lc.listen.port() != 0
                && l.config().listen == lc.listen
                && (l.config().protocol == ListenerProtocol::Udp) == udp
        }) {
            return Err(StartError::Listener {
                name: lc.name.clone(),
                what: format!(
                    "{} is still served by listener {} until this configuration serves; \
                     keep that listener's name and protocol to change it in place, or use another address",
                    lc.listen,
                    busy.name()
                ),
            });
        }
        changes.listeners_added.push(lc.name.clone());
        staged_listeners.push(StagedListener::New(
            ListenerEntry::bind(config, staged, value).await?,
        ));
    }
    changes.listeners_removed = listeners
        .iter()
        .enumerate()
        .filter(|(i, _)| !kept.contains(i))
        .map(|(_, l)| l.name().to_owned())
        .collect();
    Ok(Staged {
        generation: config.clone(),
        clusters: staged_clusters,
        listeners: staged_listeners,
        changes,
    })
}

impl Staged {
    /// The first generation's parts, not yet serving.
    pub fn into_first(self) -> (HashMap<String, ClusterEntry>, Vec<ListenerEntry>) {
        let clusters = self
            .clusters
            .into_iter()
            .filter_map(|(name, _, entry)| entry.map(|e| (name, e)))
            .collect();
        let listeners = self
            .listeners
            .into_iter()
            .filter_map(|l| match l {
                StagedListener::New(entry) => Some(entry),
                StagedListener::Keep { .. } => None,
            })
            .collect();
        (clusters, listeners)
    }

    /// Makes this generation serve. Nothing here can fail: kept listeners
    /// swap what they serve, new ones start, removed ones stop accepting
    /// and drain in `retired` (up to `grace`), and clusters no longer named
    /// stop their discovery and checks (requests in flight on them finish).
    pub fn commit(
        self,
        clusters: &mut HashMap<String, ClusterEntry>,
        listeners: &mut Vec<ListenerEntry>,
        grace: Duration,
        metrics: &Metrics,
        retired: &mut JoinSet<bool>,
    ) {
        let mut previous = std::mem::take(clusters);
        for (name, index, entry) in self.clusters {
            let entry = match entry {
                Some(mut entry) => {
                    entry.start();
                    entry
                }
                None => match previous.remove(&name) {
                    Some(mut entry) => {
                        entry.generation = self.generation.clone();
                        entry.index = index;
                        entry
                    }
                    None => unreachable!("a kept cluster is running"),
                },
            };
            clusters.insert(name, entry);
        }
        // What is left in `previous` was removed: it stops here, and its
        // gauges leave /metrics.
        for (name, entry) in previous {
            let endpoints: Vec<String> = entry
                .cluster
                .snapshot()
                .endpoints
                .iter()
                .map(|e| e.address.to_string())
                .collect();
            metrics.forget_cluster(&name, endpoints.iter().map(String::as_str));
        }
        let mut previous: Vec<Option<ListenerEntry>> =
            std::mem::take(listeners).into_iter().map(Some).collect();
        for staged in self.listeners {
            match staged {
                StagedListener::Keep {
                    index,
                    staged,
                    value,
                } => {
                    let Some(mut entry) = previous.get_mut(index).and_then(Option::take) else {
                        unreachable!("a running listener is kept once");
                    };
                    entry.swap(&self.generation, staged, value);
                    listeners.push(entry);
                }
                StagedListener::New(mut entry) => {
                    entry.start();
                    listeners.push(entry);
                }
            }
        }
        for entry in previous.into_iter().flatten() {
            info!(listener = %entry.name(), addr = %entry.addr(), "listener removed by a reload: draining");
            retired.spawn(entry.drain(grace));
        }
    }
}
