//! gRPC through the proxy with Python `grpcio` as a peer: an implementation
//! nobody here wrote, on the client side, the server side, or both.
//!
//! Python and pip are required: the helpers panic (never skip) when the venv
//! cannot be created or provisioned.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestProxy, cluster, listener};
use switchyard_test_support::{
    GrpcBackend, PyGrpcServer,
    grpc::{self, EchoRequest},
    run_py_grpc_client,
};
use tokio::sync::mpsc;
use tonic::Code;

/// Upper bound for one call (the Python server may be slow to warm up).
const STEP: Duration = Duration::from_secs(30);

async fn grpc_proxy(backend: SocketAddr) -> TestProxy {
    TestProxy::start(
        &(listener("public", "grpc", "") + &cluster("grpc", &[backend], "protocol = \"http2\"")),
    )
    .await
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// Runs the Python conformance client against the proxy and checks that
/// every check passed and only `server` answered.
async fn python_client_passes(proxy: SocketAddr, server: &str) {
    let summary = run_py_grpc_client(proxy)
        .await
        .unwrap_or_else(|err| panic!("python client through the proxy: {err}"));
    assert_eq!(summary["ok"], serde_json::json!(true), "{summary:#}");
    let checks = summary["checks"].as_object().expect("checks object");
    assert_eq!(checks.len(), 6, "{summary:#}");
    for (name, check) in checks {
        assert_eq!(check["ok"], serde_json::json!(true), "{name}: {check}");
    }
    assert_eq!(
        summary["servers"],
        serde_json::json!([server]),
        "{summary:#}"
    );
}

#[tokio::test]
async fn python_client_through_proxy_to_tonic_server() {
    let b = GrpcBackend::start("rust-echo").await;
    let p = grpc_proxy(b.addr()).await;
    python_client_passes(p.addr, "rust-echo").await;
    // unary, client stream, server stream, bidi, 2 failing calls.
    assert_eq!(b.requests(), 6);
}

#[tokio::test]
async fn python_client_through_proxy_to_python_server() {
    let server = PyGrpcServer::start_on("py-behind-proxy", 0).await;
    let p = grpc_proxy(server.addr()).await;
    python_client_passes(p.addr, "py-behind-proxy").await;
}

#[tokio::test]
async fn tonic_client_through_proxy_to_python_server() {
    let server = PyGrpcServer::start_on("py-echo", 0).await;
    let p = grpc_proxy(server.addr()).await;
    let mut client = grpc::client(p.addr).await;
    let stderr = || server.stderr();

    // Unary, with a multi-MiB payload.
    let payload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 247) as u8).collect();
    let reply = within(
        "unary",
        client.unary(EchoRequest {
            message: "hi".into(),
            payload: payload.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|status| panic!("unary: {status:?}\n{}", stderr()))
    .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.server, "py-echo");
    assert!(reply.payload == payload, "payload differs");

    // Server stream.
    let mut stream = within(
        "server stream",
        client.server_stream(EchoRequest {
            message: "s".into(),
            count: 100,
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|status| panic!("server stream: {status:?}\n{}", stderr()))
    .into_inner();
    let mut indices = Vec::new();
    while let Some(reply) = within("stream item", stream.message())
        .await
        .expect("stream item")
    {
        indices.push(reply.index);
    }
    assert_eq!(indices, (0..100).collect::<Vec<_>>());

    // Bidi, ping-pong: each reply arrives before the next request is sent.
    // grpcio sends the response head with the first reply, so the first
    // request is queued before the call starts.
    let (tx, rx) = mpsc::channel::<EchoRequest>(1);
    let bidi_request = |i: u32| EchoRequest {
        message: format!("b{i}"),
        ..Default::default()
    };
    tx.send(bidi_request(0))
        .await
        .expect("queue the first request");
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut inbound = within("bidi", client.bidi(outbound))
        .await
        .unwrap_or_else(|status| panic!("bidi: {status:?}\n{}", stderr()))
        .into_inner();
    for i in 0..20u32 {
        if i > 0 {
            tx.send(bidi_request(i)).await.expect("send");
        }
        let reply = within("bidi reply", inbound.message())
            .await
            .expect("bidi reply")
            .expect("not the end");
        assert_eq!((reply.index, reply.message), (i, format!("b{i}")));
    }
    drop(tx);
    assert!(
        within("bidi end", inbound.message())
            .await
            .expect("clean end")
            .is_none()
    );

    // An error status from the Python server, code and message intact.
    let status = within(
        "failing unary",
        client.unary(EchoRequest {
            fail_code: Code::PermissionDenied as u32,
            fail_message: "python says no".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("must fail");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "python says no");

    // A stream that fails after its replies.
    let mut stream = within(
        "failing stream",
        client.server_stream(EchoRequest {
            count: 3,
            fail_code: Code::Aborted as u32,
            fail_message: "after three".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("stream starts")
    .into_inner();
    for index in 0..3 {
        let reply = within("reply", stream.message())
            .await
            .expect("reply")
            .expect("not the end");
        assert_eq!(reply.index, index);
    }
    let status = within("final status", stream.message())
        .await
        .expect_err("the stream must fail");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "after three");
}
