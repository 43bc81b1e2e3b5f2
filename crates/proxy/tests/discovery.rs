//! Discovery end to end: a real registry, etcd or DNS server feeding a real
//! proxy that routes to real backends, all on loopback.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use common::TestProxy;
use http::Method;
use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
use switchyard_test_support::{
    Backend, BackendConfig, DnsRecord, Dnsmasq, Etcd, assert_eventually, client, free_addr,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// Registration → traffic must happen well within this in tests; the
/// benchmark measures the real figure (p99 in milliseconds).
const PROPAGATION: Duration = Duration::from_secs(2);

/// An embedded registry on a fixed address, restartable on it.
struct Registry {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<std::io::Result<()>>,
}

impl Registry {
    async fn start(dir: &std::path::Path, addr: SocketAddr) -> Self {
        let store = Arc::new(EmbeddedStore::open(dir).await.unwrap());
        let server = RegistryServer::bind_with_store(addr, store, None)
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            join,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.join.await.unwrap().unwrap();
    }

    async fn send(&self, method: Method, path: &str, body: &str) -> u16 {
        let mut req = client::request(method, path, Bytes::from(body.to_owned()));
        if !body.is_empty() {
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
        }
        client::send_http1(self.addr, req)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn register(&self, id: &str, addr: SocketAddr) {
        let status = self
            .send(
                Method::PUT,
                &format!("/v1/services/api/instances/{id}"),
                &format!(r#"{{"address":"{addr}"}}"#),
            )
            .await;
        assert!(status == 200 || status == 201, "register {id}: {status}");
    }

    async fn deregister(&self, id: &str) {
        assert_eq!(
            self.send(
                Method::DELETE,
                &format!("/v1/services/api/instances/{id}"),
                ""
            )
            .await,
            204
        );
    }

    async fn drain(&self, id: &str) {
        assert_eq!(
            self.send(
                Method::PUT,
                &format!("/v1/services/api/instances/{id}/drain"),
                ""
            )
            .await,
            200
        );
    }
}

fn config(discovery: &str, balance: &str) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n\
         [[clusters]]\nname = \"api\"\ndiscovery = {discovery}\nbalance = \"{balance}\"\n"
    )
}

async fn get(proxy: SocketAddr) -> u16 {
    client::get(proxy, "/").await.status().as_u16()
}

async fn backend(name: &str) -> Backend {
    Backend::start(BackendConfig::new(name)).await
}

#[tokio::test]
async fn registration_brings_traffic_and_deregistration_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), free_addr()).await;
    let (a, b) = (backend("a").await, backend("b").await);
    let p = TestProxy::start(&config(
        &format!(
            "{{ registry = {{ url = \"http://{}\", service = \"api\" }} }}",
            reg.addr
        ),
        "round-robin",
    ))
    .await;
    // Nothing registered: no endpoint.
    assert_eq!(get(p.addr).await, 503);

    let started = std::time::Instant::now();
    reg.register("a", a.addr()).await;
    assert_eventually!(get(p.addr).await == 200, PROPAGATION);
    assert!(started.elapsed() < PROPAGATION);
    assert!(a.requests() >= 1);

    reg.register("b", b.addr()).await;
    assert_eventually!(
        get(p.addr).await == 200 && b.requests() > 0,
        PROPAGATION,
        "b gets traffic after registering"
    );

    reg.deregister("a").await;
    assert_eventually!(
        p.cluster("api").snapshot().endpoints.len() == 1,
        PROPAGATION
    );
    let before = a.requests();
    for _ in 0..20 {
        assert_eq!(get(p.addr).await, 200);
    }
    assert_eq!(a.requests(), before, "a deregistered instance got requests");
    reg.stop().await;
}

#[tokio::test]
async fn draining_instances_get_no_new_requests_even_in_panic_mode() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), free_addr()).await;
    let backends = [backend("a").await, backend("b").await, backend("c").await];
    for (i, be) in backends.iter().enumerate() {
        reg.register(&format!("i{i}"), be.addr()).await;
    }
    let p = TestProxy::start(&config(
        &format!(
            "{{ registry = {{ url = \"http://{}\", service = \"api\" }} }}",
            reg.addr
        ),
        "round-robin",
    ))
    .await;
    assert_eq!(
        p.cluster("api").snapshot().endpoints.len(),
        3,
        "bind waits for the first set"
    );

    // Two of three drain: a health-based panic threshold of 50% would send
    // them traffic again; draining must not.
    reg.drain("i0").await;
    reg.drain("i1").await;
    assert_eventually!(
        p.cluster("api").snapshot().endpoints.len() == 1,
        PROPAGATION
    );
    let (before0, before1) = (backends[0].requests(), backends[1].requests());
    for _ in 0..30 {
        assert_eq!(get(p.addr).await, 200);
    }
    assert_eq!(
        (backends[0].requests(), backends[1].requests()),
        (before0, before1)
    );
    // Registering again (e.g. after a restart) ends the drain.
    reg.register("i0", backends[0].addr()).await;
    assert_eventually!(
        p.cluster("api").snapshot().endpoints.len() == 2,
        PROPAGATION
    );
    reg.stop().await;
}

#[tokio::test]
async fn proxy_keeps_routing_with_the_last_known_endpoints_while_the_registry_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let reg = Registry::start(dir.path(), addr).await;
    let (a, b) = (backend("a").await, backend("b").await);
    reg.register("a", a.addr()).await;
    reg.register("b", b.addr()).await;
    let p = TestProxy::start(&config(
        &format!("{{ registry = {{ url = \"http://{addr}\", service = \"api\" }} }}"),
        "round-robin",
    ))
    .await;
    assert_eq!(p.cluster("api").snapshot().endpoints.len(), 2);

    reg.stop().await;
    // The registry is gone; both endpoints keep their traffic.
    let (a0, b0) = (a.requests(), b.requests());
    for _ in 0..40 {
        assert_eq!(get(p.addr).await, 200);
    }
    assert!(
        a.requests() > a0 && b.requests() > b0,
        "an endpoint lost its traffic"
    );
    assert_eq!(p.cluster("api").snapshot().endpoints.len(), 2);

    // The registry comes back (same store): a change made now propagates.
    let reg = Registry::start(dir.path(), addr).await;
    reg.deregister("a").await;
    assert_eventually!(
        p.cluster("api").snapshot().endpoints.len() == 1,
        Duration::from_secs(10)
    );
    let a1 = a.requests();
    for _ in 0..10 {
        assert_eq!(get(p.addr).await, 200);
    }
    assert_eq!(a.requests(), a1);
    reg.stop().await;
}

#[tokio::test]
async fn dns_srv_weights_are_honoured() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = Dnsmasq::start(
        &[
            DnsRecord::srv("_http._tcp.api.test", "a.api.test", a.addr().port(), 0, 10),
            DnsRecord::srv("_http._tcp.api.test", "b.api.test", b.addr().port(), 0, 30),
            // A backup (higher priority value): never used while the others answer.
            DnsRecord::srv("_http._tcp.api.test", "c.api.test", 9, 1, 100),
            DnsRecord::host("a.api.test", a.addr().ip()),
            DnsRecord::host("b.api.test", b.addr().ip()),
            DnsRecord::host("c.api.test", "127.0.0.1".parse().unwrap()),
        ],
        1,
    )
    .await;
    let p = TestProxy::start(&config(
        &format!(
            "{{ dns = {{ srv = \"_http._tcp.api.test\", servers = [\"{}\"], min_ttl = \"500ms\", max_ttl = \"5s\" }} }}",
            dns.addr()
        ),
        "round-robin",
    ))
    .await;
    let snap = p.cluster("api").snapshot();
    let mut weights: Vec<(u16, u32)> = snap
        .endpoints
        .iter()
        .map(|e| (e.address.port(), e.weight))
        .collect();
    weights.sort();
    let mut expected = vec![(a.addr().port(), 10), (b.addr().port(), 30)];
    expected.sort();
    assert_eq!(weights, expected);

    for _ in 0..400 {
        assert_eq!(get(p.addr).await, 200);
    }
    // Weighted round-robin is exact over whole rounds: 1 to 3.
    assert_eq!((a.requests(), b.requests()), (100, 300));
}

#[tokio::test]
async fn etcd_discovery_routes_to_what_is_written_under_the_prefix() {
    let etcd = Etcd::start().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let kv = switchyard_etcd::Client::new(&etcd.client_urls(), Default::default()).unwrap();
    kv.put(
        b"/switchyard/services/api/a",
        format!(r#"{{"address":"{}"}}"#, a.addr()).into_bytes(),
        0,
    )
    .await
    .unwrap();
    let p = TestProxy::start(&config(
        &format!(
            "{{ etcd = {{ endpoints = [\"{}\"], prefix = \"/switchyard/services/api/\" }} }}",
            etcd.client_urls()[0]
        ),
        "round-robin",
    ))
    .await;
    assert_eq!(get(p.addr).await, 200);
    assert_eq!(a.requests(), 1);

    kv.put(
        b"/switchyard/services/api/b",
        format!(r#"{{"address":"{}"}}"#, b.addr()).into_bytes(),
        0,
    )
    .await
    .unwrap();
    kv.delete(b"/switchyard/services/api/a").await.unwrap();
    assert_eventually!(
        p.cluster("api")
            .snapshot()
            .endpoints
            .iter()
            .map(|e| e.address)
            .collect::<Vec<_>>()
            == [b.addr()],
        PROPAGATION
    );
    for _ in 0..5 {
        assert_eq!(get(p.addr).await, 200);
    }
    assert_eq!((a.requests(), b.requests()), (1, 5));
}
