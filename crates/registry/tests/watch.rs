//! The registry as a discovery source, and the registration client,
//! against a real registry on loopback — including a registry restart.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestRegistry, call, ids, register};
use http::Method;
use switchyard_discovery::{Backoff, Discovery, RegistrySource, spawn};
use switchyard_registry::{
    client::{Registration, RegistrationOptions},
    model,
    store::{Store, embedded::EmbeddedStore},
    wire::Registration as Body,
};
use switchyard_test_support::{assert_eventually, free_addr};

const BOUND: Duration = Duration::from_secs(5);

fn fast() -> Backoff {
    Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

fn ports(d: &Discovery) -> Vec<u16> {
    d.current().iter().map(|e| e.addr.port()).collect()
}

#[tokio::test]
async fn registry_source_follows_changes_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = free_addr();
    let r = TestRegistry::embedded(dir.path(), addr).await;
    register(addr, "api", "a1", "127.0.0.1:9001", None).await;

    let source = RegistrySource::new(&r.url(), "api")
        .unwrap()
        .wait(Duration::from_secs(30));
    let d = spawn(source, fast());
    assert!(d.wait_synced(BOUND).await);
    assert_eq!(ports(&d), [9001]);

    // A registration reaches the watcher through the blocking query.
    register(addr, "api", "a2", "127.0.0.1:9002", None).await;
    assert_eventually!(ports(&d) == [9001, 9002], BOUND);
    // Draining is part of the set.
    call(
        addr,
        Method::PUT,
        "/v1/services/api/instances/a2/drain",
        None,
    )
    .await;
    assert_eventually!(
        d.current()
            .iter()
            .any(|e| e.addr.port() == 9002 && e.draining),
        BOUND
    );

    // The registry goes away: the source keeps the last known set.
    r.stop().await;
    assert_eventually!(!d.is_healthy(), BOUND);
    assert_eq!(ports(&d), [9001, 9002]);

    // A change lands in the store while no server runs ...
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let rec = model::registration(
            "a3",
            Body {
                address: "127.0.0.1:9003".into(),
                ..Default::default()
            },
        )
        .unwrap();
        store.register("api", rec).await.unwrap();
    }
    // ... and the restarted registry delivers it to the resumed watch.
    let r = TestRegistry::embedded(dir.path(), addr).await;
    assert_eventually!(ports(&d) == [9001, 9002, 9003], BOUND);
    assert_eventually!(d.is_healthy(), BOUND);
    // And the watch goes on after the restart.
    call(addr, Method::DELETE, "/v1/services/api/instances/a1", None).await;
    assert_eventually!(ports(&d) == [9002, 9003], BOUND);
    drop(r);
}

#[tokio::test]
async fn registration_client_registers_heartbeats_drains_and_deregisters() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let mut opts =
        RegistrationOptions::new(&r.url(), "api", "api-1", "127.0.0.1:9001".parse().unwrap());
    opts.ttl = Duration::from_secs(1);
    opts.metadata.insert("version".into(), "7".into());
    let reg = Registration::register(opts).await.unwrap();
    assert_eq!(ids(r.addr, "api").await.0, ["api-1"]);

    // Heartbeats (every third of the TTL) keep it past three TTLs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            ids(r.addr, "api").await.0,
            ["api-1"],
            "expired despite heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Lost behind its back (as after a registry reset): it registers again.
    call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/api-1",
        None,
    )
    .await;
    assert_eventually!(ids(r.addr, "api").await.0 == ["api-1"], BOUND);

    let inst = reg.drain().await.unwrap();
    assert!(inst.draining);
    let a = call(r.addr, Method::GET, "/v1/services/api", None).await;
    assert_eq!(a.json["instances"][0]["draining"], true);
    assert_eq!(a.json["instances"][0]["metadata"]["version"], "7");

    reg.shutdown(Duration::ZERO).await.unwrap();
    assert!(ids(r.addr, "api").await.0.is_empty());
}

#[tokio::test]
async fn registration_client_reports_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let opts = RegistrationOptions::new(&r.url(), "-bad", "i", "127.0.0.1:9001".parse().unwrap());
    match Registration::register(opts).await {
        Err(switchyard_registry::client::ClientError::Rejected { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "invalid_service"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn registry_source_takes_a_burst_of_changes_in_few_answers_and_a_lone_one_at_once() {
    use switchyard_discovery::Source;
    use tokio::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = free_addr();
    let r = TestRegistry::embedded(dir.path(), addr).await;
    register(addr, "api", "a0", "127.0.0.1:9000", None).await;
    // A settle far above the registry's write time, so that what is timed
    // is the settle and not the machine.
    let settle = Duration::from_secs(1);
    let mut source = RegistrySource::new(&r.url(), "api")
        .unwrap()
        .wait(Duration::from_secs(30))
        .settle(settle);
    assert_eq!(source.next().await.unwrap().len(), 1);

    // A lone change, the settle long past: the query was already waiting
    // and answers as soon as the change is made.
    tokio::time::sleep(settle + Duration::from_millis(200)).await;
    let watch = tokio::spawn(async move {
        let set = source.next().await.unwrap();
        (source, set, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(addr, "api", "a1", "127.0.0.1:9001", None).await;
    let registered = Instant::now();
    let (mut source, set, answered) = watch.await.unwrap();
    assert_eq!(set.len(), 2);
    assert!(
        answered.saturating_duration_since(registered) < settle / 2,
        "a lone change waited {:?}",
        answered.saturating_duration_since(registered)
    );

    // A burst right after that answer: 20 registrations, the first one
    // inside the settle. They come in at most a few answers, not 20.
    let burst = tokio::spawn(async move {
        for i in 2..22u16 {
            register(
                addr,
                "api",
                &format!("a{i}"),
                &format!("127.0.0.1:{}", 9000 + i),
                None,
            )
            .await;
        }
        Instant::now()
    });
    let mut answers = 0;
    let mut first = None;
    loop {
        let set = source.next().await.unwrap();
        answers += 1;
        first.get_or_insert_with(Instant::now);
        if set.len() == 22 {
            break;
        }
    }
    let burst_done = burst.await.unwrap();
    let first = first.unwrap();
    assert!(
        first.duration_since(answered) >= settle - Duration::from_millis(50),
        "the first answer after one came {:?} later, inside the settle",
        first.duration_since(answered)
    );
    // One answer per settle while the burst lasts, and one for its end.
    let bound = 2 + (burst_done.duration_since(answered).as_millis() / settle.as_millis()) as usize;
    assert!(
        answers <= bound,
        "{answers} answers for a burst of 20 (bound {bound})"
    );
}
