//! The limits and timeouts of `switchyard_serve::serve`, on loopback, with
//! 300ms timeouts and small connection limits.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{
    TestServer, closed_within, get, get2, h2c, http1, quick, quick_first_request, text_of,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// Far beyond a 300ms timer, so that a busy machine does not fail a test,
/// and far below "never".
const PATIENCE: Duration = Duration::from_secs(5);

/// A closing timer cannot fire before it is due: what proves that the
/// timer, not something else, closed the connection.
const AT_LEAST: Duration = Duration::from_millis(250);

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let server = TestServer::start(quick_first_request()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_within(&mut silent, PATIENCE).await;
    assert!(took >= AT_LEAST, "closed after {took:?}");
}

#[tokio::test]
async fn half_an_http2_preface_is_closed_at_the_header_read_timeout() {
    let server = TestServer::start(quick_first_request()).await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let took = closed_within(&mut half, PATIENCE).await;
    assert!(took >= AT_LEAST, "closed after {took:?}");
}

#[tokio::test]
async fn an_http2_preface_without_a_request_is_closed() {
    let server = TestServer::start(quick_first_request()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let took = closed_within(&mut conn, PATIENCE).await;
    assert!(took >= AT_LEAST, "closed after {took:?}");
}

#[tokio::test]
async fn a_trickled_request_head_is_closed_at_the_header_read_timeout() {
    let server = TestServer::start(quick_first_request()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut conn, PATIENCE).await;
    assert!(took >= AT_LEAST, "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_request() {
    let server = TestServer::start(quick(16)).await;
    let (mut sender, closed) = h2c(server.addr).await;
    let resp = sender.send_request(get2(server.addr, "/")).await.unwrap();
    assert_eq!(text_of(resp).await, "ok");
    let start = Instant::now();
    tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(
        start.elapsed() >= AT_LEAST,
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_http2_client_that_ignores_the_graceful_close_is_closed() {
    let server = TestServer::start(quick(16)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // HEADERS on stream 1, END_STREAM | END_HEADERS: `:method GET`,
    // `:scheme http`, `:path /` from HPACK's static table.
    conn.write_all(&[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84])
        .await
        .unwrap();
    // Then nothing, not even the acknowledgement of the ping with which
    // hyper's graceful close (after the idle timeout) waits for the client.
    let took = closed_within(&mut conn, PATIENCE).await;
    assert!(took >= AT_LEAST, "closed after {took:?}");
}

#[tokio::test]
async fn responses_longer_than_the_idle_timeout_complete() {
    let server = TestServer::start(quick(16)).await;
    // HTTP/1.1: a late head, then a body that takes 1.25s, on one
    // connection.
    let (mut h1, _) = http1(server.addr).await;
    let resp = h1.send_request(get(server.addr, "/slow")).await.unwrap();
    assert_eq!(text_of(resp).await, "slow");
    let resp = h1.send_request(get(server.addr, "/stream")).await.unwrap();
    assert_eq!(text_of(resp).await, "tick\n".repeat(5));
    // The connection was not taken for idle while the body streamed.
    let resp = h1.send_request(get(server.addr, "/")).await.unwrap();
    assert_eq!(text_of(resp).await, "ok");
    // HTTP/2: the same, and both at once.
    let (h2, _) = h2c(server.addr).await;
    let (a, b) = tokio::join!(
        h2.clone().send_request(get2(server.addr, "/slow")),
        h2.clone().send_request(get2(server.addr, "/stream")),
    );
    assert_eq!(text_of(a.unwrap()).await, "slow");
    assert_eq!(text_of(b.unwrap()).await, "tick\n".repeat(5));
    let resp = h2
        .clone()
        .send_request(get2(server.addr, "/"))
        .await
        .unwrap();
    assert_eq!(text_of(resp).await, "ok");
}

#[tokio::test]
async fn a_reset_http2_stream_does_not_keep_the_connection_busy() {
    let server = TestServer::start(quick(16)).await;
    let (mut sender, closed) = h2c(server.addr).await;
    // The request starts, then the client gives up on it (RST_STREAM).
    let pending = sender.send_request(get2(server.addr, "/hold"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), pending)
            .await
            .is_err()
    );
    assert_eq!(server.held.load(Ordering::SeqCst), 1);
    // Had the reset request stayed counted, the connection would never be
    // idle; it is, and closes.
    tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the connection is idle once the stream is reset")
        .unwrap();
}

#[tokio::test]
async fn at_the_limit_new_clients_wait_in_the_backlog_until_a_connection_closes() {
    let server = TestServer::start(quick(2)).await;
    // Two connections take the two slots with requests in flight.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (mut sender, _) = http1(server.addr).await;
        holders.push(tokio::spawn(async move {
            let resp = sender.send_request(get(server.addr, "/hold")).await;
            text_of(resp.expect("held request answered")).await
        }));
    }
    while server.held.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A third connects (the kernel completes the handshake) but is not
    // served: its request waits.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(600), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served beyond the limit of 2"
    );
    // The held requests outlived the idle timeout and still complete; once
    // their connections close, the third is accepted and answered.
    server.release();
    for h in holders {
        assert_eq!(h.await.unwrap(), "released");
    }
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, third.read_to_string(&mut answer))
        .await
        .expect("the waiting client is served")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed() {
    let server = TestServer::start(quick(16)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Not reading: the socket buffers fill and the server's writes stall.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What was buffered, then the end: the server gave up on the stream.
    closed_within(&mut conn, PATIENCE).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_requests_in_flight() {
    let mut server = TestServer::start(quick(16)).await;
    let addr = server.addr;
    let (mut h1, _) = http1(addr).await;
    let (mut h2, _) = h2c(addr).await;
    let a = tokio::spawn(h1.send_request(get(addr, "/hold")));
    let b = tokio::spawn(h2.send_request(get2(addr, "/hold")));
    while server.held.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = server.shutdown();
    // The listener closes at once.
    let refused = async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("the listener closes");
    assert!(
        !done.is_finished(),
        "serve returned with requests in flight"
    );
    server.release();
    assert_eq!(text_of(a.await.unwrap().unwrap()).await, "released");
    assert_eq!(text_of(b.await.unwrap().unwrap()).await, "released");
    tokio::time::timeout(PATIENCE, done)
        .await
        .expect("serve returns once the requests finished")
        .unwrap()
        .unwrap();
}
