//! Routing: the first route whose match holds picks the destination and the
//! policy for a request.

mod index;
mod matcher;

use std::{collections::HashMap, sync::Arc};

use http::Request;
use switchyard_config::{Destination, RouteConfig};
use switchyard_telemetry::{Metrics, RouteMetrics};

pub use matcher::{Matcher, request_host};

use crate::{call::CallPolicy, cluster::Cluster, proxy::fault::Faults};

/// The ordered routes of one HTTP listener.
#[derive(Debug)]
pub struct Router {
    routes: Box<[Route]>,
    index: index::HostIndex,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    matcher: Matcher,
    destination: Target,
    call: CallPolicy,
    upgrades: Box<[String]>,
    /// Client certificate identities allowed; empty: anyone.
    identities: Box<[String]>,
    faults: Option<Box<Faults>>,
    metrics: RouteMetrics,
}

#[derive(Debug)]
enum Target {
    One(Arc<Cluster>),
    /// Cumulative weights, for a binary search on a random draw.
    Split {
        clusters: Box<[(u64, Arc<Cluster>)]>,
        total: u64,
    },
}

/// A route names a cluster the configuration does not define.
#[derive(Debug, thiserror::Error)]
#[error("route {route} names unknown cluster {cluster}")]
pub struct UnknownCluster {
    pub route: String,
    pub cluster: String,
}

impl Router {
    /// Compiles validated route configs; `clusters` are all clusters by name.
    pub fn new(
        listener: &str,
        routes: &[RouteConfig],
        clusters: &HashMap<String, Arc<Cluster>>,
        metrics: &Metrics,
    ) -> Result<Self, UnknownCluster> {
        let lookup = |route: &RouteConfig, name: &str| {
            clusters.get(name).cloned().ok_or_else(|| UnknownCluster {
                route: route.name.clone(),
                cluster: name.to_owned(),
            })
        };
        let routes = routes
            .iter()
            .map(|rc| {
                let destination = match &rc.destination {
                    Destination::Cluster(name) => Target::One(lookup(rc, name)?),
                    Destination::Split(split) => {
                        let mut total = 0u64;
                        let mut clusters = Vec::with_capacity(split.len());
                        for wc in split.iter().filter(|wc| wc.weight > 0) {
                            total += u64::from(wc.weight);
                            clusters.push((total, lookup(rc, &wc.cluster)?));
                        }
                        Target::Split {
                            clusters: clusters.into_boxed_slice(),
                            total,
                        }
                    }
                };
                Ok(Route {
                    name: Arc::from(rc.name.as_str()),
                    matcher: Matcher::new(&rc.matcher),
                    destination,
                    call: CallPolicy::of_route(rc),
                    upgrades: rc.upgrades.clone().into_boxed_slice(),
                    identities: rc.identities.clone().into_boxed_slice(),
                    faults: rc.fault.as_deref().map(|policy| {
                        Box::new(Faults::new(
                            policy.clone(),
                            metrics.route_faults(listener, &rc.name),
                        ))
                    }),
                    metrics: metrics.route(listener, &rc.name),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = index::HostIndex::new(routes.iter().map(|r| &r.matcher));
        Ok(Self {
            routes: routes.into_boxed_slice(),
            index,
        })
    }

    /// The first route that matches, if any (found through the host
    /// index: see `index.rs`).
    pub fn route<B>(&self, req: &Request<B>) -> Option<&Route> {
        let host = request_host(req);
        let first = self
            .index
            .first(host, |i| self.routes[i].matcher.matches(req, host))?;
        Some(&self.routes[first])
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl Route {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's timeout, stream limit, retries and hedging.
    pub fn call(&self) -> &CallPolicy {
        &self.call
    }

    /// The HTTP/1.1 upgrade protocols tunnelled for this route.
    pub fn upgrades(&self) -> &[String] {
        &self.upgrades
    }

    /// The name as a shared string, for records that outlive the request.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether a client with this certificate identity (or none) may use
    /// the route.
    pub fn admits(&self, identity: Option<&str>) -> bool {
        self.identities.is_empty()
            || identity.is_some_and(|id| self.identities.iter().any(|allowed| allowed == id))
    }

    /// The faults this route injects, when it has a fault policy.
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.as_deref()
    }

    pub fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    /// The cluster for this request: the only one, or a weighted draw.
    pub fn cluster(&self) -> &Arc<Cluster> {
        match &self.destination {
            Target::One(c) => c,
            Target::Split { clusters, total } => {
                let draw = fastrand::u64(0..*total);
                let i = clusters.partition_point(|(cum, _)| *cum <= draw);
                // `draw < total` and the last cumulative weight is `total`,
                // so the partition point is always a valid index.
                &clusters[i].1
            }
        }
    }

    /// The names of the clusters this route can send to.
    pub fn cluster_names(&self) -> Vec<&str> {
        match &self.destination {
            Target::One(c) => vec![c.name()],
            Target::Split { clusters, .. } => clusters.iter().map(|(_, c)| c.name()).collect(),
        }
    }
}
