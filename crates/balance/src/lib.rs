//! Load balancers for Switchyard over a live, atomically swapped endpoint set.
//!
//! A [`Balancer`] is generic over the caller's endpoint type `T:`[`Target`],
//! so the HTTP stack can hang its connection pool (or anything else) off each
//! endpoint and get the same `Arc<T>` back from [`Balancer::pick`]. Endpoint
//! sets change through [`Balancer::update`], which builds the strategy's
//! tables off the hot path and publishes them with one atomic swap; picking
//! takes no lock and allocates nothing.
//!
//! Strategies ([`Strategy`]): smooth weighted round-robin, weighted random,
//! least-request and peak-EWMA (both power of two choices), ring hash and
//! Maglev. All honour endpoint weights, skip unavailable endpoints (until
//! too few are available: Envoy's panic mode) and steer retries away from
//! endpoints listed in [`Pick::avoid`].
//!
//! Weight semantics: an endpoint of weight 0 is never picked, unless every
//! endpoint has weight 0, in which case all are treated as weight 1.
//!
//! # Layout
//!
//! - `balancer`: [`Balancer`], the published state, the pick algorithm with
//!   its availability / panic / avoid fallback.
//! - `config`: [`Strategy`], [`BalancerConfig`], [`ConfigError`].
//! - `load`: [`Load`] (in-flight count and peak-EWMA RTT), [`InFlight`]
//!   guard, injectable [`Clock`].
//! - `endpoint`: [`Endpoint`], a ready-made [`Target`] carrying caller data.
//! - `hash`: [`hash_key`] and the internal address/finaliser hashes.
//! - `weighted`: the eligible set and weighted sampling (random, P2C).
//! - `wrr`: the nginx smooth weighted round-robin schedule.
//! - `ring`: the ketama-style hash ring.
//! - `maglev`: the weighted Maglev lookup table.

mod balancer;
mod config;
mod endpoint;
mod hash;
mod load;
mod maglev;
mod ring;
mod weighted;
mod wrr;

use std::net::SocketAddr;

pub use balancer::Balancer;
pub use config::{
    BalancerConfig, ConfigError, DEFAULT_MAGLEV_TABLE_SIZE, MAX_MAGLEV_TABLE_SIZE, MAX_RING_SIZE,
    Strategy,
};
pub use endpoint::Endpoint;
pub use hash::hash_key;
pub use load::{Clock, DEFAULT_DECAY, DEFAULT_RTT, InFlight, Load, ManualClock};

/// An endpoint as the balancer sees it. Implemented by the caller's type.
pub trait Target: Send + Sync + 'static {
    /// The endpoint's identity: sets are deduplicated and sorted by it, and
    /// hash strategies place the endpoint by it.
    fn addr(&self) -> SocketAddr;

    /// Relative weight. 0 means never picked unless every endpoint has
    /// weight 0. Read only during [`Balancer::update`].
    fn weight(&self) -> u32;

    /// Load statistics shared by every picker. Keep the same `Arc<T>` for an
    /// address across updates so they survive.
    fn load(&self) -> &Load;

    /// `false` when ejected, unhealthy or draining; read on every pick.
    fn available(&self) -> bool;
}

/// Per-request input to [`Balancer::pick`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Pick<'a> {
    /// Key hash for ring hash / Maglev (see [`hash_key`]); those strategies
    /// fall back to weighted random when it is `None`. Ignored by the others.
    pub hash: Option<u64>,
    /// Endpoints to avoid if any other acceptable endpoint exists (a retry
    /// prefers a different endpoint); never makes a pick fail.
    pub avoid: &'a [SocketAddr],
}

impl<'a> Pick<'a> {
    /// No key, nothing to avoid.
    pub const fn new() -> Self {
        Self {
            hash: None,
            avoid: &[],
        }
    }

    pub const fn with_hash(mut self, hash: u64) -> Self {
        self.hash = Some(hash);
        self
    }

    pub const fn avoiding(mut self, avoid: &'a [SocketAddr]) -> Self {
        self.avoid = avoid;
        self
    }
}
