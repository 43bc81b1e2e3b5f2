//! Service discovery for clusters (the proxy's, and the library client's):
//! one source per cluster, applied to the cluster in the background.
//!
//! Each non-static cluster gets a source task (`switchyard-discovery`)
//! and an applier task that turns each new endpoint set into
//! `Cluster::update`, which builds the balancer's tables and swaps them in
//! atomically. Requests never wait on discovery: a pick reads whatever set
//! was swapped in last. A failing source keeps the last known set.
//!
//! Each dynamic cluster's `switchyard_discovery_*` metrics are recorded
//! here: a set counts as an update once the applier has applied it, or at
//! once when it equals the set the cluster already has (the driver does not
//! republish it); every failed read of the source counts as an error.

use std::{sync::Arc, time::Duration};

use super::{Cluster, EndpointSpec};
use switchyard_config::{ClusterConfig, Discovery as DiscoveryConfig, DnsDiscovery, DnsLookup};
use switchyard_discovery::{
    Backoff, Discovered, Discovery, DnsOptions, DnsQuery, DnsSource, EndpointSet, EtcdSource,
    RegistrySource, SourceError,
    driver::{Observer, spawn_observed},
};
use switchyard_telemetry::metrics::DiscoveryMetrics;
use tokio::task::JoinHandle;
use tracing::warn;

/// How discovery sources run.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// Retry pacing of a failing source.
    pub backoff: Backoff,
    /// Default 3s: how long `Proxy::bind` waits for every dynamic cluster's
    /// first endpoint set, so the proxy does not start answering 503 for a
    /// cluster whose registry answers in milliseconds. A source still
    /// silent after it starts empty and fills in when it answers.
    pub initial_wait: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            initial_wait: Duration::from_secs(3),
        }
    }
}

/// The DNS source's settings from the cluster's `dns = { ... }`.
fn dns_options(dns: &DnsDiscovery) -> DnsOptions {
    DnsOptions {
        servers: (!dns.servers.is_empty()).then(|| dns.servers.clone()),
        min_ttl: dns.min_ttl,
        max_ttl: dns.max_ttl,
        timeout: dns.timeout,
    }
}

/// A cluster's running discovery; dropping it stops both tasks.
#[derive(Debug)]
pub struct ClusterDiscovery {
    cluster: Arc<Cluster>,
    discovery: Discovery,
    applier: JoinHandle<()>,
}

impl Drop for ClusterDiscovery {
    fn drop(&mut self) {
        self.applier.abort();
    }
}

impl ClusterDiscovery {
    /// Waits up to `timeout` for the source's first endpoint set (logging
    /// when it does not come); returns whether it came. When it returns
    /// `true`, the cluster has the set.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let synced = self.discovery.wait_synced(timeout).await;
        if synced {
            // The applier task may not have run yet: a request sent now
            // would find the cluster empty. Applying the same set again
            // changes nothing (endpoints that stay keep their state).
            self.cluster.update(&specs(&self.discovery.current()));
        } else {
            warn!(cluster = %self.cluster.name(), source = %self.discovery.describe(), waited = ?timeout, "no endpoints discovered yet; starting with an empty cluster");
        }
        synced
    }
}

/// A cluster's discovery source, built from its settings but not started.
/// Boxed: the sources differ much in size, and one is built per cluster.
enum Source {
    Static(Vec<EndpointSpec>),
    Registry(Box<RegistrySource>),
    Dns(Box<DnsSource>),
    Etcd(Box<EtcdSource>),
}

/// Checks a cluster's discovery settings without starting anything (what
/// `switchyard check` reports).
pub fn check(config: &ClusterConfig) -> Result<(), SourceError> {
    source(config).map(drop)
}

/// Builds a cluster's source: every check of its settings that can fail
/// before it runs. `switchyard check` calls it too, through
/// [`crate::preflight`], so that both accept the same configurations.
fn source(config: &ClusterConfig) -> Result<Source, SourceError> {
    Ok(match &config.discovery {
        DiscoveryConfig::Static(eps) => Source::Static(
            eps.iter()
                .map(|e| EndpointSpec::new(e.address, e.weight))
                .collect(),
        ),
        DiscoveryConfig::Registry { url, service, ca } => Source::Registry(Box::new(
            RegistrySource::with_ca(url, service, ca.as_deref())?,
        )),
        DiscoveryConfig::Dns(dns) => {
            let query = match &dns.lookup {
                DnsLookup::Name(name) => DnsQuery::name(name)?,
                DnsLookup::Srv(name) => DnsQuery::Srv(name.clone()),
            };
            Source::Dns(Box::new(DnsSource::new(query, dns_options(dns))?))
        }
        DiscoveryConfig::Etcd {
            endpoints,
            prefix,
            ca,
        } => Source::Etcd(Box::new(EtcdSource::with_ca(
            endpoints,
            prefix,
            ca.as_deref(),
        )?)),
    })
}

/// Starts discovery for one cluster, applying every endpoint set it finds
/// to `cluster`. Static endpoints are applied at once and need no task
/// (`None`); the other sources run on the current tokio runtime until the
/// returned [`ClusterDiscovery`] is dropped. The library's client runs it
/// too.
pub fn start(
    config: &ClusterConfig,
    cluster: Arc<Cluster>,
    opts: &DiscoveryOptions,
) -> Result<Option<ClusterDiscovery>, SourceError> {
    let metrics = || cluster.metrics().discovery(cluster.name());
    let discovery = match source(config)? {
        Source::Static(specs) => {
            cluster.update(&specs);
            return Ok(None);
        }
        Source::Registry(s) => spawn_observed(*s, opts.backoff, Counted(metrics())),
        Source::Dns(s) => spawn_observed(*s, opts.backoff, Counted(metrics())),
        Source::Etcd(s) => spawn_observed(*s, opts.backoff, Counted(metrics())),
    };
    // The same series as the observer's (one cluster, one set of series).
    let metrics = metrics();
    let mut rx = discovery.subscribe();
    let applied = cluster.clone();
    let applier = tokio::spawn(async move {
        let cluster = applied;
        // Ends when the source task ends (the discovery was dropped).
        while rx.changed().await.is_ok() {
            let set = rx.borrow_and_update().clone();
            let specs = specs(&set);
            if specs.len() < APPLY_OFF_RUNTIME {
                cluster.update(&specs);
            } else {
                // Applying a set of thousands of endpoints (and building its
                // ring-hash or Maglev table) takes milliseconds: on a
                // blocking thread, the runtime's workers (one, in a
                // one-core sidecar) go on serving requests meanwhile. Sets
                // that arrive during it are coalesced by the watch channel.
                let cluster = cluster.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || cluster.update(&specs)).await {
                    warn!(error = %e, "applying an endpoint set failed");
                }
            }
            metrics.updated();
        }
    });
    Ok(Some(ClusterDiscovery {
        cluster,
        discovery,
        applier,
    }))
}

/// Endpoint sets at least this large are applied on a blocking thread.
const APPLY_OFF_RUNTIME: usize = 1024;

/// Counts what the applier never sees: sets equal to the applied one (the
/// driver does not republish them, yet they are fresh news that the set
/// still holds) and failed reads of the source.
struct Counted(DiscoveryMetrics);

impl Observer for Counted {
    fn delivered(&self, _: &EndpointSet, changed: bool) {
        // A changed set is counted by the applier once it is applied.
        if !changed {
            self.0.updated();
        }
    }

    fn failed(&self, _: &SourceError) {
        self.0.failed();
    }
}

fn specs(set: &[Discovered]) -> Vec<EndpointSpec> {
    set.iter()
        .map(|d| EndpointSpec {
            addr: d.addr,
            weight: d.weight,
            draining: d.draining,
        })
        .collect()
}
