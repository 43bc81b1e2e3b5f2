//! TLS on the control plane: the registry serving HTTPS, the registration
//! client and the proxy's registry discovery following it with a CA, the
//! proxy's etcd discovery reading a real etcd that requires TLS, and curl
//! as an outside client of the registry. Every one fails closed: a client
//! that does not trust the certificate gets nothing, never plaintext.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use common::TestProxy;
use switchyard_registry::{
    Registration, RegistrationOptions, RegistryServer, store::embedded::EmbeddedStore,
};
use switchyard_test_support::{
    Backend, BackendConfig, Etcd, client::get, eventually, tls::certificate_with,
};
use tokio::{process::Command, sync::oneshot};

const LOCAL: &str = "DNS:localhost,IP:127.0.0.1";

/// A registry serving HTTPS with `cert`/`key`, on an ephemeral port.
async fn https_registry(dir: &Path, cert: &str, key: &str) -> (String, oneshot::Sender<()>) {
    let store = Arc::new(EmbeddedStore::open(&dir.join("store")).await.unwrap());
    let server = RegistryServer::bind_with_store("127.0.0.1:0".parse().unwrap(), store, None)
        .await
        .unwrap()
        .tls(&switchyard_config::ListenerTls {
            certificates: vec![switchyard_config::TlsCertificate {
                server_names: Vec::new(),
                cert: cert.into(),
                key: key.into(),
            }],
            client_ca: None,
            identity_header: None,
        })
        .unwrap();
    let url = format!("https://127.0.0.1:{}", server.local_addr().port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// Waits until the proxy's discovery found `backend` and a request
/// reaches it.
async fn routes_to(p: &TestProxy, backend: &Backend) {
    let addr = p.addr;
    eventually(Duration::from_secs(10), || async move {
        get(addr, "/").await.status() == 200
    })
    .await;
    assert!(backend.requests() >= 1);
}

fn discovery_config(discovery: &str) -> String {
    format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"api\"\n\n\
         [[clusters]]\nname = \"api\"\ndiscovery = {discovery}\n"
    )
}

#[tokio::test]
async fn registry_over_https_is_followed_by_registration_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate_with(dir.path(), "registry", "serverAuth", LOCAL);
    let (url, _stop) = https_registry(dir.path(), &cert, &key).await;
    let backend = Backend::start(BackendConfig::new("api-1")).await;

    // Without the CA the registry's certificate is not trusted: refused.
    let untrusting = RegistrationOptions::new(&url, "api", "api-0", backend.addr());
    let err = Registration::register(untrusting)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");

    let mut opts = RegistrationOptions::new(&url, "api", "api-1", backend.addr());
    opts.ca = Some(ca.clone().into());
    let _registration = Registration::register(opts)
        .await
        .expect("registers over https");

    // curl, trusting the CA, sees the instance. (tokio's Command: the
    // registry serves on this test's runtime meanwhile.)
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &ca])
        .arg(format!("{url}/v1/services/api"))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("api-1"),
        "curl: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A plaintext client gets no answer from the TLS port.
    let plain = url.replace("https://", "http://");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("{plain}/v1/services/api"),
        ])
        .output()
        .await
        .expect("curl");
    assert!(!out.status.success(), "plaintext was answered");

    let p = TestProxy::start(&discovery_config(&format!(
        "{{ registry = {{ url = \"{url}\", service = \"api\", ca = \"{ca}\" }} }}"
    )))
    .await;
    routes_to(&p, &backend).await;

    // A proxy that does not trust the registry's CA discovers nothing and
    // counts the failures.
    let q = TestProxy::start(&discovery_config(&format!(
        "{{ registry = {{ url = \"{url}\", service = \"api\" }} }}"
    )))
    .await;
    let admin = q.admin;
    eventually(Duration::from_secs(10), || async move {
        let m = String::from_utf8(get(admin, "/metrics").await.body().to_vec()).unwrap();
        m.lines().any(|l| {
            l.starts_with("switchyard_discovery_errors_total{cluster=\"api\"}")
                && !l.ends_with(" 0")
        })
    })
    .await;
    assert_eq!(get(q.addr, "/").await.status(), 503);
}

#[tokio::test]
async fn etcd_discovery_reads_an_etcd_that_requires_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate_with(dir.path(), "etcd", "serverAuth", LOCAL);
    let etcd = Etcd::start_tls(Path::new(&cert), Path::new(&key)).await;
    let url = etcd.client_urls()[0].clone();
    assert!(url.starts_with("https://"), "{url}");
    let backend = Backend::start(BackendConfig::new("etcd-found")).await;
    let kv = switchyard_etcd::Client::new(
        std::slice::from_ref(&url),
        switchyard_etcd::ClientOptions {
            ca: Some(ca.clone().into()),
            ..Default::default()
        },
    )
    .unwrap();
    kv.put(
        b"/switchyard/services/api/a",
        format!(r#"{{"address":"{}"}}"#, backend.addr()).into_bytes(),
        0,
    )
    .await
    .expect("writes to etcd over TLS");
    let p = TestProxy::start(&discovery_config(&format!(
        "{{ etcd = {{ endpoints = [\"{url}\"], prefix = \"/switchyard/services/api/\", ca = \"{ca}\" }} }}"
    )))
    .await;
    routes_to(&p, &backend).await;

    // Plaintext to the TLS port is no way in: the client fails, never
    // reading a key.
    let plain = switchyard_etcd::Client::new(
        &[url.replace("https://", "http://")],
        switchyard_etcd::ClientOptions {
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(plain.range_prefix(b"/switchyard/").await.is_err());
}

#[test]
fn a_ca_needs_https() {
    let err = switchyard_config::parse(
        &discovery_config(
            "{ registry = { url = \"http://127.0.0.1:7400\", service = \"api\", ca = \"ca.pem\" } }",
        ),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("a CA is for https://"), "{err}");
    let err = switchyard_config::parse(
        &discovery_config(
            "{ etcd = { endpoints = [\"http://127.0.0.1:2379\"], prefix = \"/s/\", ca = \"ca.pem\" } }",
        ),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("a CA is for https://"), "{err}");
}
