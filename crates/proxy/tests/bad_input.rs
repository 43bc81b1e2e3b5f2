//! Malformed, oversized and slow requests, and broken upstreams: each gets a
//! clear answer and disturbs nothing else.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::Method;
use switchyard_stack::cluster::EndpointSpec;
use switchyard_test_support::{
    Backend, BackendConfig, Mode, RefusedAddr,
    client::{get, request, send_http1},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// Writes raw bytes and reads until the peer closes or `limit` passes.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn proxy_with(backend: &Backend, listener_extra: &str, route_extra: &str) -> TestProxy {
    let toml = listener("public", "api", route_extra).replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{listener_extra}\n"),
        1,
    ) + &cluster("api", &[backend.addr()], "");
    TestProxy::start(&toml).await
}

#[tokio::test]
async fn malformed_request_line_and_headers_get_400() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = proxy_with(&b, "", "").await;
    let r = raw(p.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    let r = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    let r = raw(p.addr, b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r:?}");
    assert_eq!(b.requests(), 0, "nothing malformed reaches the backend");
    assert_eq!(get(p.addr, "/ok").await.status(), 200, "proxy still serves");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = proxy_with(&b, "http = { max_header_bytes = 16384 }", "").await;
    let big = "a".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: a\r\nx-big: {big}\r\n\r\n");
    let r = raw(p.addr, req.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{:?}", &r[..r.len().min(80)]);
    // Just under the limit is fine.
    let mut ok = request(Method::GET, "/", Bytes::new());
    ok.headers_mut()
        .insert("x-big", "a".repeat(8 * 1024).parse().unwrap());
    assert_eq!(send_http1(p.addr, ok).await.unwrap().status(), 200);
    assert_eq!(b.requests(), 1);
}

#[tokio::test]
async fn slow_headers_are_cut_off_without_disturbing_others() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = proxy_with(&b, "http = { header_read_timeout = \"400ms\" }", "").await;
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Trickle a header byte now and then; the proxy must close anyway.
    let mut closed = false;
    for _ in 0..40 {
        if slow.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        // Meanwhile a well-behaved client is served.
        assert_eq!(get(p.addr, "/ok").await.status(), 200);
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // A 408 is acceptable; the connection must then close.
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "slow client was not cut off");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "cut off after {took:?}");
    assert!(
        took >= Duration::from_millis(300),
        "cut off too early: {took:?}"
    );
}

#[tokio::test]
async fn upstream_garbage_is_a_502_for_that_request_only() {
    let bad = Backend::start(BackendConfig::new("bad").mode(Mode::Garbage)).await;
    let good = Backend::start(BackendConfig::new("good")).await;
    let toml = format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  match = {{ path_prefix = "/bad" }}
  cluster = "bad"

  [[listeners.routes]]
  cluster = "good"

{}{}"#,
        cluster("bad", &[bad.addr()], ""),
        cluster("good", &[good.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    // One client keeps a connection open to the proxy across the failure.
    let mut keep =
        switchyard_test_support::client::http1_connect::<http_body_util::Full<Bytes>>(p.addr)
            .await
            .unwrap();
    let (r_bad, r_good) = tokio::join!(get(p.addr, "/bad"), get(p.addr, "/good"));
    assert_eq!(r_bad.status(), 502);
    assert_eq!(r_bad.headers()["x-switchyard-error"], "upstream_protocol");
    assert_eq!(r_good.status(), 200);
    let mut req = request(Method::GET, "/still-fine", Bytes::new());
    req.headers_mut().insert("host", "a".parse().unwrap());
    assert_eq!(keep.send_request(req).await.unwrap().status(), 200);
    // The bad backend recovers; the next request succeeds.
    bad.set_mode(Mode::Ok);
    assert_eq!(get(p.addr, "/bad").await.status(), 200);
}

#[tokio::test]
async fn upstream_closing_without_response_is_a_502() {
    let b = Backend::start(BackendConfig::new("b").mode(Mode::CloseWithoutResponse)).await;
    let p = proxy_with(&b, "", "").await;
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-switchyard-error"], "upstream_reset");
}

#[tokio::test]
async fn connect_failure_is_502_and_no_endpoints_is_503() {
    let refused = RefusedAddr::new();
    let nothing = refused.addr();
    let toml = listener("public", "api", "") + &cluster("api", &[nothing], "");
    let p = TestProxy::start(&toml).await;
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-switchyard-error"], "connect_failed");
    p.cluster("api").update(&[] as &[EndpointSpec]);
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-switchyard-error"], "no_endpoints");
}

#[tokio::test]
async fn route_timeout_is_504() {
    let b = Backend::start(BackendConfig::new("b").mode(Mode::Hang)).await;
    let p = proxy_with(&b, "", "  timeout = \"250ms\"").await;
    let started = Instant::now();
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-switchyard-error"], "timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(240) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
