//! The admin listener under the attack that used every file descriptor
//! (thousands of idle connections): its own connection limit, and a
//! first-request timeout that closes connections that send nothing, while
//! the data plane keeps accepting and `/ready` keeps answering. Also: the
//! idle timeout does not cut the `/events` feed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::Method;
use http_body_util::BodyExt;
use switchyard_test_support::{
    Backend, BackendConfig,
    client::{get, http1_connect, request, send_http1},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// The admin limits of these tests: 20 connections, 300ms to send a first
/// request.
const LIMIT: usize = 20;
const HEADER_READ: Duration = Duration::from_millis(300);

/// Far beyond the timers, for a busy machine; far below "never".
const PATIENCE: Duration = Duration::from_secs(10);

async fn proxy(admin_extra: &str) -> (TestProxy, Backend) {
    let b = Backend::start(BackendConfig::new("b")).await;
    let admin = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nmax_connections = {LIMIT}\nheader_read_timeout = \"300ms\"\n{admin_extra}\n"
    );
    let p = TestProxy::start(
        &(admin + &listener("public", "api", "") + &cluster("api", &[b.addr()], "")),
    )
    .await;
    (p, b)
}

/// Reads until the peer closes; returns when, or `None` if still open at
/// `deadline`.
async fn closed_by(mut stream: TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn idle_connections_beyond_the_admin_limit_are_closed_while_the_data_plane_serves() {
    let (p, _b) = proxy("").await;
    let start = Instant::now();
    // Three times the limit, sending nothing.
    let mut idle = Vec::new();
    for _ in 0..3 * LIMIT {
        let c = TcpStream::connect(p.admin)
            .await
            .expect("the kernel completes the handshake");
        idle.push(tokio::spawn(closed_by(c, start + PATIENCE)));
    }
    // The data plane accepts and answers throughout, while the admin is at
    // its limit with a backlog behind it.
    let data_plane = {
        let addr = p.addr;
        tokio::spawn(async move {
            let mut served = 0;
            while start.elapsed() < 4 * HEADER_READ {
                let r = tokio::time::timeout(Duration::from_secs(2), get(addr, "/x"))
                    .await
                    .expect("the data plane answers at once");
                assert_eq!(r.status(), 200);
                served += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            served
        })
    };
    // /ready waits behind the idle ones in the backlog, and answers once the
    // first-request timeout has closed them.
    let ready = tokio::time::timeout(PATIENCE, get(p.admin, "/ready"))
        .await
        .expect("/ready answers once the idle connections are closed");
    assert_eq!(ready.status(), 200);

    let mut closed = Vec::new();
    for c in idle {
        let at = c
            .await
            .unwrap()
            .expect("every idle connection is closed by the first-request timeout");
        closed.push(at - start);
    }
    // At most LIMIT were served at once: those accepted after the first
    // ones closed (no earlier than HEADER_READ) close no earlier than twice
    // that. Without a limit all would close together.
    let early = closed.iter().filter(|t| **t < 2 * HEADER_READ).count();
    assert!(
        early <= LIMIT,
        "{early} idle connections closed within {:?}: more than the limit of {LIMIT} were accepted at once",
        2 * HEADER_READ
    );
    assert!(
        closed.iter().all(|t| *t >= HEADER_READ),
        "closed before the timeout: {closed:?}"
    );
    assert!(data_plane.await.unwrap() > 0);
    // And the admin serves normally afterwards.
    assert_eq!(get(p.admin, "/live").await.status(), 200);
}

#[tokio::test]
async fn a_silent_connection_and_half_an_http2_preface_are_closed_at_the_header_read_timeout() {
    let (p, _b) = proxy("").await;
    for first_bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let start = Instant::now();
        let mut c = TcpStream::connect(p.admin).await.unwrap();
        c.write_all(first_bytes).await.unwrap();
        let at = closed_by(c, start + PATIENCE)
            .await
            .unwrap_or_else(|| panic!("{first_bytes:?}: still open after {PATIENCE:?}"));
        assert!(
            at - start >= HEADER_READ - Duration::from_millis(50),
            "{first_bytes:?}: closed after {:?}",
            at - start
        );
    }
}

#[tokio::test]
async fn the_events_feed_outlives_the_idle_timeout() {
    // Idle connections closed after 300ms; the feed sends one snapshot a
    // second and must keep going.
    let (p, _b) = proxy("idle_timeout = \"300ms\"").await;
    let mut sender = http1_connect::<http_body_util::Full<Bytes>>(p.admin)
        .await
        .expect("connects");
    let mut req = request(Method::GET, "/events", Bytes::new());
    req.headers_mut()
        .insert(http::header::HOST, p.admin.to_string().parse().unwrap());
    let resp = sender.send_request(req).await.expect("events response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let start = Instant::now();
    let mut text = String::new();
    while text.matches("event: snapshot").count() < 3 {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("the feed keeps sending")
            .expect("the feed did not end")
            .expect("the feed did not fail");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(
        start.elapsed() > 3 * Duration::from_millis(300),
        "three snapshots came faster than the test assumes"
    );
    // Other requests keep working meanwhile.
    let r = send_http1(p.admin, request(Method::GET, "/ready", Bytes::new()))
        .await
        .expect("/ready");
    assert_eq!(r.status(), 200);
}
