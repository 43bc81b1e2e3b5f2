//! Clusters: a balancer over a live set of endpoints.
//!
//! The cluster picks an endpoint, lends the request to that endpoint's pool,
//! feeds the observed latency back to the balancer and ties the endpoint's
//! in-flight count to the response body.

mod endpoint;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use http::{Request, Response};
use serde::Serialize;
use switchyard_balance::{Balancer, BalancerConfig, Pick, Strategy, Target};
use switchyard_config::{BalanceStrategy, ClusterConfig, HashOn};
use switchyard_telemetry::Metrics;
use tokio::time::Instant;

pub use endpoint::Endpoint;

use crate::{
    body::Body,
    error::{ErrorKind, ProxyError},
    upstream::{PoolSettings, ResponseGuard},
};

/// A named set of interchangeable endpoints and how to reach them.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    balancer: Balancer<Endpoint>,
    settings: Arc<PoolSettings>,
    hash_on: Option<HashOn>,
    metrics: Arc<Metrics>,
    /// Every endpoint by address, so that an update keeps the `Arc` (and thus
    /// the load statistics and pooled connections) of endpoints that stay.
    /// Only touched by updates, never on the request path.
    members: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
}

/// A discovered endpoint: where it is and its share of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    pub weight: u32,
}

impl Cluster {
    pub fn new(config: &ClusterConfig, metrics: Arc<Metrics>) -> Self {
        let settings = Arc::new(PoolSettings {
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle: config.max_idle_per_endpoint,
        });
        let balancer = Balancer::new(BalancerConfig {
            strategy: strategy(config.balance),
            ..BalancerConfig::default()
        });
        Self {
            name: Arc::from(config.name.as_str()),
            balancer,
            settings,
            hash_on: config.hash.clone(),
            metrics,
            members: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> switchyard_config::UpstreamProtocol {
        self.settings.protocol
    }

    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    /// Replaces the endpoint set. Endpoints that stay keep their state;
    /// removed ones finish their in-flight requests (the requests hold an
    /// `Arc`) and receive no new ones.
    pub fn update(&self, specs: &[EndpointSpec]) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(specs.len());
        let mut list = Vec::with_capacity(specs.len());
        for spec in specs {
            let ep = match members.get(&spec.addr) {
                Some(ep) if ep.weight() == spec.weight.max(1) => ep.clone(),
                _ => Arc::new(Endpoint::new(
                    spec.addr,
                    spec.weight,
                    self.settings.clone(),
                    self.metrics
                        .endpoint_requests(&self.name, &spec.addr.to_string()),
                )),
            };
            next.insert(spec.addr, ep.clone());
            list.push(ep);
        }
        for addr in members.keys() {
            if !next.contains_key(addr) {
                self.metrics.forget_endpoint(&self.name, &addr.to_string());
            }
        }
        *members = next;
        self.balancer.update(list);
    }

    /// Picks an endpoint, preferring ones not in `avoid`.
    pub fn pick(
        &self,
        hash: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Result<Arc<Endpoint>, ProxyError> {
        self.balancer
            .pick(&Pick { hash, avoid })
            .ok_or_else(|| ProxyError::new(ErrorKind::NoEndpoints))
    }

    /// Sends one attempt of a request to one endpoint of this cluster.
    pub async fn send_to(
        &self,
        endpoint: &Arc<Endpoint>,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let in_flight = endpoint.load().start();
        endpoint.count_request();
        let started = Instant::now();
        match endpoint.pool().send(req).await {
            Ok((resp, checkin)) => {
                endpoint.load().observe(started.elapsed());
                let (parts, body) = resp.into_parts();
                let body = Body::upstream(body, ResponseGuard::new(checkin, in_flight));
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                // A failure is a strong signal: record it as a slow response
                // so that peak-EWMA steers away until the endpoint recovers.
                if e.kind().blames_endpoint() {
                    endpoint
                        .load()
                        .observe(started.elapsed().max(FAILURE_PENALTY));
                }
                Err(e)
            }
        }
    }

    /// Picks an endpoint and sends the request there.
    pub async fn send(
        &self,
        req: Request<Body>,
        hash: Option<u64>,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = self.pick(hash, &[])?;
        self.send_to(&endpoint, req).await
    }

    /// Closes idle upstream connections past their idle timeout.
    pub fn sweep(&self) {
        for ep in self.balancer.endpoints().iter() {
            ep.pool().sweep();
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.settings.connect_timeout
    }

    pub fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }

    /// A point-in-time view for the admin API and metrics.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let endpoints = self
            .balancer
            .endpoints()
            .iter()
            .map(|ep| EndpointSnapshot {
                address: ep.addr(),
                weight: ep.weight(),
                state: if ep.available() { "active" } else { "draining" },
                in_flight: ep.load().in_flight(),
                latency_ewma_ms: ep.load().ewma().as_secs_f64() * 1000.0,
                requests: ep.requests(),
                connections_open: ep.pool().open_connections(),
                connections_idle: ep.pool().idle_connections(),
            })
            .collect();
        ClusterSnapshot {
            name: self.name.to_string(),
            balance: format!("{:?}", self.balancer.strategy()),
            protocol: match self.settings.protocol {
                switchyard_config::UpstreamProtocol::Http1 => "http1",
                switchyard_config::UpstreamProtocol::Http2 => "http2",
            },
            endpoints,
        }
    }
}

/// Latency recorded for a failed attempt: large enough to push peak-EWMA's
/// cost of the endpoint above healthy peers for several seconds.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

fn strategy(b: BalanceStrategy) -> Strategy {
    match b {
        BalanceStrategy::RoundRobin => Strategy::RoundRobin,
        BalanceStrategy::LeastRequest => Strategy::LeastRequest,
        BalanceStrategy::Random => Strategy::Random,
        BalanceStrategy::RingHash => Strategy::RingHash,
        BalanceStrategy::Maglev => Strategy::Maglev,
        BalanceStrategy::P2cPeakEwma => Strategy::PeakEwma,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterSnapshot {
    pub name: String,
    pub balance: String,
    pub protocol: &'static str,
    pub endpoints: Vec<EndpointSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointSnapshot {
    pub address: SocketAddr,
    pub weight: u32,
    pub state: &'static str,
    pub in_flight: u32,
    pub latency_ewma_ms: f64,
    pub requests: u64,
    pub connections_open: usize,
    pub connections_idle: usize,
}
