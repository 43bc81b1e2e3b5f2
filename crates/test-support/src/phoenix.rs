//! Arize Phoenix (from PyPI, pinned in `python/requirements/phoenix.txt`)
//! as a real OTLP backend: it receives spans over OTLP/HTTP and OTLP/gRPC
//! and answers what it stored.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use crate::{ChildGuard, client::get, free_port, python::named_venv, wait_for};

/// Starts Phoenix in its own working directory on free loopback ports and
/// waits until it answers; returns its guard, HTTP address (OTLP/HTTP at
/// `/v1/traces`, the span API), OTLP/gRPC address and the directory.
pub async fn start_phoenix() -> (ChildGuard, SocketAddr, SocketAddr, tempfile::TempDir) {
    let venv = tokio::task::spawn_blocking(|| {
        named_venv("pyvenv-phoenix", "phoenix.txt", "import phoenix")
    })
    .await
    .expect("venv provisioning");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let grpc_port = free_port();
    let child = tokio::process::Command::new(venv.join("bin").join("phoenix"))
        .arg("serve")
        .env("PHOENIX_WORKING_DIR", dir.path())
        .env("PHOENIX_HOST", "127.0.0.1")
        .env("PHOENIX_PORT", port.to_string())
        .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
        .env("PHOENIX_TELEMETRY_ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("phoenix starts");
    let guard = ChildGuard::new("phoenix", child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(
        Duration::from_secs(90),
        "phoenix to answer HTTP",
        || async move {
            crate::client::send_http1(
                addr,
                crate::client::request(http::Method::GET, "/healthz", bytes::Bytes::new()),
            )
            .await
            .ok()
            .filter(|r| r.status().is_success())
        },
    )
    .await;
    (guard, addr, ([127, 0, 0, 1], grpc_port).into(), dir)
}

/// A span as Phoenix stored it.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub span_id: String,
    pub parent_id: Option<String>,
}

/// The spans Phoenix holds for `trace_id` (hex).
pub async fn spans_of(phoenix: SocketAddr, trace_id: &str) -> Vec<Span> {
    let r = get(phoenix, "/v1/projects/default/spans?limit=1000").await;
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap_or_default();
    v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["context"]["trace_id"].as_str() == Some(trace_id))
        .map(|s| Span {
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            span_id: s["context"]["span_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            parent_id: s["parent_id"].as_str().map(str::to_owned),
        })
        .collect()
}
