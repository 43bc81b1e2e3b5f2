//! Wakes blocking queries: one `watch` channel per service carrying the
//! service's change index.
//!
//! A thousand watchers of one service share one channel; a change wakes
//! exactly the watchers of that service. The map's lock is held only to
//! find or create a channel, never across an await.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;

/// Per-service change indexes and their waiters.
#[derive(Debug, Default)]
pub struct Hub {
    services: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `service` changed at `index` and wakes its waiters.
    pub fn changed(&self, service: &str, index: u64) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(service) {
            Some(tx) => {
                tx.send_if_modified(|cur| {
                    let newer = index > *cur;
                    if newer {
                        *cur = index;
                    }
                    newer
                });
            }
            None => {
                map.insert(service.to_owned(), watch::Sender::new(index));
            }
        }
    }

    /// The index of the last change of `service` seen here (0 if none).
    pub fn change_index(&self, service: &str) -> u64 {
        let map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(service).map(|tx| *tx.borrow()).unwrap_or(0)
    }

    fn subscribe(&self, service: &str) -> watch::Receiver<u64> {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// Waits until `service` changes past `index` or `wait` elapses;
    /// returns whether it changed.
    pub async fn wait(&self, service: &str, index: u64, wait: Duration) -> bool {
        let mut rx = self.subscribe(service);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let changed = loop {
            if *rx.borrow_and_update() > index {
                break true;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break false },
                _ = &mut deadline => break false,
            }
        };
        drop(rx);
        self.forget_if_unused(service);
        changed
    }

    /// Drops the channel of a service that never changed and that nobody
    /// waits for, so that queries for made-up names leave nothing behind.
    fn forget_if_unused(&self, service: &str) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(service) {
            if tx.receiver_count() == 0 && *tx.borrow() == 0 {
                map.remove(service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wakes_only_on_a_newer_change_of_that_service() {
        let hub = std::sync::Arc::new(Hub::new());
        hub.changed("a", 5);
        // Already past: no wait.
        assert!(hub.wait("a", 4, Duration::from_secs(60)).await);
        // Another service's change does not wake "a".
        let h = hub.clone();
        let waiter = tokio::spawn(async move { h.wait("a", 5, Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        hub.changed("b", 6);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        hub.changed("a", 7);
        assert!(waiter.await.unwrap());
        // Timeout without change.
        assert!(!hub.wait("a", 7, Duration::from_secs(3)).await);
        // Unknown services leave nothing behind.
        assert!(!hub.wait("ghost", 0, Duration::from_millis(10)).await);
        assert!(!hub.services.lock().unwrap().contains_key("ghost"));
    }
}
