//! A ready-made [`Target`] for callers that only need to attach data.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::{Load, Target};

/// An endpoint with an address, a weight, availability, load statistics and
/// caller data `X` (for example a connection pool).
///
/// Weight and availability are atomics so discovery and health checking can
/// change them in place, keeping the `Arc` (and with it the load statistics)
/// across updates.
#[derive(Debug)]
pub struct Endpoint<X = ()> {
    addr: SocketAddr,
    weight: AtomicU32,
    available: AtomicBool,
    load: Load,
    ext: X,
}

impl<X> Endpoint<X> {
    /// An available endpoint with default (linkerd) load settings.
    pub fn new(addr: SocketAddr, weight: u32, ext: X) -> Self {
        Self::with_load(addr, weight, Load::default(), ext)
    }

    pub fn with_load(addr: SocketAddr, weight: u32, load: Load, ext: X) -> Self {
        Self {
            addr,
            weight: AtomicU32::new(weight),
            available: AtomicBool::new(true),
            load,
            ext,
        }
    }

    /// Takes effect on picks immediately.
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Relaxed);
    }

    /// Takes effect at the next [`Balancer::update`](crate::Balancer::update):
    /// weights are baked into the picker tables.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn ext(&self) -> &X {
        &self.ext
    }
}

impl<X: Send + Sync + 'static> Target for Endpoint<X> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    fn load(&self) -> &Load {
        &self.load
    }

    fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}
