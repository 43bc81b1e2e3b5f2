//! TTL expiry on the embedded store, on a paused tokio clock: time moves
//! only when the test says so, so "expires on time" is checked exactly.

use std::time::Duration;

use switchyard_discovery::wire::Registration;
use switchyard_registry::{
    StoreError, model,
    store::{Store, embedded::EmbeddedStore},
};
use tokio::time::advance;

fn record(id: &str, ttl: Option<&str>) -> model::Record {
    model::registration(
        id,
        Registration {
            address: "127.0.0.1:9001".into(),
            ttl: ttl.map(str::to_owned),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn ids(store: &EmbeddedStore) -> Vec<String> {
    let mut v: Vec<String> = store
        .service("api")
        .await
        .unwrap()
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    v.sort();
    v
}

/// Lets the expiry task run at the current (paused) instant.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // A commit runs on the blocking pool; a zero advance lets it finish
    // without moving the clock.
    advance(Duration::ZERO).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_registrations_expire_on_time_and_heartbeats_extend_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .register("api", record("ttl", Some("10s")))
        .await
        .unwrap();
    store.register("api", record("perm", None)).await.unwrap();

    advance(Duration::from_millis(9_900)).await;
    settle().await;
    assert_eq!(
        ids(&store).await,
        ["perm", "ttl"],
        "alive just before its TTL"
    );

    // A heartbeat at 9.9s moves the deadline to 19.9s.
    store.heartbeat("api", "ttl").await.unwrap();
    advance(Duration::from_millis(9_800)).await;
    settle().await;
    assert_eq!(ids(&store).await, ["perm", "ttl"]);

    let before = store.index();
    advance(Duration::from_millis(200)).await;
    settle().await;
    let mut gone = false;
    for _ in 0..100 {
        if ids(&store).await == ["perm"] {
            gone = true;
            break;
        }
        settle().await;
    }
    assert!(gone, "expired at 19.9s");
    assert!(store.index() > before, "an expiry is a change watchers see");

    // Once expired, a heartbeat is NotFound (the HTTP API answers 404).
    let err = store.heartbeat("api", "ttl").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    // Permanent registrations never expire.
    advance(Duration::from_secs(3600 * 48)).await;
    settle().await;
    assert_eq!(ids(&store).await, ["perm"]);
}

#[tokio::test(start_paused = true)]
async fn re_registering_restarts_the_ttl_and_a_watch_sees_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    store
        .register("api", record("a", Some("5s")))
        .await
        .unwrap();
    advance(Duration::from_secs(4)).await;
    store
        .register("api", record("a", Some("5s")))
        .await
        .unwrap();
    let index = store.service("api").await.unwrap().index;

    // A blocking watch is answered by the expiry, 5s after the update.
    let s = store.clone();
    let watch = tokio::spawn(async move { s.watch("api", index, Duration::from_secs(60)).await });
    advance(Duration::from_millis(4_900)).await;
    settle().await;
    assert!(!watch.is_finished(), "nothing changed yet");
    advance(Duration::from_millis(200)).await;
    let state = watch.await.unwrap().unwrap();
    assert!(state.instances.is_empty());
    assert!(state.index > index);
}

#[tokio::test]
async fn ttl_registrations_get_a_fresh_ttl_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store
            .register("api", record("a", Some("30s")))
            .await
            .unwrap();
        store.register("api", record("b", None)).await.unwrap();
        store.drain("api", "b").await.unwrap();
    }
    // Reopen: the same file, released by the dropped store.
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let state = store.service("api").await.unwrap();
    assert_eq!(state.instances.len(), 2);
    assert!(state.instances.iter().any(|i| i.id == "b" && i.draining));
    assert_eq!(
        state
            .instances
            .iter()
            .find(|i| i.id == "a")
            .unwrap()
            .ttl
            .as_deref(),
        Some("30s")
    );
    store.heartbeat("api", "a").await.unwrap();
}
