//! One upstream endpoint: its address, load statistics and connection pool.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
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
    /// feed and dashboard.
    stats: Arc<LiveStats>,
}

impl Endpoint {
    pub fn new(
        addr: SocketAddr,
        weight: u32,
        settings: Arc<PoolSettings>,
        requests: Counter,
        stats: Arc<LiveStats>,
    ) -> Self {
        Self {
            addr,
            weight: weight.max(1),
            load: Load::new(DEFAULT_RTT, EWMA_DECAY),
            pool: Pool::new(addr, settings),
            accepting: AtomicBool::new(true),
            health: EndpointHealth::new(),
            requests,
            stats,
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
