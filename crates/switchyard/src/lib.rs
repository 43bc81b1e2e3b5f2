//! Switchyard for Rust services: the proxy's client stack as a library.
//!
//! A [`Client`] sends requests to a cluster of endpoints through the same
//! balancing, pooling and error classification as `switchyard proxy`, so a
//! Rust service gets the proxy's behaviour without a sidecar hop.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = switchyard::config::parse(
//!     r#"
//!     [[clusters]]
//!     name = "api"
//!     discovery = { static = ["127.0.0.1:9001", "127.0.0.1:9002"] }
//!     "#,
//!     "client.toml",
//! )?;
//! let client = switchyard::Client::new(&config.clusters[0]);
//! let req = http::Request::get("/users/7").body(switchyard::Body::empty())?;
//! let resp = client.send(req).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Client`]: a cluster client built from a [`config::ClusterConfig`].
//! - [`registry`]: self-registration — register, heartbeat in the
//!   background, drain and deregister on shutdown
//!   ([`registry::Registration`]).
//! - [`discovery`]: the discovery sources (registry, DNS, etcd) for
//!   services that follow a cluster themselves.
//! - [`config`], [`balance`], [`stack`], [`proxy`]: the underlying crates,
//!   re-exported for services that embed a whole proxy or build their own.

use std::sync::Arc;

use http::{Request, Response, header::HOST};

pub use switchyard_balance as balance;
pub use switchyard_config as config;
pub use switchyard_discovery as discovery;
pub use switchyard_proxy as proxy;
pub use switchyard_registry::client as registry;
pub use switchyard_stack as stack;
pub use switchyard_stack::{Body, ErrorKind, ProxyError};

use switchyard_config::{ClusterConfig, Discovery};
use switchyard_stack::cluster::{Cluster, EndpointSpec};

/// Sends requests to one cluster, balancing over its endpoints.
#[derive(Clone, Debug)]
pub struct Client {
    cluster: Arc<Cluster>,
}

impl Client {
    /// A client for a cluster with static discovery; other discovery sources
    /// start with an empty set that [`Client::update`] fills.
    pub fn new(config: &ClusterConfig) -> Self {
        let metrics = Arc::new(switchyard_telemetry::Metrics::new());
        let cluster = Arc::new(Cluster::new(config, metrics));
        if let Discovery::Static(eps) = &config.discovery {
            let specs: Vec<EndpointSpec> = eps
                .iter()
                .map(|e| EndpointSpec {
                    addr: e.address,
                    weight: e.weight,
                    draining: false,
                })
                .collect();
            cluster.update(&specs);
        }
        Self { cluster }
    }

    /// Replaces the endpoint set; endpoints that stay keep their state.
    pub fn update(&self, endpoints: &[EndpointSpec]) {
        self.cluster.update(endpoints);
    }

    /// Sends a request to one endpoint of the cluster. A request without a
    /// `Host` header gets the cluster's name, so virtual hosting works.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        if !req.headers().contains_key(HOST) && req.uri().authority().is_none() {
            if let Ok(v) = http::HeaderValue::from_str(self.cluster.name()) {
                req.headers_mut().insert(HOST, v);
            }
        }
        self.cluster.send(req, None).await
    }

    /// The underlying cluster, for inspection (`snapshot()`).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}
