//! TLS termination on an HTTP listener, with curl as the client: HTTP/2 by
//! ALPN and HTTP/1.1 over the same port, the upstream told the scheme, a
//! client that does not speak TLS dropped and counted, and certificate
//! problems refused before start.

mod common;

use std::{path::Path, process::Command};

use common::{TestProxy, cluster};
use switchyard_test_support::{Backend, BackendConfig, client::get};

/// A self-signed certificate for `localhost` and 127.0.0.1, made by the
/// openssl command; `name` prefixes the files.
fn certificate(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

fn tls_listener(cert: &str, key: &str) -> String {
    format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n"
    )
}

/// curl over TLS, trusting `ca`; returns (status, HTTP version, body).
fn curl(ca: &str, port: u16, version_flag: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", version_flag, "--cacert", ca])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, version) = tail.split_once(' ').unwrap();
    (code.to_owned(), version.to_owned(), body.to_owned())
}

#[tokio::test]
async fn curl_speaks_http2_and_http11_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let b = Backend::start(BackendConfig::new("tls-backend")).await;
    let p = TestProxy::start(&(tls_listener(&cert, &key) + &cluster("api", &[b.addr()], ""))).await;
    let port = p.addr.port();
    let ca = cert.clone();
    let (h2, h1) = tokio::task::spawn_blocking(move || {
        (curl(&ca, port, "--http2"), curl(&ca, port, "--http1.1"))
    })
    .await
    .unwrap();
    assert_eq!(
        h2,
        ("200".into(), "2".into(), "tls-backend".into()),
        "HTTP/2 by ALPN"
    );
    assert_eq!(h1, ("200".into(), "1.1".into(), "tls-backend".into()));
    let seen = b.last_request().expect("the backend saw the requests");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // A plaintext client on the TLS port fails its handshake; the proxy
    // counts it and goes on serving.
    let plain = get(p.addr, "/hello");
    let plain = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::spawn(plain).await
    })
    .await
    .expect("the proxy drops a client that does not speak TLS");
    assert!(plain.is_err(), "no HTTP answer in plaintext");
    let metrics = String::from_utf8(get(p.admin, "/metrics").await.body().to_vec()).unwrap();
    assert!(
        metrics.contains(
            "switchyard_proxy_errors_total{listener=\"public\",kind=\"tls_handshake\"} 1"
        ),
        "{metrics}"
    );
    let ca = cert.clone();
    let again = tokio::task::spawn_blocking(move || curl(&ca, port, "--http2"))
        .await
        .unwrap();
    assert_eq!(again.0, "200");
}

#[test]
fn unusable_certificates_are_refused_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "a");
    let (_, other_key) = certificate(dir.path(), "b");
    let missing = dir.path().join("missing.pem").display().to_string();
    let cases = [
        (
            missing.clone(),
            key.clone(),
            "cannot read the certificate file",
        ),
        (key.clone(), key.clone(), "holds no PEM certificate"),
        (cert.clone(), cert.clone(), "cannot read a private key"),
        (cert.clone(), other_key, "cannot be used"),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    for (c, k, expected) in cases {
        let text = format!(
            "{}[[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"127.0.0.1:9\"] }}\n",
            tls_listener(&c, &k)
        );
        let config = switchyard_config::parse(&text, "tls.toml").expect("valid syntax");
        let errors: Vec<String> = switchyard_proxy::preflight(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 1, "{c} / {k}: {errors:?}");
        assert!(
            errors[0].starts_with("listener public: ") && errors[0].contains(expected),
            "{c} / {k}: {}",
            errors[0]
        );
    }
}
