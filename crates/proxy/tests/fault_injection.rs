//! A route's `fault` policy, end to end: injected aborts are answered by the
//! proxy (HTTP status or gRPC status) without reaching the backend, injected
//! delays hold requests inside the route timeout, and both are counted.

mod common;

use std::time::{Duration, Instant};

use common::{TestProxy, cluster, listener};
use switchyard_test_support::{Backend, BackendConfig, GrpcBackend, client::get, grpc};
use tonic::Code;

async fn metric(p: &TestProxy, series: &str) -> u64 {
    let text = String::from_utf8(get(p.admin, "/metrics").await.body().to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn aborts_answer_a_share_of_requests_without_the_backend() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(
        &(listener(
            "public",
            "api",
            "  name = \"api\"\n  fault = { abort = { ratio = 0.5, status = 418 } }",
        ) + &cluster("api", &[b.addr()], "")),
    )
    .await;
    let mut aborted = 0;
    for _ in 0..400 {
        let r = get(p.addr, "/x").await;
        match r.status().as_u16() {
            418 => {
                assert_eq!(r.headers()["x-switchyard-fault"], "abort");
                assert!(!r.headers().contains_key("x-switchyard-error"));
                aborted += 1;
            }
            200 => assert!(!r.headers().contains_key("x-switchyard-fault")),
            other => panic!("status {other}"),
        }
    }
    assert!((140..=260).contains(&aborted), "{aborted} of 400 aborted");
    assert_eq!(
        b.requests(),
        400 - aborted,
        "aborted requests never reach it"
    );
    let series =
        "switchyard_faults_injected_total{listener=\"public\",route=\"api\",kind=\"abort\"}";
    assert_eq!(metric(&p, series).await, aborted);
}

#[tokio::test]
async fn delays_hold_requests_and_count_against_the_route_timeout() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(
        &(listener(
            "public",
            "api",
            "  name = \"slow\"\n  match = { path_prefix = \"/slow\" }\n  fault = { delay = { ratio = 1.0, duration = \"300ms\" } }\n\n  [[listeners.routes]]\n  name = \"late\"\n  cluster = \"api\"\n  timeout = \"100ms\"\n  fault = { delay = { ratio = 1.0, duration = \"300ms\" } }",
        ) + &cluster("api", &[b.addr()], "")),
    )
    .await;
    let started = Instant::now();
    let r = get(p.addr, "/slow/x").await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A delay longer than the route timeout looks like a slow upstream.
    let r = get(p.addr, "/other").await;
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-switchyard-error"], "timeout");
    assert_eq!(b.requests(), 1);
    let series =
        "switchyard_faults_injected_total{listener=\"public\",route=\"slow\",kind=\"delay\"}";
    assert_eq!(metric(&p, series).await, 1);
}

#[tokio::test]
async fn grpc_calls_are_aborted_with_the_configured_status() {
    let backend = GrpcBackend::start("g").await;
    let p = TestProxy::start(
        &(listener(
            "public",
            "grpc",
            "  fault = { abort = { ratio = 1.0, grpc_status = 8 } }",
        ) + &cluster("grpc", &[backend.addr()], "protocol = \"http2\"")),
    )
    .await;
    let mut client = grpc::client(p.addr).await;
    let status = client
        .unary(grpc::EchoRequest::default())
        .await
        .expect_err("every call is aborted");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "fault injected");
    assert_eq!(backend.requests(), 0);
}
