//! The chaos script end to end: while load runs through the real proxy, one
//! HTTP backend is killed and restarted, one is slowed, one fails half its
//! requests, and one gRPC backend is killed and restarted. Clients must not
//! notice, and the proxy's decisions must show why.

use std::time::Duration;

use switchyard_demo::{DemoOptions, DemoReport, EndpointChange, Scaling, run};

/// Long enough for every fault of the script (scaled from 12 s) to be
/// noticed, routed around and recovered from; short enough for CI.
const DURATION: Duration = Duration::from_secs(7);

fn decisions(report: &DemoReport, cluster: &str) -> switchyard_demo::Decisions {
    report
        .resilience
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.decisions)
        .unwrap_or_else(|| panic!("no cluster {cluster} in the report"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_is_invisible_to_clients_and_visible_in_the_report() {
    // `SWITCHYARD_DEMO_LIVE=1 cargo test ... -- --nocapture` shows the run.
    let live = std::env::var_os("SWITCHYARD_DEMO_LIVE").is_some();
    let opts = DemoOptions {
        duration: DURATION,
        rate: 200,
        live,
        ..DemoOptions::default()
    };
    let report = run(opts).await.expect("the demo runs");
    let summary = report.render();
    if live {
        println!("{summary}");
    }

    // Clients saw nothing: retries and hedges hid every fault.
    assert_eq!(report.idempotent_errors().0, 0, "{summary}");
    assert_eq!(report.grpc_errors().0, 0, "{summary}");
    assert_eq!(report.errors, 0, "{summary}");

    // The faults happened, in both clusters.
    for needle in [
        "kill api-2",
        "restart api-2",
        "slow api-3 +250ms",
        "errors api-1 50%",
        "kill inventory-2",
        "restart inventory-2",
    ] {
        assert!(
            report.timeline.iter().any(|e| e.what.starts_with(needle)),
            "no {needle:?} in the timeline\n{summary}"
        );
    }
    // The proxy's own chaos: the api route's fault policy delayed its share.
    assert!(report.faults.delayed > 0, "no injected delay\n{summary}");
    assert!(report.faults.plausible(), "{:?}\n{summary}", report.faults);
    let failed: u64 = report.backends.iter().map(|b| b.failed).sum();
    assert!(failed > 0, "no backend failed a request\n{summary}");

    // ... and the proxy handled them.
    let api = decisions(&report, "api");
    let inventory = decisions(&report, "inventory");
    assert!(api.retries >= 1, "{summary}");
    assert!(inventory.retries >= 1, "{summary}");
    // A killed endpoint is taken out of rotation, by outlier ejection or by
    // the health checks, whichever sees it first: with the latency-aware
    // balancer steering away after the first failure, three failures in a
    // row (an ejection) do not always happen before a failed health check.
    for (name, d) in [("api", api), ("inventory", inventory)] {
        assert!(
            d.ejections + d.unhealthy >= 1,
            "{name}: the killed endpoint was not taken out\n{summary}"
        );
    }

    // Killed backends took traffic again after their restart. (With
    // p2c-peak-ewma that traffic currently comes mostly from the later
    // brown-out, which ejects their peers: the 1 s latency penalty a failed
    // attempt leaves on the killed endpoint decays over ~10 s, so the
    // balancer avoids it long after health checks say it is back.)
    for name in ["api-2", "inventory-2"] {
        let backend = report
            .backends
            .iter()
            .find(|b| b.name == name)
            .expect("the backend is in the report");
        assert!(
            backend.served_since_restart.is_some_and(|n| n > 0),
            "{name} served nothing after its restart\n{summary}"
        );
    }

    // Scaling through the registry: api-4 registered and took traffic; it
    // was drained, nothing was cut, and nothing failed after the drain.
    let out = report
        .scaling
        .iter()
        .find(|s| matches!(s, Scaling::Out { .. }))
        .expect("a scale-out step");
    assert_eq!(out.backend(), "api-4");
    let api4 = report
        .backends
        .iter()
        .find(|b| b.name == "api-4")
        .expect("api-4 is in the report");
    assert!(api4.served > 0, "api-4 served nothing\n{summary}");
    match report
        .scaling
        .iter()
        .find(|s| matches!(s, Scaling::In { .. }))
    {
        Some(Scaling::In {
            backend,
            draining_seen_after,
            in_flight_at_stop,
            errors_before,
            ..
        }) => {
            assert_eq!(backend, "api-4");
            assert!(
                draining_seen_after.is_some_and(|d| d < Duration::from_millis(500)),
                "drain not seen in time\n{summary}"
            );
            assert_eq!(*in_flight_at_stop, 0, "{summary}");
            assert_eq!(report.errors - errors_before, 0, "{summary}");
        }
        _ => panic!("no scale-in step\n{summary}"),
    }
    // The proxy no longer lists the stopped instance: it was deregistered.
    let api = report
        .resilience
        .iter()
        .find(|c| c.name == "api")
        .expect("api cluster");
    assert!(
        api.endpoints.iter().all(|e| e.address != api4.address),
        "{summary}"
    );
    assert!(
        summary.contains("discovery: embedded registry"),
        "{summary}"
    );
    assert!(summary.contains("scale in"), "{summary}");

    // The proxy's endpoint changes were seen as they happened, named by
    // instance: the killed api-2 was taken out of rotation.
    assert!(
        report
            .events
            .iter()
            .any(|e| e.backend.as_deref() == Some("api-2")
                && matches!(
                    e.change,
                    EndpointChange::Ejected { .. } | EndpointChange::Unhealthy
                )),
        "{summary}"
    );
    for e in &report.events {
        assert!(e.backend.is_some(), "{e:?} names no instance\n{summary}");
        assert!(summary.contains(&e.describe()), "{summary}");
    }
    assert!(!summary.contains("ConsecutiveFailures"), "{summary}");

    assert!(summary.contains("resilience"), "{summary}");
    assert!(summary.contains("ejections"), "{summary}");
    assert!(summary.contains("client-visible errors: 0 of"), "{summary}");
    assert!(report.success(), "{summary}");
    assert!(summary.contains("verdict: OK"), "{summary}");
}
