//! The report's verdict and summary: what counts as a broken promise, and
//! that the summary names it.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_demo::report::{Applied, KindCounts, Latency, RequestKind};
use switchyard_demo::{
    BackendReport, ClusterResilience, Decisions, DemoReport, EndpointChange, InjectedFaults,
    Protocol, ProxyEvent, Scaling,
};

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
        events: Vec::new(),
        resilience: vec![ClusterResilience {
            name: "api".to_owned(),
            decisions: Decisions::default(),
            endpoints: Vec::new(),
        }],
        registry: addr(7400),
        scaling: Vec::new(),
        error_samples: Vec::new(),
        drained: true,
        faults: InjectedFaults {
            route: "api".to_owned(),
            ratio: 0.02,
            delay: Duration::from_millis(20),
            delayed: 4,
            requests: 200,
        },
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

/// Words like `ConsecutiveFailures` or `ProbeFailed`: a Rust enum printed
/// with `{:?}` where a reader should get words.
fn debug_names(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| {
            let b = word.as_bytes();
            b.first().is_some_and(u8::is_ascii_uppercase)
                && b.windows(2)
                    .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase())
        })
        .collect()
}

#[test]
fn the_summary_explains_its_columns_and_names_instances_in_words() {
    let mut r = report(0, [100, 100]);
    r.backends[1].served_since_restart = Some(7);
    r.backends[0].proxied = None;
    r.timeline.push(kill_api_2());
    r.resilience[0].decisions.ejections = 1;
    let event = |ms, backend: Option<&str>, port, change| ProxyEvent {
        at: Duration::from_millis(ms),
        cluster: "api".to_owned(),
        backend: backend.map(str::to_owned),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        change,
    };
    r.events = vec![
        event(
            1200,
            Some("api-2"),
            9002,
            EndpointChange::Ejected {
                consecutive_failures: 3,
            },
        ),
        event(1900, Some("api-2"), 9002, EndpointChange::Unhealthy),
        event(3300, Some("api-2"), 9002, EndpointChange::EjectedAgain),
        event(4800, Some("api-2"), 9002, EndpointChange::Healthy),
        event(5200, Some("api-2"), 9002, EndpointChange::Restored),
        // An endpoint the demo did not start keeps its address.
        event(5300, None, 9009, EndpointChange::Unhealthy),
    ];
    let text = r.render();

    // A legend right under the backend table says what its columns count.
    let lines: Vec<&str> = text.lines().collect();
    let last_row = lines
        .iter()
        .position(|l| l.trim_start().starts_with("api-2 "))
        .expect("a row for api-2");
    let legend = lines[last_row + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    for column in [
        "served:",
        "failed:",
        "proxied:",
        "share:",
        "restarted:",
        "-:",
    ] {
        assert!(legend.contains(column), "no {column} in the legend\n{text}");
    }
    assert!(legend.contains("since its last restart"), "{text}");
    assert!(legend.contains("retries and hedges included"), "{text}");

    // The proxy's endpoint changes are in the timeline, by instance name,
    // in time order with the scenario's events.
    let kill = text.find("t=  1.0s  kill api-2").expect("the kill");
    for line in [
        "t=  1.2s  proxy: api-2 ejected after 3 consecutive failures",
        "t=  1.9s  proxy: api-2 health checks failing, marked unhealthy",
        "t=  3.3s  proxy: api-2 probe failed, ejected again",
        "t=  4.8s  proxy: api-2 health checks passing, healthy again",
        "t=  5.2s  proxy: api-2 probe succeeded, restored",
        "t=  5.3s  proxy: 127.0.0.1:9009 health checks failing, marked unhealthy",
    ] {
        let at = text
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in\n{text}"));
        assert!(at > kill, "{text}");
    }
    assert!(!text.contains("127.0.0.1:9002 ejected"), "{text}");
    assert_eq!(
        r.events[0].line(),
        "  t=  1.2s  !! proxy: api-2 ejected after 3 consecutive failures"
    );

    // Reasons and states read as words, not Rust enum names.
    assert_eq!(debug_names(&text), Vec::<&str>::new(), "{text}");
    for e in &r.events {
        assert_eq!(debug_names(&e.line()), Vec::<&str>::new(), "{}", e.line());
    }
    assert_eq!(
        debug_names("ejected: ConsecutiveFailures"),
        ["ConsecutiveFailures"]
    );
    assert!(debug_names("gRPC HTTP/1.1 OK FAILED api-2").is_empty());
}

#[test]
fn injected_faults_must_match_their_ratio() {
    let ok = report(0, [100, 100]);
    assert!(
        ok.render()
            .contains("route api delays 2% of requests by 20 ms: 4 of 200 delayed")
    );
    // A policy that did not apply, or applied to far more than its share,
    // breaks the run.
    for delayed in [0, 100] {
        let mut bad = report(0, [100, 100]);
        bad.faults.requests = 2000;
        bad.faults.delayed = delayed;
        assert!(!bad.success(), "{delayed}");
        assert!(
            bad.render()
                .contains(&format!("route api delayed {delayed} of 2000 requests")),
            "{}",
            bad.render()
        );
    }
    // Binomial noise passes: 2% of 2000 is 40, give or take.
    let mut noisy = report(0, [100, 100]);
    noisy.faults.requests = 2000;
    noisy.faults.delayed = 52;
    assert!(noisy.success());
}
