//! Graceful shutdown: in-flight work finishes, new connections are refused,
//! and the grace period bounds how long the proxy waits.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::Method;
use switchyard_test_support::{
    Backend, BackendConfig, GrpcBackend, Mode, assert_eventually,
    client::{request, send_http1},
    grpc::{self, EchoRequest},
    wait_for,
};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// Polls until a new TCP connection to `addr` is refused; returns how long
/// that took.
async fn until_refused(addr: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    wait_for(limit, "the listener to refuse connections", || async {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Err(_)) => Some(()),
            // Accepted (dropped at once) or no answer yet: still listening.
            Ok(Ok(_)) | Err(_) => None,
        }
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn grpc_stream_in_flight_completes_during_shutdown() {
    let b = GrpcBackend::start("g").await;
    let mut p = TestProxy::start(
        &(listener("public", "grpc", "") + &cluster("grpc", &[b.addr()], "protocol = \"http2\"")),
    )
    .await;
    let addr = p.addr;
    let mut client = grpc::client(addr).await;
    let started = Instant::now();
    let mut stream = within(
        "stream start",
        client.server_stream(EchoRequest {
            message: "slow".into(),
            count: 10,
            delay_ms: 200,
            ..Default::default()
        }),
    )
    .await
    .expect("server stream")
    .into_inner();
    let first = within("first reply", stream.message())
        .await
        .expect("first reply")
        .expect("not the end");
    assert_eq!(first.index, 0);

    p.begin_shutdown();
    // `shutdown` now only awaits `run`; keep it as a task to see when it ends.
    let run = tokio::spawn(p.shutdown());

    // The listener closes at once, long before the stream (≈1.8s left) ends.
    let refused_after = until_refused(addr, Duration::from_secs(5)).await;
    assert!(
        refused_after < Duration::from_secs(1),
        "new connections refused only after {refused_after:?}"
    );
    assert!(!run.is_finished(), "run returned with a stream in flight");

    let mut indices = vec![first.index];
    while let Some(reply) = within("next reply", stream.message())
        .await
        .expect("the stream must finish with OK")
    {
        indices.push(reply.index);
    }
    let stream_time = started.elapsed();
    assert_eq!(indices, (0..10).collect::<Vec<_>>());
    assert!(
        stream_time >= Duration::from_millis(1800),
        "the stream really was slow ({stream_time:?})"
    );
    let drained = within("run to return", run).await.expect("proxy task");
    assert!(drained, "run must report that every connection drained");
}

#[tokio::test]
async fn slow_http1_request_in_flight_completes_during_shutdown() {
    let b =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_secs(1)))).await;
    let p =
        TestProxy::start(&(listener("public", "web", "") + &cluster("web", &[b.addr()], ""))).await;
    let addr = p.addr;
    let call = tokio::spawn(send_http1(
        addr,
        request(Method::GET, "/slow", Bytes::new()),
    ));
    assert_eventually!(b.requests() == 1, STEP);

    let started = Instant::now();
    let run = tokio::spawn(p.shutdown());
    let resp = within("the slow request", call)
        .await
        .expect("client task")
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), b"slow");
    let drained = within("run to return", run).await.expect("proxy task");
    assert!(drained, "run must report that every connection drained");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // And the port no longer accepts.
    until_refused(addr, Duration::from_secs(2)).await;
}

/// A proxy whose only backend never answers, with a short grace period, and
/// one request hanging in it.
async fn hanging_proxy() -> (
    Backend,
    TestProxy,
    tokio::task::JoinHandle<
        Result<http::Response<Bytes>, switchyard_test_support::client::BoxError>,
    >,
) {
    let b = Backend::start(BackendConfig::new("hang").mode(Mode::Hang)).await;
    let p = TestProxy::start(
        &("[runtime]\nshutdown_grace = \"300ms\"\n\n".to_owned()
            + &listener("public", "web", "")
            + &cluster("web", &[b.addr()], "")),
    )
    .await;
    let call = tokio::spawn(send_http1(
        p.addr,
        request(Method::GET, "/hang", Bytes::new()),
    ));
    assert_eventually!(b.requests() == 1, STEP);
    (b, p, call)
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let (_b, p, _call) = hanging_proxy().await;
    let started = Instant::now();
    let drained = within("shutdown", p.shutdown()).await;
    let elapsed = started.elapsed();
    assert!(!drained, "a hanging request cannot drain");
    assert!(
        elapsed >= Duration::from_millis(300),
        "returned before the grace period: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "returned long after the grace period: {elapsed:?}"
    );
}

#[tokio::test]
async fn connections_left_after_the_grace_period_are_closed() {
    let (_b, p, call) = hanging_proxy().await;
    assert!(!within("shutdown", p.shutdown()).await);
    // `run` says it closes what is left; the client must see its connection
    // end now, not when the route timeout (15s) or the backend gives up.
    let outcome = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("the downstream connection is still open 3s after shutdown returned")
        .expect("client task");
    assert!(
        outcome.is_err(),
        "no response was ever sent, so the request must fail: {outcome:?}"
    );
}
