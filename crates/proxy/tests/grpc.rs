//! gRPC through the proxy: tonic client → Switchyard → tonic Echo server, for
//! every call type, large messages, statuses, deadlines and balancing.

mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use futures_util::Stream;
use http_body_util::Full;
use prost::Message;
use switchyard_test_support::{
    Backend, BackendConfig, GrpcBackend, Mode, RefusedAddr,
    client::{request, send_h2c},
    grpc::{self, EchoRequest},
};
use tokio::sync::mpsc;
use tonic::Code;

/// Upper bound for any single step that should be quick.
const STEP: Duration = Duration::from_secs(10);

/// A proxy with one listener sending everything to an HTTP/2 cluster.
async fn grpc_proxy(backends: &[SocketAddr], cluster_extra: &str, route_extra: &str) -> TestProxy {
    let cluster_toml = format!("protocol = \"http2\"\n{cluster_extra}");
    TestProxy::start(
        &(listener("public", "grpc", route_extra) + &cluster("grpc", backends, &cluster_toml)),
    )
    .await
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// An outbound request stream fed one message at a time by the test.
fn outbound(rx: mpsc::Receiver<EchoRequest>) -> impl Stream<Item = EchoRequest> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

#[tokio::test]
async fn unary_through_the_proxy() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let mut req = tonic::Request::new(EchoRequest {
        message: "hello".into(),
        payload: b"abc".to_vec(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-caller", "grpc-test".parse().unwrap());
    let reply = within("unary", client.unary(req))
        .await
        .expect("unary through the proxy")
        .into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.payload, b"abc");
    assert_eq!(reply.server, "g1");
    assert_eq!(b.requests(), 1);
    let seen = b.last_metadata().expect("metadata recorded");
    assert_eq!(seen.get("x-caller").unwrap(), "grpc-test");
    assert!(seen.get("x-request-id").is_some(), "{seen:?}");
}

#[tokio::test]
async fn client_stream_of_100_messages() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let requests: Vec<EchoRequest> = (0..100u32)
        .map(|i| EchoRequest {
            message: format!("{i},"),
            payload: vec![(i % 256) as u8; 100],
            ..Default::default()
        })
        .collect();
    let expected_message: String = (0..100).map(|i| format!("{i},")).collect();
    let expected_payload: Vec<u8> = requests.iter().flat_map(|r| r.payload.clone()).collect();
    let reply = within(
        "client stream",
        client.client_stream(futures_util::stream::iter(requests)),
    )
    .await
    .expect("client stream")
    .into_inner();
    assert_eq!(reply.index, 100);
    assert_eq!(reply.message, expected_message);
    assert!(reply.payload == expected_payload, "payload differs");
    assert_eq!(reply.server, "g1");
}

#[tokio::test]
async fn server_stream_of_200_replies() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let mut stream = within(
        "server stream start",
        client.server_stream(EchoRequest {
            message: "s".into(),
            count: 200,
            ..Default::default()
        }),
    )
    .await
    .expect("server stream")
    .into_inner();
    let mut indices = Vec::new();
    while let Some(reply) = within("next reply", stream.message())
        .await
        .expect("stream item")
    {
        assert_eq!(reply.message, "s");
        indices.push(reply.index);
    }
    assert_eq!(indices, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn bidi_round_trips_are_streamed_not_buffered() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let (tx, rx) = mpsc::channel::<EchoRequest>(1);
    // The response head must arrive while the request stream is still open
    // and empty: a proxy that buffers the request body would hang here.
    let mut inbound = within("bidi response head", client.bidi(outbound(rx)))
        .await
        .expect("bidi")
        .into_inner();
    for i in 0..50u32 {
        tx.send(EchoRequest {
            message: format!("b{i}"),
            ..Default::default()
        })
        .await
        .expect("send");
        // The reply to message i arrives before message i+1 is sent.
        let reply = within(&format!("reply {i}"), inbound.message())
            .await
            .expect("reply")
            .expect("not the end");
        assert_eq!(reply.index, i);
        assert_eq!(reply.message, format!("b{i}"));
    }
    drop(tx);
    let end = within("end of stream", inbound.message()).await;
    assert!(end.expect("clean end").is_none());
}

#[tokio::test]
async fn six_mib_unary_both_ways() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let big = payload(6 * 1024 * 1024);
    let reply = within(
        "6 MiB unary",
        client.unary(EchoRequest {
            message: "big".into(),
            payload: big.clone(),
            ..Default::default()
        }),
    )
    .await
    .expect("6 MiB unary")
    .into_inner();
    assert_eq!(reply.payload.len(), big.len());
    assert!(reply.payload == big, "payload differs");
}

#[tokio::test]
async fn error_status_and_message_pass_through() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let message = "field `name` is required (ünïcode, 100%)";
    let status = within(
        "failing unary",
        client.unary(EchoRequest {
            fail_code: 3,
            fail_message: message.into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("the call must fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), message);
    assert!(
        status.metadata().get("x-switchyard-error").is_none(),
        "the upstream's status, not a proxy error: {status:?}"
    );
}

#[tokio::test]
async fn server_stream_fails_after_replies_with_trailers() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let mut stream = within(
        "server stream start",
        client.server_stream(EchoRequest {
            count: 5,
            fail_code: Code::FailedPrecondition as u32,
            fail_message: "after five".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("the stream starts")
    .into_inner();
    for index in 0..5 {
        let reply = within("reply", stream.message())
            .await
            .expect("reply")
            .expect("not the end");
        assert_eq!(reply.index, index);
    }
    let status = within("final status", stream.message())
        .await
        .expect_err("the stream must end with the status");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "after five");
}

/// A gRPC unary request for `Echo/Unary` as raw h2c, so that no client
/// library adds timers or rewrites what the proxy answers.
fn raw_unary(req: &EchoRequest, headers: &[(&'static str, &str)]) -> http::Request<Full<Bytes>> {
    let body = req.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    let mut req = request(
        http::Method::POST,
        "/switchyard.test.v1.Echo/Unary",
        Bytes::from(frame),
    );
    let h = req.headers_mut();
    h.insert("content-type", "application/grpc".parse().unwrap());
    h.insert("te", "trailers".parse().unwrap());
    for (name, value) in headers {
        h.insert(*name, value.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn client_deadline_ends_the_call() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let mut req = tonic::Request::new(EchoRequest {
        delay_ms: 2_000,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = within("deadline call", client.unary(req))
        .await
        .expect_err("the deadline must end the call");
    let elapsed = started.elapsed();
    // tonic's channel enforces `grpc-timeout` itself and reports its own
    // expiry as CANCELLED ("Timeout expired") before any answer can arrive,
    // so DEADLINE_EXCEEDED from the proxy is checked on the wire below.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    let seen = b.last_metadata().expect("the call reached the backend");
    assert!(
        seen.get("grpc-timeout").is_some(),
        "grpc-timeout forwarded: {seen:?}"
    );
}

#[tokio::test]
async fn expired_grpc_timeout_is_deadline_exceeded_from_the_proxy() {
    // The upstream knows nothing of gRPC deadlines: it answers after 2s.
    // Only the proxy can end the call when the caller's deadline passes.
    let b =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_secs(2)))).await;
    let p = grpc_proxy(&[b.addr()], "", "").await;
    let req = raw_unary(&EchoRequest::default(), &[("grpc-timeout", "200m")]);
    let started = Instant::now();
    let resp = within("raw h2 call", send_h2c(p.addr, req))
        .await
        .expect("raw h2 call");
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..]),
        "DEADLINE_EXCEEDED expected after {elapsed:?}; got {:?}",
        resp.headers()
    );
    assert!(
        resp.headers().contains_key("x-switchyard-error"),
        "{:?}",
        resp.headers()
    );
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[tokio::test]
async fn route_timeout_answers_deadline_exceeded() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "", "  timeout = \"300ms\"").await;
    let mut client = grpc::client(p.addr).await;
    let started = Instant::now();
    let status = within(
        "timed-out unary",
        client.unary(EchoRequest {
            delay_ms: 2_000,
            ..Default::default()
        }),
    )
    .await
    .expect_err("the route timeout must end the call");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.metadata().get("x-switchyard-error").unwrap(),
        "timeout",
        "{status:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "took {elapsed:?}"
    );

    // On the wire: a trailers-only response (HTTP 200, the status in the
    // head, no body).
    let req = raw_unary(
        &EchoRequest {
            delay_ms: 2_000,
            ..Default::default()
        },
        &[],
    );
    let resp = within("raw h2 call", send_h2c(p.addr, req))
        .await
        .expect("raw h2 call");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert_eq!(resp.headers()["x-switchyard-error"], "timeout");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert!(resp.body().is_empty(), "trailers-only has no body");
}

#[tokio::test]
async fn unreachable_cluster_is_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let refused = RefusedAddr::new();
    let nowhere = refused.addr();
    let p = grpc_proxy(&[nowhere], "", "").await;
    let mut client = grpc::client(p.addr).await;
    let status = within("unary to nowhere", client.unary(EchoRequest::default()))
        .await
        .expect_err("nothing listens upstream");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.metadata().get("x-switchyard-error").unwrap(),
        "connect_failed",
        "{status:?}"
    );
}

#[tokio::test]
async fn calls_spread_over_every_backend() {
    let backends = [
        GrpcBackend::start("g1").await,
        GrpcBackend::start("g2").await,
        GrpcBackend::start("g3").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(GrpcBackend::addr).collect();
    let p = grpc_proxy(&addrs, "balance = \"round-robin\"", "").await;
    // One client, one downstream HTTP/2 connection: the proxy balances
    // per call, not per connection.
    let mut client = grpc::client(p.addr).await;
    let mut servers = BTreeSet::new();
    for i in 0..30 {
        let reply = within(
            "unary",
            client.unary(EchoRequest {
                message: format!("{i}"),
                ..Default::default()
            }),
        )
        .await
        .expect("unary")
        .into_inner();
        servers.insert(reply.server);
    }
    let expected: BTreeSet<String> = ["g1", "g2", "g3"].map(String::from).into();
    assert_eq!(servers, expected);
    for b in &backends {
        assert!(
            b.requests() >= 5,
            "{} got only {} of 30 calls",
            b.name(),
            b.requests()
        );
    }
}
