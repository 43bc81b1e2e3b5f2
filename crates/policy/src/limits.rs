//! Concurrency limits with RAII permits: over the limit, a request fails
//! fast instead of queueing without bound (Envoy's circuit breakers).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// A counter with a ceiling, shared by every request of a cluster.
#[derive(Debug)]
pub struct Limit {
    max: usize,
    current: AtomicUsize,
}

/// Holds one unit of a [`Limit`]; releases it on drop.
#[derive(Debug)]
pub struct Permit(Arc<Limit>);

impl Limit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            current: AtomicUsize::new(0),
        })
    }

    /// Takes a unit if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut cur = self.current.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return None;
            }
            match self.current.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_up_to_max_and_release_on_drop() {
        let l = Limit::new(2);
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(a);
        assert_eq!(l.current(), 1);
        assert!(l.try_acquire().is_some());
    }
}
