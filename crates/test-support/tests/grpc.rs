//! The tonic Echo service: all four call types, multi-MiB messages, status
//! codes and graceful shutdown.

use std::time::{Duration, Instant};

use switchyard_test_support::GrpcBackend;
use switchyard_test_support::grpc::{self, EchoRequest};
use tonic::Code;

const FIVE_MIB: usize = 5 * 1024 * 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

#[tokio::test]
async fn unary_echoes_a_five_mib_message() {
    let backend = GrpcBackend::start("rust-a").await;
    let mut client = grpc::client(backend.addr()).await;
    let payload = payload(FIVE_MIB);
    let reply = client
        .unary(EchoRequest {
            message: "big".into(),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(reply.message, "big");
    assert_eq!(reply.server, "rust-a");
    assert!(reply.payload == payload, "payload differs");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn client_stream_concatenates_and_counts() {
    let backend = GrpcBackend::start("rust-b").await;
    let mut client = grpc::client(backend.addr()).await;
    let requests: Vec<EchoRequest> = (0..5)
        .map(|i| EchoRequest {
            message: format!("m{i}"),
            payload: payload(if i == 4 { FIVE_MIB } else { 10 }),
            ..Default::default()
        })
        .collect();
    let expected_payload: Vec<u8> = requests.iter().flat_map(|r| r.payload.clone()).collect();
    let reply = client
        .client_stream(futures_util::stream::iter(requests))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!(reply.index, 5);
    assert_eq!(reply.message, "m0m1m2m3m4");
    assert!(reply.payload == expected_payload, "payload differs");
}

#[tokio::test]
async fn server_stream_sends_count_replies_then_the_requested_status() {
    let backend = GrpcBackend::start("rust-c").await;
    let mut client = grpc::client(backend.addr()).await;
    let mut stream = client
        .server_stream(EchoRequest {
            message: "s".into(),
            count: 50,
            ..Default::default()
        })
        .await
        .expect("server stream")
        .into_inner();
    let mut indices = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream item") {
        assert_eq!(reply.server, "rust-c");
        indices.push(reply.index);
    }
    assert_eq!(indices, (0..50).collect::<Vec<_>>());

    // Failure after data: the status travels in trailers.
    let mut stream = client
        .server_stream(EchoRequest {
            count: 3,
            fail_code: Code::FailedPrecondition as u32,
            fail_message: "after three".into(),
            ..Default::default()
        })
        .await
        .expect("stream starts")
        .into_inner();
    for index in 0..3 {
        let reply = stream.message().await.expect("reply").expect("not the end");
        assert_eq!(reply.index, index);
    }
    let status = stream.message().await.expect_err("the stream must fail");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "after three");
}

#[tokio::test]
async fn bidi_echoes_each_message_as_it_arrives() {
    let backend = GrpcBackend::start("rust-d").await;
    let mut client = grpc::client(backend.addr()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut inbound = client.bidi(outbound).await.expect("bidi").into_inner();
    for i in 0..20u32 {
        let payload = if i == 7 { payload(FIVE_MIB) } else { vec![] };
        tx.send(EchoRequest {
            message: format!("b{i}"),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .expect("send");
        // Ping-pong: the reply arrives before the next request is sent.
        let reply = inbound
            .message()
            .await
            .expect("reply")
            .expect("not the end");
        assert_eq!(reply.index, i);
        assert_eq!(reply.message, format!("b{i}"));
        assert!(reply.payload == payload);
    }
    drop(tx);
    assert!(inbound.message().await.expect("clean end").is_none());
}

#[tokio::test]
async fn fail_code_returns_that_status_and_message() {
    let backend = GrpcBackend::start("rust-e").await;
    let mut client = grpc::client(backend.addr()).await;
    let status = client
        .unary(EchoRequest {
            fail_code: Code::InvalidArgument as u32,
            fail_message: "bad on purpose".into(),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "bad on purpose");

    let status = client
        .bidi(futures_util::stream::iter([
            EchoRequest::default(),
            EchoRequest {
                fail_code: Code::Unavailable as u32,
                fail_message: "second".into(),
                ..Default::default()
            },
        ]))
        .await
        .expect("bidi starts")
        .into_inner();
    let mut status = status;
    assert!(status.message().await.expect("first reply").is_some());
    let err = status.message().await.expect_err("second fails");
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn delay_and_client_deadline() {
    let backend = GrpcBackend::start("rust-f").await;
    let mut client = grpc::client(backend.addr()).await;
    let started = Instant::now();
    client
        .unary(EchoRequest {
            delay_ms: 100,
            ..Default::default()
        })
        .await
        .expect("delayed unary");
    assert!(started.elapsed() >= Duration::from_millis(100));

    let mut request = tonic::Request::new(EchoRequest {
        delay_ms: 2_000,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(100));
    let status = client.unary(request).await.expect_err("deadline exceeded");
    assert_eq!(
        status.code(),
        Code::Cancelled,
        "tonic reports client timeouts as Cancelled: {status:?}"
    );
    let metadata = backend.last_metadata().expect("metadata recorded");
    assert!(metadata.get("grpc-timeout").is_some(), "{metadata:?}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls() {
    let backend = GrpcBackend::start("rust-g").await;
    let addr = backend.addr();
    let mut client = grpc::client(addr).await;
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                message: "in flight".into(),
                delay_ms: 300,
                ..Default::default()
            })
            .await
    });
    switchyard_test_support::assert_eventually!(backend.requests() == 1, Duration::from_secs(10));
    backend.shutdown().await;
    let reply = call
        .await
        .expect("task")
        .expect("the in-flight call completes");
    assert_eq!(reply.into_inner().message, "in flight");
    assert!(
        grpc::try_client(addr).await.is_err(),
        "still accepting after shutdown"
    );

    // A new instance on the same address (a restart).
    let again = GrpcBackend::start_on("rust-g2", addr).await;
    let reply = grpc::client(addr)
        .await
        .unary(EchoRequest::default())
        .await
        .expect("unary on the restarted backend");
    assert_eq!(reply.into_inner().server, "rust-g2");
    drop(again);
}
