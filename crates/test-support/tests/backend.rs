//! The misbehaving backend, exercised over real loopback sockets with plain
//! hyper clients.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use switchyard_test_support::backend::{BACKEND_HEADER, expected_bytes};
use switchyard_test_support::client::{self, get, request, send_h2c, send_http1};
use switchyard_test_support::{Backend, BackendConfig, Mode, assert_eventually, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn backend(name: &str) -> Backend {
    Backend::start(BackendConfig::new(name)).await
}

/// Sends a raw HTTP/1.1 request and reads until the server closes.
async fn raw_exchange(backend: &Backend, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(backend.addr()).await?;
    stream.write_all(request).await?;
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server should close the connection")?;
    Ok(received)
}

#[tokio::test]
async fn ok_mode_answers_with_name_over_http1_and_h2c() {
    let backend = backend("alpha").await;

    let h1 = get(backend.addr(), "/").await;
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.body(), "alpha");
    assert_eq!(h1.headers()[BACKEND_HEADER], "alpha");

    let h2 = send_h2c(backend.addr(), request(Method::GET, "/", Bytes::new()))
        .await
        .expect("h2c request");
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2);
    assert_eq!(h2.body(), "alpha");

    let versions: Vec<Version> = backend.recorded().iter().map(|r| r.version).collect();
    assert_eq!(versions, [Version::HTTP_11, Version::HTTP_2]);
    assert_eq!(backend.requests(), 2);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn status_and_fail_ratio_modes() {
    let backend = backend("beta").await;
    backend.set_mode(Mode::Status(503));
    let response = get(backend.addr(), "/anything").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body(), "beta");

    backend.set_mode(Mode::FailRatio(1.0));
    assert_eq!(
        get(backend.addr(), "/").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    backend.set_mode(Mode::FailRatio(0.0));
    assert_eq!(get(backend.addr(), "/").await.status(), StatusCode::OK);

    backend.set_mode(Mode::FailRatio(0.5));
    let mut sender = client::http1_connect::<Empty<Bytes>>(backend.addr())
        .await
        .expect("connect");
    let mut failures = 0;
    for _ in 0..200 {
        let mut req = http::Request::new(Empty::new());
        req.headers_mut()
            .insert("host", "test".parse().expect("valid header"));
        let response = sender.send_request(req).await.expect("request");
        if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
            failures += 1;
        }
        response.into_body().collect().await.expect("body");
    }
    // 200 draws at p = 0.5: outside 50..150 is astronomically unlikely.
    assert!(
        (50..150).contains(&failures),
        "{failures} failures out of 200"
    );
}

#[tokio::test]
async fn delay_mode_delays_then_answers() {
    let backend = backend("slow").await;
    backend.set_mode(Mode::Delay(Duration::from_millis(200)));
    let started = Instant::now();
    let response = get(backend.addr(), "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The fixed endpoints ignore the mode.
    let started = Instant::now();
    assert_eq!(
        get(backend.addr(), "/healthz").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn garbage_mode_writes_non_http_bytes_and_closes() {
    let backend = backend("junk").await;
    backend.set_mode(Mode::Garbage);
    let received = raw_exchange(&backend, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("raw exchange");
    let text = String::from_utf8_lossy(&received);
    assert!(!text.starts_with("HTTP/"), "got an HTTP answer: {text:?}");
    assert!(text.contains("SWITCHYARD-GARBAGE"), "got {text:?}");

    assert!(
        send_http1(backend.addr(), request(Method::GET, "/", Bytes::new()))
            .await
            .is_err()
    );
    assert!(
        send_h2c(backend.addr(), request(Method::GET, "/", Bytes::new()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn garbage_mode_applies_to_reused_connections() {
    let backend = backend("junk2").await;
    let mut sender = client::http1_connect::<Empty<Bytes>>(backend.addr())
        .await
        .expect("connect");
    let first = sender
        .send_request(http::Request::new(Empty::new()))
        .await
        .expect("first request on a healthy backend");
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.expect("body");

    backend.set_mode(Mode::Garbage);
    let second = sender.send_request(http::Request::new(Empty::new())).await;
    let err = second.expect_err("garbage must not parse as a response");
    assert!(err.is_parse(), "expected a parse error, got {err:?}");
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn close_without_response_drops_the_connection() {
    let backend = backend("closer").await;
    backend.set_mode(Mode::CloseWithoutResponse);
    match raw_exchange(&backend, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await {
        Ok(received) => assert!(
            received.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&received)
        ),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let result = send_http1(backend.addr(), request(Method::POST, "/", "body")).await;
    assert!(result.is_err(), "expected an error, got {result:?}");
    assert_eq!(backend.requests_with_method(&Method::POST), 1);
}

#[tokio::test]
async fn hang_mode_never_answers_and_stop_still_completes() {
    let backend = backend("hung").await;
    backend.set_mode(Mode::Hang);
    let pending = tokio::time::timeout(Duration::from_millis(300), get(backend.addr(), "/")).await;
    assert!(pending.is_err(), "a hanging backend answered");

    let in_flight = tokio::spawn(send_http1(
        backend.addr(),
        request(Method::GET, "/", Bytes::new()),
    ));
    let in_flight_h2 = tokio::spawn(send_h2c(
        backend.addr(),
        request(Method::GET, "/", Bytes::new()),
    ));
    assert_eventually!(backend.requests() == 3, WAIT);
    tokio::time::timeout(WAIT, backend.stop())
        .await
        .expect("stop must not wait for hanging requests");
    let outcome = in_flight.await.expect("client task");
    assert!(
        outcome.is_err(),
        "the hanging request should fail on stop, got {outcome:?}"
    );
    let outcome = in_flight_h2.await.expect("client task");
    assert!(outcome.is_err(), "h2c: expected an error, got {outcome:?}");
}

#[tokio::test]
async fn stop_unbinds_and_restart_rebinds_the_same_port() {
    let backend = backend("phoenix").await;
    let addr = backend.addr();
    assert_eq!(get(addr, "/").await.status(), StatusCode::OK);

    backend.stop().await;
    assert!(!backend.is_running());
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port still accepts connections");

    backend.restart().await;
    assert!(backend.is_running());
    assert_eq!(backend.addr(), addr);
    assert_eq!(get(addr, "/").await.body(), "phoenix");

    // restart() on a running backend cycles it.
    backend.restart().await;
    assert_eq!(get(addr, "/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_and_drop_release_the_port() {
    let backend = backend("gone").await;
    let handle = backend.handle();
    let addr = backend.addr();
    backend.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(
        handle.try_restart().await.is_err(),
        "a shut-down backend restarted"
    );

    let backend = self::backend("dropped").await;
    let addr = backend.addr();
    drop(backend);
    eventually(WAIT, || async { TcpStream::connect(addr).await.is_err() }).await;
}

#[tokio::test]
async fn healthz_follows_set_healthy_and_is_counted_apart() {
    let backend = backend("health").await;
    backend.set_mode(Mode::Status(500));
    assert_eq!(
        get(backend.addr(), "/healthz").await.status(),
        StatusCode::OK
    );
    backend.set_healthy(false);
    assert_eq!(
        get(backend.addr(), "/healthz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(backend.health_checks(), 2);
    assert_eq!(backend.requests(), 0);
    assert!(backend.recorded().is_empty());
}

#[tokio::test]
async fn records_methods_and_request_heads() {
    let backend = Backend::start(BackendConfig::new("rec").record_limit(2)).await;
    let mut post = request(Method::POST, "/orders?id=7", "payload");
    post.headers_mut()
        .insert("x-request-id", "abc-123".parse().expect("valid header"));
    post.headers_mut()
        .append("x-forwarded-for", "10.0.0.1".parse().expect("valid header"));
    send_http1(backend.addr(), post).await.expect("post");
    get(backend.addr(), "/one").await;
    get(backend.addr(), "/two").await;

    assert_eq!(backend.requests(), 3);
    assert_eq!(backend.requests_with_method(&Method::POST), 1);
    assert_eq!(backend.requests_with_method(&Method::GET), 2);
    assert_eq!(backend.requests_with_method(&Method::PUT), 0);
    let recorded = backend.recorded();
    assert_eq!(recorded.len(), 2, "record_limit keeps the latest two");
    assert_eq!(recorded[0].uri.path(), "/one");
    assert_eq!(backend.last_request().expect("recorded").uri.path(), "/two");

    backend.reset_stats();
    send_http1(backend.addr(), {
        let mut req = request(Method::POST, "/orders?id=7", "x");
        req.headers_mut()
            .insert("x-request-id", "abc-123".parse().expect("valid header"));
        req
    })
    .await
    .expect("post");
    let last = backend.last_request().expect("recorded");
    assert_eq!(last.method, Method::POST);
    assert_eq!(last.uri.query(), Some("id=7"));
    assert_eq!(last.header("x-request-id"), Some("abc-123"));
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn echo_returns_large_bodies_over_http1_and_h2c() {
    let backend = backend("echo").await;
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let h1 = send_http1(backend.addr(), request(Method::POST, "/echo", body.clone()))
        .await
        .expect("h1 echo");
    assert_eq!(h1.status(), StatusCode::OK);
    assert!(h1.body()[..] == body[..], "h1 echo differs");
    let h2 = send_h2c(backend.addr(), request(Method::POST, "/echo", body.clone()))
        .await
        .expect("h2c echo");
    assert!(h2.body()[..] == body[..], "h2c echo differs");
}

#[tokio::test]
async fn echo_streams_each_chunk_back_before_the_request_ends() {
    let backend = backend("stream").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut req = http::Request::new(StreamBody::new(frames));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/echo".parse().expect("valid uri");
    req.headers_mut()
        .insert("host", "test".parse().expect("valid header"));

    let mut sender = client::http1_connect(backend.addr())
        .await
        .expect("connect");
    tx.send(Bytes::from_static(b"first")).await.expect("send");
    let mut response = sender.send_request(req).await.expect("response head");
    let body = response.body_mut();
    for chunk in ["first", "second", "third"] {
        if chunk != "first" {
            tx.send(Bytes::from(chunk)).await.expect("send");
        }
        // The echo of this chunk arrives while the request is still open.
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("echoed chunk")
            .expect("a frame")
            .expect("no error");
        assert_eq!(frame.into_data().expect("data frame"), chunk);
    }
    drop(tx);
    let rest = body.collect().await.expect("end of body").to_bytes();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn bytes_endpoint_returns_exactly_n_bytes() {
    let backend = backend("bytes").await;
    for n in [0usize, 1, 26 * 2048 + 7, 1_000_000] {
        let response = get(backend.addr(), &format!("/bytes/{n}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], n.to_string().as_str());
        assert!(
            response.body()[..] == expected_bytes(n)[..],
            "/bytes/{n} differs"
        );
    }
    assert_eq!(
        get(backend.addr(), "/bytes/lots").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn headers_endpoint_returns_json() {
    let backend = backend("headers").await;
    let mut req = request(Method::GET, "/headers", Bytes::new());
    req.headers_mut()
        .insert("x-one", "1".parse().expect("valid header"));
    req.headers_mut()
        .append("x-many", "a".parse().expect("valid header"));
    req.headers_mut()
        .append("x-many", "b".parse().expect("valid header"));
    let response = send_http1(backend.addr(), req).await.expect("request");
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(response.body()).expect("json body");
    assert_eq!(json["x-one"], "1");
    assert_eq!(json["x-many"], serde_json::json!(["a", "b"]));
    assert_eq!(json["host"], backend.addr().to_string());
}

#[tokio::test]
async fn ws_upgrade_echoes_raw_bytes() {
    let backend = backend("ws").await;
    let mut sender = client::http1_connect::<Empty<Bytes>>(backend.addr())
        .await
        .expect("connect");
    let req = http::Request::builder()
        .uri("/ws")
        .header("host", "test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(Empty::new())
        .expect("valid request");
    let response = sender.send_request(req).await.expect("upgrade response");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded io");
    let mut io = TokioIo::new(upgraded);
    for message in [&b"hello"[..], &[0u8, 159, 146, 150, 255][..]] {
        io.write_all(message).await.expect("write");
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(WAIT, io.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(echoed, message);
    }
    io.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut rest))
        .await
        .expect("server closes after our half-close")
        .expect("read to end");
    assert!(rest.is_empty());

    // Without upgrade headers, /ws is a plain 400.
    assert_eq!(
        get(backend.addr(), "/ws").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn ws_upgrade_with_a_custom_protocol_over_a_raw_socket() {
    let backend = backend("ws-raw").await;
    let mut stream = TcpStream::connect(backend.addr()).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: switchyard-test\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("read head");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: switchyard-test"), "{head}");
    stream.write_all(b"ping").await.expect("write");
    let mut echoed = [0; 4];
    stream.read_exact(&mut echoed).await.expect("read");
    assert_eq!(&echoed, b"ping");
}

#[tokio::test]
async fn connections_are_reused_by_a_keep_alive_client() {
    let backend = backend("pool").await;
    let mut sender = client::http1_connect::<Full<Bytes>>(backend.addr())
        .await
        .expect("connect");
    for _ in 0..3 {
        let response = sender
            .send_request(request(Method::GET, "/", Bytes::new()))
            .await
            .expect("request");
        response.into_body().collect().await.expect("body");
    }
    assert_eq!(backend.requests(), 3);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
#[should_panic(expected = "not true within")]
async fn assert_eventually_panics_with_the_expression() {
    let never = false;
    assert_eventually!(never, Duration::from_millis(30));
}

#[tokio::test]
async fn assert_eventually_waits_for_a_late_condition() {
    let backend = backend("late").await;
    let addr = backend.addr();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        get(addr, "/").await;
    });
    assert_eventually!(
        backend.requests() == 1,
        WAIT,
        "backend saw {}",
        backend.requests()
    );
    let found = switchyard_test_support::wait_for(WAIT, "a recorded request", || async {
        backend.last_request()
    })
    .await;
    assert_eq!(found.uri.path(), "/");
}
