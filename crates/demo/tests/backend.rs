//! The demo backends' controls, which scenario events rely on: a stop is a
//! crash (connections refused), a start comes back on the same address, and
//! latency can be changed while serving.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_demo::backend::{Backend, Protocol};

async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    // A fresh client each time: a pooled connection would hide a restart.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let response = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn http_backend_answers_names_itself_and_counts() {
    let backend = Backend::start("api-7", Protocol::Http).expect("binds loopback");
    let (status, body) = get(backend.addr(), "/api/items/1").await.expect("answers");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(json["backend"], "api-7");
    assert_eq!(json["path"], "/api/items/1");
    assert_eq!(get(backend.addr(), "/nope").await.expect("answers").0, 404);
    assert_eq!(
        get(backend.addr(), "/healthz").await.expect("answers").0,
        200
    );
    // Only /api/ answers count as served.
    assert_eq!(backend.served(), 1);
}

#[tokio::test]
async fn stop_refuses_connections_and_start_comes_back_on_the_same_address() {
    let backend = Backend::start("api-1", Protocol::Http).expect("binds loopback");
    let addr = backend.addr();
    backend.stop().await;
    assert!(!backend.is_running());
    assert!(
        get(addr, "/api/x").await.is_err(),
        "a stopped backend must refuse"
    );
    backend.start().await.expect("rebinds its port");
    assert!(backend.is_running());
    assert_eq!(backend.addr(), addr);
    assert_eq!(get(addr, "/api/x").await.expect("answers again").0, 200);
}

#[tokio::test]
async fn set_latency_slows_answers() {
    let backend = Backend::start("api-1", Protocol::Http).expect("binds loopback");
    backend.set_latency(Duration::from_millis(150), Duration::from_millis(150));
    let began = Instant::now();
    get(backend.addr(), "/api/slow").await.expect("answers");
    assert!(
        began.elapsed() >= Duration::from_millis(150),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(backend.latency().0, Duration::from_millis(150));
}

#[tokio::test]
async fn grpc_backend_answers_get_item_and_dies_on_stop() {
    use switchyard_demo::pb::GetItemRequest;
    use switchyard_demo::pb::inventory_client::InventoryClient;

    let backend = Backend::start("inventory-1", Protocol::Grpc).expect("binds loopback");
    let mut client = InventoryClient::connect(format!("http://{}", backend.addr()))
        .await
        .expect("connects");
    let item = client
        .get_item(GetItemRequest {
            sku: "sku-1".into(),
        })
        .await
        .expect("GetItem succeeds")
        .into_inner();
    assert_eq!(item.sku, "sku-1");
    assert_eq!(item.served_by, "inventory-1");
    assert_eq!(backend.served(), 1);

    // A crash drops the open connection too, not only the listener.
    backend.stop().await;
    let err = client
        .get_item(GetItemRequest {
            sku: "sku-2".into(),
        })
        .await
        .expect_err("a stopped backend cannot answer");
    // Unavailable when the reconnect is refused, Cancelled when the client
    // noticed the dropped connection first; both mean the instance is gone.
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn error_rate_fails_that_share_and_health_checks_still_pass() {
    let backend = Backend::start("api-1", Protocol::Http).expect("binds loopback");
    backend.set_error_rate(1.0);
    assert_eq!(backend.error_rate(), 1.0);
    let (status, _) = get(backend.addr(), "/api/x").await.expect("answers");
    assert_eq!(status, 503);
    // A brown-out, not a crash: only passive detection can see it.
    assert_eq!(
        get(backend.addr(), "/healthz").await.expect("answers").0,
        200
    );
    assert_eq!((backend.served(), backend.failed()), (0, 1));

    backend.set_error_rate(0.0);
    assert_eq!(get(backend.addr(), "/api/x").await.expect("answers").0, 200);
    assert_eq!((backend.served(), backend.failed()), (1, 1));
    // Out-of-range rates are clamped rather than refused.
    backend.set_error_rate(7.0);
    assert_eq!(backend.error_rate(), 1.0);
}

#[tokio::test]
async fn restart_counts_what_is_served_afterwards() {
    let backend = Backend::start("api-2", Protocol::Http).expect("binds loopback");
    get(backend.addr(), "/api/before").await.expect("answers");
    assert_eq!(backend.served_since_restart(), None);
    backend.stop().await;
    backend.start().await.expect("rebinds its port");
    assert_eq!(backend.restarts(), 1);
    assert_eq!(backend.served_since_restart(), Some(0));
    get(backend.addr(), "/api/after").await.expect("answers");
    assert_eq!(backend.served_since_restart(), Some(1));
    assert_eq!(backend.served(), 2);
}

#[tokio::test]
async fn grpc_backend_serves_health_and_injected_unavailable() {
    use switchyard_demo::pb::GetItemRequest;
    use switchyard_demo::pb::inventory_client::InventoryClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let backend = Backend::start("inventory-1", Protocol::Grpc).expect("binds loopback");
    let url = format!("http://{}", backend.addr());
    // tonic-health is built without transport, so no `HealthClient::connect`.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("a valid URL")
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Check succeeds")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    backend.set_error_rate(1.0);
    let mut client = InventoryClient::connect(url).await.expect("connects");
    let err = client
        .get_item(GetItemRequest {
            sku: "sku-1".into(),
        })
        .await
        .expect_err("every call fails");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!((backend.served(), backend.failed()), (0, 1));
}

/// `switchyard demo --backends-only` serves exactly the endpoints the
/// documented example routes to, so the example works out of the box.
#[test]
fn backends_only_serves_the_example_s_endpoints() {
    use switchyard_config::Discovery;
    use switchyard_demo::backends_only::{EXAMPLE_BACKENDS, EXAMPLE_PROXY};

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/proxy.toml");
    let config =
        switchyard_config::load(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    let api = config
        .clusters
        .iter()
        .find(|c| c.name == "api")
        .expect("the example has an api cluster");
    let Discovery::Static(endpoints) = &api.discovery else {
        panic!("the example's api cluster is static: {:?}", api.discovery);
    };
    let example: Vec<_> = endpoints.iter().map(|e| e.address).collect();
    let served: Vec<_> = EXAMPLE_BACKENDS.iter().map(|(_, addr)| *addr).collect();
    assert_eq!(served, example);
    // The example's health check path is one the backends answer.
    assert!(
        matches!(&api.health, Some(h) if matches!(&h.kind, switchyard_config::HealthCheckKind::Http { path, .. } if path == "/healthz"))
    );
    let public = config
        .listeners
        .iter()
        .find(|l| l.name == "public")
        .expect("the example has a public listener");
    assert_eq!(public.listen, EXAMPLE_PROXY);
}

#[tokio::test]
async fn backends_only_serves_until_stopped_and_counts() {
    use switchyard_demo::backends_only::serve;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds loopback");
    let addr = taken.local_addr().expect("has an address");
    // A port in use fails at once, naming the instance and the address.
    let err = serve(&[("api-1", addr)], None, std::future::pending())
        .await
        .expect_err("the port is taken");
    let message = err.to_string();
    assert!(
        message.contains("api-1") && message.contains(&addr.to_string()),
        "{message}"
    );
    drop(taken);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        serve(&[("api-1", addr)], None, async {
            let _ = stopped.await;
        })
        .await
    });
    let answer = loop {
        match get(addr, "/api/hello").await {
            Ok(answer) => break answer,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert_eq!(answer.0, 200);
    assert!(answer.1.contains("\"api-1\""), "{}", answer.1);
    stop.send(()).expect("still serving");
    let served = serving
        .await
        .expect("no panic")
        .expect("served until stopped");
    assert_eq!(served.len(), 1);
    assert_eq!((served[0].name.as_str(), served[0].requests), ("api-1", 1));
    assert!(get(addr, "/api/hello").await.is_err(), "stopped");

    // Or for a while only.
    let began = Instant::now();
    serve(
        &[("api-1", addr)],
        Some(Duration::from_millis(100)),
        std::future::pending(),
    )
    .await
    .expect("serves for 100ms");
    assert!(began.elapsed() >= Duration::from_millis(100));
}
