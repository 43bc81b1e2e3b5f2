//! The library client against real backends: balancing, retries with a
//! replayed body, per-try and head timeouts, the caller's deadline, and
//! tonic's generated clients over its gRPC channel.

use std::time::Duration;

use http_body_util::BodyExt;
use switchyard::{Body, Client, ErrorKind};
use switchyard_test_support::{Backend, BackendConfig, Mode, RefusedAddr};
use tokio::time::Instant;

#[tokio::test]
async fn client_balances_and_classifies_errors() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let config = switchyard::config::parse(
        &format!(
            "[[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\ndiscovery = {{ static = [\"{}\", \"{}\"] }}\n",
            a.addr(),
            b.addr()
        ),
        "client.toml",
    )
    .unwrap();
    let client = Client::new(&config.clusters[0]).unwrap();
    for _ in 0..10 {
        let req = http::Request::get("/x").body(Body::empty()).unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!((a.requests(), b.requests()), (5, 5));
    assert_eq!(a.last_request().unwrap().header("host"), Some("api"));

    let refused = RefusedAddr::new();
    let dead = refused.addr();
    client.update(&[switchyard::stack::cluster::EndpointSpec {
        addr: dead,
        weight: 1,
        draining: false,
    }]);
    let req = http::Request::get("/x").body(Body::empty()).unwrap();
    let err = client.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);
    assert_eq!(err.endpoint(), Some(dead));
}

fn cluster_config(
    extra: &str,
    endpoints: &[std::net::SocketAddr],
) -> switchyard::config::ClusterConfig {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let toml = format!(
        "[[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\n{extra}discovery = {{ static = [{}] }}\n",
        list.join(", ")
    );
    switchyard::config::parse(&toml, "client.toml")
        .unwrap()
        .clusters
        .remove(0)
}

/// A loopback endpoint that reads the start of each request (its head and
/// part of the body) and then closes the connection without answering.
async fn reads_then_closes() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn retries_carry_a_streamed_body_to_another_endpoint() {
    // One endpoint takes the request and closes without answering (a
    // reset after the body began); the other echoes. PUT is idempotent, so
    // the retry policy sends it again, with the part already sent replayed.
    let (broken, accepted) = reads_then_closes().await;
    let good = Backend::start(BackendConfig::new("good")).await;
    let config = cluster_config("", &[broken, good.addr()]);
    let client = Client::builder(&config)
        .retry(switchyard::config::RetryPolicy::default())
        .build()
        .unwrap();
    for i in 0..6 {
        // A body the library has to stream (no known length), as tonic's
        // and axum's bodies are.
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(format!(
                "part-{i} "
            )))),
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"end"))),
        ]);
        let req = http::Request::put("/echo")
            .body(http_body_util::StreamBody::new(chunks))
            .unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("part-{i} end").as_bytes());
    }
    assert_eq!(good.requests(), 6);
    assert!(
        accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the broken endpoint was never tried"
    );

    // Without a retry policy the same failure reaches the caller, typed.
    let once = Client::new(&cluster_config("", &[broken])).unwrap();
    let req = http::Request::put("/echo").body(Body::full("x")).unwrap();
    let err = once.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UpstreamReset);
    assert_eq!(err.endpoint(), Some(broken));
}

#[tokio::test]
async fn a_hung_endpoint_costs_a_per_try_timeout_and_the_call_its_deadline() {
    let hung = Backend::start(BackendConfig::new("hung").mode(Mode::Hang)).await;
    let good = Backend::start(BackendConfig::new("good")).await;
    let policy = switchyard::config::RetryPolicy {
        per_try_timeout: Some(Duration::from_millis(200)),
        ..switchyard::config::RetryPolicy::default()
    };
    // The per-try timeout moves the request to the healthy endpoint.
    let config = cluster_config("", &[hung.addr(), good.addr()]);
    let client = Client::builder(&config).retry(policy).build().unwrap();
    for _ in 0..4 {
        let started = Instant::now();
        let resp = client
            .send(http::Request::get("/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    // With only the hung endpoint, the head timeout ends the call.
    let alone = Client::builder(&cluster_config("", &[hung.addr()]))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = alone
        .send(http::Request::get("/x").body(Body::empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A caller's own deadline is shorter still, and it is what goes
    // upstream; one already spent never loads the endpoint.
    let started = Instant::now();
    let req = http::Request::get("/x")
        .header("x-switchyard-timeout-ms", "100")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        alone.send(req).await.unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    let sent = hung.last_request().unwrap();
    let budget: u64 = sent
        .header("x-switchyard-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(budget <= 100, "{budget}");
    let before = hung.requests();
    let req = http::Request::get("/x")
        .header("x-switchyard-timeout-ms", "0")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        alone.send(req).await.unwrap_err().kind(),
        ErrorKind::DeadlineExpired
    );
    assert_eq!(hung.requests(), before);
}

#[tokio::test]
async fn the_client_is_a_tower_service() {
    use tower::ServiceExt;

    let a = Backend::start(BackendConfig::new("a")).await;
    let client = Client::new(&cluster_config("", &[a.addr()])).unwrap();
    let req = http::Request::post("/echo")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"via tower",
        )))
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "via tower");
}

#[tokio::test]
async fn tonic_clients_get_retries_deadlines_and_grpc_statuses() {
    use switchyard_test_support::{
        GrpcBackend,
        grpc::{EchoClient, EchoRequest},
    };
    use tonic::Code;

    let failing = GrpcBackend::start_failing("failing", Code::Unavailable).await;
    let good = GrpcBackend::start("good").await;
    let config = cluster_config("protocol = \"http2\"\n", &[failing.addr(), good.addr()]);
    let client = Client::builder(&config)
        .retry(switchyard::config::RetryPolicy::default())
        .build()
        .unwrap();
    let mut echo = EchoClient::new(client.grpc());
    for i in 0..8 {
        let mut req = tonic::Request::new(EchoRequest {
            message: format!("m{i}"),
            ..Default::default()
        });
        req.set_timeout(Duration::from_secs(5));
        let reply = echo.unary(req).await.unwrap().into_inner();
        assert_eq!(reply.message, format!("m{i}"));
    }
    // The caller's deadline went upstream as grpc-timeout.
    let seen = good.last_metadata().unwrap();
    assert!(seen.get("grpc-timeout").is_some(), "{seen:?}");
    // A client stream is replayed too: its messages reach the good
    // endpoint whole after the failing one refused the call.
    for i in 0..4 {
        let messages: Vec<EchoRequest> = (0..3)
            .map(|n| EchoRequest {
                message: format!("{i}.{n} "),
                ..Default::default()
            })
            .collect();
        let reply = echo
            .client_stream(futures_util::stream::iter(messages))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, format!("{i}.0 {i}.1 {i}.2 "));
        assert_eq!(reply.server, "good");
    }
    // Every call that met UNAVAILABLE was retried on the other endpoint
    // (gRFC A6: a listed status in a trailers-only answer).
    assert!(failing.requests() >= 1);
    assert_eq!(good.requests(), 12);

    // Without retries the status reaches the tonic caller as it is, and a
    // cluster with no endpoint answers UNAVAILABLE, not UNKNOWN.
    let once = Client::new(&cluster_config("protocol = \"http2\"\n", &[failing.addr()])).unwrap();
    let status = EchoClient::new(once.grpc())
        .unary(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    once.update(&[]);
    let status = EchoClient::new(once.grpc())
        .unary(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A registry (embedded store) serving on an ephemeral loopback port until
/// the returned sender is dropped; its base URL.
async fn registry(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
    let store = std::sync::Arc::new(EmbeddedStore::open(dir).await.unwrap());
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// The body of one GET through `client`.
async fn body_of(client: &Client) -> String {
    let req = http::Request::get("/").body(Body::empty()).unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_runs_its_clusters_discovery() {
    use switchyard::registry::{Registration, RegistrationOptions};
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = registry(dir.path()).await;
    let (a, b) = (
        Backend::start(BackendConfig::new("a")).await,
        Backend::start(BackendConfig::new("b")).await,
    );
    let first = Registration::register(RegistrationOptions::new(&url, "api", "a", a.addr()))
        .await
        .unwrap();
    let config = switchyard::config::parse(
        &format!(
            "[[clusters]]\nname = \"api\"\ndiscovery = {{ registry = {{ url = \"{url}\", service = \"api\" }} }}\n"
        ),
        "client.toml",
    )
    .unwrap();
    let client = Client::new(&config.clusters[0]).unwrap();
    assert!(client.discovered(Duration::from_secs(5)).await);
    // Once `discovered` returns, the cluster has the set: a request sent
    // at once finds the endpoint (the background applier may not have run).
    assert_eq!(client.cluster().snapshot().endpoints.len(), 1);
    assert_eq!(body_of(&client).await, "a");
    // The registry's changes reach the client by themselves.
    let _second = Registration::register(RegistrationOptions::new(&url, "api", "b", b.addr()))
        .await
        .unwrap();
    first.shutdown(Duration::from_millis(100)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while body_of(&client).await != "b" {
        assert!(
            Instant::now() < deadline,
            "the client never followed the registry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(body_of(&client).await, "b");
    }
}

#[test]
fn a_client_with_dynamic_discovery_needs_a_runtime() {
    let config = switchyard::config::parse(
        "[[clusters]]\nname = \"api\"\ndiscovery = { registry = { url = \"http://127.0.0.1:7400\", service = \"api\" } }\n",
        "client.toml",
    )
    .unwrap();
    let err = Client::new(&config.clusters[0]).unwrap_err();
    assert!(
        matches!(err, switchyard::BuildError::NoRuntime(ref c) if c == "api"),
        "{err}"
    );
}

/// A handler that makes one call through `client`, served under
/// [`ContextLayer`]; returns what the call answered.
async fn handle(
    client: &Client,
    incoming: &[(&'static str, &'static str)],
) -> Result<http::Response<Body>, switchyard::ProxyError> {
    use tower::{ServiceBuilder, ServiceExt};
    let client = client.clone();
    let handler = tower::service_fn(move |_req: http::Request<()>| {
        let client = client.clone();
        async move {
            let call = http::Request::get("/down").body(Body::empty()).unwrap();
            client.send(call).await
        }
    });
    let mut req = http::Request::get("/up").body(()).unwrap();
    for (k, v) in incoming {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    ServiceBuilder::new()
        .layer(switchyard::ContextLayer)
        .service(handler)
        .oneshot(req)
        .await
}

#[tokio::test]
async fn a_handlers_calls_inherit_its_deadline_trace_and_retry_marker() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let policy = switchyard::config::RetryPolicy {
        on: vec![switchyard::config::RetryOn::GatewayError],
        ..switchyard::config::RetryPolicy::default()
    };
    let config = cluster_config("", &[b.addr()]);
    let client = Client::builder(&config).retry(policy).build().unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // The remaining deadline and the trace go upstream with no user code.
    let resp = handle(
        &client,
        &[
            ("x-switchyard-timeout-ms", "800"),
            ("traceparent", traceparent),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = b.last_request().unwrap();
    let left: u64 = seen
        .header("x-switchyard-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 0 && left <= 800, "{left}");
    assert_eq!(seen.header("traceparent"), Some(traceparent));

    // A handled retry is not retried again downstream.
    b.set_mode(Mode::Status(503));
    b.reset_stats();
    let resp = handle(&client, &[("x-switchyard-attempt", "2")])
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(b.requests(), 1, "a retried request's call was retried");
    // An original request's call is: all three attempts of the default
    // policy (the one endpoint is tried again).
    b.reset_stats();
    let resp = handle(&client, &[]).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(b.requests(), 3);

    // A caller that has given up: the call fails at once, nothing is sent.
    b.set_mode(Mode::Ok);
    b.reset_stats();
    let err = handle(&client, &[("x-switchyard-timeout-ms", "0")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExpired);
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn a_client_runs_its_clusters_active_health_checks() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    b.set_healthy(false);
    let config = switchyard::config::parse(
        &format!(
            "[[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\n\
             health = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"50ms\", healthy = 2, unhealthy = 2 }}\n\
             discovery = {{ static = [\"{}\", \"{}\"] }}\n",
            a.addr(),
            b.addr()
        ),
        "client.toml",
    )
    .unwrap();
    let client = Client::new(&config.clusters[0]).unwrap();
    // The checks run in the background with no user code: the failing
    // endpoint leaves the rotation…
    switchyard_test_support::eventually(Duration::from_secs(5), || async {
        client
            .cluster()
            .snapshot()
            .endpoints
            .iter()
            .any(|e| e.state == "unhealthy")
    })
    .await;
    let before = b.requests();
    for _ in 0..10 {
        assert_eq!(body_of(&client).await, "a");
    }
    assert_eq!(b.requests(), before, "an unhealthy endpoint got traffic");
    // …and comes back when it passes again.
    b.set_healthy(true);
    switchyard_test_support::eventually(Duration::from_secs(5), || async {
        client
            .cluster()
            .snapshot()
            .endpoints
            .iter()
            .all(|e| e.state == "active")
    })
    .await;
    assert!(b.health_checks() > 0);
    // The checks stop with the client.
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let checks = b.health_checks();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.health_checks(), checks, "checks outlived the client");
}
