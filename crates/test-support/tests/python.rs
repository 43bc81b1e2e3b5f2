//! Python grpcio as a third-party peer: Python ↔ Python, Python client →
//! Rust service, Rust client → Python service.

use switchyard_test_support::grpc::{self, EchoRequest};
use switchyard_test_support::{GrpcBackend, PyGrpcServer, run_py_grpc_client};
use tonic::Code;

fn assert_all_checks_ok(summary: &serde_json::Value) {
    assert_eq!(summary["ok"], true, "{summary:#}");
    let checks = summary["checks"].as_object().expect("checks object");
    for name in [
        "unary_4mib",
        "client_stream",
        "server_stream",
        "bidi",
        "failing_unary",
        "failing_server_stream",
    ] {
        assert_eq!(checks[name]["ok"], true, "{name}: {summary:#}");
    }
}

#[tokio::test]
async fn python_client_talks_to_python_server() {
    let server = PyGrpcServer::start().await;
    let summary = run_py_grpc_client(server.addr())
        .await
        .unwrap_or_else(|err| panic!("{err}\nserver stderr:\n{}", server.stderr()));
    assert_all_checks_ok(&summary);
    assert_eq!(summary["servers"], serde_json::json!(["py-grpc"]));
}

#[tokio::test]
async fn python_client_talks_to_rust_service() {
    let backend = GrpcBackend::start("rust-for-py").await;
    let summary = run_py_grpc_client(backend.addr())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_all_checks_ok(&summary);
    assert_eq!(summary["servers"], serde_json::json!(["rust-for-py"]));
    assert_eq!(backend.requests(), 6);
}

#[tokio::test]
async fn rust_client_talks_to_python_server() {
    let server = PyGrpcServer::start_on("py-for-rust", 0).await;
    let mut client = grpc::client(server.addr()).await;

    let payload: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 249) as u8).collect();
    let reply = client
        .unary(EchoRequest {
            message: "big".into(),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("unary: {status:?}\n{}", server.stderr()))
        .into_inner();
    assert_eq!(reply.server, "py-for-rust");
    assert!(reply.payload == payload, "5 MiB payload differs");

    let reply = client
        .client_stream(futures_util::stream::iter((0..4).map(|i| EchoRequest {
            message: i.to_string(),
            ..Default::default()
        })))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((reply.message.as_str(), reply.index), ("0123", 4));

    let mut stream = client
        .server_stream(EchoRequest {
            count: 50,
            ..Default::default()
        })
        .await
        .expect("server stream")
        .into_inner();
    let mut received = 0;
    while let Some(reply) = stream.message().await.expect("stream item") {
        assert_eq!(reply.index, received);
        received += 1;
    }
    assert_eq!(received, 50);

    let requests = (0..20).map(|i| EchoRequest {
        message: format!("b{i}"),
        ..Default::default()
    });
    let mut inbound = client
        .bidi(futures_util::stream::iter(requests))
        .await
        .expect("bidi")
        .into_inner();
    let mut index = 0;
    while let Some(reply) = inbound.message().await.expect("bidi item") {
        assert_eq!((reply.index, reply.message), (index, format!("b{index}")));
        index += 1;
    }
    assert_eq!(index, 20);

    let status = client
        .unary(EchoRequest {
            fail_code: Code::InvalidArgument as u32,
            fail_message: "python says no".into(),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "python says no");
}

#[tokio::test]
async fn python_server_dies_with_its_guard() {
    let mut server = PyGrpcServer::start_on("py-short-lived", 0).await;
    let addr = server.addr();
    grpc::client(addr).await;
    server.kill();
    switchyard_test_support::assert_eventually!(
        grpc::try_client(addr).await.is_err(),
        std::time::Duration::from_secs(10)
    );
}
