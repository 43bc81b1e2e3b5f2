//! Runs a [`Source`] as a task and publishes its endpoint sets.
//!
//! The task owns the source; consumers hold `watch` receivers. The watch
//! keeps only the newest set, so a slow consumer skips intermediate sets
//! instead of queueing them — the newest set is the only one that matters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{Backoff, EndpointSet, Source, SourceError, normalize};

/// A running source: its endpoint sets and health. Dropping it stops the
/// task; receivers already handed out then see the channel close.
#[derive(Debug)]
pub struct Discovery {
    /// Never marked seen, so clones of it report the first set as a change.
    rx: watch::Receiver<EndpointSet>,
    synced: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    describe: String,
    task: JoinHandle<()>,
}

/// Starts `source` on the current tokio runtime.
pub fn spawn<S: Source>(source: S, backoff: Backoff) -> Discovery {
    let describe = source.describe();
    let (tx, rx) = watch::channel(EndpointSet::from(Vec::new()));
    let synced = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(source, backoff, tx, synced.clone(), healthy.clone()));
    Discovery {
        rx,
        synced,
        healthy,
        describe,
        task,
    }
}

impl Discovery {
    /// A receiver of endpoint sets. Its first `changed()` resolves once the
    /// source has produced its first set (at once if it already has).
    pub fn subscribe(&self) -> watch::Receiver<EndpointSet> {
        self.rx.clone()
    }

    /// The newest set (empty before the first one).
    pub fn current(&self) -> EndpointSet {
        self.rx.borrow().clone()
    }

    /// Whether the source has produced at least one set.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether the last attempt of the source succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Waits up to `timeout` for the first set; returns whether it came.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        if self.is_synced() {
            return true;
        }
        matches!(
            tokio::time::timeout(timeout, rx.changed()).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<S: Source>(
    mut source: S,
    backoff: Backoff,
    tx: watch::Sender<EndpointSet>,
    synced: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
) {
    let name = source.describe();
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            r = source.next() => r,
            // Every consumer is gone: nobody needs this source any more.
            _ = tx.closed() => return,
        };
        match result {
            Ok(found) => {
                if failures > 0 {
                    info!(source = %name, failed_attempts = failures, "discovery source recovered");
                }
                failures = 0;
                healthy.store(true, Ordering::Release);
                publish(&name, &tx, normalize(found), &synced);
            }
            Err(e) => {
                healthy.store(false, Ordering::Release);
                let keeping = tx.borrow().len();
                if failures == 0 {
                    warn!(source = %name, error = %chain(&e), keeping, "discovery source failing; keeping the last known endpoints");
                } else {
                    debug!(source = %name, error = %chain(&e), attempt = failures + 1, "discovery source still failing");
                }
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

fn publish(name: &str, tx: &watch::Sender<EndpointSet>, set: EndpointSet, synced: &AtomicBool) {
    let first = !synced.swap(true, Ordering::AcqRel);
    let mut old_len = 0;
    let changed = tx.send_if_modified(|cur| {
        if first || **cur != *set {
            old_len = cur.len();
            *cur = set.clone();
            true
        } else {
            false
        }
    });
    if changed {
        let draining = set.iter().filter(|e| e.draining).count();
        info!(source = %name, endpoints = set.len(), draining, previous = old_len, "endpoint set changed");
    }
}

/// An error and its causes on one line, for logs.
pub(crate) fn chain(e: &SourceError) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
