//! Route bypasses, as the attacks themselves: a request target that
//! disagrees with `Host` (HTTP/1.1 absolute form, HTTP/2 `:authority`), a
//! `Connection` header naming what the proxy routes on, and h2c upgrade
//! smuggling through an HTTP/1.1 route.

mod common;

use std::time::Duration;

use common::{TestProxy, cluster};
use switchyard_test_support::{Backend, BackendConfig, free_addr};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `public.example` goes to the backend; `internal.example` is blocked
/// (its cluster has no live endpoint).
async fn vhost_proxy(backend: &Backend) -> TestProxy {
    TestProxy::start(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  match = {{ host = \"internal.example\" }}\n  cluster = \"blocked\"\n\n  [[listeners.routes]]\n  match = {{ host = \"public.example\" }}\n  cluster = \"api\"\n\n{}{}",
        cluster("api", &[backend.addr()], ""),
        cluster("blocked", &[free_addr()], "")
    ))
    .await
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_absolute_form_target_wins_and_replaces_host() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = vhost_proxy(&b).await;
    let head = raw(
        p.addr,
        b"GET http://public.example/secret HTTP/1.1\r\nHost: internal.example\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = b.last_request().expect("the request reached the backend");
    assert_eq!(seen.header("host"), Some("public.example"), "{seen:?}");
}

#[tokio::test]
async fn duplicate_or_missing_host_is_a_400() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = vhost_proxy(&b).await;
    let head = raw(
        p.addr,
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("invalid_request"), "{head}");
    let head = raw(p.addr, b"GET /x HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn an_http2_host_that_disagrees_with_authority_is_a_400() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = vhost_proxy(&b).await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .uri("http://public.example/secret")
        .header("host", "internal.example")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(b.requests(), 0);
    // Agreeing ones pass.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .uri("http://public.example/ok")
        .header("host", "public.example")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

#[tokio::test]
async fn connection_cannot_strip_host_or_request_id() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = vhost_proxy(&b).await;
    let head = raw(
        p.addr,
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nX-Request-Id: abc\r\nConnection: host, x-request-id, x-forwarded-for\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = b.last_request().unwrap();
    assert_eq!(seen.header("host"), Some("public.example"), "{seen:?}");
    assert_eq!(seen.header("x-request-id"), Some("abc"), "{seen:?}");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn h2c_upgrades_are_never_tunnelled() {
    // The backend upgrades `/ws` to whatever protocol is asked for, as an
    // h2c-accepting server would.
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n{}",
        cluster("api", &[b.addr()], "")
    ))
    .await;
    let head = raw(
        p.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(
        !head.starts_with("HTTP/1.1 101"),
        "h2c was tunnelled: {head}"
    );
    let seen = b.last_request().expect("proxied as a plain request");
    assert!(seen.header("upgrade").is_none(), "{seen:?}");
    assert!(seen.header("http2-settings").is_none(), "{seen:?}");
    // A protocol the route does not list is not tunnelled either…
    let head = raw(
        p.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: raw-tunnel\r\n\r\n",
    )
    .await;
    assert!(!head.starts_with("HTTP/1.1 101"), "{head}");
    // …while WebSocket, the default, still is.
    let head = raw(
        p.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[tokio::test]
async fn a_route_can_allow_other_upgrades() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n  upgrades = [\"raw-tunnel\"]\n\n{}",
        cluster("api", &[b.addr()], "")
    ))
    .await;
    let head = raw(
        p.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: raw-tunnel\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}
