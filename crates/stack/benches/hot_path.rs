//! Per-request work on the L7 hot path, outside any I/O: route matching and
//! header handling. Every proxied request pays for one route lookup and one
//! header pass (hop-by-hop removal, X-Forwarded-*, X-Request-Id), so these
//! numbers are floors of the proxy's CPU per request.
//!
//! `cargo bench -p switchyard-stack --bench hot_path`

use std::{collections::HashMap, hint::black_box, net::IpAddr, sync::Arc};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request};
use switchyard_stack::{
    cluster::Cluster,
    proxy::headers::{
        X_FORWARDED_FOR, ensure_request_id, new_request_id, set_forwarded, strip_hop_by_hop,
    },
    route::{Matcher, Router, request_host},
};
use switchyard_telemetry::Metrics;

/// Ten routes the way a service mesh sidecar config tends to look: hosts,
/// prefixes, methods and a header-based canary; the catch-all comes last.
const CONFIG: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:18080"
protocol = "http"

  [[listeners.routes]]
  match = { host = "admin.example.com" }
  cluster = "admin"
  [[listeners.routes]]
  match = { host = "*.internal.example.com", path_prefix = "/metrics" }
  cluster = "admin"
  [[listeners.routes]]
  match = { path = "/healthz" }
  cluster = "admin"
  [[listeners.routes]]
  match = { path_prefix = "/api/v2/", headers = { "x-canary" = "1" } }
  cluster = "canary"
  [[listeners.routes]]
  match = { path_prefix = "/api/v2/", method = ["POST", "PUT", "PATCH"] }
  cluster = "api"
  [[listeners.routes]]
  match = { path_prefix = "/api/v2/" }
  cluster = "api"
  [[listeners.routes]]
  match = { path_prefix = "/api/v1/" }
  cluster = "legacy"
  [[listeners.routes]]
  match = { path_prefix = "/static/" }
  cluster = "static"
  [[listeners.routes]]
  match = { host = "www.example.com", path_prefix = "/" }
  cluster = "web"
  [[listeners.routes]]
  match = { path_prefix = "/" }
  cluster = "web"

[[clusters]]
name = "admin"
discovery = { static = ["127.0.0.1:19001"] }
[[clusters]]
name = "canary"
discovery = { static = ["127.0.0.1:19002"] }
[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:19003"] }
[[clusters]]
name = "legacy"
discovery = { static = ["127.0.0.1:19004"] }
[[clusters]]
name = "static"
discovery = { static = ["127.0.0.1:19005"] }
[[clusters]]
name = "web"
discovery = { static = ["127.0.0.1:19006"] }
"#;

const CATCH_ALL: &str = r#"
[[listeners]]
name = "sidecar"
listen = "127.0.0.1:18080"
protocol = "http"
  [[listeners.routes]]
  match = { path_prefix = "/" }
  cluster = "web"
[[clusters]]
name = "web"
discovery = { static = ["127.0.0.1:19006"] }
"#;

fn router(source: &str) -> Router {
    let config = switchyard_config::parse(source, "bench.toml").expect("bench config is valid");
    let metrics = Arc::new(Metrics::new());
    let clusters: HashMap<String, Arc<Cluster>> = config
        .clusters
        .iter()
        .map(|c| {
            let cluster = Cluster::new(c, metrics.clone()).expect("no TLS files to read");
            (c.name.clone(), Arc::new(cluster))
        })
        .collect();
    let listener = &config.listeners[0];
    Router::new(&listener.name, &listener.routes, &clusters, &metrics).expect("routes resolve")
}

/// A request head as curl or a typical HTTP/1.1 client library sends it.
fn request(method: &str, uri: &str, host: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host)
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, deflate, br")
        .header("connection", "keep-alive")
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(())
        .unwrap()
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let one = router(CATCH_ALL);
    let ten = router(CONFIG);
    let get = request("GET", "/index.html", "www.example.com:8080");
    let api = request("GET", "/api/v2/orders/42", "shop.example.com");
    let mut canary = request("GET", "/api/v2/orders/42", "shop.example.com");
    canary
        .headers_mut()
        .insert("x-canary", HeaderValue::from_static("1"));
    let other = request("GET", "/", "unknown.example.org");

    group.bench_function("catch_all_1_route", |b| {
        b.iter(|| black_box(one.route(black_box(&get)).is_some()))
    });
    group.bench_function("10_routes_api_6th", |b| {
        b.iter(|| black_box(ten.route(black_box(&api)).is_some()))
    });
    group.bench_function("10_routes_header_4th", |b| {
        b.iter(|| black_box(ten.route(black_box(&canary)).is_some()))
    });
    group.bench_function("10_routes_catch_all_10th", |b| {
        b.iter(|| black_box(ten.route(black_box(&other)).is_some()))
    });
    group.bench_function("request_host", |b| {
        b.iter(|| black_box(request_host(black_box(&get))))
    });
    let wildcard = Matcher::new(&switchyard_config::RouteMatch {
        host: Some("*.internal.example.com".into()),
        ..Default::default()
    });
    let internal = request("GET", "/", "db.eu.internal.example.com");
    group.bench_function("matcher_host_suffix", |b| {
        b.iter(|| {
            let r = black_box(&internal);
            black_box(wildcard.matches(r, request_host(r)))
        })
    });
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let head = request("GET", "/api/v2/orders/42", "shop.example.com")
        .headers()
        .clone();
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let fresh = || head.clone();

    group.bench_function("strip_hop_by_hop", |b| {
        b.iter_batched_ref(
            fresh,
            |h| strip_hop_by_hop(black_box(h), false),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("set_forwarded", |b| {
        b.iter_batched_ref(
            fresh,
            |h| set_forwarded(black_box(h), client, "http"),
            BatchSize::SmallInput,
        )
    });
    let mut forwarded = head.clone();
    forwarded.insert(
        &X_FORWARDED_FOR,
        HeaderValue::from_static("192.0.2.7, 198.51.100.1"),
    );
    group.bench_function("set_forwarded_append", |b| {
        b.iter_batched_ref(
            || forwarded.clone(),
            |h| set_forwarded(black_box(h), client, "http"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("new_request_id", |b| b.iter(|| black_box(new_request_id())));
    group.bench_function("ensure_request_id_generate", |b| {
        b.iter_batched_ref(
            fresh,
            |h| {
                black_box(ensure_request_id(black_box(h)));
            },
            BatchSize::SmallInput,
        )
    });
    // Everything the request path does to a request head, in order.
    group.bench_function("request_pass", |b| {
        b.iter_batched_ref(
            fresh,
            |h| {
                strip_hop_by_hop(h, false);
                set_forwarded(h, client, "http");
                black_box(ensure_request_id(h));
            },
            BatchSize::SmallInput,
        )
    });
    // A typical upstream response head, as the path strips it.
    let mut resp = HeaderMap::new();
    resp.insert("server", HeaderValue::from_static("nginx"));
    resp.insert(
        "date",
        HeaderValue::from_static("Thu, 26 Nov 2026 08:01:50 GMT"),
    );
    resp.insert("content-type", HeaderValue::from_static("text/plain"));
    resp.insert("content-length", HeaderValue::from_static("23"));
    resp.insert("connection", HeaderValue::from_static("keep-alive"));
    group.bench_function("strip_hop_by_hop_response", |b| {
        b.iter_batched_ref(
            || resp.clone(),
            |h| strip_hop_by_hop(black_box(h), false),
            BatchSize::SmallInput,
        )
    });
    // The cost the batched benches above exclude, for scale.
    group.bench_function("clone_request_head", |b| b.iter(|| black_box(head.clone())));
    group.finish();
}

criterion_group!(benches, routing, headers);
criterion_main!(benches);
