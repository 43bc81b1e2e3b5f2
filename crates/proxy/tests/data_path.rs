//! The data path's integrity, tested as the attacks and mishaps themselves
//! (raw bytes, crafted HTTP/2 frames): request bodies that break mid-way
//! never reach an upstream as complete requests and are never blamed on an
//! endpoint; an upstream's own error header and HTTP version do not leak;
//! reset streams and closed upgrades release what they held.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use switchyard_test_support::{
    Backend, BackendConfig,
    client::{get, h2c_connect},
    eventually,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What an upstream saw of one request body.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Complete(Vec<u8>),
    Broken,
}

/// An HTTP/1.1 upstream that reads each request body to its end and records
/// whether it ended cleanly, then answers 200.
async fn body_recorder() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let outcome = match req.into_body().collect().await {
                            Ok(b) => Seen::Complete(b.to_bytes().to_vec()),
                            Err(_) => Seen::Broken,
                        };
                        record.lock().unwrap().push(outcome);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn complete(seen: &Mutex<Vec<Seen>>) -> Vec<Vec<u8>> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Complete(b) => Some(b.clone()),
            Seen::Broken => None,
        })
        .collect()
}

/// Retries on everything, for every method: the policy under which a
/// truncated body was once replayed and completed.
const RETRY_ALL: &str = "  retry = { attempts = 3, on = [\"connect-failure\", \"reset\", \"5xx\", \"gateway-error\"], non_idempotent = true }";

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_malformed_chunk_is_a_400_and_never_a_complete_upstream_body() {
    let (up, seen) = body_recorder().await;
    let p = TestProxy::start(&(listener("public", "api", RETRY_ALL) + &cluster("api", &[up], "")))
        .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"PUT /acct HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.contains("x-switchyard-error: downstream_body"),
        "{head}"
    );
    // Whatever reached the upstream was cut off, never a complete `hello`.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(complete(&seen).is_empty(), "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_client_gone_mid_upload_never_makes_a_complete_upstream_request() {
    let (up, seen) = body_recorder().await;
    let p = TestProxy::start(&(listener("public", "api", RETRY_ALL) + &cluster("api", &[up], "")))
        .await;
    for framing in ["content-length", "chunked"] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let head = match framing {
            "chunked" => {
                "PUT /acct HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{\"account\": \"alice\", \"balance\": 1"
            }
            _ => {
                "PUT /acct HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n{\"account\": \"alice\", \"balance\": 1"
            }
        };
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(complete(&seen).is_empty(), "{:?}", seen.lock().unwrap());
    assert_eq!(
        p.cluster("api")
            .decisions()
            .get(switchyard_telemetry::Decision::Retry),
        0,
        "a client's broken body is never retried"
    );
}

#[tokio::test]
async fn an_http2_stream_reset_mid_body_never_completes_upstream() {
    let (up, seen) = body_recorder().await;
    let p = TestProxy::start(&(listener("public", "api", RETRY_ALL) + &cluster("api", &[up], "")))
        .await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("http://{}/acct", p.addr))
        .body(())
        .unwrap();
    let (_resp, mut body) = client.send_request(req, false).unwrap();
    body.send_data(
        Bytes::from_static(b"{\"account\": \"alice\", \"balance\": 1"),
        false,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    body.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(complete(&seen).is_empty(), "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn broken_client_bodies_never_eject_healthy_endpoints() {
    let (a, _) = body_recorder().await;
    let (b, _) = body_recorder().await;
    let p = TestProxy::start(
        &(listener("public", "api", RETRY_ALL)
            + &cluster(
                "api",
                &[a, b],
                "outlier = { consecutive_failures = 3 }\nbalance = \"round-robin\"",
            )),
    )
    .await;
    for _ in 0..12 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot-a-size\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    }
    let snap = p.cluster("api").snapshot();
    for ep in &snap.endpoints {
        assert_eq!(ep.state, "active", "{snap:?}");
        assert_eq!(ep.consecutive_failures, 0, "{snap:?}");
    }
    assert_eq!(
        p.cluster("api")
            .decisions()
            .get(switchyard_telemetry::Decision::Ejection),
        0
    );
}

#[tokio::test]
async fn an_upstreams_error_header_is_not_taken_for_ours() {
    // Proxy B answers 502 itself (its endpoint is gone) and names the error;
    // proxy A in front only relays that answer.
    let refused = switchyard_test_support::RefusedAddr::new();
    let dead = refused.addr();
    let b = TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[dead], ""))).await;
    let a =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr], ""))).await;
    let r = get(b.addr, "/x").await;
    assert_eq!(r.headers()["x-switchyard-error"], "connect_failed");
    let r = get(a.addr, "/x").await;
    assert_eq!(r.status(), 502);
    assert!(
        !r.headers().contains_key("x-switchyard-error"),
        "A relayed B's answer and must not claim its error: {:?}",
        r.headers()
    );
}

#[tokio::test]
async fn an_http10_upstream_does_not_downgrade_http11_clients() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let p = TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[up], ""))).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_reset_http2_stream_lets_its_connection_idle_out() {
    let slow = Backend::start(BackendConfig::new("slow").mode(
        switchyard_test_support::Mode::Delay(Duration::from_secs(30)),
    ))
    .await;
    let route = "";
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nhttp = {{ idle_timeout = \"500ms\" }}\n\n  [[listeners.routes]]\n  cluster = \"api\"\n{route}\n\n{}",
        cluster("api", &[slow.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .uri(format!("http://{}/slow", p.addr))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The client gives up on the stream: hyper drops the request future.
    drop(resp);
    drop(client);
    // With the request gone the connection is idle, and closes after 500 ms.
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(closed.is_ok(), "the connection was never idled out");
}

#[tokio::test]
async fn a_closed_upgrade_tunnel_wakes_requests_waiting_for_a_connection() {
    let b = Backend::start(BackendConfig::new("ws")).await;
    let p = TestProxy::start(
        &(listener("public", "api", "")
            + &cluster("api", &[b.addr()], "limits = { max_connections = 1 }")),
    )
    .await;
    let mut ws = TcpStream::connect(p.addr).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(read_head(&mut ws).await.starts_with("HTTP/1.1 101"));
    // The tunnel holds the cluster's one connection: a request waits.
    let addr = p.addr;
    let waiting = tokio::spawn(async move { get(addr, "/after").await.status() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the tunnel must hold the only connection"
    );
    drop(ws);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting request was woken when the tunnel closed")
        .unwrap();
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), || async {
        p.cluster("api").snapshot().endpoints[0].connections_open <= 1
    })
    .await;
}

#[tokio::test]
async fn an_http2_get_body_is_forwarded_not_dropped() {
    let (up, seen) = body_recorder().await;
    let p = TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[up], ""))).await;
    // Raw frames: a GET with DATA and no content-length, which an HTTP/1.1
    // upstream only receives if the proxy frames it (chunked).
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{}/q", p.addr))
        .body(())
        .unwrap();
    let (resp, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"query-in-body"), true)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(complete(&seen), vec![b"query-in-body".to_vec()]);
    // And with a content-length, through hyper's client.
    let mut tx = h2c_connect::<Full<Bytes>>(p.addr).await.unwrap();
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://{}/q", p.addr))
        .body(Full::new(Bytes::from_static(b"second")))
        .unwrap();
    assert_eq!(tx.send_request(req).await.unwrap().status(), 200);
    assert_eq!(complete(&seen).last().unwrap(), b"second");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_read_timeout() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nhttp = {{ header_read_timeout = \"500ms\" }}\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n{}",
        cluster("api", &[b.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    // Nothing at all, and half an HTTP/2 preface: both are closed after the
    // 500 ms header read timeout, not the 60 s idle timeout.
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(opening).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{opening:?}: still open after 5 s"));
        assert!(matches!(n, Ok(0) | Err(_)), "{opening:?}: {n:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400),
            "{opening:?}: {waited:?}"
        );
    }
    // A client that sends its request in time is served as usual.
    assert_eq!(get(p.addr, "/x").await.status(), 200);
}

#[tokio::test]
async fn the_header_count_limit_is_settable_and_answers_431() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nhttp = {{ max_headers = 10 }}\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n{}",
        cluster("api", &[b.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    let head = |n: usize| {
        let mut h = String::from("GET /x HTTP/1.1\r\nHost: a\r\n");
        for i in 1..n {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(head(10).as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(head(11).as_bytes()).await.unwrap();
    let answer = read_head(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
