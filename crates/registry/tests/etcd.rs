//! The etcd store and the etcd discovery source against real etcd (Debian's
//! `etcd-server`, started by each test on free loopback ports).

mod common;

use std::{sync::Arc, time::Duration};

use common::{TestRegistry, call, ids, register};
use http::Method;
use switchyard_discovery::{Backoff, EtcdSource, spawn};
use switchyard_etcd::{Client, ClientOptions};
use switchyard_registry::store::{Store, etcd::EtcdStore};
use switchyard_test_support::{Etcd, assert_eventually};

const BOUND: Duration = Duration::from_secs(10);

async fn registry_on(etcd: &Etcd) -> TestRegistry {
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&etcd.client_urls())
            .await
            .expect("etcd store"),
    );
    TestRegistry::with_store(store, "127.0.0.1:0".parse().unwrap(), None).await
}

#[tokio::test]
async fn etcd_store_serves_the_api_with_leases_for_ttls() {
    let etcd = Etcd::start().await;
    let r = registry_on(&etcd).await;

    assert_eq!(
        register(r.addr, "api", "a1", "127.0.0.1:9001", None)
            .await
            .status,
        201
    );
    assert_eq!(
        register(r.addr, "api", "a1", "127.0.0.1:9001", None)
            .await
            .status,
        200
    );
    assert_eq!(
        register(r.addr, "api", "t1", "127.0.0.1:9002", Some("2s"))
            .await
            .status,
        201
    );
    let (got, index) = ids(r.addr, "api").await;
    assert_eq!(got, ["a1", "t1"]);

    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/t1/heartbeat",
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/a1/drain",
        None,
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.json["draining"].as_bool()),
        (200, Some(true))
    );
    let a = call(r.addr, Method::GET, "/v1/services", None).await;
    assert_eq!(
        (
            a.json["services"][0]["instances"].as_u64(),
            a.json["services"][0]["draining"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // A blocking query is answered by the lease running out.
    let a = tokio::time::timeout(
        BOUND,
        call(
            r.addr,
            Method::GET,
            &format!("/v1/services/api?index={index}&wait=30s"),
            None,
        ),
    )
    .await
    .expect("the watch answers");
    assert!(a.json["index"].as_u64().unwrap() > index);
    assert_eventually!(
        ids(r.addr, "api").await.0 == ["a1"],
        BOUND,
        "t1 expired with its lease"
    );
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/t1/heartbeat",
        None,
    )
    .await;
    assert_eq!((a.status.as_u16(), a.code()), (404, "not_found"));

    let a = call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/a1",
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    let a = call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/a1",
        None,
    )
    .await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn two_registries_on_one_etcd_agree() {
    let etcd = Etcd::start().await;
    let a = registry_on(&etcd).await;
    let b = registry_on(&etcd).await;

    register(a.addr, "api", "x1", "127.0.0.1:9001", None).await;
    // Reads without an index are linearizable: B sees A's write at once.
    let (on_b, index) = ids(b.addr, "api").await;
    assert_eq!(on_b, ["x1"]);

    // A watch on B is answered by a write through A.
    let baddr = b.addr;
    let watch = tokio::spawn(async move {
        call(
            baddr,
            Method::GET,
            &format!("/v1/services/api?index={index}&wait=30s"),
            None,
        )
        .await
    });
    register(a.addr, "api", "x2", "127.0.0.1:9002", Some("30s")).await;
    let w = tokio::time::timeout(BOUND, watch)
        .await
        .expect("watch answers")
        .unwrap();
    assert_eq!(w.json["instances"].as_array().unwrap().len(), 2);

    // Heartbeat, drain and delete through B act on what A wrote.
    assert_eq!(
        call(
            b.addr,
            Method::PUT,
            "/v1/services/api/instances/x2/heartbeat",
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(
            b.addr,
            Method::PUT,
            "/v1/services/api/instances/x2/drain",
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(
            b.addr,
            Method::DELETE,
            "/v1/services/api/instances/x1",
            None
        )
        .await
        .status,
        204
    );
    let on_a = call(a.addr, Method::GET, "/v1/services/api", None).await;
    let on_b = call(b.addr, Method::GET, "/v1/services/api", None).await;
    assert_eq!(on_a.json["instances"], on_b.json["instances"]);
    assert_eq!(on_a.json["instances"][0]["id"], "x2");
    assert_eq!(on_a.json["instances"][0]["draining"], true);
}

#[tokio::test]
async fn registry_keeps_serving_when_one_of_three_etcd_members_dies() {
    let mut etcd = Etcd::cluster(3).await;
    let r = registry_on(&etcd).await;
    let addr = r.addr;

    // Writes run continuously while a member dies.
    let writer = tokio::spawn(async move {
        let mut failures = Vec::new();
        for i in 0..150u16 {
            let a = register(
                addr,
                "api",
                &format!("i{i}"),
                &format!("127.0.0.1:{}", 10_000 + i),
                None,
            )
            .await;
            if !a.status.is_success() {
                failures.push((i, a.status, a.json.clone()));
            }
            if i % 10 == 0 {
                let g = call(addr, Method::GET, "/v1/services/api", None).await;
                if g.status != 200 {
                    failures.push((i, g.status, g.json));
                }
            }
        }
        failures
    });
    // Kill one member once writes are under way.
    assert_eventually!(ids(r.addr, "api").await.0.len() >= 30, BOUND);
    etcd.kill(0);
    let failures = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("writes finish")
        .unwrap();
    assert!(
        failures.is_empty(),
        "requests failed while one of three members was down: {failures:?}"
    );
    assert_eq!(ids(r.addr, "api").await.0.len(), 150);

    // Blocking queries keep working too.
    let (_, index) = ids(r.addr, "api").await;
    let watch = tokio::spawn(async move {
        call(
            addr,
            Method::GET,
            &format!("/v1/services/api?index={index}&wait=30s"),
            None,
        )
        .await
    });
    call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/i0",
        None,
    )
    .await;
    let w = tokio::time::timeout(BOUND, watch)
        .await
        .expect("watch answers")
        .unwrap();
    assert_eq!(w.json["instances"].as_array().unwrap().len(), 149);
}

#[tokio::test]
async fn etcd_source_follows_the_prefix_and_resumes_after_etcd_restarts() {
    let mut etcd = Etcd::start().await;
    let client = Client::new(&etcd.client_urls(), ClientOptions::default()).unwrap();
    let put = |id: &str, port: u16| {
        let client = client.clone();
        let key = format!("/switchyard/services/api/{id}");
        let value = format!(r#"{{"address":"127.0.0.1:{port}","weight":2}}"#);
        async move {
            client
                .put(key.as_bytes(), value.into_bytes(), 0)
                .await
                .unwrap()
        }
    };
    put("a", 9001).await;
    // A value that is not a record is skipped, not fatal.
    client
        .put(b"/switchyard/services/api/junk", b"not json".to_vec(), 0)
        .await
        .unwrap();
    // Another service under the same root is not part of this prefix.
    client
        .put(
            b"/switchyard/services/api2/x",
            br#"{"address":"127.0.0.1:1"}"#.to_vec(),
            0,
        )
        .await
        .unwrap();

    let source = EtcdSource::new(&etcd.client_urls(), "/switchyard/services/api/").unwrap();
    let d = spawn(
        source,
        Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(300),
        },
    );
    assert!(d.wait_synced(BOUND).await);
    let ports = |d: &switchyard_discovery::Discovery| {
        d.current()
            .iter()
            .map(|e| e.addr.port())
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(&d), [9001]);
    assert_eq!(d.current()[0].weight, 2);

    put("b", 9002).await;
    assert_eventually!(ports(&d) == [9001, 9002], BOUND);

    // etcd restarts (same data): the source keeps its set meanwhile and
    // resumes from its last revision.
    etcd.kill(0);
    assert_eventually!(!d.is_healthy(), BOUND);
    assert_eq!(ports(&d), [9001, 9002]);
    etcd.restart(0).await;
    let client = Client::new(&etcd.client_urls(), ClientOptions::default()).unwrap();
    client.delete(b"/switchyard/services/api/a").await.unwrap();
    client
        .put(
            b"/switchyard/services/api/c",
            br#"{"address":"127.0.0.1:9003","draining":true}"#.to_vec(),
            0,
        )
        .await
        .unwrap();
    assert_eventually!(ports(&d) == [9002, 9003], BOUND);
    assert!(d.current()[1].draining);
}
