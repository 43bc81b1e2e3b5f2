//! Live reconfiguration through `POST /reload`, as SIGHUP triggers it too:
//! what a reload changes, what it keeps, what it refuses, and that traffic
//! across reloads loses nothing.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{TestProxy, cluster};
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard_test_support::{
    Backend, BackendConfig, Mode,
    client::{get, h2c_connect, http1_connect, request, send_http1},
    eventually,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn listener(name: &str, listen: &str, cluster: &str, route_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\nlisten = \"{listen}\"\n\n  [[listeners.routes]]\n  cluster = \"{cluster}\"\n{route_extra}\n\n"
    )
}

/// A configuration file the test rewrites between reloads.
struct File(tempfile::NamedTempFile);

impl File {
    fn new(toml: &str) -> Self {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), toml).unwrap();
        Self(f)
    }

    fn write(&self, toml: &str) {
        std::fs::write(self.0.path(), toml).unwrap();
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

async fn reload(p: &TestProxy) -> (u16, Value) {
    let r = send_http1(p.admin, request(Method::POST, "/reload", Bytes::new()))
        .await
        .expect("admin answers");
    (r.status().as_u16(), json(r.body()))
}

async fn body(addr: SocketAddr, path: &str) -> String {
    let r = get(addr, path).await;
    assert_eq!(r.status(), 200, "{r:?}");
    String::from_utf8(r.body().to_vec()).unwrap()
}

/// The bound address of listener `name`, as `/routes` reports it.
async fn bound(p: &TestProxy, name: &str) -> SocketAddr {
    let v = json(get(p.admin, "/routes").await.body());
    let l = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name}: {v}"));
    l["address"].as_str().unwrap().parse().unwrap()
}

async fn metrics(p: &TestProxy) -> String {
    String::from_utf8(get(p.admin, "/metrics").await.body().to_vec()).unwrap()
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn routes_clusters_and_listeners_change_without_a_restart() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let file = File::new(&format!(
        "{ADMIN}{}{}",
        listener("public", "127.0.0.1:0", "one", ""),
        cluster("one", &[a.addr()], "")
    ));
    let p = TestProxy::start_from_file(file.path()).await;
    let public = p.listener("public");
    assert_eq!(body(public, "/x").await, "a");
    // A keep-alive connection opened before the reload.
    let mut kept = http1_connect(public).await.unwrap();
    let r = kept.send_request(with_host(public, "/x")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    file.write(&format!(
        "{ADMIN}{}{}{}{}",
        listener("public", "127.0.0.1:0", "two", ""),
        listener("extra", "127.0.0.1:0", "one", ""),
        cluster("one", &[a.addr()], ""),
        cluster("two", &[b.addr()], "")
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied"], true, "{v}");
    assert_eq!(v["generation"], 2, "{v}");
    assert_eq!(names(&v["changes"]["listeners_added"]), ["extra"], "{v}");
    assert_eq!(names(&v["changes"]["listeners_updated"]), ["public"], "{v}");
    assert_eq!(names(&v["changes"]["clusters_added"]), ["two"], "{v}");
    assert!(names(&v["changes"]["clusters_updated"]).is_empty(), "{v}");

    // The same socket serves the new routes, to new connections and to
    // the next request of the connection opened before.
    assert_eq!(p.listener("public"), bound(&p, "public").await);
    assert_eq!(body(public, "/x").await, "b");
    kept.ready().await.unwrap();
    let r = kept.send_request(with_host(public, "/x")).await.unwrap();
    assert_eq!(
        r.headers()["x-backend"],
        "b",
        "a connection open across the reload uses the new routes"
    );
    let extra = bound(&p, "extra").await;
    assert_eq!(body(extra, "/x").await, "a");
    let cfg = json(get(p.admin, "/config").await.body());
    assert_eq!(cfg["generation"], 2, "{cfg}");
    assert_eq!(cfg["listeners"][1]["name"], "extra", "{cfg}");
    let m = metrics(&p).await;
    assert!(
        m.contains("switchyard_config_reloads_total{result=\"success\"} 1"),
        "{m}"
    );
    assert!(m.contains("switchyard_config_generation 2"), "{m}");

    // Removing the listener and the cluster it used.
    file.write(&format!(
        "{ADMIN}{}{}",
        listener("public", "127.0.0.1:0", "two", ""),
        cluster("two", &[b.addr()], "")
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v["changes"]["listeners_removed"]), ["extra"], "{v}");
    assert_eq!(names(&v["changes"]["clusters_removed"]), ["one"], "{v}");
    eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(extra).await.is_err()
    })
    .await;
    let clusters = json(get(p.admin, "/clusters").await.body());
    assert_eq!(
        clusters["clusters"].as_array().unwrap().len(),
        1,
        "{clusters}"
    );
    assert_eq!(clusters["clusters"][0]["name"], "two", "{clusters}");
    let m = metrics(&p).await;
    assert!(!m.contains("switchyard_endpoints{cluster=\"one\"}"), "{m}");
    assert!(m.contains("switchyard_config_generation 3"), "{m}");
    assert_eq!(body(public, "/x").await, "b");
}

#[tokio::test]
async fn a_refused_reload_changes_nothing() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let v1 = format!(
        "{ADMIN}{}{}{}",
        listener("public", "127.0.0.1:0", "one", ""),
        cluster("one", &[a.addr()], ""),
        cluster("two", &[b.addr()], "")
    );
    let file = File::new(&v1);
    let p = TestProxy::start_from_file(file.path()).await;
    let public = p.listener("public");

    // Invalid TOML: refused with the located error.
    file.write(&format!("{v1}\n[[listeners]\n"));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["applied"], false, "{v}");
    assert_eq!(v["generation"], 1, "{v}");
    let error = v["errors"][0].as_str().unwrap();
    let file_name = file.path().display().to_string();
    assert!(
        error.starts_with(&format!("{file_name}:")),
        "the error names the file, line and column: {error}"
    );

    // A valid configuration whose new listener cannot bind: the route
    // change in it is not applied either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    file.write(&format!(
        "{ADMIN}{}{}{}{}",
        listener("public", "127.0.0.1:0", "two", ""),
        listener("extra", &taken_addr.to_string(), "one", ""),
        cluster("one", &[a.addr()], ""),
        cluster("two", &[b.addr()], "")
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 422, "{v}");
    let error = v["errors"][0].as_str().unwrap();
    assert!(error.contains("cannot bind listener extra"), "{error}");
    assert_eq!(body(public, "/x").await, "a", "the running routes serve on");

    // A route naming a cluster that does not exist.
    file.write(&format!(
        "{ADMIN}{}{}",
        listener("public", "127.0.0.1:0", "nowhere", ""),
        cluster("one", &[a.addr()], "")
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("nowhere"), "{v}");

    // Settings of the process itself take a restart.
    file.write(&v1.replace(ADMIN, "[admin]\nlisten = \"127.0.0.1:1\"\n\n"));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("[admin] changed"),
        "{v}"
    );

    assert_eq!(body(public, "/x").await, "a");
    let cfg = json(get(p.admin, "/config").await.body());
    assert_eq!(cfg["generation"], 1, "{cfg}");
    let m = metrics(&p).await;
    assert!(
        m.contains("switchyard_config_reloads_total{result=\"failure\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_config_reloads_total{result=\"success\"} 0"),
        "{m}"
    );
    drop(taken);
}

/// The state of endpoint `addr` in `/clusters`, and its request count.
async fn endpoint(p: &TestProxy, addr: SocketAddr) -> (String, u64) {
    let v = json(get(p.admin, "/clusters").await.body());
    let ep = v["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no endpoint {addr}: {v}"))
        .clone();
    (
        ep["state"].as_str().unwrap().to_owned(),
        ep["requests"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn endpoints_keep_their_state_across_reloads() {
    let good = Backend::start(BackendConfig::new("good")).await;
    let bad = Backend::start(BackendConfig::new("bad").mode(Mode::Status(503))).await;
    let outlier =
        "outlier = { consecutive_failures = 1, base_ejection = \"1m\", max_ejection = \"5m\" }";
    let config = |route_extra: &str, cluster_extra: &str| {
        format!(
            "{ADMIN}{}{}",
            listener("public", "127.0.0.1:0", "api", route_extra),
            cluster(
                "api",
                &[good.addr(), bad.addr()],
                &format!("{outlier}\n{cluster_extra}")
            )
        )
    };
    let file = File::new(&config("", ""));
    let p = TestProxy::start_from_file(file.path()).await;
    let public = p.listener("public");
    for _ in 0..10 {
        let _ = get(public, "/x").await;
    }
    let (state, bad_requests) = endpoint(&p, bad.addr()).await;
    assert_eq!(state, "ejected");
    let (_, good_requests) = endpoint(&p, good.addr()).await;
    assert!(good_requests > 0);

    // A route change keeps the cluster whole.
    file.write(&config("  timeout = \"3s\"", ""));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert!(names(&v["changes"]["clusters_updated"]).is_empty(), "{v}");
    assert_eq!(
        endpoint(&p, bad.addr()).await,
        ("ejected".to_owned(), bad_requests)
    );
    assert_eq!(endpoint(&p, good.addr()).await.1, good_requests);

    // A policy change rebuilds the cluster, which takes over its endpoints
    // with their ejection and counts.
    file.write(&config("  timeout = \"3s\"", "balance = \"round-robin\""));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v["changes"]["clusters_updated"]), ["api"], "{v}");
    assert_eq!(
        endpoint(&p, bad.addr()).await,
        ("ejected".to_owned(), bad_requests)
    );
    for _ in 0..5 {
        assert_eq!(
            body(public, "/x").await,
            "good",
            "the ejected endpoint stays out"
        );
    }
    assert_eq!(endpoint(&p, good.addr()).await.1, good_requests + 5);

    // A change to how endpoints are connected starts them afresh.
    file.write(&config(
        "  timeout = \"3s\"",
        "balance = \"round-robin\"\nconnect_timeout = \"2s\"",
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(endpoint(&p, bad.addr()).await.0, "active");
}

#[tokio::test]
async fn a_removed_listener_finishes_what_it_started() {
    let slow =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_millis(800))))
            .await;
    let a = Backend::start(BackendConfig::new("a")).await;
    let both = format!(
        "{ADMIN}{}{}{}{}",
        listener("public", "127.0.0.1:0", "one", ""),
        listener("old", "127.0.0.1:0", "slow", ""),
        cluster("one", &[a.addr()], ""),
        cluster("slow", &[slow.addr()], "")
    );
    let file = File::new(&both);
    let p = TestProxy::start_from_file(file.path()).await;
    let old = p.listener("old");
    let in_flight = tokio::spawn(async move { get(old, "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    file.write(&format!(
        "{ADMIN}{}{}",
        listener("public", "127.0.0.1:0", "one", ""),
        cluster("one", &[a.addr()], "")
    ));
    let (status, v) = reload(&p).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v["changes"]["listeners_removed"]), ["old"], "{v}");
    assert_eq!(names(&v["changes"]["clusters_removed"]), ["slow"], "{v}");
    // It stopped accepting at once...
    eventually(Duration::from_secs(2), || async move {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    // ...and the request it had in flight, on a cluster that is gone, ends
    // normally.
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().as_ref(), b"slow");
    assert_eq!(body(p.listener("public"), "/x").await, "a");
}

/// A GET with the Host header a kept connection needs.
fn with_host(addr: SocketAddr, path: &str) -> http::Request<http_body_util::Full<Bytes>> {
    let mut req = request(Method::GET, path, Bytes::new());
    req.headers_mut()
        .insert(http::header::HOST, addr.to_string().parse().unwrap());
    req
}

/// A 200 with its whole body read (so a keep-alive connection is reusable).
async fn answered(
    r: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<(), String> {
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.into_body().collect().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {:?}", body.to_bytes()));
    }
    Ok(())
}

/// A bounded closed loop of clients (keep-alive HTTP/1.1, a connection per
/// request, HTTP/2 streams) across ten reloads that move the route between
/// two clusters: nothing fails.
#[tokio::test]
async fn reloads_under_load_lose_no_request() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let config = |to: &str| {
        format!(
            "{ADMIN}{}{}{}",
            listener("public", "127.0.0.1:0", to, ""),
            cluster("one", &[a.addr()], ""),
            cluster("two", &[b.addr()], "")
        )
    };
    let file = File::new(&config("one"));
    let p = TestProxy::start_from_file(file.path()).await;
    let public = p.listener("public");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clients = Vec::new();
    for kind in ["keepalive", "keepalive", "new-connection", "h2"] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut h1 = None;
            let mut h2 = None;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let outcome = match kind {
                    "keepalive" => {
                        if h1.is_none() {
                            h1 = Some(http1_connect(public).await.unwrap());
                        }
                        let c = h1.as_mut().unwrap();
                        match c.ready().await {
                            Ok(()) => answered(c.send_request(with_host(public, "/x")).await).await,
                            Err(e) => Err(format!("connection not ready: {e}")),
                        }
                    }
                    "h2" => {
                        if h2.is_none() {
                            h2 = Some(h2c_connect(public).await.unwrap());
                        }
                        let req = request(Method::GET, &format!("http://{public}/x"), Bytes::new());
                        answered(h2.as_mut().unwrap().send_request(req).await).await
                    }
                    _ => match send_http1(public, request(Method::GET, "/x", Bytes::new())).await {
                        Ok(r) if r.status() == 200 => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    },
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.lock().unwrap().push(format!("{kind}: {e}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        file.write(&config(if i % 2 == 0 { "two" } else { "one" }));
        let (status, v) = reload(&p).await;
        assert_eq!(status, 200, "reload {i}: {v}");
        assert_eq!(v["generation"], i + 2, "{v}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "reload under load: 10 reloads, {ok} requests ok, {} failed; backend a {}, b {}",
        failed.len(),
        a.requests(),
        b.requests()
    );
    assert!(
        failed.is_empty(),
        "first failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "{ok}");
    assert!(a.requests() > 0 && b.requests() > 0);
}

#[tokio::test]
async fn reload_takes_the_admin_token_and_refuses_other_origins() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let file = File::new(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n{}{}",
        token.display(),
        listener("public", "127.0.0.1:0", "one", ""),
        cluster("one", &[a.addr()], "")
    ));
    let p = TestProxy::start_from_file(file.path()).await;
    let post = |headers: &[(&'static str, &'static str)]| {
        let mut req = request(Method::POST, "/reload", Bytes::new());
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        send_http1(p.admin, req)
    };
    let r = post(&[]).await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    let r = post(&[
        ("authorization", "Bearer s3cret"),
        ("origin", "http://evil.example"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "another origin");
    let r = post(&[("authorization", "Bearer s3cret")]).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.body());
    assert_eq!(json(r.body())["generation"], 2);
}
