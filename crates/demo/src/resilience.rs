//! The proxy's side of the chaos: what it decided (retries, hedges,
//! ejections, health transitions...) per cluster, and each endpoint's final
//! state, read from `Cluster::snapshot()`.
//!
//! The load generator only sees whether requests succeeded; these figures
//! show *why* they did while backends were failing, and let the report
//! refuse a run where the faults silently did nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_stack::cluster::{Cluster, EndpointSnapshot};

/// Counts of the proxy's resilience decisions (one cluster, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Failed attempts sent again.
    pub retries: u64,
    /// Retries refused because the cluster's retry budget was spent.
    pub budget_exhausted: u64,
    /// Retries refused by the concurrent-retry limit.
    pub retry_limited: u64,
    /// Extra attempts sent because the first was slow.
    pub hedges: u64,
    /// Endpoints ejected by outlier detection (including failed probes).
    pub ejections: u64,
    /// Probation probes sent to endpoints whose ejection ran out.
    pub probes: u64,
    /// Probes that succeeded: the endpoint is back.
    pub restored: u64,
    /// Active health checks turning an endpoint unhealthy / healthy.
    pub unhealthy: u64,
    pub healthy: u64,
    /// Requests failed fast on a cluster limit.
    pub overloaded: u64,
    /// Requests whose deadline had passed on arrival.
    pub deadline_expired: u64,
}

impl Decisions {
    /// Reads the snapshot's decision map. Keys are `Decision::as_str()` in
    /// switchyard-telemetry; a renamed key would read as 0 here, which makes
    /// [`crate::DemoReport::success`] fail loudly rather than pass silently.
    fn from_map(map: &BTreeMap<&'static str, u64>) -> Decisions {
        let get = |key: &str| map.get(key).copied().unwrap_or(0);
        Decisions {
            retries: get("retry"),
            budget_exhausted: get("retry_budget_exhausted"),
            retry_limited: get("retry_limited"),
            hedges: get("hedge"),
            ejections: get("ejection"),
            probes: get("probe"),
            restored: get("restored"),
            unhealthy: get("unhealthy"),
            healthy: get("healthy"),
            overloaded: get("overloaded"),
            deadline_expired: get("deadline_expired"),
        }
    }

    /// Field-wise `self - earlier`: the decisions made in between.
    pub fn since(&self, earlier: &Decisions) -> Decisions {
        self.zip(earlier, u64::saturating_sub)
    }

    fn plus(&self, other: &Decisions) -> Decisions {
        self.zip(other, u64::saturating_add)
    }

    fn zip(&self, o: &Decisions, f: impl Fn(u64, u64) -> u64) -> Decisions {
        Decisions {
            retries: f(self.retries, o.retries),
            budget_exhausted: f(self.budget_exhausted, o.budget_exhausted),
            retry_limited: f(self.retry_limited, o.retry_limited),
            hedges: f(self.hedges, o.hedges),
            ejections: f(self.ejections, o.ejections),
            probes: f(self.probes, o.probes),
            restored: f(self.restored, o.restored),
            unhealthy: f(self.unhealthy, o.unhealthy),
            healthy: f(self.healthy, o.healthy),
            overloaded: f(self.overloaded, o.overloaded),
            deadline_expired: f(self.deadline_expired, o.deadline_expired),
        }
    }

    /// Whether the proxy visibly acted on a fault: it retried or ejected.
    pub fn acted(&self) -> bool {
        self.retries + self.ejections > 0
    }
}

/// One endpoint of a cluster at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointResilience {
    pub address: SocketAddr,
    /// The demo backend at this address, if any.
    pub backend: Option<String>,
    /// `active`, `ejected`, `probation`, `unhealthy` or `draining`.
    pub state: String,
    /// Times outlier detection ejected it.
    pub ejections: u64,
    /// Attempts the proxy sent to it (retries and hedges included).
    pub requests: u64,
}

/// One cluster's decisions and endpoints at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterResilience {
    pub name: String,
    pub decisions: Decisions,
    pub endpoints: Vec<EndpointResilience>,
}

/// Read access to the proxy's clusters, for the live lines and the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyView {
    clusters: Vec<Arc<Cluster>>,
}

impl ProxyView {
    pub(crate) fn new(clusters: Vec<Arc<Cluster>>) -> ProxyView {
        ProxyView { clusters }
    }

    /// Decisions so far, summed over clusters.
    pub(crate) fn totals(&self) -> Decisions {
        self.clusters.iter().fold(Decisions::default(), |sum, c| {
            sum.plus(&Decisions::from_map(&c.snapshot().decisions))
        })
    }

    /// The endpoint at `addr` now, in whichever cluster lists it.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Option<EndpointSnapshot> {
        self.clusters.iter().find_map(|c| {
            c.snapshot()
                .endpoints
                .into_iter()
                .find(|e| e.address == addr)
        })
    }

    /// Every endpoint now, with its cluster's name.
    pub(crate) fn endpoints(&self) -> Vec<(String, EndpointSnapshot)> {
        self.clusters
            .iter()
            .flat_map(|c| {
                let s = c.snapshot();
                let name = s.name;
                s.endpoints.into_iter().map(move |e| (name.clone(), e))
            })
            .collect()
    }

    /// Every cluster now; `name_of` names the backend at an address.
    pub(crate) fn snapshot(
        &self,
        name_of: impl Fn(SocketAddr) -> Option<String>,
    ) -> Vec<ClusterResilience> {
        self.clusters
            .iter()
            .map(|c| {
                let s = c.snapshot();
                let mut endpoints: Vec<_> = s
                    .endpoints
                    .iter()
                    .map(|e| EndpointResilience {
                        address: e.address,
                        backend: name_of(e.address),
                        state: e.state.to_owned(),
                        ejections: e.ejections,
                        requests: e.requests,
                    })
                    .collect();
                // The balancer's order means nothing to a reader; names do.
                endpoints.sort_by(|a, b| (&a.backend, a.address).cmp(&(&b.backend, b.address)));
                ClusterResilience {
                    decisions: Decisions::from_map(&s.decisions),
                    endpoints,
                    name: s.name,
                }
            })
            .collect()
    }
}

/// The "resilience" section of the summary.
pub(crate) fn render(out: &mut String, clusters: &[ClusterResilience]) {
    if clusters.is_empty() {
        return;
    }
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(out, "\n  resilience (the proxy's decisions)");
    for c in clusters {
        let d = &c.decisions;
        let _ = writeln!(
            out,
            "  {:<10} retries {} (budget exhausted {}, limited {})   hedges {}   ejections {}",
            c.name, d.retries, d.budget_exhausted, d.retry_limited, d.hedges, d.ejections
        );
        let _ = writeln!(
            out,
            "  {:<10} probes {} / restored {}   health: unhealthy {} / healthy {}   overloaded {}   deadline expired {}",
            "", d.probes, d.restored, d.unhealthy, d.healthy, d.overloaded, d.deadline_expired
        );
        for e in &c.endpoints {
            let _ = writeln!(
                out,
                "  {:<10}   {:<13} {:<21} {:<10} ejections {:>2}   attempts {:>6}",
                "",
                e.backend.as_deref().unwrap_or("?"),
                e.address.to_string(),
                e.state,
                e.ejections,
                e.requests
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_the_snapshot_keys_and_subtract() {
        let map: BTreeMap<&'static str, u64> =
            [("retry", 5), ("ejection", 2), ("hedge", 1), ("healthy", 3)]
                .into_iter()
                .collect();
        let d = Decisions::from_map(&map);
        assert_eq!((d.retries, d.ejections, d.hedges, d.healthy), (5, 2, 1, 3));
        assert!(d.acted());
        let earlier = Decisions {
            retries: 2,
            ..Decisions::default()
        };
        assert_eq!(d.since(&earlier).retries, 3);
        assert!(!Decisions::default().acted());
    }
}
