//! The admin listener: readiness, liveness, metrics (checked by promtool),
//! clusters and config.

mod common;

use common::{TestProxy, cluster, listener};
use switchyard_test_support::{Backend, BackendConfig, client::get};

#[tokio::test]
async fn ready_live_clusters_and_config() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    assert_eq!(get(p.admin, "/live").await.status(), 200);
    assert_eq!(get(p.admin, "/ready").await.status(), 200);
    for _ in 0..3 {
        assert_eq!(get(p.addr, "/x").await.status(), 200);
    }
    let r = get(p.admin, "/clusters").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let ep = &v["clusters"][0]["endpoints"][0];
    assert_eq!(v["clusters"][0]["name"], "api");
    assert_eq!(ep["address"], b.addr().to_string());
    assert_eq!(ep["requests"], 3);
    assert_eq!(ep["state"], "active");
    assert_eq!(ep["in_flight"], 0);

    let r = get(p.admin, "/config").await;
    let cfg: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(cfg["listeners"][0]["name"], "public");
    assert_eq!(cfg["clusters"][0]["name"], "api");
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_requests() {
    let b = Backend::start(BackendConfig::new("b")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    for _ in 0..5 {
        get(p.addr, "/x").await;
    }
    get(p.addr, "/y").await;
    let r = get(p.admin, "/metrics").await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.body().to_vec()).unwrap();
    assert!(
        text.contains(
            "switchyard_requests_total{listener=\"public\",route=\"public/0\",class=\"2xx\"} 6"
        ),
        "{text}"
    );
    assert!(text.contains("switchyard_endpoint_requests_total{cluster=\"api\",endpoint=\""));
    assert!(text.contains("switchyard_process_resident_memory_bytes "));

    // promtool from Debian's prometheus package; the test command installs it.
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package prometheus)");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
