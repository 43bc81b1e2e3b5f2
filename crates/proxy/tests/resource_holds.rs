//! Clients that hold the proxy's resources without using them: HTTP/2
//! streams whose window stays at zero, HTTP/1.1 readers that stop reading,
//! request bodies that stall, and one client taking a cluster's request
//! slots. Each test is the attack itself, on real sockets and frames.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{TestProxy, cluster};
use http::{Method, Request};
use switchyard_test_support::assert_eventually;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    time::Instant,
};

/// A response far larger than any buffer on the way.
const BIG: usize = 256 << 20;

/// An upstream that answers every request with a `BIG` body written as fast
/// as the proxy takes it (on `/tick`: ten small chunks 300 ms apart; on
/// `POST /upload`: only once the whole request body arrived), and counts the
/// exchanges the proxy broke off.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let count = released.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"POST /upload") {
                    // Waits for the whole body before answering.
                    while matches!(s.read(&mut buf).await, Ok(1..)) {}
                    count.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if head.starts_with(b"GET /tick") {
                    let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                    for _ in 0..10 {
                        out.extend_from_slice(b"5\r\ntick\n\r\n");
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                    return;
                }
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 16 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, released)
}

async fn proxy(http: &str, upstream: SocketAddr, limits: &str) -> TestProxy {
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nhttp = {{ {http} }}\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n{}",
        cluster("api", &[upstream], limits)
    );
    TestProxy::start(&toml).await
}

/// An HTTP/2 client whose SETTINGS_INITIAL_WINDOW_SIZE is 0: the server
/// may send response heads but no DATA until the client opens a window,
/// which it never does.
async fn zero_window_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn get(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("http://a{path}"))
        .body(())
        .unwrap()
}

/// A client from 127.0.0.2 gets a 200 head.
async fn assert_served_from_another_address(proxy: SocketAddr) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(proxy).await.unwrap();
    other
        .write_all(b"GET /tick HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

fn active(p: &TestProxy) -> usize {
    p.cluster("api").snapshot().active_requests
}

#[tokio::test]
async fn zero_window_http2_streams_are_reset_and_release_their_slots() {
    let (up, released) = upstream().await;
    let p = proxy(
        "send_timeout = \"1s\"",
        up,
        "limits = { max_requests = 64 }",
    )
    .await;
    let mut client = zero_window_client(p.addr).await;
    let mut bodies = Vec::new();
    for _ in 0..40 {
        client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(get("/big"), true).unwrap();
        bodies.push(resp);
    }
    let mut streams = Vec::new();
    for resp in bodies {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp.into_body());
    }
    // Every stream holds a request slot of the cluster while it stays open.
    assert_eq!(active(&p), 40);
    let held = Instant::now();
    assert_eventually!(active(&p) == 0, Duration::from_secs(5));
    let after = held.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "released after {after:?}, before the send timeout"
    );
    assert_eventually!(
        released.load(Ordering::SeqCst) == 40,
        Duration::from_secs(5)
    );
    // The client learns that each stream was ended: a reset, not a body
    // that ends as if complete.
    for mut body in streams {
        let end = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .expect("the stream ends");
        assert!(matches!(end, Some(Err(_))), "{end:?}");
    }
    // The connection itself stays usable for a client that reads.
    let r = switchyard_test_support::client::send_h2c(
        p.addr,
        Request::get(format!("http://{}/tick", p.addr))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.body().len(), 50);
}

#[tokio::test]
async fn an_http1_reader_that_stops_reading_is_disconnected() {
    let (up, released) = upstream().await;
    let p = proxy("send_timeout = \"1s\"", up, "").await;
    let sock = TcpSocket::new_v4().unwrap();
    // A small receive buffer, as slowhttptest -X uses, so that the proxy
    // blocks on this client quickly.
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(p.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = s.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    assert_eq!(active(&p), 1);
    // Then it reads nothing more.
    assert_eventually!(active(&p) == 0, Duration::from_secs(5));
    assert_eventually!(released.load(Ordering::SeqCst) == 1, Duration::from_secs(5));
    // What is left in the socket drains, then the connection is closed
    // long before the body's end.
    let mut total = n;
    let mut buf = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => total += k,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the proxy closed the connection");
    assert!(total < BIG / 2, "read {total} bytes");
}

#[tokio::test]
async fn a_stalled_request_body_ends_after_the_stream_idle_timeout() {
    let (up, released) = upstream().await;
    let p = proxy("stream_idle_timeout = \"1s\"", up, "").await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    // The upstream waits for the rest of the body, which never comes; the
    // route timeout only counts from the body's end.
    assert_eventually!(active(&p) == 1, Duration::from_secs(5));
    let stalled = Instant::now();
    assert_eventually!(active(&p) == 0, Duration::from_secs(5));
    assert!(stalled.elapsed() >= Duration::from_millis(500));
    assert_eventually!(released.load(Ordering::SeqCst) == 1, Duration::from_secs(5));
    // The client's connection is closed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed");
}

#[tokio::test]
async fn one_client_address_cannot_take_a_clusters_slots() {
    let (up, _) = upstream().await;
    let p = proxy(
        "max_requests_per_client = 8",
        up,
        "limits = { max_requests = 16 }",
    )
    .await;
    let mut attacker = zero_window_client(p.addr).await;
    let mut codes = Vec::new();
    let mut held = Vec::new();
    for _ in 0..12 {
        attacker = attacker.ready().await.unwrap();
        let (resp, _) = attacker.send_request(get("/big"), true).unwrap();
        let resp = resp.await.unwrap();
        codes.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert_eq!(resp.headers()["x-switchyard-error"], "client_limit");
        }
        held.push(resp);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 8, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 4, "{codes:?}");
    assert_eq!(active(&p), 8);
    // A second connection from the same address shares the limit.
    let mut same = zero_window_client(p.addr).await;
    same = same.ready().await.unwrap();
    let (resp, _) = same.send_request(get("/big"), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 429);
    // Another address still gets the cluster's remaining slots.
    assert_served_from_another_address(p.addr).await;
    drop(held);
}

#[tokio::test]
async fn streams_that_make_progress_outlive_both_timeouts() {
    let (up, _) = upstream().await;
    let p = proxy(
        "send_timeout = \"1s\", stream_idle_timeout = \"1s\"",
        up,
        "",
    )
    .await;
    // Ten chunks 300 ms apart: three seconds in all, never a second
    // without a frame.
    let started = Instant::now();
    let r = switchyard_test_support::client::get(p.addr, "/tick").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().len(), 50);
    assert!(started.elapsed() >= Duration::from_millis(2700));
    // The same over HTTP/2.
    let r = switchyard_test_support::client::send_h2c(
        p.addr,
        Request::get(format!("http://{}/tick", p.addr))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.body().len(), 50);
}

/// The attack as it was run against the proxy, with the default settings:
/// fourteen zero-window connections of 100 streams each once held all 1,024
/// request slots of the cluster, and every other client got 503.
#[tokio::test]
async fn a_zero_window_flood_with_default_settings_leaves_the_cluster_to_others() {
    let (up, _) = upstream().await;
    let p = TestProxy::start(&format!(
        "{}{}",
        common::listener("public", "api", ""),
        cluster("api", &[up], "")
    ))
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..14 {
        let mut c = zero_window_client(p.addr).await;
        let mut pending = Vec::new();
        for _ in 0..100 {
            c = c.ready().await.unwrap();
            pending.push(c.send_request(get("/big"), true).unwrap().0);
        }
        for resp in pending {
            let resp = resp.await.unwrap();
            match resp.status().as_u16() {
                200 => held.push(resp),
                429 => refused += 1,
                other => panic!("status {other}"),
            }
        }
    }
    // The default max_requests_per_client (256) of the default max_requests
    // (1,024).
    assert_eq!(active(&p), 256);
    assert_eq!((held.len(), refused), (256, 1400 - 256));
    assert_served_from_another_address(p.addr).await;
}
