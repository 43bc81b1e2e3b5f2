//! gRPC semantics through the proxy, with tonic and Python `grpcio` peers:
//! streams that outlive the route timeout, the one deadline sent upstream,
//! `max_stream_duration`, retries of listed statuses for gRPC calls (all
//! POSTs), and gRPC outcomes counted by `grpc-status`.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{TestProxy, cluster, listener};
use futures_util::StreamExt;
use switchyard_test_support::{
    GrpcBackend, PyGrpcServer,
    client::{get, request, send_http1},
    grpc::{self, EchoRequest},
    run_py_grpc_client_with,
};
use tonic::Code;

/// Messages per stream and their spacing: 6 × 300 ms outlives the 1 s route
/// timeout of these tests almost twice over.
const MESSAGES: u32 = 6;
const INTERVAL: Duration = Duration::from_millis(300);
const ROUTE: &str = "  timeout = \"1s\"";

async fn grpc_proxy(backends: &[SocketAddr], route_extra: &str) -> TestProxy {
    TestProxy::start(
        &(listener("public", "grpc", route_extra)
            + &cluster(
                "grpc",
                backends,
                "protocol = \"http2\"\nbalance = \"round-robin\"",
            )),
    )
    .await
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
}

fn paced(prefix: &'static str) -> impl futures_util::Stream<Item = EchoRequest> + Send + 'static {
    futures_util::stream::unfold(0u32, move |i| async move {
        if i >= MESSAGES {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(INTERVAL).await;
        }
        let req = EchoRequest {
            message: format!("{prefix}{i}"),
            ..Default::default()
        };
        Some((req, i + 1))
    })
}

/// Runs a server stream, a client stream and a bidi stream, each paced to
/// outlive the route timeout, with an optional caller deadline.
async fn tonic_long_streams(proxy: SocketAddr, deadline: Option<Duration>) {
    let mut client = grpc::client(proxy).await;
    fn with<T>(deadline: Option<Duration>, mut r: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(d) = deadline {
            r.set_timeout(d);
        }
        r
    }
    let started = Instant::now();
    let req = with(
        deadline,
        tonic::Request::new(EchoRequest {
            message: "s".into(),
            count: MESSAGES,
            delay_ms: INTERVAL.as_millis() as u32,
            ..Default::default()
        }),
    );
    let mut stream = within("server stream", client.server_stream(req))
        .await
        .expect("server stream starts")
        .into_inner();
    let mut got = 0;
    while let Some(reply) = within("server stream reply", stream.next()).await {
        reply.unwrap_or_else(|s| panic!("server stream failed after {got} replies: {s:?}"));
        got += 1;
    }
    assert_eq!(got, MESSAGES);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "outlived the route timeout"
    );

    let reply = within(
        "client stream",
        client.client_stream(with(deadline, tonic::Request::new(paced("c")))),
    )
    .await
    .unwrap_or_else(|s| panic!("client stream failed: {s:?}"))
    .into_inner();
    assert_eq!(reply.index, MESSAGES);

    let mut replies = within(
        "bidi",
        client.bidi(with(deadline, tonic::Request::new(paced("b")))),
    )
    .await
    .expect("bidi starts")
    .into_inner();
    let mut got = 0;
    while let Some(reply) = within("bidi reply", replies.next()).await {
        let reply = reply.unwrap_or_else(|s| panic!("bidi failed after {got} replies: {s:?}"));
        assert_eq!(reply.message, format!("b{got}"));
        got += 1;
    }
    assert_eq!(got, MESSAGES);
}

#[tokio::test]
async fn tonic_streams_outlive_the_route_timeout_without_a_caller_deadline() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], ROUTE).await;
    tonic_long_streams(p.addr, None).await;
    // No caller deadline: none is invented upstream.
    let seen = b.last_metadata().expect("metadata recorded");
    assert!(seen.get("grpc-timeout").is_none(), "{seen:?}");
    assert!(seen.get("x-switchyard-timeout-ms").is_none(), "{seen:?}");
}

#[tokio::test]
async fn tonic_streams_keep_the_callers_own_deadline() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], ROUTE).await;
    tonic_long_streams(p.addr, Some(Duration::from_secs(20))).await;
    // The caller's 20 s, shortened by the time spent so far — not the
    // route's 1 s — and the same deadline in both headers.
    let seen = b.last_metadata().expect("metadata recorded");
    let grpc_timeout = seen
        .get("grpc-timeout")
        .and_then(|v| switchyard_policy::deadline::parse_grpc_timeout(v.as_bytes()))
        .expect("grpc-timeout forwarded");
    assert!(
        grpc_timeout > Duration::from_secs(15) && grpc_timeout <= Duration::from_secs(20),
        "{grpc_timeout:?}"
    );
    let ms: u64 = seen
        .get("x-switchyard-timeout-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("x-switchyard-timeout-ms forwarded");
    let diff = grpc_timeout.as_millis().abs_diff(u128::from(ms));
    assert!(diff <= 1, "grpc-timeout {grpc_timeout:?} vs {ms} ms");
}

#[tokio::test]
async fn python_streams_outlive_the_route_timeout() {
    let server = PyGrpcServer::start_on("py-streams", 0).await;
    let p = grpc_proxy(&[server.addr()], ROUTE).await;
    for deadline in ["0", "30"] {
        let summary = run_py_grpc_client_with(
            p.addr,
            &[
                "--scenario",
                "long-streams",
                "--messages",
                "6",
                "--interval-ms",
                "300",
                "--deadline",
                deadline,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("python long streams (deadline {deadline}): {e}"));
        assert_eq!(summary["ok"], serde_json::json!(true), "{summary:#}");
        assert_eq!(
            summary["checks"].as_object().map(|c| c.len()),
            Some(3),
            "{summary:#}"
        );
    }
}

#[tokio::test]
async fn tonic_client_streams_outlive_the_route_timeout_to_a_python_server() {
    let server = PyGrpcServer::start_on("py-streams", 0).await;
    let p = grpc_proxy(&[server.addr()], ROUTE).await;
    tonic_long_streams(p.addr, None).await;
}

#[tokio::test]
async fn max_stream_duration_ends_a_stream_with_deadline_exceeded() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "  max_stream_duration = \"1s\"").await;
    let mut client = grpc::client(p.addr).await;
    let started = Instant::now();
    let mut stream = within(
        "server stream",
        client.server_stream(EchoRequest {
            count: 20,
            delay_ms: 200,
            ..Default::default()
        }),
    )
    .await
    .expect("the stream starts")
    .into_inner();
    let mut got = 0;
    let status = loop {
        match within("stream reply", stream.next()).await {
            Some(Ok(_)) => got += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended cleanly after {got} replies"),
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!((2..20).contains(&got), "{got} replies");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // The limit is the call's deadline upstream as well.
    let seen = b.last_metadata().unwrap();
    let sent = seen
        .get("grpc-timeout")
        .and_then(|v| switchyard_policy::deadline::parse_grpc_timeout(v.as_bytes()))
        .expect("grpc-timeout sent");
    assert!(sent <= Duration::from_secs(1), "{sent:?}");
}

#[tokio::test]
async fn a_non_grpc_request_gets_one_consistent_deadline() {
    let backend =
        switchyard_test_support::Backend::start(switchyard_test_support::BackendConfig::new("b"))
            .await;
    let p = TestProxy::start(
        &(listener("public", "api", "  timeout = \"5s\"") + &cluster("api", &[backend.addr()], "")),
    )
    .await;
    // No deadline from the caller: none is sent.
    assert_eq!(get(p.addr, "/x").await.status(), 200);
    let seen = backend.last_request().unwrap();
    assert!(seen.header("x-switchyard-timeout-ms").is_none(), "{seen:?}");
    assert!(seen.header("grpc-timeout").is_none(), "{seen:?}");

    // grpc-timeout means nothing to plain HTTP: it is ignored and not
    // forwarded beside a different x-switchyard-timeout-ms.
    let mut req = request(http::Method::GET, "/x", bytes::Bytes::new());
    req.headers_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    req.headers_mut()
        .insert("x-switchyard-timeout-ms", "3000".parse().unwrap());
    assert_eq!(send_http1(p.addr, req).await.unwrap().status(), 200);
    let seen = backend.last_request().unwrap();
    assert!(seen.header("grpc-timeout").is_none(), "{seen:?}");
    let ms: u64 = seen
        .header("x-switchyard-timeout-ms")
        .expect("the caller's deadline is forwarded")
        .parse()
        .unwrap();
    assert!(ms > 2000 && ms <= 3000, "{ms}");
}

/// `retry = {}` lists `unavailable` by default: a gRPC call answered
/// UNAVAILABLE by one instance goes to the other, though it is a POST.
#[tokio::test]
async fn unavailable_is_retried_for_grpc_calls_with_tonic() {
    let good = GrpcBackend::start("good").await;
    let bad = GrpcBackend::start_failing("bad", Code::Unavailable).await;
    let p = grpc_proxy(&[good.addr(), bad.addr()], "  retry = {}").await;
    let mut client = grpc::client(p.addr).await;
    let mut failed = Vec::new();
    for i in 0..20 {
        if let Err(s) = within("unary", client.unary(EchoRequest::default())).await {
            failed.push((i, s.code()));
        }
    }
    assert!(failed.is_empty(), "client errors: {failed:?}");
    assert!(
        bad.requests() > 0,
        "round-robin reached the failing instance"
    );
    assert_eq!(good.requests(), 20);
    let retries = p
        .cluster("grpc")
        .decisions()
        .get(switchyard_telemetry::Decision::Retry);
    assert_eq!(retries, bad.requests(), "each UNAVAILABLE retried once");
}

#[tokio::test]
async fn unavailable_is_retried_for_grpc_calls_with_python_peers() {
    let good = PyGrpcServer::start_on("py-good", 0).await;
    let bad = PyGrpcServer::start_failing("py-bad", 14).await;
    let p = grpc_proxy(&[good.addr(), bad.addr()], "  retry = {}").await;
    let summary = run_py_grpc_client_with(p.addr, &["--scenario", "unary-calls", "--calls", "20"])
        .await
        .unwrap_or_else(|e| panic!("python unary calls: {e}"));
    assert_eq!(summary["ok"], serde_json::json!(true), "{summary:#}");
    assert_eq!(
        summary["servers"],
        serde_json::json!(["py-good"]),
        "{summary:#}"
    );
    let retries = p
        .cluster("grpc")
        .decisions()
        .get(switchyard_telemetry::Decision::Retry);
    assert!(
        retries >= 5,
        "round-robin sent about half to py-bad: {retries}"
    );
}

/// Without a listed status or `non_idempotent`, a gRPC call that may have
/// been processed (a reset) is still never sent twice.
#[tokio::test]
async fn unlisted_grpc_statuses_are_not_retried() {
    let bad = GrpcBackend::start_failing("bad", Code::Internal).await;
    let p = grpc_proxy(&[bad.addr()], "  retry = {}").await;
    let mut client = grpc::client(p.addr).await;
    let status = client.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(bad.requests(), 1);
}

async fn scrape(admin: SocketAddr) -> String {
    let resp = get(admin, "/metrics").await;
    String::from_utf8(resp.into_body().to_vec()).expect("metrics are text")
}

fn counter(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn grpc_outcomes_are_counted_by_grpc_status() {
    let b = GrpcBackend::start("g1").await;
    let p = grpc_proxy(&[b.addr()], "  name = \"echo\"").await;
    let mut client = grpc::client(p.addr).await;
    // OK, a trailers-only UNAVAILABLE, and a stream whose
    // FAILED_PRECONDITION arrives in trailers after data.
    client.unary(EchoRequest::default()).await.unwrap();
    let s = client
        .unary(EchoRequest {
            fail_code: Code::Unavailable as u32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    let mut stream = client
        .server_stream(EchoRequest {
            count: 2,
            fail_code: Code::FailedPrecondition as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert_eq!(last.unwrap().unwrap_err().code(), Code::FailedPrecondition);
    let series = |code: &str| {
        format!(
            "switchyard_grpc_requests_total{{listener=\"public\",route=\"echo\",code=\"{code}\"}} "
        )
    };
    switchyard_test_support::eventually(Duration::from_secs(5), || async {
        let text = scrape(p.admin).await;
        counter(&text, &series("ok")) == 1
            && counter(&text, &series("unavailable")) == 1
            && counter(&text, &series("failed_precondition")) == 1
    })
    .await;
    let text = scrape(p.admin).await;
    // Every call was an HTTP 200: the status class alone hides the failures.
    assert_eq!(
        counter(
            &text,
            "switchyard_requests_total{listener=\"public\",route=\"echo\",class=\"2xx\"} "
        ),
        3,
        "{text}"
    );
}

/// Log lines captured in memory, for the access-log assertions.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn the_access_log_carries_the_grpc_status_from_trailers() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(logs.clone())
        .with_env_filter("switchyard::access=info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let b = GrpcBackend::start("g1").await;
    let p = TestProxy::start(
        &("[log]\naccess_log = true\n\n".to_owned()
            + &listener("public", "grpc", "  name = \"echo\"")
            + &cluster("grpc", &[b.addr()], "protocol = \"http2\"")),
    )
    .await;
    let mut client = grpc::client(p.addr).await;
    // FAILED_PRECONDITION in trailers, after two replies.
    let mut stream = client
        .server_stream(EchoRequest {
            count: 2,
            fail_code: Code::FailedPrecondition as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.next().await.is_some() {}
    // UNAVAILABLE, trailers-only.
    let _ = client
        .unary(EchoRequest {
            fail_code: Code::Unavailable as u32,
            ..Default::default()
        })
        .await;
    let lines = || -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&logs.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    switchyard_test_support::eventually(Duration::from_secs(5), || async { lines().len() >= 2 })
        .await;
    let lines = lines();
    let fields = |path: &str| {
        lines
            .iter()
            .map(|l| &l["fields"])
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {lines:#?}"))
            .clone()
    };
    let stream_line = fields("/switchyard.test.v1.Echo/ServerStream");
    assert_eq!(stream_line["status"], 200, "{stream_line}");
    assert_eq!(stream_line["grpc_status"], 9, "{stream_line}");
    let unary_line = fields("/switchyard.test.v1.Echo/Unary");
    assert_eq!(unary_line["grpc_status"], 14, "{unary_line}");
    assert_eq!(unary_line["error"], "unavailable", "{unary_line}");
}

#[tokio::test]
async fn failures_in_trailers_count_for_outlier_detection() {
    let b = GrpcBackend::start("g1").await;
    let p = TestProxy::start(
        &(listener("public", "grpc", "")
            + &cluster(
                "grpc",
                &[b.addr()],
                "protocol = \"http2\"\noutlier = { consecutive_failures = 3, max_ejection_percent = 100 }",
            )),
    )
    .await;
    let mut client = grpc::client(p.addr).await;
    // Each stream sends a reply, then ends with UNAVAILABLE in its trailers:
    // the head alone looks like a success.
    for _ in 0..3 {
        let mut stream = client
            .server_stream(EchoRequest {
                count: 1,
                fail_code: Code::Unavailable as u32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while stream.next().await.is_some() {}
    }
    let snap = p.cluster("grpc").snapshot();
    assert_eq!(snap.endpoints[0].state, "ejected", "{snap:?}");
}
