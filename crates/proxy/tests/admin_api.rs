//! The admin API beyond the basics: `/routes`, the live feed (`/events`,
//! `/snapshot`), the bearer token, and the metric families fed from outside
//! the request path (health checks, endpoint state).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, cluster, listener};
use http::{Method, header};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard_proxy::{Proxy, StartError};
use switchyard_test_support::{
    Backend, BackendConfig,
    client::{get, http1_connect, request, send_http1},
    wait_for,
};

const HEALTH: &str = "health = { http = \"/healthz\", interval = \"100ms\", timeout = \"80ms\", healthy = 1, unhealthy = 1 }";

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn routes_lists_each_listeners_routes_in_match_order() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = format!(
        r#"[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  name = "orders"
  match = {{ path_prefix = "/orders", method = ["GET"] }}
  cluster = "api"
  timeout = "2s"
  retry = {{ attempts = 3, per_try_timeout = "500ms", on = ["reset", "5xx"] }}

  [[listeners.routes]]
  split = [{{ cluster = "api", weight = 9 }}, {{ cluster = "canary", weight = 1 }}]
  hedge = {{ delay = "50ms" }}

[[listeners]]
name = "raw"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "api"

{}{}"#,
        cluster("api", &[b.addr()], ""),
        cluster("canary", &[b.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    let r = get(p.admin, "/routes").await;
    assert_eq!(r.status(), 200);
    let v = json(r.body());
    let public = &v["listeners"][0];
    assert_eq!(public["name"], "public");
    assert_eq!(public["protocol"], "http");
    assert_eq!(public["address"], p.listener("public").to_string());
    let orders = &public["routes"][0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["match"]["path"]["prefix"], "/orders");
    assert_eq!(orders["match"]["methods"][0], "GET");
    assert_eq!(orders["destination"]["cluster"], "api");
    assert_eq!(orders["timeout"], "2s");
    assert_eq!(orders["retry"]["attempts"], 3);
    assert_eq!(
        orders["retry_summary"],
        "3 attempts, 500ms per try, on reset, 5xx"
    );
    assert!(orders["hedge"].is_null());
    let split = &public["routes"][1];
    assert_eq!(split["name"], "public/1");
    assert_eq!(split["clusters"], serde_json::json!(["api", "canary"]));
    assert_eq!(split["destination"]["split"][1]["weight"], 1);
    assert!(
        split["hedge_summary"]
            .as_str()
            .is_some_and(|s| s.contains("after 50ms")),
        "{split}"
    );
    let raw = &v["listeners"][1];
    assert_eq!(raw["protocol"], "tcp");
    assert_eq!(raw["cluster"], "api");
    assert_eq!(raw["routes"], serde_json::json!([]));
}

/// Polls `/snapshot` until `check` accepts one.
async fn snapshot_where(p: &TestProxy, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(10), what, || async {
        let r = get(p.admin, "/snapshot").await;
        (r.status() == 200)
            .then(|| json(r.body()))
            .filter(|v| check(v))
    })
    .await
}

#[tokio::test]
async fn feed_reports_rates_and_endpoint_state_changes() {
    let good = Backend::start(BackendConfig::new("good")).await;
    let bad = Backend::start(BackendConfig::new("bad")).await;
    let p = TestProxy::start(
        &(listener("public", "api", "") + &cluster("api", &[good.addr(), bad.addr()], HEALTH)),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get(p.addr, "/x").await.status(), 200);
    }
    let v = snapshot_where(&p, "route traffic in the feed", |v| {
        v["routes"][0]["rps"].as_f64().is_some_and(|r| r > 0.0)
    })
    .await;
    let route = &v["routes"][0];
    assert_eq!(route["name"], "public/0");
    assert_eq!(route["requests"], 20);
    assert_eq!(route["error_rate"], 0.0);
    assert!(
        route["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{route}"
    );
    assert!(
        route["p99_ms"].as_f64() >= route["p50_ms"].as_f64(),
        "{route}"
    );
    assert_eq!(v["listeners"][0]["clusters"], serde_json::json!(["api"]));
    let eps = &v["clusters"][0]["endpoints"];
    assert_eq!(eps.as_array().map(Vec::len), Some(2));
    assert!(
        v["clusters"][0]["health_checked"]
            .as_bool()
            .unwrap_or(false)
    );

    bad.set_healthy(false);
    let bad_addr = bad.addr().to_string();
    let v = snapshot_where(&p, "the unhealthy endpoint in the feed", |v| {
        v["changes"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["endpoint"] == bad_addr.as_str() && c["to"] == "unhealthy")
        })
    })
    .await;
    let change = &v["changes"][0];
    assert_eq!(change["cluster"], "api");
    assert_eq!(change["from"], "active");
    let ep = v["clusters"][0]["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["address"] == bad_addr.as_str()))
        .cloned()
        .expect("bad endpoint listed");
    assert_eq!(ep["state"], "unhealthy");
    assert_eq!(ep["available"], false);

    // The same figures reach Prometheus: check results and the state gauge.
    let text = String::from_utf8(get(p.admin, "/metrics").await.body().to_vec()).expect("utf-8");
    assert!(
        text.contains("switchyard_health_checks_total{cluster=\"api\",result=\"failed\"}"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "switchyard_endpoint_state{{cluster=\"api\",endpoint=\"{bad_addr}\",state=\"unhealthy\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn events_stream_snapshots_and_end_on_shutdown() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    let mut sender = http1_connect(p.admin).await.expect("connect admin");
    let mut req = request(Method::GET, "/events", Bytes::new());
    req.headers_mut()
        .insert(header::HOST, "admin".parse().expect("header"));
    let resp = sender.send_request(req).await.expect("events response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "{:?}",
        resp.headers()
    );
    let mut body = resp.into_body();
    let mut text = String::new();
    // Two snapshots: the current one at once, the next a second later.
    while text.matches("event: snapshot").count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a snapshot within 5s")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    assert_eq!(
        json(&Bytes::from(data.to_owned()))["clusters"][0]["name"],
        "api"
    );

    // An open feed must not hold the graceful shutdown: the stream ends.
    let shutdown = tokio::spawn(p.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(end.is_ok(), "the event stream did not end on shutdown");
    let drained = tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes")
        .expect("shutdown task");
    assert!(drained);
}

async fn get_with(admin: std::net::SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut req = request(Method::GET, path, Bytes::new());
    if let Some(t) = token {
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    send_http1(admin, req)
        .await
        .expect("admin answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_configured_token_guards_everything_but_probes_and_static_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "s3cret-token\n").expect("write token");
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n{}{}",
        file.display(),
        listener("public", "api", ""),
        cluster("api", &[b.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    for open in ["/live", "/ready", "/dashboard", "/assets/dashboard.js"] {
        assert_eq!(get_with(p.admin, open, None).await, 200, "{open}");
    }
    for guarded in [
        "/metrics",
        "/clusters",
        "/routes",
        "/config",
        "/events",
        "/snapshot",
    ] {
        assert_eq!(get_with(p.admin, guarded, None).await, 401, "{guarded}");
        assert_eq!(
            get_with(p.admin, guarded, Some("wrong")).await,
            401,
            "{guarded}"
        );
    }
    for guarded in ["/metrics", "/clusters", "/routes", "/config"] {
        assert_eq!(
            get_with(p.admin, guarded, Some("s3cret-token")).await,
            200,
            "{guarded}"
        );
    }
    let r = get(p.admin, "/metrics").await;
    assert_eq!(
        r.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"switchyard-admin\""
    );
}

#[tokio::test]
async fn refuses_to_start_beyond_loopback_without_a_token() {
    if std::env::var_os(switchyard_admin::TOKEN_ENV).is_some() {
        panic!(
            "{} is set in the test environment; unset it to run this test",
            switchyard_admin::TOKEN_ENV
        );
    }
    // Never bound: the token check comes before any socket.
    let config = switchyard_config::parse("[admin]\nlisten = \"0.0.0.0:0\"\n", "test.toml")
        .expect("valid config");
    let err = Proxy::bind(config).await.expect_err("must refuse");
    assert!(
        matches!(
            err,
            StartError::AdminToken(switchyard_admin::TokenError::Required { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_feed_of_a_large_configuration_shows_what_serves_and_counts_the_rest() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let mut toml = String::from("[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n");
    for i in 0..150 {
        let cluster = if i == 149 { "big" } else { "api" };
        toml += &format!(
            "  [[listeners.routes]]\n  name = \"r{i}\"\n  match = {{ path_prefix = \"/r{i}/\" }}\n  cluster = \"{cluster}\"\n\n"
        );
    }
    toml += &cluster("api", &[b.addr()], "");
    // 150 endpoints nobody sends to (no health checks: all active).
    let big: Vec<std::net::SocketAddr> = (0..150u16)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 2], 20_000 + i)))
        .collect();
    toml += &cluster("big", &big, "");
    let p = TestProxy::start(&toml).await;

    // Idle: no route shown, all counted.
    let v = snapshot_where(&p, "a first snapshot", |v| v["summary"]["routes"] == 150).await;
    assert_eq!(v["routes"], serde_json::json!([]), "{}", v["routes"]);
    assert_eq!(v["listeners"][0]["routes_total"], 150);
    assert_eq!(v["listeners"][0]["routes"], serde_json::json!([]));

    // 120 routes serve once, r3 six times: the 100 busiest are shown, in
    // configuration order, and r3 is among them.
    for i in 0..120 {
        assert_eq!(get(p.addr, &format!("/r{i}/x")).await.status(), 200);
    }
    for _ in 0..5 {
        assert_eq!(get(p.addr, "/r3/x").await.status(), 200);
    }
    let v = snapshot_where(&p, "125 requests in the feed", |v| {
        v["summary"]["rps"].as_f64().is_some_and(|r| r > 0.0)
            && v["routes"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["name"] == "r3" && r["requests"] == 6))
    })
    .await;
    let shown: Vec<usize> = v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            assert!(r["requests"].as_u64().is_some_and(|n| n > 0), "{r}");
            r["name"].as_str().expect("name")[1..]
                .parse()
                .expect("index")
        })
        .collect();
    assert_eq!(shown.len(), 100);
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    assert!(shown.iter().all(|&i| i < 120), "{shown:?}");
    assert_eq!(v["summary"]["routes_shown"], 100);
    assert_eq!(
        v["listeners"][0]["routes"].as_array().map(Vec::len),
        Some(100)
    );

    // The big cluster: 100 of its 150 endpoints, all counted.
    let big_view = v["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "big"))
        .expect("cluster big");
    assert_eq!(big_view["endpoints_total"], 150);
    assert_eq!(big_view["endpoints_available"], 150);
    assert_eq!(
        big_view["endpoint_states"],
        serde_json::json!({ "active": 150 })
    );
    assert_eq!(big_view["endpoints"].as_array().map(Vec::len), Some(100));
    assert_eq!(v["summary"]["endpoints"], 151);
    assert_eq!(v["summary"]["clusters"], 2);
    assert_eq!(v["summary"]["clusters_shown"], 2);

    // The admin API pages what the feed summarises.
    let r = get(
        p.admin,
        "/clusters?name=big&endpoints_offset=145&endpoints_limit=10",
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = json(r.body());
    assert_eq!(page["total"], 1);
    let eps = &page["clusters"][0]["endpoints"];
    assert_eq!(page["clusters"][0]["endpoints_total"], 150);
    let addrs: Vec<&str> = eps
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(
        addrs,
        [
            "127.0.0.2:20145",
            "127.0.0.2:20146",
            "127.0.0.2:20147",
            "127.0.0.2:20148",
            "127.0.0.2:20149"
        ]
    );
    let all = json(get(p.admin, "/clusters").await.body());
    assert_eq!(all["total"], 2);
    assert_eq!(
        all["clusters"][1]["endpoints"].as_array().map(Vec::len),
        Some(150)
    );
    let second = json(get(p.admin, "/clusters?offset=1&limit=5").await.body());
    assert_eq!(second["clusters"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["clusters"][0]["name"], "big");
    assert_eq!(get(p.admin, "/clusters?name=nope").await.status(), 404);
    assert_eq!(get(p.admin, "/clusters?limit=many").await.status(), 400);

    let routes = json(
        get(p.admin, "/routes?listener=public&offset=140&limit=20")
            .await
            .body(),
    );
    let public = &routes["listeners"][0];
    assert_eq!(public["routes_total"], 150);
    let names: Vec<&str> = public["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        (140..150).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
    assert_eq!(get(p.admin, "/routes?listener=nope").await.status(), 404);
}
