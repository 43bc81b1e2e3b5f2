//! Load-balancer behaviour through the whole proxy.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::Method;
use http_body_util::{BodyExt, Full};
use switchyard_stack::cluster::EndpointSpec;
use switchyard_test_support::{
    Backend, BackendConfig, Mode, assert_eventually,
    client::{http1_connect, request},
};

/// Sends `n` requests over one keep-alive connection; returns the backend
/// name of each answer.
async fn run(addr: SocketAddr, n: usize, key: Option<&str>) -> Vec<String> {
    let mut tx = http1_connect::<Full<Bytes>>(addr).await.unwrap();
    let mut seen = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = request(Method::GET, "/", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        if let Some(k) = key {
            req.headers_mut()
                .insert("x-user", format!("{k}-{i}").parse().unwrap());
        }
        tx.ready().await.expect("proxy keeps the connection open");
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        seen.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
        resp.into_body().collect().await.unwrap();
    }
    seen
}

#[tokio::test]
async fn weighted_round_robin_follows_weights_exactly() {
    let b: Vec<Backend> = futures_util::future::join_all(
        ["w1", "w2", "w3"].map(|n| Backend::start(BackendConfig::new(n))),
    )
    .await;
    let toml = format!(
        "{}[[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\ndiscovery = {{ static = [{{ address = \"{}\", weight = 1 }}, {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 3 }}] }}\n",
        listener("public", "api", ""),
        b[0].addr(),
        b[1].addr(),
        b[2].addr()
    );
    let p = TestProxy::start(&toml).await;
    run(p.addr, 600, None).await;
    assert_eq!(
        [b[0].requests(), b[1].requests(), b[2].requests()],
        [100, 200, 300]
    );
}

#[tokio::test]
async fn peak_ewma_shifts_load_away_from_a_slow_endpoint() {
    let fast1 = Backend::start(BackendConfig::new("fast1")).await;
    let fast2 = Backend::start(BackendConfig::new("fast2")).await;
    let slow =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_millis(60))))
            .await;
    let toml = listener("public", "api", "")
        + &cluster(
            "api",
            &[fast1.addr(), fast2.addr(), slow.addr()],
            "balance = \"p2c-peak-ewma\"",
        );
    let p = TestProxy::start(&toml).await;
    // Eight concurrent clients, 50 requests each.
    let clients = (0..8).map(|_| run(p.addr, 50, None));
    futures_util::future::join_all(clients).await;
    let total = fast1.requests() + fast2.requests() + slow.requests();
    assert_eq!(total, 400);
    let slow_share = slow.requests() as f64 / total as f64;
    assert!(
        slow_share < 0.10,
        "slow endpoint got {slow_share:.3} of traffic (fast1 {}, fast2 {}, slow {})",
        fast1.requests(),
        fast2.requests(),
        slow.requests()
    );
}

#[tokio::test]
async fn ring_hash_is_sticky_and_remaps_about_one_nth() {
    let backends: Vec<Backend> = futures_util::future::join_all(
        (0..5).map(|i| Backend::start(BackendConfig::new(format!("r{i}")))),
    )
    .await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let toml = listener("public", "api", "")
        + &cluster(
            "api",
            &addrs,
            "balance = \"ring-hash\"\nhash = { header = \"x-user\" }",
        );
    let p = TestProxy::start(&toml).await;
    let first = run(p.addr, 500, Some("user")).await;
    let again = run(p.addr, 500, Some("user")).await;
    assert_eq!(first, again, "same keys must reach the same endpoints");
    let used: std::collections::HashSet<&String> = first.iter().collect();
    assert_eq!(used.len(), 5, "keys spread over every endpoint");

    // Remove one endpoint of five: only its keys move.
    let removed = "r2";
    let remaining: Vec<EndpointSpec> = backends
        .iter()
        .filter(|b| b.name() != removed)
        .map(|b| EndpointSpec {
            addr: b.addr(),
            weight: 1,
            draining: false,
        })
        .collect();
    p.cluster("api").update(&remaining);
    let after = run(p.addr, 500, Some("user")).await;
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    let were_on_removed = first.iter().filter(|b| *b == removed).count();
    assert!(after.iter().all(|b| b != removed));
    assert_eq!(
        moved, were_on_removed,
        "only the removed endpoint's keys move"
    );
    let share = moved as f64 / 500.0;
    assert!(
        (0.1..=0.32).contains(&share),
        "remapped share {share} should be near 1/5"
    );
}

#[tokio::test]
async fn maglev_is_sticky_by_header() {
    let backends: Vec<Backend> = futures_util::future::join_all(
        (0..4).map(|i| Backend::start(BackendConfig::new(format!("m{i}")))),
    )
    .await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let toml = listener("public", "api", "")
        + &cluster(
            "api",
            &addrs,
            "balance = \"maglev\"\nhash = { header = \"x-user\" }",
        );
    let p = TestProxy::start(&toml).await;
    let first = run(p.addr, 300, Some("k")).await;
    let again = run(p.addr, 300, Some("k")).await;
    assert_eq!(first, again);
    assert!(backends.iter().all(|b| b.requests() > 0));
}

#[tokio::test]
async fn least_request_spreads_concurrent_load() {
    let backends: Vec<Backend> = futures_util::future::join_all((0..3).map(|i| {
        Backend::start(
            BackendConfig::new(format!("l{i}")).mode(Mode::Delay(Duration::from_millis(5))),
        )
    }))
    .await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let p = TestProxy::start(
        &(listener("public", "api", "") + &cluster("api", &addrs, "balance = \"least-request\"")),
    )
    .await;
    futures_util::future::join_all((0..6).map(|_| run(p.addr, 30, None))).await;
    for b in &backends {
        let n = b.requests();
        assert!((30..=90).contains(&n), "{} got {n} of 180", b.name());
    }
}

#[tokio::test]
async fn removed_endpoints_get_no_new_requests() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(
        &(listener("public", "api", "")
            + &cluster("api", &[a.addr(), b.addr()], "balance = \"round-robin\"")),
    )
    .await;
    run(p.addr, 10, None).await;
    assert_eq!(a.requests(), 5);
    p.cluster("api").update(&[EndpointSpec {
        addr: b.addr(),
        weight: 1,
        draining: false,
    }]);
    run(p.addr, 10, None).await;
    assert_eq!(a.requests(), 5);
    assert_eq!(b.requests(), 15);
}

/// Three endpoints (round-robin), places for two connections: nine
/// sequential requests, each answered within 3 s with at most two
/// connections open, three to each endpoint. Returns the backends.
async fn three_endpoints_two_places(extra: &str) -> Vec<Backend> {
    let b: Vec<Backend> = futures_util::future::join_all(
        ["c1", "c2", "c3"].map(|n| Backend::start(BackendConfig::new(n))),
    )
    .await;
    let addrs: Vec<SocketAddr> = b.iter().map(|b| b.addr()).collect();
    let toml = listener("public", "api", "")
        + &cluster(
            "api",
            &addrs,
            &format!("{extra}balance = \"round-robin\"\nlimits = {{ max_connections = 2 }}"),
        );
    let p = TestProxy::start(&toml).await;
    let api = p.cluster("api");
    let mut tx = http1_connect::<Full<Bytes>>(p.addr).await.unwrap();
    for i in 0..9 {
        tx.ready().await.expect("proxy keeps the connection open");
        let mut req = request(Method::GET, "/", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        let resp = tokio::time::timeout(Duration::from_secs(3), tx.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("request {i} waited for a place"))
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        resp.into_body().collect().await.unwrap();
        let open: usize = api
            .endpoints()
            .iter()
            .map(|e| e.pool().open_connections())
            .sum();
        assert!(open <= 2, "request {i}: {open} connections open, limit 2");
    }
    assert_eq!(
        [b[0].requests(), b[1].requests(), b[2].requests()],
        [3, 3, 3]
    );
    b
}

#[tokio::test]
async fn a_cluster_with_more_endpoints_than_connections_closes_idle_ones_to_reach_the_others() {
    // The third request finds both places held by idle connections to the
    // other two endpoints.
    let b = three_endpoints_two_places("").await;
    // Each request after the first two closed an idle connection to make
    // room for its own.
    assert_eq!(b.iter().map(|b| b.connections()).sum::<u64>(), 9);
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout_and_only_then() {
    let b = Backend::start(BackendConfig::new("b1")).await;
    let toml =
        listener("public", "api", "") + &cluster("api", &[b.addr()], "idle_timeout = \"400ms\"");
    let p = TestProxy::start(&toml).await;
    let api = p.cluster("api");
    let idle = || api.endpoints()[0].pool().idle_connections();
    run(p.addr, 3, None).await;
    assert_eq!(idle(), 1, "the connection waits in the pool");
    // Well inside the idle timeout it stays; the sweep (every 200 ms)
    // closes it once the timeout has passed.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(idle(), 1);
    assert_eventually!(idle() == 0, Duration::from_secs(3));
    assert_eq!(api.endpoints()[0].pool().open_connections(), 0);
    // The next request opens a new one.
    run(p.addr, 1, None).await;
    assert_eq!(b.connections(), 2);
}

#[tokio::test]
async fn an_http2_cluster_with_more_endpoints_than_connections_lets_the_oldest_go() {
    // As above with one shared HTTP/2 connection per endpoint: the third
    // endpoint's connection needs the place of the first one's.
    three_endpoints_two_places("protocol = \"http2\"\n").await;
}

#[tokio::test]
async fn an_http2_connection_let_go_at_the_limit_finishes_its_streams() {
    // Every endpoint answers after 400 ms: the first two requests are in
    // flight on the two connections there is room for when the third
    // needs one, so the connection let go has a stream in flight.
    let b: Vec<Backend> = futures_util::future::join_all(["s1", "s2", "s3"].map(|n| {
        Backend::start(BackendConfig::new(n).mode(Mode::Delay(Duration::from_millis(400))))
    }))
    .await;
    let addrs: Vec<SocketAddr> = b.iter().map(|b| b.addr()).collect();
    let toml = listener("public", "api", "")
        + &cluster(
            "api",
            &addrs,
            "protocol = \"http2\"\nbalance = \"round-robin\"\nlimits = { max_connections = 2 }",
        );
    let p = TestProxy::start(&toml).await;
    let send = |addr: SocketAddr| async move {
        let mut tx = http1_connect::<Full<Bytes>>(addr).await.unwrap();
        let mut req = request(Method::GET, "/", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        let resp = tx.send_request(req).await.unwrap();
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    };
    let first = tokio::spawn(send(p.addr));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(send(p.addr));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = tokio::time::timeout(Duration::from_secs(3), send(p.addr))
        .await
        .expect("the third request gets a place once a connection closes");
    assert_eq!(third, 200);
    assert_eq!(first.await.unwrap(), 200, "the stream in flight finished");
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(
        [b[0].requests(), b[1].requests(), b[2].requests()],
        [1, 1, 1]
    );
}
