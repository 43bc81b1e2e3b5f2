//! Routing: the first route whose match holds picks the destination and the
//! policy for a request.

mod matcher;

use std::{collections::HashMap, sync::Arc, time::Duration};

use http::Request;
use switchyard_config::{Destination, HedgePolicy, RetryPolicy, RouteConfig};
use switchyard_policy::Budget;
use switchyard_telemetry::{Metrics, RouteMetrics};

pub use matcher::{Matcher, request_host};

use crate::{cluster::Cluster, proxy::fault::Faults};

/// The ordered routes of one HTTP listener.
#[derive(Debug)]
pub struct Router {
    routes: Box<[Route]>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    matcher: Matcher,
    destination: Target,
    timeout: Duration,
    max_stream_duration: Option<Duration>,
    upgrades: Box<[String]>,
    retry: Option<RetryPolicy>,
    hedge: Option<Hedge>,
    faults: Option<Faults>,
    metrics: RouteMetrics,
}

/// A route's hedging policy and its extra-load budget.
#[derive(Debug)]
pub struct Hedge {
    pub policy: HedgePolicy,
    /// Hedges may add at most `max_extra_load` over the route's recent
    /// hedge-eligible requests; a route-level budget, so one route's hedging
    /// cannot spend another's.
    pub budget: Budget,
}

/// Window over which hedge-eligible requests are counted.
const HEDGE_BUDGET_TTL: Duration = Duration::from_secs(10);

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
                    timeout: rc.timeout,
                    max_stream_duration: rc.max_stream_duration,
                    upgrades: rc.upgrades.clone().into_boxed_slice(),
                    retry: rc.retry.clone(),
                    hedge: rc.hedge.clone().map(|policy| Hedge {
                        budget: Budget::new(policy.max_extra_load, 0, HEDGE_BUDGET_TTL),
                        policy,
                    }),
                    faults: rc.fault.clone().map(|policy| {
                        Faults::new(policy, metrics.route_faults(listener, &rc.name))
                    }),
                    metrics: metrics.route(listener, &rc.name),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            routes: routes.into_boxed_slice(),
        })
    }

    /// The first route that matches, if any.
    pub fn route<B>(&self, req: &Request<B>) -> Option<&Route> {
        let host = request_host(req);
        self.routes.iter().find(|r| r.matcher.matches(req, host))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl Route {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bounds the time to the upstream's response head, all attempts
    /// included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bounds a whole exchange, bodies included, when set.
    pub fn max_stream_duration(&self) -> Option<Duration> {
        self.max_stream_duration
    }

    /// The HTTP/1.1 upgrade protocols tunnelled for this route.
    pub fn upgrades(&self) -> &[String] {
        &self.upgrades
    }

    /// The name as a shared string, for records that outlive the request.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    pub fn hedge(&self) -> Option<&Hedge> {
        self.hedge.as_ref()
    }

    /// The faults this route injects, when it has a fault policy.
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.as_ref()
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
