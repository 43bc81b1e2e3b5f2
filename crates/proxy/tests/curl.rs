//! curl, a client nobody here wrote, through the proxy: h2c with prior
//! knowledge, HTTP/1.1, and a large upload echoed back.
//!
//! curl is required: a missing binary fails the tests, it never skips them.

mod common;

use std::{path::PathBuf, process::Output, time::Duration};

use common::{TestProxy, cluster, listener};
use switchyard_test_support::{Backend, BackendConfig};

const CURL: &str = "curl";

/// Runs curl with `args` (plus `-sS`, a timeout and no proxy from the
/// environment) and returns its output; panics when curl cannot run or fails.
async fn curl(args: &[&str]) -> Output {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(CURL)
            .args(["-sS", "--max-time", "30", "--noproxy", "*"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl did not finish within 60s")
    .unwrap_or_else(|err| panic!("cannot run `{CURL}` (is curl installed?): {err}"));
    assert!(
        output.status.success(),
        "curl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Splits `curl -i` output into the status line, the header lines
/// (lowercased) and the body.
fn split_response(stdout: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    let end = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head ending in CRLF CRLF");
    let head = String::from_utf8(stdout[..end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines.map(str::to_ascii_lowercase).collect();
    (status, headers, stdout[end + 4..].to_vec())
}

async fn proxy_to(backend: &Backend) -> TestProxy {
    TestProxy::start(&(listener("public", "web", "") + &cluster("web", &[backend.addr()], "")))
        .await
}

#[tokio::test]
async fn curl_h2c_prior_knowledge_gets_http2_200() {
    let b = Backend::start(BackendConfig::new("curl-backend")).await;
    let p = proxy_to(&b).await;
    let url = format!("http://{}/hello?x=1", p.addr);
    let out = curl(&["--http2-prior-knowledge", "-i", &url]).await;
    let (status, headers, body) = split_response(&out.stdout);
    assert_eq!(status.trim_end(), "HTTP/2 200", "{headers:?}");
    assert!(
        headers.iter().any(|h| h == "x-backend: curl-backend"),
        "{headers:?}"
    );
    assert_eq!(body, b"curl-backend");
    let seen = b.last_request().expect("the backend saw the request");
    assert_eq!(seen.method, http::Method::GET);
    assert_eq!(seen.uri.to_string(), "/hello?x=1");
}

#[tokio::test]
async fn curl_http1_gets_http11_200() {
    let b = Backend::start(BackendConfig::new("curl-backend")).await;
    let p = proxy_to(&b).await;
    let url = format!("http://{}/hello", p.addr);
    let out = curl(&["--http1.1", "-i", &url]).await;
    let (status, headers, body) = split_response(&out.stdout);
    assert_eq!(status.trim_end(), "HTTP/1.1 200 OK", "{headers:?}");
    assert!(
        headers.iter().any(|h| h == "x-backend: curl-backend"),
        "{headers:?}"
    );
    assert_eq!(body, b"curl-backend");
    assert_eq!(b.requests(), 1);
}

/// A file in this test binary's scratch directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        TempFile(dir.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn curl_h2c_uploads_two_mib_and_gets_it_back() {
    let b = Backend::start(BackendConfig::new("curl-backend")).await;
    let p = proxy_to(&b).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rng.u8(..)).collect();
    let upload = TempFile::new("curl-upload");
    let download = TempFile::new("curl-download");
    std::fs::write(&upload.0, &data).expect("write the upload file");

    let url = format!("http://{}/echo", p.addr);
    let data_arg = format!("@{}", upload.0.display());
    let out_arg = download.0.display().to_string();
    let out = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &data_arg,
        "-H",
        "content-type: application/octet-stream",
        "-o",
        &out_arg,
        "-w",
        "%{http_version} %{http_code} %{size_upload} %{size_download}",
        &url,
    ])
    .await;
    let summary = String::from_utf8_lossy(&out.stdout);
    let len = data.len();
    assert_eq!(summary, format!("2 200 {len} {len}"));
    let echoed = std::fs::read(&download.0).expect("read the downloaded file");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ from the upload");
}
