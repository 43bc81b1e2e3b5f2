//! `switchyard registry` as a process: durability across `kill -9`, the
//! token rule, and exit codes.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use http::Method;
use switchyard_test_support::{ChildGuard, client, eventually::wait_for, free_addr};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn start(addr: SocketAddr, dir: &Path, extra: &[&str]) -> ChildGuard {
    let child = Command::new(BIN)
        .args(["registry", "--listen", &addr.to_string()])
        .arg(format!("--store=embedded:{}", dir.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("switchyard runs");
    ChildGuard::from_std("switchyard registry", child)
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    let mut req = client::request(method, path, body.to_owned());
    if !body.is_empty() {
        req.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let resp = client::send_http1(addr, req).await.ok()?;
    let json = serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null);
    Some((resp.status().as_u16(), json))
}

async fn ready(addr: SocketAddr) {
    wait_for(
        Duration::from_secs(20),
        "the registry to answer",
        || async move {
            send(addr, Method::GET, "/v1/services", "", None)
                .await
                .filter(|(s, _)| *s == 200)
        },
    )
    .await;
}

async fn ids(addr: SocketAddr) -> Vec<String> {
    let (_, json) = send(addr, Method::GET, "/v1/services/api", "", None)
        .await
        .expect("registry answers");
    let mut v: Vec<String> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn embedded_store_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut reg = start(addr, dir.path(), &[]);
    ready(addr).await;
    for (id, body) in [
        ("perm", r#"{"address":"127.0.0.1:9001","weight":5}"#),
        ("ttl", r#"{"address":"127.0.0.1:9002","ttl":"1m"}"#),
        ("gone", r#"{"address":"127.0.0.1:9003"}"#),
    ] {
        let (status, _) = send(
            addr,
            Method::PUT,
            &format!("/v1/services/api/instances/{id}"),
            body,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    assert_eq!(
        send(
            addr,
            Method::PUT,
            "/v1/services/api/instances/perm/drain",
            "",
            None
        )
        .await
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        send(
            addr,
            Method::DELETE,
            "/v1/services/api/instances/gone",
            "",
            None
        )
        .await
        .unwrap()
        .0,
        204
    );
    let (_, before) = send(addr, Method::GET, "/v1/services/api", "", None)
        .await
        .unwrap();

    // SIGKILL: no shutdown path runs. Every acknowledged write must be there.
    reg.kill();
    let _reg = start(addr, dir.path(), &[]);
    ready(addr).await;
    let (_, after) = send(addr, Method::GET, "/v1/services/api", "", None)
        .await
        .unwrap();
    assert_eq!(after["instances"], before["instances"]);
    assert_eq!(
        after["index"], before["index"],
        "the index survives too, so watches resume"
    );
    assert_eq!(ids(addr).await, ["perm", "ttl"]);
    assert_eq!(after["instances"][0]["draining"], true);
    assert_eq!(after["instances"][0]["weight"], 5);
    // The TTL registration is alive again and can heartbeat.
    assert_eq!(
        send(
            addr,
            Method::PUT,
            "/v1/services/api/instances/ttl/heartbeat",
            "",
            None
        )
        .await
        .unwrap()
        .0,
        200
    );
}

#[tokio::test]
async fn writes_need_the_token_from_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "hunter2\n").unwrap();
    let addr = free_addr();
    let _reg = start(
        addr,
        &dir.path().join("data"),
        &["--token-file", token.to_str().unwrap()],
    );
    ready(addr).await;
    let body = r#"{"address":"127.0.0.1:9001"}"#;
    let (status, json) = send(
        addr,
        Method::PUT,
        "/v1/services/api/instances/a",
        body,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = send(
        addr,
        Method::PUT,
        "/v1/services/api/instances/a",
        body,
        Some("hunter2"),
    )
    .await
    .unwrap();
    assert_eq!(
        status, 201,
        "the trailing newline of the file is not part of the token"
    );
}

#[test]
fn refuses_to_start_unsafely_or_with_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("--store=embedded:{}", dir.path().display());
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("registry")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Beyond loopback without a token: exit 1, saying what to do.
    let (code, err) = run(&["--listen", "0.0.0.0:0", &store]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--token-file"), "{err}");
    // An empty token file.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        &store,
        "--token-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("empty"), "{err}");
    // Usage errors exit 2.
    let (code, err) = run(&["--store", "disk:/tmp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("embedded:DIR"), "{err}");
    let (code, _) = run(&["--listen", "nowhere"]);
    assert_eq!(code, 2);
    let out = Command::new(BIN)
        .args(["registry", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--store"));
}
