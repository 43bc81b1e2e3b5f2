//! Runs a [`Source`] as a task and publishes its endpoint sets.
//!
//! The task owns the source; consumers hold `watch` receivers. The watch
//! keeps only the newest set, so a slow consumer skips intermediate sets
//! instead of queueing them — the newest set is the only one that matters.
//! An [`Observer`] ([`spawn_observed`]) hears about every answer and
//! failure, published or not, e.g. to count them as metrics.

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

/// Hears about every attempt of a running source, including the ones the
/// watch channel does not show (unchanged sets, failures). Called on the
/// source's task, so it must be quick and must not block.
pub trait Observer: Send + Sync + 'static {
    /// The source answered with `set`; `changed` tells whether it differs
    /// from the previous set and was therefore published (the first set
    /// always is).
    fn delivered(&self, set: &EndpointSet, changed: bool) {
        let _ = (set, changed);
    }

    /// The source failed; the last known set stays published.
    fn failed(&self, error: &SourceError) {
        let _ = error;
    }
}

/// Observes nothing.
impl Observer for () {}

/// Starts `source` on the current tokio runtime.
pub fn spawn<S: Source>(source: S, backoff: Backoff) -> Discovery {
    spawn_observed(source, backoff, ())
}

/// Like [`spawn`], telling `observer` about every answer and failure.
pub fn spawn_observed<S: Source, O: Observer>(
    source: S,
    backoff: Backoff,
    observer: O,
) -> Discovery {
    let describe = source.describe();
    let (tx, rx) = watch::channel(EndpointSet::from(Vec::new()));
    let synced = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(
        source,
        backoff,
        tx,
        synced.clone(),
        healthy.clone(),
        observer,
    ));
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

async fn run<S: Source, O: Observer>(
    mut source: S,
    backoff: Backoff,
    tx: watch::Sender<EndpointSet>,
    synced: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    observer: O,
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
                let set = normalize(found);
                let changed = publish(&name, &tx, set.clone(), &synced);
                observer.delivered(&set, changed);
            }
            Err(e) => {
                healthy.store(false, Ordering::Release);
                observer.failed(&e);
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

/// Publishes `set` if it is the first or differs from the current one;
/// returns whether it did.
fn publish(
    name: &str,
    tx: &watch::Sender<EndpointSet>,
    set: EndpointSet,
    synced: &AtomicBool,
) -> bool {
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
    changed
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

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::*;
    use crate::Discovered;

    /// Answers from a script, then waits forever.
    struct Scripted(VecDeque<Result<Vec<Discovered>, SourceError>>);

    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }

        async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
            match self.0.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    }

    /// What the observer heard, in order.
    #[derive(Clone, Default)]
    struct Heard(Arc<Mutex<Vec<String>>>);

    impl Observer for Heard {
        fn delivered(&self, set: &EndpointSet, changed: bool) {
            self.0
                .lock()
                .unwrap()
                .push(format!("set {} changed={changed}", set.len()));
        }

        fn failed(&self, _: &SourceError) {
            self.0.lock().unwrap().push("failed".into());
        }
    }

    fn ep(port: u16) -> Discovered {
        Discovered::new(([127, 0, 0, 1], port).into())
    }

    fn down() -> Result<Vec<Discovered>, SourceError> {
        Err(SourceError::NoRecords("api.test".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_every_answer_and_failure_published_or_not() {
        let script = VecDeque::from([
            Ok(vec![]),
            down(),
            Ok(vec![ep(1)]),
            Ok(vec![ep(1)]),
            down(),
            down(),
            Ok(vec![ep(1), ep(2)]),
        ]);
        let heard = Heard::default();
        let d = spawn_observed(Scripted(script), Backoff::default(), heard.clone());
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            *heard.0.lock().unwrap(),
            [
                // The first set is published even though it equals the
                // initial empty one.
                "set 0 changed=true",
                "failed",
                "set 1 changed=true",
                "set 1 changed=false",
                "failed",
                "failed",
                "set 2 changed=true",
            ]
        );
        assert_eq!(d.current().len(), 2);
    }
}
