//! The driver's promises, with a scripted source on a paused clock.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use switchyard_discovery::{Backoff, Discovered, Source, SourceError, StaticSource, spawn};
use tokio::time::Instant;

/// Answers from a script, recording when each call came; then waits forever.
struct Scripted {
    script: VecDeque<Result<Vec<Discovered>, SourceError>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Source for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }

    async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
        self.calls.lock().unwrap().push(Instant::now());
        match self.script.pop_front() {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

fn ep(port: u16) -> Discovered {
    Discovered::new(([127, 0, 0, 1], port).into())
}

fn down() -> Result<Vec<Discovered>, SourceError> {
    Err(SourceError::NoRecords("api.test".into()))
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_keeps_the_last_set_and_backs_off() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let script = VecDeque::from([
        Ok(vec![ep(2), ep(1), ep(1)]),
        down(),
        down(),
        down(),
        Ok(vec![ep(1)]),
    ]);
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
    let d = spawn(
        Scripted {
            script,
            calls: calls.clone(),
        },
        backoff,
    );
    let mut rx = d.subscribe();
    rx.changed().await.unwrap();
    // Sorted by address, one entry per address.
    let first: Vec<u16> = rx
        .borrow_and_update()
        .iter()
        .map(|e| e.addr.port())
        .collect();
    assert_eq!(first, [1, 2]);

    rx.changed().await.unwrap();
    assert_eq!(
        rx.borrow_and_update().len(),
        1,
        "the next set came after the failures"
    );
    assert!(d.is_healthy());

    // Between the failures the driver waited: each gap at least half of
    // base·2^n, the next retry delay of equal jitter.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 6);
    for (n, pair) in calls[1..5].windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let full = Duration::from_millis(100) * 2u32.pow(n as u32);
        assert!(gap >= full / 2 && gap <= full, "retry {n}: waited {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn failures_never_empty_the_set_and_unchanged_sets_are_not_republished() {
    let script = VecDeque::from([Ok(vec![ep(1)]), down(), Ok(vec![ep(1)]), down(), down()]);
    let d = spawn(
        Scripted {
            script,
            calls: Arc::default(),
        },
        Backoff::default(),
    );
    let mut rx = d.subscribe();
    rx.changed().await.unwrap();
    rx.borrow_and_update();
    // Run the whole script.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "an identical set was published again"
    );
    assert_eq!(d.current().len(), 1);
    assert!(!d.is_healthy());
}

#[tokio::test]
async fn a_static_source_publishes_once() {
    let d = spawn(StaticSource::new(vec![ep(3), ep(4)]), Backoff::default());
    assert!(d.wait_synced(Duration::from_secs(1)).await);
    assert_eq!(d.current().len(), 2);
    assert!(d.is_synced() && d.is_healthy());
}
