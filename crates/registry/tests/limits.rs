//! The registry's connection limit and timeouts, on loopback with 300ms
//! timeouts: connections that send nothing (or half an HTTP/2 preface) are
//! closed, blocking queries longer than the idle timeout still answer, and
//! at the limit a new client waits until a connection closes.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{ids, register};
use http::Method;
use switchyard_registry::{
    RegistryServer,
    store::{Store, embedded::EmbeddedStore},
};
use switchyard_test_support::client::{http1_connect, request, send_http1};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    time::Instant,
};

const TIMEOUT: Duration = Duration::from_millis(300);
/// Far beyond the timers, for a busy machine; far below "never".
const PATIENCE: Duration = Duration::from_secs(10);

/// A registry with 300ms header read and idle timeouts and room for
/// `max_connections`; stops when the sender is dropped.
async fn registry(
    dir: &std::path::Path,
    max_connections: usize,
) -> (SocketAddr, oneshot::Sender<()>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir).await.expect("store opens"));
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .expect("binds")
        .serve_settings(switchyard_serve::Settings {
            max_connections,
            header_read_timeout: TIMEOUT,
            idle_timeout: TIMEOUT,
            ..switchyard_serve::Settings::default()
        });
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn closed_within(mut stream: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + limit, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_silent_connection_and_half_an_http2_preface_are_closed_at_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = registry(dir.path(), 64).await;
    for first_bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(first_bytes).await.unwrap();
        let took = closed_within(c, PATIENCE).await;
        assert!(
            took >= TIMEOUT - Duration::from_millis(50),
            "{first_bytes:?}: closed after {took:?}"
        );
    }
}

/// `GET` a blocking query at `index` with `wait` on a new connection.
fn watch_request(
    addr: SocketAddr,
    index: u64,
    wait: &str,
) -> http::Request<http_body_util::Full<Bytes>> {
    let mut req = request(
        Method::GET,
        &format!("/v1/services/api?index={index}&wait={wait}"),
        Bytes::new(),
    );
    req.headers_mut()
        .insert(http::header::HOST, addr.to_string().parse().unwrap());
    req
}

#[tokio::test]
async fn a_blocking_query_longer_than_the_idle_timeout_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = registry(dir.path(), 64).await;
    register(addr, "api", "a1", "127.0.0.1:9001", None).await;
    let (_, index) = ids(addr, "api").await;
    // One connection: the query is held for its whole wait (five idle
    // timeouts), answers, and the connection is still there for the next.
    let mut sender = http1_connect(addr).await.expect("connects");
    let start = Instant::now();
    let resp = sender
        .send_request(watch_request(addr, index, "1500ms"))
        .await
        .expect("the blocking query answers");
    assert_eq!(resp.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "answered after {:?}, before its wait",
        start.elapsed()
    );
    drop(resp);
    let resp = sender
        .send_request(watch_request(addr, 0, "1ms"))
        .await
        .expect("the connection is reused");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn at_the_limit_a_new_client_waits_for_a_blocking_query_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = registry(dir.path(), 2).await;
    register(addr, "api", "a1", "127.0.0.1:9001", None).await;
    let (_, index) = ids(addr, "api").await;
    // Two watchers take both connections for 1.5s.
    let start = Instant::now();
    let watchers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(send_http1(addr, watch_request(addr, index, "1500ms"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third client is accepted only when one of them has answered and
    // closed its connection.
    let third = tokio::time::timeout(PATIENCE, send_http1(addr, watch_request(addr, 0, "1ms")))
        .await
        .expect("the waiting client is served")
        .expect("answered");
    assert_eq!(third.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "a third connection was served beyond the limit of 2 after {:?}",
        start.elapsed()
    );
    for w in watchers {
        assert_eq!(w.await.unwrap().expect("watcher answered").status(), 200);
    }
}
