//! Schemathesis (PyPI), a third-party API fuzzer, against the OpenAPI
//! document and a live registry: no server error, and every answer
//! conforms to the document (status, content type, headers, body schema);
//! invalid input is rejected.
//!
//! `positive_data_acceptance` is left out: some valid-looking values are
//! refused by rules a schema cannot express (an IP that is unspecified, a
//! TTL outside 1s..24h), and the document says so in words.
//!
//! Schemathesis is installed on first use into `target/pyvenv-schemathesis`,
//! pinned by `crates/test-support/python/requirements/schemathesis.txt`;
//! a failed install fails the test.

use std::{process::Command, time::Duration};

use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_nonconformance() {
    let venv = tokio::task::spawn_blocking(|| {
        switchyard_test_support::python::named_venv(
            "pyvenv-schemathesis",
            "schemathesis.txt",
            "import schemathesis",
        )
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    // Blocking queries are capped at 2s so that no generated `wait` holds
    // the run (longer waits are refused with 400, which the document lists).
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .unwrap()
        .max_wait(Duration::from_secs(2));
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    // Schemathesis keeps a cache in its working directory; keep it out of
    // the repository.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin").join("schemathesis"))
            .current_dir(cwd)
            .args(["run", doc, "--url", &format!("http://{addr}")])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args([
                "--max-time",
                "40",
                "--request-timeout",
                "10",
                "--workers",
                "2",
            ])
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = stop.send(());
    join.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("Server error"), "{stdout}");
    assert!(
        stdout.contains("API Operations:"),
        "schemathesis printed no summary:\n{stdout}"
    );
}
