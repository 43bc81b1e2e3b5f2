//! Graceful draining: one signal to stop, and a wait until every holder of a
//! [`Watch`] has finished.

use tokio::sync::watch;

/// Held by the owner of a set of tasks; [`Signal::drain`] tells them to stop
/// and waits for all of them.
#[derive(Debug)]
pub struct Signal(watch::Sender<bool>);

/// Held by every task that must finish before draining completes.
#[derive(Clone, Debug)]
pub struct Watch(watch::Receiver<bool>);

pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    (Signal(tx), Watch(rx))
}

impl Signal {
    /// Signals every watcher and resolves once all of them are dropped.
    pub async fn drain(self) {
        // Sending fails only when no watcher is left, which is fine.
        let _ = self.0.send(true);
        self.0.closed().await;
    }

    /// Watchers still alive (connections, listeners) — for status displays.
    pub fn watchers(&self) -> usize {
        self.0.receiver_count()
    }

    /// A new watcher; tasks created after the signal see it at once.
    pub fn watch(&self) -> Watch {
        Watch(self.0.subscribe())
    }
}

impl Watch {
    /// Resolves once draining has been signalled.
    pub async fn signaled(&mut self) {
        // An error means the signal was dropped without draining: treat it as
        // a drain so that tasks do not outlive their owner.
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_signaled(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_every_watcher() {
        let (signal, watch) = channel();
        let mut w1 = watch.clone();
        let t = tokio::spawn(async move {
            w1.signaled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(w1);
        });
        drop(watch);
        let started = tokio::time::Instant::now();
        signal.drain().await;
        assert!(started.elapsed() >= Duration::from_secs(5));
        t.await.unwrap();
    }
}
