//! Fault tolerance end to end: retries, budgets, idempotency, ejection,
//! deadlines across chained proxies, hedging, limits and health checks —
//! against backends that misbehave on demand.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{TestProxy, cluster};
use futures_util::future::join_all;
use http::Method;
use http_body_util::{BodyExt, Full};
use switchyard_test_support::{
    Backend, BackendConfig, Mode,
    client::{get, http1_connect, request, send_http1},
};
use tokio::time::Instant;

fn route_proxy(clusters: &str, route: &str) -> String {
    format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n{route}\n\n{clusters}"
    )
}

/// `n` sequential GETs over one connection; returns the statuses.
async fn gets(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut tx = http1_connect::<Full<Bytes>>(addr).await.unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = request(Method::GET, "/work", Bytes::new());
        req.headers_mut().insert("host", "svc".parse().unwrap());
        tx.ready().await.expect("proxy keeps the connection open");
        let resp = tx.send_request(req).await.unwrap();
        out.push(resp.status().as_u16());
        resp.into_body().collect().await.unwrap();
    }
    out
}

fn decisions(p: &TestProxy, name: &str) -> std::collections::BTreeMap<&'static str, u64> {
    p.cluster("api")
        .snapshot()
        .decisions
        .into_iter()
        .filter(|(k, _)| k.contains(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_under_load_fails_no_get() {
    let b: Vec<Backend> =
        join_all((0..3).map(|i| Backend::start(BackendConfig::new(format!("k{i}"))))).await;
    let addrs: Vec<SocketAddr> = b.iter().map(|b| b.addr()).collect();
    let toml = route_proxy(
        // Round-robin keeps sending to the dead endpoint until it is ejected:
        // the hardest case for retries (peak-EWMA would steer away at once).
        &cluster(
            "api",
            &addrs,
            "balance = \"round-robin\"\noutlier = { consecutive_failures = 3 }",
        ),
        "  retry = { attempts = 3, on = [\"connect-failure\", \"reset\", \"gateway-error\"] }",
    );
    let p = TestProxy::start(&toml).await;
    let victim = b[1].handle();
    let api = p.cluster("api");
    let killer = tokio::spawn(async move {
        // Kill once traffic is flowing, then time how long the proxy takes to
        // eject the dead endpoint.
        switchyard_test_support::eventually(Duration::from_secs(10), || {
            let v = victim.clone();
            async move { v.requests() >= 30 }
        })
        .await;
        victim.stop().await;
        let killed = Instant::now();
        let addr = victim.addr();
        switchyard_test_support::wait_for(
            Duration::from_secs(10),
            "the dead endpoint's ejection",
            || {
                let api = api.clone();
                async move {
                    api.snapshot()
                        .endpoints
                        .iter()
                        .any(|e| e.address == addr && e.state == "ejected")
                        .then_some(())
                }
            },
        )
        .await;
        killed.elapsed()
    });
    let started = Instant::now();
    let results = join_all((0..8).map(|_| gets(p.addr, 150))).await;
    let time_to_ejection = killer.await.unwrap();
    let statuses: Vec<u16> = results.into_iter().flatten().collect();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(statuses.len(), 1200);
    assert_eq!(failed, 0, "failed GETs after a backend died");
    let snap = p.cluster("api").snapshot();
    let dead = snap
        .endpoints
        .iter()
        .find(|e| e.address == b[1].addr())
        .unwrap();
    assert_eq!(dead.state, "ejected", "{snap:?}");
    eprintln!(
        "kill-one-backend: {} requests in {:?}, 0 failed, ejected {:?} after the kill, retries {:?}, ejections {:?}",
        statuses.len(),
        started.elapsed(),
        time_to_ejection,
        decisions(&p, "retry"),
        decisions(&p, "ejection")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_failing_backend_is_masked_within_the_retry_budget() {
    let flaky = Backend::start(BackendConfig::new("flaky").mode(Mode::FailRatio(0.5))).await;
    let good1 = Backend::start(BackendConfig::new("good1")).await;
    let good2 = Backend::start(BackendConfig::new("good2")).await;
    let toml = route_proxy(
        &cluster(
            "api",
            &[flaky.addr(), good1.addr(), good2.addr()],
            "balance = \"round-robin\"",
        ),
        "  retry = { attempts = 3, on = [\"5xx\"] }",
    );
    let p = TestProxy::start(&toml).await;
    let statuses: Vec<u16> = join_all((0..4).map(|_| gets(p.addr, 500)))
        .await
        .into_iter()
        .flatten()
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count() as f64 / statuses.len() as f64;
    assert!(
        ok >= 0.999,
        "success ratio {ok}: {:?}",
        p.cluster("api").snapshot()
    );
    let retries = p
        .cluster("api")
        .decisions()
        .get(switchyard_telemetry::Decision::Retry);
    // Budget: 20% of 2000 requests plus 10/s over the 10s window.
    assert!(
        retries > 0 && retries as f64 <= 0.2 * 2000.0 + 100.0,
        "retries {retries}"
    );
    // Round-robin sends a third to the flaky backend; about half fail.
    assert!((200..=450).contains(&retries), "retries {retries}");
}

#[tokio::test]
async fn posts_are_never_sent_twice_but_connect_failures_are_retried() {
    let failing = Backend::start(BackendConfig::new("f").mode(Mode::Status(503))).await;
    let toml = route_proxy(
        &cluster("api", &[failing.addr()], ""),
        "  retry = { attempts = 3, on = [\"5xx\", \"reset\", \"connect-failure\"] }",
    );
    let p = TestProxy::start(&toml).await;
    for _ in 0..10 {
        let r = send_http1(p.addr, request(Method::POST, "/orders", "item=1"))
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        failing.requests_with_method(&Method::POST),
        10,
        "each POST reached the backend once"
    );
    // A GET to the same backend is retried: three attempts each.
    let r = get(p.addr, "/orders").await;
    assert_eq!(r.status(), 503);
    assert_eq!(failing.requests_with_method(&Method::GET), 3);

    // A reset after the request was read: not retried for POST either.
    failing.set_mode(Mode::CloseWithoutResponse);
    let r = send_http1(p.addr, request(Method::POST, "/orders", "item=2"))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(failing.requests_with_method(&Method::POST), 11);

    // Connect failure: never reached anyone, so a POST moves on.
    let refused = switchyard_test_support::RefusedAddr::new();
    let dead = refused.addr();
    let ok = Backend::start(BackendConfig::new("ok")).await;
    p.cluster("api").update(&[
        switchyard_stack::cluster::EndpointSpec::new(dead, 1),
        switchyard_stack::cluster::EndpointSpec::new(ok.addr(), 1),
    ]);
    for _ in 0..6 {
        let r = send_http1(p.addr, request(Method::POST, "/orders", "item=3"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(ok.requests_with_method(&Method::POST), 6);
    // The replayed body arrived intact.
    let r = send_http1(
        p.addr,
        request(Method::POST, "/echo", "payload-survives-a-retry"),
    )
    .await
    .unwrap();
    assert_eq!(r.body().as_ref(), b"payload-survives-a-retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_ejected_and_traffic_moves_away() {
    let slow =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_millis(400))))
            .await;
    let fast = Backend::start(BackendConfig::new("fast")).await;
    let toml = route_proxy(
        &cluster(
            "api",
            &[slow.addr(), fast.addr()],
            "balance = \"round-robin\"\noutlier = { consecutive_failures = 2, base_ejection = \"30s\", max_ejection_percent = 50 }",
        ),
        "  retry = { attempts = 2, per_try_timeout = \"100ms\", on = [\"reset\"] }",
    );
    let p = TestProxy::start(&toml).await;
    let statuses = gets(p.addr, 40).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let snap = p.cluster("api").snapshot();
    let s = snap
        .endpoints
        .iter()
        .find(|e| e.address == slow.addr())
        .unwrap();
    assert_eq!(s.state, "ejected", "{snap:?}");
    assert!(
        slow.requests() <= 4,
        "slow got {} requests",
        slow.requests()
    );
    assert!(fast.requests() >= 38);
}

/// Proxy A → proxy B → backend, each hop with its own route.
async fn chain(backend: &Backend, a_route: &str, b_route: &str) -> (TestProxy, TestProxy) {
    let b = TestProxy::start(&route_proxy(
        &cluster("api", &[backend.addr()], ""),
        b_route,
    ))
    .await;
    let a = TestProxy::start(&route_proxy(&cluster("api", &[b.addr], ""), a_route)).await;
    (a, b)
}

#[tokio::test]
async fn deadlines_propagate_through_chained_proxies() {
    let backend = Backend::start(BackendConfig::new("b")).await;
    let (a, _b) = chain(&backend, "  timeout = \"2s\"", "  timeout = \"10s\"").await;
    let r = get(a.addr, "/x").await;
    assert_eq!(r.status(), 200);
    // A route timeout bounds the wait for the response head at its own hop;
    // it is not the caller's deadline and is not sent on.
    let seen = backend.last_request().unwrap();
    assert!(seen.header("x-switchyard-timeout-ms").is_none(), "{seen:?}");

    // A caller's deadline travels the whole chain, shortened at each hop.
    let mut req = request(Method::GET, "/x", Bytes::new());
    req.headers_mut()
        .insert("x-switchyard-timeout-ms", "700".parse().unwrap());
    send_http1(a.addr, req).await.unwrap();
    let ms: u64 = backend
        .last_request()
        .unwrap()
        .header("x-switchyard-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms <= 700, "{ms}");

    // The deadline holds across hops: a slow backend gets the caller a 504
    // at the first hop's deadline, not the second hop's.
    backend.set_mode(Mode::Delay(Duration::from_secs(3)));
    let mut req = request(Method::GET, "/x", Bytes::new());
    req.headers_mut()
        .insert("x-switchyard-timeout-ms", "300".parse().unwrap());
    let started = Instant::now();
    let r = send_http1(a.addr, req).await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_expired_deadline_never_reaches_a_backend() {
    let backend = Backend::start(BackendConfig::new("b")).await;
    let (a, _b) = chain(&backend, "", "").await;
    let mut req = request(Method::GET, "/x", Bytes::new());
    req.headers_mut()
        .insert("x-switchyard-timeout-ms", "0".parse().unwrap());
    let r = send_http1(a.addr, req).await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["x-switchyard-error"], "deadline_expired");
    let mut req = request(Method::POST, "/svc.Echo/Unary", Bytes::new());
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    req.headers_mut()
        .insert("grpc-timeout", "0m".parse().unwrap());
    let r = send_http1(a.addr, req).await.unwrap();
    assert_eq!(r.headers()["grpc-status"], "4");
    assert_eq!(backend.requests(), 0);
    assert_eq!(
        a.cluster("api")
            .decisions()
            .get(switchyard_telemetry::Decision::DeadlineExpired),
        2
    );
}

#[tokio::test]
async fn a_retry_arriving_at_a_second_hop_is_not_retried_there() {
    let backend = Backend::start(BackendConfig::new("b").mode(Mode::Status(503))).await;
    let (a, _b) = chain(
        &backend,
        "  retry = { attempts = 2, on = [\"5xx\"] }",
        "  retry = { attempts = 3, on = [\"5xx\"] }",
    )
    .await;
    let r = get(a.addr, "/x").await;
    assert_eq!(r.status(), 503);
    // A's first attempt: B tries three times. A's retry: B tries once.
    assert_eq!(backend.requests(), 4, "retries multiplied along the chain");
    let attempts: Vec<String> = backend
        .recorded()
        .iter()
        .map(|r| r.header("x-switchyard-attempt").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_answers_from_the_fast_endpoint() {
    let slow =
        Backend::start(BackendConfig::new("slow").mode(Mode::Delay(Duration::from_millis(500))))
            .await;
    let fast = Backend::start(BackendConfig::new("fast")).await;
    let toml = route_proxy(
        &cluster(
            "api",
            &[slow.addr(), fast.addr()],
            "balance = \"round-robin\"",
        ),
        "  hedge = { delay = \"50ms\", max_extra_load = 1.0 }",
    );
    let p = TestProxy::start(&toml).await;
    let started = Instant::now();
    for _ in 0..10 {
        let r = get(p.addr, "/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "fast");
    }
    // Without hedging, five of these would each have waited 500ms.
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    let hedges = p
        .cluster("api")
        .decisions()
        .get(switchyard_telemetry::Decision::Hedge);
    assert!(hedges >= 4, "hedges {hedges}");
    // POST is never hedged.
    let r = send_http1(p.addr, request(Method::POST, "/x", "b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        p.cluster("api")
            .decisions()
            .get(switchyard_telemetry::Decision::Hedge),
        hedges
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_limits_fail_fast() {
    let hang = Backend::start(BackendConfig::new("h").mode(Mode::Hang)).await;
    let toml = route_proxy(
        &cluster("api", &[hang.addr()], "limits = { max_requests = 2 }"),
        "  timeout = \"3s\"",
    );
    let p = Arc::new(TestProxy::start(&toml).await);
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { get(p.addr, "/x").await.status() })
        })
        .collect();
    switchyard_test_support::eventually(Duration::from_secs(5), || {
        let h = hang.handle();
        async move { h.requests() == 2 }
    })
    .await;
    let started = Instant::now();
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-switchyard-error"], "overloaded");
    assert!(started.elapsed() < Duration::from_millis(500));
    hang.set_mode(Mode::Ok);
    hang.stop().await;
    for b in blocked {
        let _ = b.await;
    }
    assert!(
        p.cluster("api")
            .decisions()
            .get(switchyard_telemetry::Decision::Overloaded)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_remove_and_restore_endpoints() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = route_proxy(
        &cluster(
            "api",
            &[a.addr(), b.addr()],
            "balance = \"round-robin\"\nhealth = { http = \"/healthz\", interval = \"100ms\", timeout = \"50ms\", healthy = 2, unhealthy = 2 }",
        ),
        "",
    );
    let p = TestProxy::start(&toml).await;
    b.set_healthy(false);
    let cluster = p.cluster("api");
    switchyard_test_support::eventually(Duration::from_secs(5), || {
        let c = cluster.clone();
        async move {
            c.snapshot()
                .endpoints
                .iter()
                .any(|e| e.state == "unhealthy")
        }
    })
    .await;
    let before = b.requests();
    assert!(gets(p.addr, 20).await.iter().all(|s| *s == 200));
    assert_eq!(b.requests(), before, "unhealthy endpoint got traffic");
    b.set_healthy(true);
    switchyard_test_support::eventually(Duration::from_secs(5), || {
        let c = cluster.clone();
        async move { c.snapshot().endpoints.iter().all(|e| e.state == "active") }
    })
    .await;
    gets(p.addr, 20).await;
    assert!(b.requests() >= before + 10);
    assert!(a.health_checks() > 0 && b.health_checks() > 0);
    assert!(
        cluster
            .decisions()
            .get(switchyard_telemetry::Decision::Unhealthy)
            >= 1
    );
    assert!(
        cluster
            .decisions()
            .get(switchyard_telemetry::Decision::Healthy)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_keeps_traffic_flowing_when_most_endpoints_look_unhealthy() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let toml = route_proxy(
        &cluster(
            "api",
            &[a.addr(), b.addr()],
            "health = { http = \"/healthz\", interval = \"100ms\", timeout = \"50ms\", healthy = 1, unhealthy = 1 }",
        ),
        "",
    );
    let p = TestProxy::start(&toml).await;
    a.set_healthy(false);
    b.set_healthy(false);
    let cluster = p.cluster("api");
    switchyard_test_support::eventually(Duration::from_secs(5), || {
        let c = cluster.clone();
        async move {
            c.snapshot()
                .endpoints
                .iter()
                .all(|e| e.state == "unhealthy")
        }
    })
    .await;
    // Health checks say no, but the servers answer: serve rather than fail.
    assert!(gets(p.addr, 10).await.iter().all(|s| *s == 200));
}
