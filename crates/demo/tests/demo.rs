//! The demo end to end: real backends, the real proxy and real clients on
//! loopback, for a short run of steady load (the chaos script is tested in
//! `chaos.rs`).

use std::time::Duration;

use switchyard_demo::{DemoOptions, Protocol, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_steady_demo_serves_everything_without_errors() {
    let opts = DemoOptions {
        duration: Duration::from_secs(2),
        rate: 200,
        live: false,
        chaos: false,
        ..DemoOptions::default()
    };
    let report = run(opts).await.expect("the demo runs");
    let summary = report.render();

    assert_eq!(report.errors, 0, "{summary}");
    // 200 req/s for 2s is 400 requests; the bounds only catch a generator
    // that is badly off, not scheduling noise on a loaded CI machine.
    assert!(
        (200..=440).contains(&report.requests),
        "requests {} not close to 400\n{summary}",
        report.requests
    );
    assert_eq!(report.shed, 0, "{summary}");
    assert_eq!(report.backends.len(), 5, "{summary}");
    assert_eq!(
        report
            .backends
            .iter()
            .filter(|b| b.protocol == Protocol::Grpc)
            .count(),
        2
    );
    for backend in &report.backends {
        assert!(
            backend.served > 0,
            "{} served nothing\n{summary}",
            backend.name
        );
        assert!(summary.contains(&backend.name), "{summary}");
        assert!(summary.contains(&backend.address.to_string()), "{summary}");
    }
    // Every completed request was answered by a backend (more answers than
    // requests would only mean a retry after a very slow first attempt).
    let served: u64 = report.backends.iter().map(|b| b.served).sum();
    assert!(served >= report.requests, "{summary}");
    for (kind, counts) in &report.by_kind {
        assert!(
            counts.requests > 0,
            "no {} requests\n{summary}",
            kind.label()
        );
    }
    assert!(!report.seconds.is_empty(), "{summary}");
    assert!(report.drained, "{summary}");
    assert!(report.success(), "{summary}");
    assert!(summary.contains("verdict: OK"), "{summary}");
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let opts = DemoOptions {
        rate: 0,
        live: false,
        ..DemoOptions::default()
    };
    let err = run(opts).await.expect_err("rate 0 is refused");
    assert!(err.to_string().contains("rate"), "{err}");

    // The chaos script needs time for faults to be noticed and recovered.
    let opts = DemoOptions {
        duration: Duration::from_secs(2),
        live: false,
        ..DemoOptions::default()
    };
    let err = run(opts).await.expect_err("too short for chaos");
    assert!(err.to_string().contains("at least"), "{err}");
}

/// Callers may spawn the demo on a multi-threaded runtime.
#[test]
fn run_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let future = run(DemoOptions::default());
    assert_send(&future);
}
