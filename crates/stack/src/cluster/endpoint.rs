//! One upstream endpoint: its address, load statistics and connection pool.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use switchyard_balance::{Load, Target};
use switchyard_policy::EndpointHealth;
use switchyard_telemetry::live::LiveStats;

use crate::upstream::{Pool, PoolSettings};

/// Latency assumed for an endpoint before any response was observed: high
/// enough that a new endpoint is not flooded before its real latency is
/// known, low enough that it gets traffic at once (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the peak-EWMA forgets a latency spike (Linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// An endpoint of a cluster, shared between the balancer and in-flight
/// requests; kept across discovery updates so its statistics survive.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    weight: u32,
    load: Load,
    pool: Pool,
    /// False while the endpoint is draining, so it receives no new requests.
    accepting: AtomicBool,
    /// Passive ejection and active health-check state.
    health: EndpointHealth,
    requests: Counter,
    /// Recent request rate, latency percentiles and errors, for the live
    /// feed and dashboard (read through the cluster's snapshot). Owned: an
    /// endpoint that leaves takes them along.
    stats: LiveStats,
    /// Connections, sessions and bytes, for endpoints of clusters that tcp
    /// or udp listeners use; attached when the cluster learns that role.
    l4: OnceLock<L4Stats>,
}

/// What an L4 listener moved through one endpoint.
#[derive(Debug)]
pub struct L4Stats {
    connections: AtomicU64,
    sessions: AtomicU64,
    /// `switchyard_endpoint_bytes_total{direction="rx"}`: received from the
    /// endpoint.
    rx: Counter,
    /// `direction="tx"`: sent to the endpoint.
    tx: Counter,
}

impl L4Stats {
    /// TCP connections proxied to the endpoint.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// UDP sessions (client flows) pinned to the endpoint.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Bytes received from the endpoint.
    pub fn rx(&self) -> u64 {
        self.rx.get()
    }

    /// Bytes sent to the endpoint.
    pub fn tx(&self) -> u64 {
        self.tx.get()
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.rx.inc_by(bytes as u64);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.tx.inc_by(bytes as u64);
    }
}

impl Endpoint {
    /// Where a new endpoint's latency estimate starts: the mean of the
    /// estimates of (up to 64 of) the endpoints already there, or 30 ms in
    /// a new cluster. A sample, so that a discovery update of a
    /// 10,000-endpoint cluster does not read every estimate. Seeded with the fixed 30 ms, an endpoint added to a cluster
    /// answering in a few milliseconds lost nearly every power-of-two pick
    /// until the seed decayed (tens of seconds): a scale-out took almost no
    /// traffic. Seeded with its peers' mean, it gets its share at once and
    /// its own answers move the estimate from there.
    pub fn seed_rtt<'a>(peers: impl IntoIterator<Item = &'a Arc<Endpoint>>) -> Duration {
        let (sum, n) = peers
            .into_iter()
            .take(64)
            .fold((Duration::ZERO, 0u32), |(sum, n), ep| {
                (sum + ep.load.ewma(), n + 1)
            });
        if n == 0 { DEFAULT_RTT } else { sum / n }
    }

    /// An endpoint whose latency estimate starts at `rtt` (see
    /// [`Endpoint::seed_rtt`]).
    pub fn new(
        addr: SocketAddr,
        weight: u32,
        settings: Arc<PoolSettings>,
        requests: Counter,
        rtt: Duration,
    ) -> Self {
        Self {
            addr,
            weight: weight.max(1),
            load: Load::new(rtt, EWMA_DECAY),
            pool: Pool::new(addr, settings),
            accepting: AtomicBool::new(true),
            health: EndpointHealth::new(),
            requests,
            stats: LiveStats::default(),
            l4: OnceLock::new(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    pub fn health(&self) -> &EndpointHealth {
        &self.health
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    pub(crate) fn count_request(&self) {
        self.requests.inc();
    }

    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Gives the endpoint its byte counters `[rx, tx]` once its cluster is
    /// known to serve a tcp or udp listener; later calls keep the first.
    pub(crate) fn attach_l4(&self, bytes: impl FnOnce() -> [Counter; 2]) {
        self.l4.get_or_init(|| {
            let [rx, tx] = bytes();
            L4Stats {
                connections: AtomicU64::new(0),
                sessions: AtomicU64::new(0),
                rx,
                tx,
            }
        });
    }

    /// The endpoint's L4 figures, if its cluster serves a tcp or udp
    /// listener.
    pub fn l4(&self) -> Option<&L4Stats> {
        self.l4.get()
    }

    /// Counts a TCP connection proxied to the endpoint: one request in
    /// `switchyard_endpoint_requests_total`.
    pub(crate) fn count_connection(&self) {
        self.requests.inc();
        if let Some(l4) = self.l4() {
            l4.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a UDP session pinned to the endpoint: one request in
    /// `switchyard_endpoint_requests_total`.
    pub(crate) fn count_session(&self) {
        self.requests.inc();
        if let Some(l4) = self.l4() {
            l4.sessions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Target for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn weight(&self) -> u32 {
        self.weight
    }

    fn load(&self) -> &Load {
        &self.load
    }

    fn available(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && self.health.available()
    }
}
