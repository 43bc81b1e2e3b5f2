//! TLS termination on HTTP listeners, with curl as the client: HTTP/2 by
//! ALPN and HTTP/1.1 over the same port, the upstream told the scheme, a
//! client that does not speak TLS dropped and counted, and certificate
//! problems refused before start; and on TCP listeners, with a rustls
//! client.

mod common;

use std::{path::Path, process::Command};

use common::{TestProxy, cluster};
use switchyard_test_support::{Backend, BackendConfig, client::get};

/// A certificate for `localhost` and 127.0.0.1 signed by a fresh test CA,
/// made by the openssl command; `name` prefixes the files. Returns the CA,
/// the certificate and its key.
fn certificate(dir: &Path, name: &str) -> (String, String, String) {
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    let (ca, ca_key, cert, key, csr, ext) = (
        file("ca.pem"),
        file("ca.key"),
        file("pem"),
        file("key"),
        file("csr"),
        file("ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "30", "-subj", "/CN=Switchyard test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", &ca_key, "-out", &ca])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("the openssl command (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (ca, cert, key)
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
