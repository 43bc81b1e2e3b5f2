//! The library's server against real peers: tonic clients (gRPC health and
//! the Echo service), HTTP/1.1 clients, the library's own client and a real
//! registry.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http::{Method, StatusCode};
use switchyard::{
    Context, Server,
    server::{BindError, Drain, DrainTimes, ServeError, ServerBuilder},
};
use switchyard_test_support::{
    Backend, BackendConfig,
    client::{get as http_get, request, send_http1},
    eventually,
    grpc::{EchoRequest, EchoService, client_for},
    wait_for,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// What the test handlers count.
#[derive(Debug, Default)]
struct Counts {
    slow_started: AtomicU64,
    slow_finished: AtomicU64,
    /// `/slow` handlers dropped before they finished.
    slow_cancelled: AtomicU64,
}

/// Counts a `/slow` handler that is dropped before it finishes.
struct Unfinished(Arc<Counts>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            self.0.slow_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The service under test: the Echo gRPC service and HTTP routes.
fn app(counts: Arc<Counts>) -> Router {
    let http = Router::new()
        .route(
            "/slow",
            get(|Extension(counts): Extension<Arc<Counts>>| async move {
                counts.slow_started.fetch_add(1, Ordering::SeqCst);
                let mut unfinished = Unfinished(counts.clone(), false);
                tokio::time::sleep(Duration::from_millis(800)).await;
                unfinished.1 = true;
                counts.slow_finished.fetch_add(1, Ordering::SeqCst);
                "done"
            }),
        )
        .route(
            "/deadline",
            get(|| async {
                let remaining = Context::current().and_then(|c| c.remaining());
                format!("{:?}", remaining.map(|r| r.as_millis()))
            }),
        )
        .route(
            // Ticks until the server drains, then says goodbye and ends.
            "/stream",
            get(|Extension(drain): Extension<Drain>| async move {
                let ticks = futures_util::stream::unfold((drain, false), |(drain, done)| async move {
                    if done {
                        return None;
                    }
                    tokio::select! {
                        () = drain.signaled() => Some((Ok::<_, std::io::Error>(Bytes::from("bye\n")), (drain, true))),
                        () = tokio::time::sleep(Duration::from_millis(50)) => Some((Ok(Bytes::from("tick\n")), (drain, false))),
                    }
                });
                axum::body::Body::from_stream(ticks)
            }),
        )
        .route(
            // Ticks forever, whatever the server says.
            "/forever",
            get(|| async {
                let ticks = futures_util::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from("tick\n")), ()))
                });
                axum::body::Body::from_stream(ticks)
            }),
        )
        .layer(Extension(counts));
    tonic::service::Routes::new(EchoService::new("echo").into_server())
        .into_axum_router()
        .merge(http)
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), ServeError>>,
    metrics: Arc<switchyard_telemetry::Metrics>,
}

impl Running {
    /// Starts the drain; the server's `serve` returns when it is over.
    fn shutdown(&mut self) {
        let _ = self.stop.take().expect("shut down once").send(());
    }

    async fn finished(self, within: Duration) -> Result<(), ServeError> {
        tokio::time::timeout(within, self.done)
            .await
            .expect("serve returned in time")
            .expect("serve did not panic")
    }
}

async fn start(builder: ServerBuilder, service: Router) -> Running {
    let server = builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    let metrics = server.metrics().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(service, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
        metrics,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn check(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let resp = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(resp.into_inner().status())
}

fn get_with(
    path: &str,
    headers: &[(&'static str, &str)],
) -> http::Request<http_body_util::Full<Bytes>> {
    let mut req = request(Method::GET, path, Bytes::new());
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn health_and_readiness_report_serving() {
    let server = start(
        Server::builder("echo").health_service("switchyard.test.v1.Echo"),
        app(Arc::default()),
    )
    .await;
    let channel = channel(server.addr).await;
    assert_eq!(check(&channel, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        check(&channel, "switchyard.test.v1.Echo").await.unwrap(),
        ServingStatus::Serving
    );
    let unknown = check(&channel, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let ready = http_get(server.addr, "/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.body().as_ref(), b"ready\n");
    // The service itself answers beside them.
    let reply = client_for(channel)
        .unary(EchoRequest {
            message: "hi".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "hi");
}

#[tokio::test]
async fn a_caller_deadline_is_enforced_and_visible_to_the_handler() {
    let counts = Arc::new(Counts::default());
    let server = start(Server::builder("deadlines"), app(counts.clone())).await;

    // Already expired: answered without running the handler.
    let resp = send_http1(
        server.addr,
        get_with("/slow", &[("x-switchyard-timeout-ms", "0")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers()["x-switchyard-error"], "deadline_expired");
    assert_eq!(counts.slow_started.load(Ordering::SeqCst), 0);

    // The handler reads what remains of it.
    let resp = send_http1(
        server.addr,
        get_with("/deadline", &[("x-switchyard-timeout-ms", "5000")]),
    )
    .await
    .unwrap();
    let remaining: u64 = std::str::from_utf8(resp.body())
        .unwrap()
        .trim_start_matches("Some(")
        .trim_end_matches(')')
        .parse()
        .unwrap();
    assert!((4000..=5000).contains(&remaining), "{remaining} ms left");

    // Passing while the handler runs: the handler is cancelled and the
    // caller answered at the deadline, not when the handler would finish.
    let started = Instant::now();
    let resp = send_http1(
        server.addr,
        get_with("/slow", &[("x-switchyard-timeout-ms", "200")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(2), || async {
        counts.slow_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(counts.slow_finished.load(Ordering::SeqCst), 0);

    // gRPC, sent raw over h2c so that no client timer is involved (tonic's
    // client enforces a grpc-timeout itself): the server ends the call.
    let started = Instant::now();
    let slow = EchoRequest {
        delay_ms: 3000,
        ..EchoRequest::default()
    };
    let (head, _, _) = raw_grpc(server.addr, "Unary", &slow, "200m").await;
    assert_eq!(head.headers["grpc-status"], "4", "{head:?}");
    assert_eq!(head.headers["x-switchyard-error"], "deadline_expired");
    assert!(started.elapsed() < Duration::from_millis(1500));

    // A response stream still open at the deadline ends with
    // DEADLINE_EXCEEDED after what it sent.
    let streaming = EchoRequest {
        count: 100,
        delay_ms: 50,
        ..EchoRequest::default()
    };
    let (head, trailers, replies) = raw_grpc(server.addr, "ServerStream", &streaming, "400m").await;
    assert_eq!(head.status, 200);
    assert_eq!(trailers.expect("trailers")["grpc-status"], "4");
    assert!(
        (2..20).contains(&replies),
        "{replies} replies before the deadline"
    );
    let text = server.metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchyard_proxy_errors_total")
                && l.contains("listener=\"deadlines\"")
                && l.contains("kind=\"deadline_expired\"")
                && l.ends_with(" 4")),
        "{text}"
    );
}

#[tokio::test]
async fn the_concurrency_limit_rejects_fast_and_probes_pass() {
    let counts = Arc::new(Counts::default());
    let server = start(
        Server::builder("limited").max_concurrent_requests(1),
        app(counts.clone()),
    )
    .await;
    let addr = server.addr;
    let slow = tokio::spawn(async move { http_get(addr, "/slow").await });
    eventually(Duration::from_secs(2), || async {
        counts.slow_started.load(Ordering::SeqCst) == 1
    })
    .await;

    let started = Instant::now();
    let resp = http_get(addr, "/deadline").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-switchyard-error"], "overloaded");
    let status = client_for(channel(addr).await)
        .unary(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Refused at once, not queued behind the slow request.
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(http_get(addr, "/ready").await.status(), 200);
    assert_eq!(
        check(&channel(addr).await, "").await.unwrap(),
        ServingStatus::Serving
    );

    assert_eq!(slow.await.unwrap().status(), 200);
    // The slot is free again.
    assert_eq!(http_get(addr, "/deadline").await.status(), 200);
    // Two HTTP requests served and the refused gRPC call (a trailers-only
    // answer is HTTP 200); the refused HTTP request.
    let text = server.metrics.render();
    for (family, labels, value) in [
        ("switchyard_proxy_errors_total", "kind=\"overloaded\"", "2"),
        ("switchyard_requests_total", "class=\"2xx\"", "3"),
        ("switchyard_requests_total", "class=\"5xx\"", "1"),
        (
            "switchyard_grpc_requests_total",
            "code=\"resource_exhausted\"",
            "1",
        ),
    ] {
        assert!(
            has_series(&text, family, &["listener=\"limited\"", labels], value),
            "{family} {labels} {value} in {text}"
        );
    }
}

/// One call of the Echo service's `method` over a new h2c connection with
/// this `grpc-timeout`: the response head, the trailers, the number of
/// messages.
async fn raw_grpc(
    addr: SocketAddr,
    method: &str,
    message: &EchoRequest,
    timeout: &str,
) -> (http::response::Parts, Option<http::HeaderMap>, usize) {
    use http_body_util::{BodyExt, Full};
    let payload = prost::Message::encode_to_vec(message);
    let mut framed = vec![0u8];
    framed.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend(payload);
    let req = http::Request::post(format!("http://{addr}/switchyard.test.v1.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let mut sender = switchyard_test_support::client::h2c_connect(addr)
        .await
        .unwrap();
    let (head, body) = sender.send_request(req).await.unwrap().into_parts();
    let body = body.collect().await.unwrap();
    let trailers = body.trailers().cloned();
    let mut data = &body.to_bytes()[..];
    let mut messages = 0;
    while data.len() >= 5 {
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        data = &data[5 + len..];
        messages += 1;
    }
    (head, trailers, messages)
}

/// Whether the Prometheus text has a series of `family` with all `labels`
/// and this value.
fn has_series(text: &str, family: &str, labels: &[&str], value: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with(&format!("{family}{{"))
            && labels.iter().all(|label| l.contains(label))
            && l.rsplit(' ').next() == Some(value)
    })
}

/// A registry (embedded store) serving on an ephemeral loopback port until
/// the returned sender is dropped; its base URL.
async fn registry(dir: &std::path::Path) -> (String, oneshot::Sender<()>) {
    use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
    let store = Arc::new(EmbeddedStore::open(dir).await.unwrap());
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// The registry's instances of `service`: `(id, draining)`.
async fn instances(registry: &str, service: &str) -> Vec<(String, bool)> {
    let addr: SocketAddr = registry.trim_start_matches("http://").parse().unwrap();
    let resp = http_get(addr, &format!("/v1/services/{service}")).await;
    if resp.status() == 404 {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    let list = value
        .get("instances")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_else(|| value.as_array().cloned().unwrap_or_default());
    list.iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["draining"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_goes_registry_health_goaway_grace_deregister() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _registry) = registry(dir.path()).await;
    let counts = Arc::new(Counts::default());
    let mut server = start(
        Server::builder("echo").registry(&url).drain(DrainTimes {
            notice: Duration::from_secs(3),
            quiet: Duration::from_millis(300),
            grace: Duration::from_secs(5),
        }),
        app(counts.clone()),
    )
    .await;
    let id = format!("echo-127.0.0.1-{}", server.addr.port());
    // `serve` registers before it serves.
    let registered = wait_for(Duration::from_secs(3), "the registration", || async {
        let now = instances(&url, "echo").await;
        (!now.is_empty()).then_some(now)
    })
    .await;
    assert_eq!(registered, vec![(id.clone(), false)]);

    // A health watcher, a stream that listens for the drain, and a slow
    // request, all in flight when the drain starts.
    let channel = channel(server.addr).await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let addr = server.addr;
    let stream = tokio::spawn(async move { http_get(addr, "/stream").await });
    let slow = tokio::spawn(async move { http_get(addr, "/slow").await });
    eventually(Duration::from_secs(2), || async {
        counts.slow_started.load(Ordering::SeqCst) == 1
    })
    .await;

    let started = Instant::now();
    server.shutdown();
    // 1. The registry says draining…
    let url2 = url.clone();
    let draining_seen = tokio::spawn(async move {
        wait_for(
            Duration::from_secs(3),
            "the instance marked draining",
            || async {
                instances(&url2, "echo")
                    .await
                    .iter()
                    .any(|(_, draining)| *draining)
                    .then(Instant::now)
            },
        )
        .await
    });
    // 3. …before health turns NOT_SERVING (after the quiet period), and
    // the watch then ends rather than hold the drain.
    let not_serving = loop {
        match watch.message().await {
            Ok(Some(m)) if m.status() == ServingStatus::NotServing => break Instant::now(),
            Ok(Some(_)) => {}
            other => panic!("the watch ended before NOT_SERVING: {other:?}"),
        }
    };
    let draining_seen = draining_seen.await.unwrap();
    assert!(draining_seen <= not_serving);
    assert!(
        not_serving - started >= Duration::from_millis(250),
        "NOT_SERVING after {:?}, before the quiet period",
        not_serving - started
    );
    let end = watch.message().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");

    // 4./5. The stream heard the drain and ended; the slow request finished
    // within the grace period.
    let stream = stream.await.unwrap();
    assert_eq!(stream.status(), 200);
    let text = std::str::from_utf8(stream.body()).unwrap();
    assert!(
        text.starts_with("tick\n") && text.ends_with("bye\n"),
        "{text}"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status(), slow.body().as_ref()),
        (StatusCode::OK, &b"done"[..])
    );
    assert_eq!(counts.slow_cancelled.load(Ordering::SeqCst), 0);

    // 6. Gone from the registry once serve returns, well within the grace.
    server.finished(Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(instances(&url, "echo").await, Vec::new());
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_stream_that_ignores_the_drain_is_closed_at_the_grace() {
    let mut server = start(
        Server::builder("forever").drain(DrainTimes {
            grace: Duration::from_millis(500),
            ..DrainTimes::default()
        }),
        app(Arc::default()),
    )
    .await;
    let addr = server.addr;
    let forever = tokio::spawn(async move {
        send_http1(addr, request(Method::GET, "/forever", Bytes::new())).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.shutdown();
    server.finished(Duration::from_secs(3)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Cut off mid-body: the client sees the connection end before the body.
    assert!(forever.await.unwrap().is_err());
}

#[tokio::test]
async fn a_registering_server_needs_an_address_callers_can_dial() {
    let err = Server::builder("api")
        .registry("http://127.0.0.1:7400")
        .bind("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, BindError::Unadvertised(..)), "{err}");
    // A refusing registry fails serve before anything is served.
    let server = Server::builder("api")
        .registry(&format!(
            "http://{}",
            switchyard_test_support::RefusedAddr::new().addr()
        ))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let err = server
        .serve(app(Arc::default()), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Register(_)), "{err}");
}

#[tokio::test]
async fn the_handlers_calls_continue_the_servers_span() {
    let backend = Backend::start(BackendConfig::new("inventory")).await;
    let config = switchyard::config::parse(
        &format!(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\nprotocol = \"http\"\n\n\
             [[clusters]]\nname = \"inventory\"\ndiscovery = {{ static = [\"{}\"] }}\n",
            backend.addr()
        ),
        "server.toml",
    )
    .unwrap();
    let tracer =
        switchyard_telemetry::trace::Tracer::start(config.tracing.as_ref().unwrap(), None).unwrap();
    let client = switchyard::Client::new(&config.clusters[0]).unwrap();
    let app = Router::new().route(
        "/call",
        get(move || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/items")
                    .body(switchyard::Body::empty())
                    .unwrap();
                client
                    .send(req)
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
                    .to_string()
            }
        }),
    );
    let server = start(Server::builder("gateway").tracer(tracer.clone()), app).await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = send_http1(server.addr, get_with("/call", &[("traceparent", caller)]))
        .await
        .unwrap();
    assert_eq!(resp.body().as_ref(), b"200");
    let seen = backend.last_request().unwrap();
    let traceparent = seen.header("traceparent").unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{traceparent}"
    );
    // The parent is the server's span, not the caller's.
    assert_ne!(parts[2], "00f067aa0ba902b7", "{traceparent}");
    assert_eq!(parts[3], "01");
    eventually(Duration::from_secs(2), || async {
        tracer.stats().recorded.load(Ordering::Relaxed) >= 1
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_the_server_stays_up() {
    let counts = Arc::new(Counts::default());
    let server = start(Server::builder("strict"), app(counts.clone())).await;
    // A malformed deadline is no deadline: the handler runs, unhurried.
    for bad in ["abc", "-5", "99999999999999999999999"] {
        let resp = send_http1(
            server.addr,
            get_with("/deadline", &[("x-switchyard-timeout-ms", bad)]),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "{bad}");
        assert_eq!(resp.body().as_ref(), b"None", "{bad}");
    }
    let (head, _, _) = raw_grpc(server.addr, "Unary", &EchoRequest::default(), "1X").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers.get("grpc-status").map(|v| v.to_str().unwrap()),
        None
    );
    // A request head over the limit (64 KiB) is refused, not buffered.
    let huge = "x".repeat(80 * 1024);
    let resp = send_http1(server.addr, get_with("/deadline", &[("x-big", &huge)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Garbage instead of HTTP closes that connection only.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"\x00\x01garbage\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf),
    )
    .await
    .expect("the server closes a garbage connection");
    assert_eq!(http_get(server.addr, "/ready").await.status(), 200);
}
