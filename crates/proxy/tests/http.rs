//! HTTP/1.1 and h2c through the proxy: forwarding, bodies, headers.

mod common;

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::{Method, StatusCode};
use switchyard_test_support::{
    Backend, BackendConfig,
    backend::expected_bytes,
    client::{request, send_h2c, send_http1},
};

#[tokio::test]
async fn http1_and_h2c_reach_the_backend_on_one_port() {
    let b = Backend::start(BackendConfig::new("b1")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;

    let r1 = send_http1(p.addr, request(Method::GET, "/hello", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r1.status(), StatusCode::OK);
    assert_eq!(r1.headers()["x-backend"], "b1");
    assert_eq!(r1.version(), http::Version::HTTP_11);

    let r2 = send_h2c(p.addr, request(Method::GET, "/hello", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r2.status(), StatusCode::OK);
    assert_eq!(r2.headers()["x-backend"], "b1");
    assert_eq!(r2.version(), http::Version::HTTP_2);
    assert_eq!(b.requests(), 2);
}

#[tokio::test]
async fn http2_upstream_cluster() {
    let b = Backend::start(BackendConfig::new("h2")).await;
    let p = TestProxy::start(
        &(listener("public", "api", "") + &cluster("api", &[b.addr()], "protocol = \"http2\"")),
    )
    .await;
    for _ in 0..3 {
        let r = send_http1(p.addr, request(Method::GET, "/x", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let last = b.last_request().unwrap();
    assert_eq!(last.version, http::Version::HTTP_2);
    // All requests multiplexed over one upstream connection.
    assert_eq!(b.connections(), 1);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    let body: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let r = send_http1(p.addr, request(Method::POST, "/echo", body.clone()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().len(), body.len());
    assert!(r.body() == &body, "echoed body differs");
    let r = send_h2c(p.addr, request(Method::POST, "/echo", body.clone()))
        .await
        .unwrap();
    assert!(r.body() == &body, "h2 echoed body differs");
    let r = send_http1(p.addr, request(Method::GET, "/bytes/3000000", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r.body().as_ref(), expected_bytes(3_000_000).as_slice());
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;

    let mut req = request(Method::GET, "/h", Bytes::new());
    let h = req.headers_mut();
    h.insert("connection", "keep-alive, x-hop".parse().unwrap());
    h.insert("x-hop", "secret".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    h.insert("x-end-to-end", "kept".parse().unwrap());
    let r = send_http1(p.addr, req).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = b.last_request().unwrap();
    assert_eq!(seen.header("x-hop"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let id = seen
        .header("x-request-id")
        .expect("request id generated")
        .to_owned();
    assert_eq!(id.len(), 36);

    // A caller's request id is passed through unchanged.
    let mut req = request(Method::GET, "/h", Bytes::new());
    req.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    send_http1(p.addr, req).await.unwrap();
    assert_eq!(
        b.last_request().unwrap().header("x-request-id"),
        Some("abc-123")
    );
}

#[tokio::test]
async fn keep_alive_connections_are_reused_upstream() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    let mut tx =
        switchyard_test_support::client::http1_connect::<http_body_util::Full<Bytes>>(p.addr)
            .await
            .unwrap();
    for _ in 0..20 {
        let mut req = request(Method::GET, "/k", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    assert_eq!(b.requests(), 20);
    assert_eq!(
        b.connections(),
        1,
        "sequential requests share one pooled connection"
    );
}
