//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! driven by playwright-core from npm loads the page from a proxy under
//! load, finds every endpoint and its state, sees one turn unhealthy when
//! its backend fails its health checks, and saves a screenshot to
//! `target/artifacts/dashboard.png`.
//!
//! scripts/test installs chromium, node and npm when missing; this test
//! installs playwright-core into `target/playwright` (never a browser
//! download: the Debian Chromium is used) and fails loudly without them.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{TestProxy, cluster};
use switchyard_test_support::{Backend, BackendConfig, ChildGuard, Mode, client::get};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CHROMIUM: &str = "/usr/bin/chromium";
const HEALTH: &str = "health = { http = \"/healthz\", interval = \"200ms\", timeout = \"150ms\", healthy = 1, unhealthy = 2 }";

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Runs a command to completion, panicking with its output on failure.
async fn run(cmd: &mut tokio::process::Command, what: &str) {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); scripts/test installs it"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// playwright-core in `target/playwright`, installed from npm once.
async fn playwright_dir() -> PathBuf {
    let dir = workspace_target().join("playwright");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        std::fs::create_dir_all(&dir).expect("create target/playwright");
        run(
            tokio::process::Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&dir)
                .arg("playwright-core@1")
                // playwright-core downloads nothing itself; be explicit.
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
            "npm install playwright-core@1 (node and npm: Debian packages nodejs, npm)",
        )
        .await;
    }
    dir
}

/// Keeps requests flowing through both routes until dropped.
struct Load(Arc<AtomicBool>);

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        for worker in 0..3 {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = if (i + worker) % 3 == 0 {
                        "/static/x"
                    } else {
                        "/api/orders"
                    };
                    let _ = switchyard_test_support::client::send_http1(
                        addr,
                        switchyard_test_support::client::request(
                            http::Method::GET,
                            path,
                            bytes::Bytes::new(),
                        ),
                    )
                    .await;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            });
        }
        Load(stop)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_endpoints_and_their_state_changes_live() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing (Debian package chromium; scripts/test installs it)"
    );
    let pw = playwright_dir().await;

    let api1 = Backend::start(BackendConfig::new("api-1")).await;
    let api2 = Backend::start(BackendConfig::new("api-2").mode(Mode::FailRatio(0.04))).await;
    let victim = Backend::start(BackendConfig::new("api-3")).await;
    let web =
        Backend::start(BackendConfig::new("web-1").mode(Mode::Delay(Duration::from_millis(6))))
            .await;
    let toml = format!(
        r#"[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  name = "api"
  match = {{ path_prefix = "/api" }}
  cluster = "api"
  retry = {{ attempts = 2, on = ["5xx"] }}

  [[listeners.routes]]
  name = "static"
  cluster = "web"

[[listeners]]
name = "cache"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "web"

{}{}"#,
        cluster(
            "api",
            &[api1.addr(), api2.addr(), victim.addr()],
            &format!("balance = \"round-robin\"\n{HEALTH}")
        ),
        cluster("web", &[web.addr()], HEALTH),
    );
    let p = TestProxy::start(&toml).await;
    assert_eq!(get(p.addr, "/static/warm").await.status(), 200);
    let _load = Load::start(p.listener("public"));

    let artifacts = workspace_target().join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let endpoints: Vec<String> = [api1.addr(), api2.addr(), victim.addr(), web.addr()]
        .iter()
        .map(ToString::to_string)
        .collect();
    let scenario = serde_json::json!({
        "endpoints": endpoints,
        "victim": victim.addr().to_string(),
        "route": "api",
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.cjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&pw)
        .arg(format!("http://{}/dashboard", p.admin))
        .arg(&shot)
        .arg(scenario.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("`node` must be installed (Debian package nodejs; scripts/test installs it)");
    let mut node = ChildGuard::new("node dashboard.cjs", child);
    let child = node.tokio_child().expect("tokio child");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();

    let mut transcript = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("read node output") {
            transcript.push(line.clone());
            if line == "READY" {
                victim.set_healthy(false);
                stdin.write_all(b"GO\n").await.expect("write to node");
                stdin.flush().await.expect("flush");
            } else if line == "OK" || line.starts_with("FAIL") {
                return line;
            }
        }
        "node exited without a verdict".to_owned()
    })
    .await
    .unwrap_or_else(|_| "timed out after 120s".to_owned());
    assert_eq!(
        outcome,
        "OK",
        "browser check failed; node said:\n{}",
        transcript.join("\n")
    );
    let status = child.wait().await.expect("node exits");
    assert!(status.success(), "node exited with {status}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a real screenshot",
        shot.display()
    );
}
