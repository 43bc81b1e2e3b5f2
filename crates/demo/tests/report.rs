//! The report's verdict and summary: what counts as a broken promise, and
//! that the summary names it.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_demo::report::{Applied, KindCounts, Latency, RequestKind};
use switchyard_demo::{BackendReport, ClusterResilience, Decisions, DemoReport, Protocol, Scaling};

fn report(errors: u64, served: [u64; 2]) -> DemoReport {
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let backend = |name: &str, port, served| BackendReport {
        name: name.to_owned(),
        protocol: Protocol::Http,
        cluster: "api".to_owned(),
        address: addr(port),
        served,
        failed: 0,
        served_since_restart: None,
        proxied: Some(served),
        share: 50.0,
    };
    let http = KindCounts {
        requests: 200,
        errors,
        shed: 0,
    };
    DemoReport {
        proxy: addr(8080),
        admin: addr(9901),
        target_rate: 100,
        load_duration: Duration::from_secs(2),
        requests: 200,
        errors,
        shed: 0,
        latency: Latency::default(),
        host_lag: Latency::default(),
        by_kind: vec![
            (RequestKind::Http1, http),
            (RequestKind::Grpc, KindCounts::default()),
        ],
        backends: vec![
            backend("api-1", 9001, served[0]),
            backend("api-2", 9002, served[1]),
        ],
        seconds: Vec::new(),
        timeline: Vec::new(),
        resilience: vec![ClusterResilience {
            name: "api".to_owned(),
            decisions: Decisions::default(),
            endpoints: Vec::new(),
        }],
        registry: addr(7400),
        scaling: Vec::new(),
        error_samples: Vec::new(),
        drained: true,
    }
}

fn kill_api_2() -> Applied {
    Applied {
        at: Duration::from_secs(1),
        what: "kill api-2".to_owned(),
        backend: Some("api-2".to_owned()),
        fault: true,
    }
}

#[test]
fn verdict_names_what_failed() {
    let ok = report(0, [100, 100]);
    assert!(ok.success());
    assert!((ok.throughput() - 100.0).abs() < 1e-9);
    let text = ok.render();
    assert!(text.contains("verdict: OK"), "{text}");
    assert!(
        text.contains("api-2") && text.contains("127.0.0.1:9002"),
        "{text}"
    );
    assert!(text.contains("resilience"), "{text}");

    let bad = report(3, [200, 0]);
    assert!(!bad.success());
    assert_eq!(bad.idempotent_errors(), (3, 200));
    assert_eq!(bad.grpc_errors(), (0, 0));
    let text = bad.render();
    assert!(
        text.contains(
            "verdict: FAILED — 3 of 200 requests failed (3 of 200 idempotent GETs, 0 of 0 gRPC calls); no traffic reached api-2"
        ),
        "{text}"
    );
}

#[test]
fn faults_the_proxy_did_not_act_on_fail_the_run() {
    let mut r = report(0, [100, 100]);
    r.timeline.push(kill_api_2());
    assert_eq!(r.faulted_clusters(), vec!["api"]);
    assert!(!r.success());
    assert!(
        r.render()
            .contains("faults hit cluster api but the proxy recorded no retry or ejection"),
        "{}",
        r.render()
    );

    r.resilience[0].decisions.ejections = 1;
    assert!(r.success(), "{}", r.render());
    assert!(r.render().contains("faults in api handled by the proxy"));
}

#[test]
fn a_restarted_backend_must_serve_again() {
    let mut r = report(0, [100, 100]);
    r.backends[1].served_since_restart = Some(0);
    assert!(!r.success());
    assert!(
        r.render()
            .contains("api-2 served nothing after its restart")
    );
    r.backends[1].served_since_restart = Some(7);
    assert!(r.success());
}

#[test]
fn an_overloaded_host_is_called_out() {
    let mut r = report(0, [100, 100]);
    assert!(!r.host_overloaded());
    assert!(!r.render().contains("the host was overloaded"));
    r.host_lag.p99 = Duration::from_millis(120);
    assert!(r.host_overloaded());
    assert!(
        r.render().contains("note: the host was overloaded"),
        "{}",
        r.render()
    );
}

#[test]
fn scaling_steps_are_judged_and_told() {
    let mut r = report(0, [100, 100]);
    r.scaling.push(Scaling::Out {
        backend: "api-2".to_owned(),
        at: Duration::from_secs(1),
        first_request_after: Some(Duration::from_millis(12)),
    });
    let drained = |seen, in_flight| Scaling::In {
        backend: "api-2".to_owned(),
        at: Duration::from_secs(2),
        draining_seen_after: seen,
        stopped_after: Duration::from_millis(30),
        in_flight_at_stop: in_flight,
        served_while_draining: 2,
        errors_before: 0,
    };
    r.scaling.push(drained(Some(Duration::from_millis(4)), 0));
    assert!(r.success(), "{}", r.render());
    let text = r.render();
    assert!(
        text.contains("discovery: embedded registry http://127.0.0.1:7400"),
        "{text}"
    );
    assert!(
        text.contains("scale out t=  1.0s  api-2: first answer 12.00ms after registering"),
        "{text}"
    );
    assert!(
        text.contains("scale in  t=  2.0s  api-2: drained, no new requests after 4.00ms"),
        "{text}"
    );
    assert!(
        text.contains("api-2 scaled out, api-2 scaled in with a drain"),
        "{text}"
    );

    // Every way a scaling step can break its promise fails the run.
    r.scaling[0] = Scaling::Out {
        backend: "api-2".to_owned(),
        at: Duration::from_secs(1),
        first_request_after: None,
    };
    assert!(
        r.problems()
            .contains(&"api-2 took no traffic after scaling out".to_owned())
    );
    r.scaling.truncate(1);
    r.scaling[0] = drained(None, 3);
    r.errors = 2;
    let problems = r.problems();
    for p in [
        "the proxy never saw api-2 draining",
        "api-2 stopped with 3 requests in flight",
        "2 requests failed after api-2 began to drain",
    ] {
        assert!(problems.contains(&p.to_owned()), "{problems:?}");
    }
}
