//! A real Prometheus (Debian's `prometheus` package; scripts/test installs
//! it) scrapes the proxy's `/metrics` every second and answers PromQL with
//! the number of requests that went through — the exposition is not only
//! well-formed (promtool, in admin.rs) but means what it says.

mod common;

use std::time::Duration;

use common::{TestProxy, cluster, listener};
use serde_json::Value;
use switchyard_test_support::{
    Backend, BackendConfig, ChildGuard, client::get, free_port, wait_for,
};

/// Requests sent; an odd number so that no default or doubled value passes.
const N: usize = 37;

#[tokio::test]
async fn prometheus_scrapes_and_counts_every_request() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: switchyard\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: ['{}']\n",
            p.admin
        ),
    )
    .expect("write prometheus.yml");
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "`prometheus` must be installed (Debian package prometheus; scripts/test installs it)",
        );
    let _prometheus = ChildGuard::new("prometheus", child);

    for _ in 0..N {
        assert_eq!(get(p.addr, "/x").await.status(), 200);
    }

    let query = |promql: &'static str| async move {
        wait_for(
            Duration::from_secs(60),
            &format!("Prometheus to answer {promql} with {N}"),
            || async move {
                let path = format!("/api/v1/query?query={}", encode(promql));
                let r = switchyard_test_support::client::send_http1(
                    web,
                    switchyard_test_support::client::request(
                        http::Method::GET,
                        &path,
                        bytes::Bytes::new(),
                    ),
                )
                .await
                .ok()?;
                let v: Value = serde_json::from_slice(r.body()).ok()?;
                let value = v["data"]["result"][0]["value"][1].as_str()?.to_owned();
                (value == N.to_string()).then_some(value)
            },
        )
        .await
    };
    query("sum(switchyard_requests_total{route=\"public/0\"})").await;
    query("sum(switchyard_request_duration_seconds_count{route=\"public/0\"})").await;
    query("sum(switchyard_endpoint_requests_total{cluster=\"api\"})").await;
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
