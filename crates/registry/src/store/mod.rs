//! Where registrations live: one [`Store`] trait, two implementations.
//!
//! - [`embedded`]: a redb file in a local directory plus an in-memory copy;
//!   durable, for one registry process.
//! - [`etcd`]: etcd holds everything (TTLs are leases); the registry keeps
//!   only a watch-fed mirror for blocking queries, so any number of
//!   registry processes can serve one etcd cluster.
//!
//! Indexes: every store has one monotonic index (the embedded store's
//! counter, etcd's revision). A service's *change index* is the index of
//! its last change. A blocking query with `index=N` returns once the
//! service's change index is above N; answers carry the store's index at
//! the time of reading, so a client that passes it back never misses a
//! change and is never woken by another service's.

pub mod embedded;
pub mod etcd;
mod hub;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use switchyard_discovery::wire::{Instance, ServiceSummary};

pub use hub::Hub;

use crate::{error::StoreError, model::Record};

/// A boxed store future: stores are chosen at run time (`--store`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A service's instances as of `index`. Shared, not copied: a thousand
/// watchers woken by one change read one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceState {
    pub index: u64,
    pub instances: Arc<[Instance]>,
}

/// The outcome of a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub instance: Instance,
    /// False when an existing registration was updated.
    pub created: bool,
}

/// The registry's storage.
pub trait Store: Send + Sync + 'static {
    /// Registers or updates `service`/`id`. An update keeps nothing of the
    /// old registration: it clears draining and restarts the TTL.
    fn register<'a>(&'a self, service: &'a str, record: Record) -> StoreFuture<'a, Registered>;

    /// Renews a TTL registration; `NotFound` once it expired. A permanent
    /// registration is returned unchanged.
    fn heartbeat<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance>;

    /// Marks an instance draining: it stays registered (and keeps its TTL)
    /// but must get no new requests.
    fn drain<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance>;

    fn deregister<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, ()>;

    /// Every service with at least one instance, and the store's index.
    fn services(&self) -> StoreFuture<'_, (u64, Vec<ServiceSummary>)>;

    /// The current instances of a service (none for an unknown service).
    fn service<'a>(&'a self, service: &'a str) -> StoreFuture<'a, ServiceState>;

    /// Waits until `service` changes past `index` or `wait` elapses, then
    /// answers like [`Store::service`]. An `index` above the store's own
    /// (the store was replaced) answers at once.
    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: u64,
        wait: Duration,
    ) -> StoreFuture<'a, ServiceState>;

    /// For logs: which store, where.
    fn describe(&self) -> String;
}

/// The `--store` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `embedded:DIR`
    Embedded(std::path::PathBuf),
    /// `etcd:URL,URL,...`
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err("embedded:DIR needs a directory".into());
            }
            return Ok(Self::Embedded(dir.into()));
        }
        if let Some(urls) = s.strip_prefix("etcd:") {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if urls.is_empty() {
                return Err("etcd:URL,... needs at least one etcd URL".into());
            }
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://")) {
                return Err(format!("etcd URL {bad:?} must start with http://"));
            }
            return Ok(Self::Etcd(urls));
        }
        Err(format!(
            "store {s:?} is not embedded:DIR or etcd:URL,URL,..."
        ))
    }
}

/// Opens the store a spec names.
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match spec {
        StoreSpec::Embedded(dir) => Arc::new(embedded::EmbeddedStore::open(dir).await?),
        StoreSpec::Etcd(urls) => Arc::new(etcd::EtcdStore::connect(urls).await?),
    })
}

/// Summaries of services with at least one instance, sorted by name.
pub(crate) fn summarize<'a>(
    services: impl Iterator<Item = (&'a str, &'a [Instance])>,
) -> Vec<ServiceSummary> {
    let mut out: Vec<ServiceSummary> = services
        .filter(|(_, insts)| !insts.is_empty())
        .map(|(name, insts)| ServiceSummary {
            name: name.to_owned(),
            instances: insts.len(),
            draining: insts.iter().filter(|i| i.draining).count(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
