//! Route matching and weighted splits, end to end.

mod common;

use bytes::Bytes;
use common::{TestProxy, cluster};
use http::Method;
use switchyard_test_support::{
    Backend, BackendConfig,
    client::{request, send_h2c, send_http1},
};

async fn send(
    p: &TestProxy,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    let mut req = request(method, path, Bytes::new());
    req.headers_mut().insert("host", host.parse().unwrap());
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    send_http1(p.addr, req).await.unwrap()
}

fn backend_of(r: &http::Response<Bytes>) -> &str {
    r.headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("-")
}

#[tokio::test]
async fn first_matching_route_wins_on_host_path_method_and_headers() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let c = Backend::start(BackendConfig::new("c")).await;
    let d = Backend::start(BackendConfig::new("d")).await;
    let e = Backend::start(BackendConfig::new("e")).await;
    let toml = format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  match = {{ host = "admin.example.com" }}
  cluster = "a"

  [[listeners.routes]]
  match = {{ path = "/exact" }}
  cluster = "b"

  [[listeners.routes]]
  match = {{ path_prefix = "/write/", method = ["POST", "PUT"] }}
  cluster = "c"

  [[listeners.routes]]
  match = {{ path_prefix = "/", headers = {{ "x-canary" = "1" }} }}
  cluster = "d"

  [[listeners.routes]]
  match = {{ path_prefix = "/api/" }}
  cluster = "e"

{}{}{}{}{}"#,
        cluster("a", &[a.addr()], ""),
        cluster("b", &[b.addr()], ""),
        cluster("c", &[c.addr()], ""),
        cluster("d", &[d.addr()], ""),
        cluster("e", &[e.addr()], ""),
    );
    let p = TestProxy::start(&toml).await;
    assert_eq!(
        backend_of(&send(&p, Method::GET, "/exact", "ADMIN.example.com:80", &[]).await),
        "a"
    );
    assert_eq!(
        backend_of(&send(&p, Method::GET, "/exact", "x", &[]).await),
        "b"
    );
    assert_eq!(
        backend_of(&send(&p, Method::GET, "/exact/more", "x", &[("x-canary", "1")]).await),
        "d"
    );
    assert_eq!(
        backend_of(&send(&p, Method::POST, "/write/1", "x", &[]).await),
        "c"
    );
    assert_eq!(
        backend_of(&send(&p, Method::GET, "/api/v1", "x", &[]).await),
        "e"
    );
    assert_eq!(
        backend_of(&send(&p, Method::GET, "/write/1", "x", &[("x-canary", "1")]).await),
        "d"
    );
    // No route: 404 from the proxy, saying why.
    let r = send(&p, Method::GET, "/nothing", "x", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-switchyard-error"], "no_route");

    // h2c requests carry the host in :authority.
    let mut req = request(Method::GET, "http://admin.example.com/x", Bytes::new());
    req.headers_mut().remove("host");
    let r = send_h2c(p.addr, req).await.unwrap();
    assert_eq!(backend_of(&r), "a");
}

#[tokio::test]
async fn weighted_split_across_clusters() {
    let stable = Backend::start(BackendConfig::new("stable")).await;
    let canary = Backend::start(BackendConfig::new("canary")).await;
    let toml = format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  split = [{{ cluster = "stable", weight = 80 }}, {{ cluster = "canary", weight = 20 }}]

{}{}"#,
        cluster("stable", &[stable.addr()], ""),
        cluster("canary", &[canary.addr()], ""),
    );
    let p = TestProxy::start(&toml).await;
    let mut tx =
        switchyard_test_support::client::http1_connect::<http_body_util::Full<Bytes>>(p.addr)
            .await
            .unwrap();
    for _ in 0..1000 {
        let mut req = request(Method::GET, "/", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        tx.ready().await.expect("proxy keeps the connection open");
        let resp = tx.send_request(req).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    let share = canary.requests() as f64 / 1000.0;
    assert_eq!(stable.requests() + canary.requests(), 1000);
    assert!((0.15..=0.25).contains(&share), "canary share {share}");
}
