//! Service discovery for Switchyard: where the instances of a service are.
//!
//! Every source — static, DNS, the Switchyard registry, etcd — implements
//! one small interface, [`Source`]: "give me the next endpoint set". The
//! [`spawn`]ed driver runs a source as a task and publishes each distinct
//! set into a `tokio::sync::watch` channel of [`EndpointSet`]. Consumers (a
//! proxy cluster, a library client) apply sets as they come; nothing here
//! runs on a request path.
//!
//! The promise the driver keeps for every source: a source that fails keeps
//! the last known set (an outage of discovery never empties a cluster) and
//! is retried with jittered exponential backoff; transitions between
//! healthy and failing are logged once, not per attempt.
//!
//! # Layout
//! - [`Discovered`], [`EndpointSet`]: what a source finds.
//! - [`Source`], [`SourceError`]: the interface and its failures.
//! - [`driver`]: [`spawn`] and the [`Discovery`] handle (the watch channel,
//!   health, the task).
//! - [`backoff`]: jittered exponential backoff.
//! - [`source`]: the sources — [`StaticSource`], [`DnsSource`],
//!   [`RegistrySource`], [`EtcdSource`].
//! - [`wire`]: the registry's JSON records, shared with the registry server
//!   and the etcd store (an etcd value is an [`wire::Instance`]).
//! - [`http`]: a minimal HTTP/1.1 JSON client for the registry API.

pub mod backoff;
pub mod driver;
pub mod http;
pub mod registration;
pub mod source;
pub mod wire;

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc};

pub use backoff::Backoff;
pub use driver::{Discovery, spawn};
pub use source::{
    dns::{DnsOptions, DnsQuery, DnsSource},
    etcd::EtcdSource,
    fixed::StaticSource,
    registry::RegistrySource,
};

/// One discovered instance of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub addr: SocketAddr,
    /// Share of traffic relative to the other endpoints; at least 1.
    pub weight: u32,
    pub zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The instance asked for no new requests (it is shutting down).
    pub draining: bool,
}

impl Discovered {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
            draining: false,
        }
    }

    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }
}

/// An immutable endpoint set, sorted by address with one entry per address.
pub type EndpointSet = Arc<[Discovered]>;

/// Sorts by address and keeps one entry per address, so that two sets with
/// the same members compare equal whatever order a source found them in.
/// Of duplicates (two registrations of one address) the first is kept, but
/// it drains only if every duplicate drains.
pub fn normalize(mut endpoints: Vec<Discovered>) -> EndpointSet {
    endpoints.sort_by_key(|e| e.addr);
    let mut out: Vec<Discovered> = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        match out.last_mut() {
            Some(last) if last.addr == e.addr => last.draining &= e.draining,
            _ => out.push(e),
        }
    }
    out.into()
}

/// A discovery source: yields endpoint sets, one call at a time.
///
/// The first call returns the current set without waiting; later calls
/// return when the set may have changed (a watch event, a TTL expiring, a
/// blocking query answering). Returning an unchanged set is fine: the driver
/// publishes only changes. After an error the driver backs off and calls
/// again; the source keeps whatever it needs to resume (a registry index,
/// an etcd revision).
pub trait Source: Send + 'static {
    /// Where this source looks, for logs (e.g. `dns srv _http._tcp.api`).
    fn describe(&self) -> String;

    fn next(&mut self) -> impl Future<Output = Result<Vec<Discovered>, SourceError>> + Send;
}

/// Why a source could not produce a set this time.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("DNS lookup of {name} failed: {source}")]
    Dns {
        name: String,
        #[source]
        source: hickory_resolver::ResolveError,
    },
    #[error("DNS name {0} has no usable records")]
    NoRecords(String),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("registry answered {status}: {message}")]
    Registry { status: u16, message: String },
    #[error("invalid answer from the registry: {0}")]
    Decode(#[source] serde_json::Error),
    #[error(transparent)]
    Etcd(#[from] switchyard_etcd::EtcdError),
    #[error("invalid discovery settings: {0}")]
    Invalid(String),
}

impl SourceError {
    /// Whether retrying can help. Invalid settings never fix themselves,
    /// but the driver retries them anyway (slowly) so that a source whose
    /// settings are wrong only for now — say a DNS name not yet created —
    /// still recovers; this tells the logs which case it is.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Invalid(_))
    }
}
