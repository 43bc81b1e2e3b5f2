//! TLS termination on HTTP listeners, with curl, `openssl s_client` and
//! grpcio as clients: HTTP/2 by ALPN and HTTP/1.1 over the same port, TLS
//! 1.3 and 1.2 only, the upstream told the scheme, a
//! client that does not speak TLS dropped and counted, and certificate
//! problems refused before start; and on TCP listeners, with a rustls
//! client. TLS origination to a cluster's endpoints, against OpenSSL's own
//! server: verified by CA and name, health-checked over TLS, failing closed
//! (never downgraded) on a bad certificate or a plaintext endpoint.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{TestProxy, cluster};
use switchyard_test_support::{
    Backend, BackendConfig, ChildGuard, client::get, eventually, tls::certificate_with, wait_for,
};

/// A certificate for `localhost` and 127.0.0.1 signed by a fresh test CA,
/// made by the openssl command; `name` prefixes the files. Returns the CA,
/// the certificate and its key.
fn certificate(dir: &Path, name: &str) -> (String, String, String) {
    certificate_for(dir, name, "serverAuth")
}

/// Like [`certificate`], for the extended key usages `usage` (e.g.
/// `clientAuth` for a client certificate).
fn certificate_for(dir: &Path, name: &str, usage: &str) -> (String, String, String) {
    certificate_with(dir, name, usage, "DNS:localhost,IP:127.0.0.1")
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
    let (ca, cert, key) = certificate(dir.path(), "server");
    let b = Backend::start(BackendConfig::new("tls-backend")).await;
    let p = TestProxy::start(&(tls_listener(&cert, &key) + &cluster("api", &[b.addr()], ""))).await;
    let port = p.addr.port();
    let ca2 = ca.clone();
    let (h2, h1) = tokio::task::spawn_blocking(move || {
        (curl(&ca2, port, "--http2"), curl(&ca2, port, "--http1.1"))
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
    let (_, cert, key) = certificate(dir.path(), "a");
    let (_, _, other_key) = certificate(dir.path(), "b");
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

#[tokio::test]
async fn a_tcp_listener_terminates_tls_and_splices_plaintext() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "tcp");
    let echo = switchyard_test_support::tcp_echo(b"").await;
    let p = TestProxy::start(&format!(
        "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"echo\"\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\n{}",
        cluster("echo", &[echo], "")
    ))
    .await;
    let (mut tls, shown) = tls_connect(p.listener("raw"), &ca)
        .await
        .expect("the handshake with the proxy's certificate");
    assert_eq!(shown, der_of(&cert));
    for msg in [&b"hello"[..], &[7u8; 100_000][..]] {
        tls.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg, "the echo server got plaintext and answered");
    }
    // A plaintext client is dropped without reaching the endpoint.
    let mut plain = tokio::net::TcpStream::connect(p.listener("raw"))
        .await
        .unwrap();
    plain.write_all(b"hello\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read(&mut buf))
        .await
        .expect("closed, not echoed")
        .unwrap_or(0);
    assert!(n == 0 || !buf[..n].starts_with(b"hello"), "{:?}", &buf[..n]);
}

/// A rustls client connection to `addr` trusting `ca`, and the certificate
/// the server showed.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &str,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
)> {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((tls, shown))
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

#[tokio::test]
async fn rotated_certificate_files_serve_new_handshakes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (ca_a, cert_a, key_a) = certificate(dir.path(), "a");
    let (ca_b, cert_b, key_b) = certificate(dir.path(), "b");
    let live_cert = dir.path().join("live.pem").display().to_string();
    let live_key = dir.path().join("live.key").display().to_string();
    std::fs::copy(&cert_a, &live_cert).unwrap();
    std::fs::copy(&key_a, &live_key).unwrap();
    let echo = switchyard_test_support::tcp_echo(b"").await;
    let p = TestProxy::start(&format!(
        "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"echo\"\ntls = {{ cert = \"{live_cert}\", key = \"{live_key}\" }}\n\n{}",
        cluster("echo", &[echo], "")
    ))
    .await;
    let addr = p.listener("raw");
    let (mut open, shown) = tls_connect(addr, &ca_a).await.unwrap();
    assert_eq!(shown, der_of(&cert_a));

    // Rotate: each file replaced by a rename, as deployment tools do.
    for (from, to) in [(&cert_b, &live_cert), (&key_b, &live_key)] {
        let tmp = format!("{to}.tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let (mut rotated, shown) = tls_connect(addr, &ca_b).await.expect("the new certificate");
    assert_eq!(shown, der_of(&cert_b));
    // The connection opened before the rotation is untouched.
    for s in [&mut open, &mut rotated] {
        s.write_all(b"still here").await.unwrap();
        let mut back = [0u8; 10];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still here");
    }

    // A broken rotation keeps the last good certificate.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let (_, shown) = tls_connect(addr, &ca_b).await.expect("still served");
    assert_eq!(shown, der_of(&cert_b));
}

/// OpenSSL's own TLS server (`openssl s_server -WWW`), an implementation
/// independent of rustls, serving the files of `dir` over HTTPS (HTTP/1.0
/// answers) on a free loopback port.
/// With `client_ca`, the server requires a client certificate that chains
/// to it.
async fn openssl_https(
    dir: &Path,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> (ChildGuard, std::net::SocketAddr) {
    let port = switchyard_test_support::free_port();
    let mut command = tokio::process::Command::new("openssl");
    command.args(["s_server", "-quiet", "-WWW", "-cert", cert, "-key", key]);
    if let Some(ca) = client_ca {
        command.args(["-Verify", "1", "-CAfile", ca]);
    }
    let child = command
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server starts");
    let guard = ChildGuard::new("openssl s_server", child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(
        Duration::from_secs(10),
        "openssl s_server to listen",
        || async move { tokio::net::TcpStream::connect(addr).await.ok().map(drop) },
    )
    .await;
    (guard, addr)
}

/// The cluster `api`'s health checks with `result` so far.
fn health_checks(p: &TestProxy, result: &str) -> u64 {
    let series = format!("switchyard_health_checks_total{{cluster=\"api\",result=\"{result}\"}} ");
    p.cluster("api")
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

fn tls_cluster(addrs: &[std::net::SocketAddr], tls: &str, extra: &str) -> String {
    common::listener("public", "api", "")
        + &cluster("api", addrs, &format!("tls = {{ {tls} }}\n{extra}"))
}

#[tokio::test]
async fn a_cluster_with_tls_verifies_its_endpoints_and_never_downgrades() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "upstream");
    let (other_ca, _, _) = certificate(dir.path(), "other");
    std::fs::write(dir.path().join("hello"), "hello over TLS").unwrap();
    std::fs::write(dir.path().join("healthz"), "ok").unwrap();
    let (_server, upstream) = openssl_https(dir.path(), &cert, &key, None).await;

    // Verified against the CA, for the name the certificate carries: the
    // request goes through and the health check (over TLS too) passes.
    let health = "health = { http = \"/healthz\", interval = \"300ms\", timeout = \"250ms\", healthy = 1, unhealthy = 1 }";
    let p = TestProxy::start(&tls_cluster(
        &[upstream],
        &format!("ca = \"{ca}\", server_name = \"localhost\""),
        health,
    ))
    .await;
    let resp = get(p.addr, "/hello").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.body(), "hello over TLS");
    eventually(Duration::from_secs(5), || async {
        health_checks(&p, "passed") > 0 && p.cluster("api").snapshot().endpoints[0].available
    })
    .await;
    assert_eq!(health_checks(&p, "failed"), 0);
    drop(p);

    // A certificate that does not chain to the CA, or does not carry the
    // name, fails closed: 502 naming the TLS failure, counted.
    for tls in [
        format!("ca = \"{other_ca}\", server_name = \"localhost\""),
        format!("ca = \"{ca}\", server_name = \"api.internal\""),
    ] {
        let p = TestProxy::start(&tls_cluster(&[upstream], &tls, "")).await;
        let resp = get(p.addr, "/hello").await;
        assert_eq!(resp.status(), 502, "{tls}: {resp:?}");
        assert_eq!(
            resp.headers()["x-switchyard-error"],
            "upstream_tls",
            "{tls}"
        );
        let metrics = p.cluster("api").metrics().render();
        assert!(
            metrics.contains("kind=\"upstream_tls\"} 1"),
            "{tls}: {}",
            metrics
                .lines()
                .filter(|l| l.contains("upstream_tls"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // A plaintext endpoint behind a TLS cluster is a failed handshake,
    // never a plaintext request; its health check fails the same way.
    let plain = Backend::start(BackendConfig::new("plaintext")).await;
    let p = TestProxy::start(&tls_cluster(
        &[plain.addr()],
        &format!("ca = \"{ca}\", server_name = \"localhost\""),
        health,
    ))
    .await;
    let resp = get(p.addr, "/hello").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-switchyard-error"], "upstream_tls");
    eventually(Duration::from_secs(5), || async {
        health_checks(&p, "failed") > 0 && !p.cluster("api").snapshot().endpoints[0].available
    })
    .await;
    assert_eq!(
        plain.requests(),
        0,
        "a request reached the plaintext endpoint"
    );
}

#[test]
fn unusable_cluster_tls_settings_are_refused_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "a");
    let missing = dir.path().join("missing.pem").display().to_string();
    let cases = [
        (
            format!("ca = \"{missing}\""),
            "cannot read the certificate file",
        ),
        (format!("ca = \"{key}\""), "holds no PEM certificate"),
        (
            format!("ca = \"{ca}\", server_name = \"not a name\""),
            "neither a DNS name nor an IP address",
        ),
        (
            format!("ca = \"{ca}\", cert = \"{cert}\", key = \"{cert}\""),
            "cannot read a private key",
        ),
        (
            format!("ca = \"{ca}\", cert = \"{cert}\", key = \"{key}\""),
            "",
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    for (tls, expected) in cases {
        let text = tls_cluster(&["127.0.0.1:9".parse().unwrap()], &tls, "");
        let config = switchyard_config::parse(&text, "tls.toml").expect("valid syntax");
        let errors: Vec<String> = switchyard_proxy::preflight(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        if expected.is_empty() {
            assert!(errors.is_empty(), "{tls}: {errors:?}");
            continue;
        }
        assert_eq!(errors.len(), 1, "{tls}: {errors:?}");
        assert!(
            errors[0].starts_with("cluster api: ") && errors[0].contains(expected),
            "{tls}: {}",
            errors[0]
        );
    }
}

#[tokio::test]
async fn a_cluster_presents_its_client_certificate_to_an_upstream_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "upstream");
    let (client_ca, client_cert, client_key) = certificate_for(dir.path(), "client", "clientAuth");
    std::fs::write(dir.path().join("hello"), "hello, verified client").unwrap();
    let (_server, upstream) = openssl_https(dir.path(), &cert, &key, Some(&client_ca)).await;
    let server = format!("ca = \"{ca}\", server_name = \"localhost\"");

    // Without a client certificate the upstream refuses the handshake.
    let p = TestProxy::start(&tls_cluster(&[upstream], &server, "")).await;
    let resp = get(p.addr, "/hello").await;
    assert_eq!(resp.status(), 502, "{resp:?}");
    assert_eq!(resp.headers()["x-switchyard-error"], "upstream_tls");
    drop(p);

    let with_cert = format!("{server}, cert = \"{client_cert}\", key = \"{client_key}\"");
    let p = TestProxy::start(&tls_cluster(&[upstream], &with_cert, "")).await;
    let resp = get(p.addr, "/hello").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.body(), "hello, verified client");
}

#[tokio::test]
async fn grpc_reaches_a_grpcio_server_over_tls_with_alpn_h2() {
    use switchyard_test_support::{PyGrpcServer, run_py_grpc_client};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "grpc");
    // grpcio's own TLS stack, which insists on ALPN h2.
    let server = PyGrpcServer::start_tls("py-tls", &cert, &key).await;
    let toml = common::listener("public", "api", "")
        + &cluster(
            "api",
            &[server.addr()],
            &format!(
                "protocol = \"http2\"\ntls = {{ ca = \"{ca}\", server_name = \"localhost\" }}"
            ),
        );
    let p = TestProxy::start(&toml).await;
    // The Python conformance client, plaintext h2c to the proxy: unary and
    // every streaming kind, and failing calls, end to end over TLS.
    let summary = run_py_grpc_client(p.addr).await.unwrap_or_else(|err| {
        panic!(
            "python client through the proxy: {err}\n{}",
            server.stderr()
        )
    });
    assert_eq!(summary["ok"], serde_json::json!(true), "{summary:#}");
    assert_eq!(
        summary["servers"],
        serde_json::json!(["py-tls"]),
        "{summary:#}"
    );
}

/// `openssl s_client` against `port` with `args`; (succeeded, what it
/// printed). Async, so the proxy keeps serving on the test's runtime.
async fn s_client(ca: &str, port: u16, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-verify_return_error",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl (scripts/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[tokio::test]
async fn openssl_s_client_gets_tls_1_3_and_1_2_with_alpn_and_nothing_older() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "server");
    let b = Backend::start(BackendConfig::new("b")).await;
    let p = TestProxy::start(&(tls_listener(&cert, &key) + &cluster("api", &[b.addr()], ""))).await;
    let port = p.addr.port();
    for (version, alpn) in [("-tls1_3", "h2"), ("-tls1_2", "http/1.1")] {
        let (ok, text) = s_client(&ca, port, &[version, "-alpn", alpn]).await;
        let expected = if version == "-tls1_3" {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert!(ok, "{version}: {text}");
        assert!(
            text.contains(&format!("New, {expected}, Cipher is")),
            "{text}"
        );
        assert!(text.contains(&format!("ALPN protocol: {alpn}")), "{text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    }
    // TLS 1.1 (offered at security level 0, which OpenSSL 3 needs for it)
    // is refused by the server.
    let (ok, text) = s_client(&ca, port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    assert!(!ok, "TLS 1.1 was accepted: {text}");
    assert!(!text.contains("New, TLSv1.1"), "{text}");
}

#[tokio::test]
async fn grpcio_calls_through_a_tls_listener_with_channel_credentials() {
    use switchyard_test_support::{PyGrpcServer, run_py_grpc_client_with};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "front");
    let server = PyGrpcServer::start().await;
    let toml =
        tls_listener(&cert, &key) + &cluster("api", &[server.addr()], "protocol = \"http2\"");
    let p = TestProxy::start(&toml).await;
    // grpcio's TLS channel (ssl_channel_credentials with the test CA),
    // which negotiates h2 by ALPN: unary and every streaming kind, and
    // failing calls, through the TLS listener to a plaintext upstream.
    let target = format!("127.0.0.1:{}", p.addr.port());
    let summary = run_py_grpc_client_with(&target, &["--ca", &ca, "--server-name", "localhost"])
        .await
        .unwrap_or_else(|err| panic!("python TLS client through the proxy: {err}"));
    assert_eq!(summary["ok"], serde_json::json!(true), "{summary:#}");
    assert_eq!(
        summary["servers"],
        serde_json::json!([server.name()]),
        "{summary:#}"
    );
}

#[tokio::test]
async fn sni_chooses_among_a_listeners_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_default, default_cert, default_key) = certificate(dir.path(), "default");
    let (ca_a, a_cert, a_key) = certificate_with(dir.path(), "a", "serverAuth", "DNS:a.test");
    let (ca_b, b_cert, b_key) = certificate_with(dir.path(), "b", "serverAuth", "DNS:*.b.test");
    // One bundle trusting all three CAs: curl then verifies that the
    // certificate it got carries the name it asked for.
    let bundle = dir.path().join("bundle.pem").display().to_string();
    let mut pem = String::new();
    for ca in [&ca_default, &ca_a, &ca_b] {
        pem.push_str(&std::fs::read_to_string(ca).unwrap());
    }
    std::fs::write(&bundle, pem).unwrap();
    let b = Backend::start(BackendConfig::new("sni-backend")).await;
    let listener = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [\n  {{ cert = \"{default_cert}\", key = \"{default_key}\" }},\n  \
         {{ server_names = [\"A.test\"], cert = \"{a_cert}\", key = \"{a_key}\" }},\n  \
         {{ server_names = [\"*.b.test\"], cert = \"{b_cert}\", key = \"{b_key}\" }},\n] }}\n\n  \
         [[listeners.routes]]\n  cluster = \"api\"\n\n"
    );
    let p = TestProxy::start(&(listener + &cluster("api", &[b.addr()], ""))).await;
    let port = p.addr.port();
    let fetch = move |host: &'static str| {
        let bundle = bundle.clone();
        move || {
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "--cacert", &bundle])
                .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
                .arg(format!("https://{host}:{port}/hello"))
                .output()
                .expect("curl")
        }
    };
    for host in ["a.test", "api.b.test", "localhost"] {
        let out = tokio::task::spawn_blocking(fetch(host)).await.unwrap();
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "sni-backend",
            "{host}"
        );
    }
    // A name no certificate carries gets the first one, which curl then
    // refuses for that name: the wildcard covers one label only.
    let out = tokio::task::spawn_blocking(fetch("deep.api.b.test"))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "a certificate for deep.api.b.test was served"
    );
}

#[test]
fn certificates_near_their_end_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "month");
    // A self-signed certificate valid for five days.
    let (short, short_key) = (
        dir.path().join("short.pem").display().to_string(),
        dir.path().join("short.key").display().to_string(),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "5", "-subj", "/CN=short"])
        .args(["-keyout", &short_key, "-out", &short])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "{}{}",
        tls_listener(&short, &short_key),
        cluster(
            "api",
            &["127.0.0.1:9".parse().unwrap()],
            &format!("tls = {{ ca = \"{ca}\", cert = \"{cert}\", key = \"{key}\" }}")
        )
    );
    let config = switchyard_config::parse(&text, "exp.toml").unwrap();
    let warnings = switchyard_proxy::certificate_warnings(&config);
    // Five days, or four and some hours once a second has passed.
    let days = |n: u32| {
        format!(
            "listener public: certificate {short} expires in {n} day(s), on {}",
            not_after(&short)
        )
    };
    assert_eq!(
        warnings.len(),
        1,
        "the 30-day certificates are not warned about: {warnings:?}"
    );
    assert!(
        warnings[0] == days(5) || warnings[0] == days(4),
        "{warnings:?}"
    );
    // Past its end, the warning says so.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 40 * 24 * 3600;
    let expired = switchyard_stack::server::tls::expiring(
        Path::new(&cert),
        switchyard_stack::server::tls::EXPIRY_WARNING,
        later,
    )
    .expect("expired 10 days before `later`");
    assert_eq!(expired.days_left, -10);
    assert!(expired.to_string().contains("expired on"), "{expired}");
}

/// `notAfter` of a PEM certificate in the form the warning prints it.
fn not_after(pem: &str) -> String {
    switchyard_stack::server::tls::expiring(Path::new(pem), Duration::MAX, 0)
        .expect("a certificate")
        .not_after
}

// curl runs blocking on one worker while the other serves the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_client_and_routes_admit_listed_identities() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "server");
    let web_id = "spiffe://example.org/ns/prod/sa/web";
    let (web_ca, web_cert, web_key) =
        certificate_with(dir.path(), "web", "clientAuth", &format!("URI:{web_id}"));
    let (batch_ca, batch_cert, batch_key) =
        certificate_with(dir.path(), "batch", "clientAuth", "DNS:batch.internal");
    let client_ca = dir.path().join("clients.pem").display().to_string();
    std::fs::write(
        &client_ca,
        std::fs::read_to_string(&web_ca).unwrap() + &std::fs::read_to_string(&batch_ca).unwrap(),
    )
    .unwrap();
    let b = Backend::start(BackendConfig::new("mtls-backend")).await;
    let toml = format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\", client_ca = \"{client_ca}\", identity_header = \"x-client-identity\" }}\n\n  \
         [[listeners.routes]]\n  match = {{ path_prefix = \"/admin\" }}\n  cluster = \"api\"\n  identities = [\"{web_id}\"]\n\n  \
         [[listeners.routes]]\n  cluster = \"api\"\n\n{}",
        cluster("api", &[b.addr()], "")
    );
    let p = TestProxy::start(&toml).await;
    let port = p.addr.port();
    let curl = move |client: Option<(&str, &str)>, path: &str, extra: &[&str]| {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--cacert", &ca])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code}"])
            .args(extra);
        if let Some((cert, key)) = client {
            command.args(["--cert", cert, "--key", key]);
        }
        let out = command
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.rsplit('\n').next().unwrap_or_default().to_owned();
        (out.status.success(), code)
    };
    let identity_seen = || {
        b.last_request()
            .and_then(|r| r.header("x-client-identity").map(str::to_owned))
    };
    let web = Some((web_cert.as_str(), web_key.as_str()));
    let batch = Some((batch_cert.as_str(), batch_key.as_str()));

    // The listed identity may use the restricted route; its SPIFFE ID goes
    // upstream in the named header.
    assert_eq!(curl(web, "/admin/users", &[]), (true, "200".into()));
    assert_eq!(identity_seen().as_deref(), Some(web_id));
    // Another verified client is refused there, and served elsewhere under
    // its DNS name, whatever header it sends itself.
    let before = b.requests();
    assert_eq!(curl(batch, "/admin/users", &[]), (true, "403".into()));
    assert_eq!(
        b.requests(),
        before,
        "a refused request reached the upstream"
    );
    let spoof = format!("x-client-identity: {web_id}");
    assert_eq!(
        curl(batch, "/reports", &["-H", &spoof]),
        (true, "200".into())
    );
    assert_eq!(identity_seen().as_deref(), Some("batch.internal"));
    // Without a client certificate there is no TLS session at all.
    let (ok, _) = curl(None, "/reports", &[]);
    assert!(!ok, "a client without a certificate was served");
    let metrics = p.cluster("api").metrics().render();
    assert!(
        metrics.contains("switchyard_proxy_errors_total{listener=\"public\",kind=\"forbidden\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("forbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
