//! nginx as an upstream, an implementation other than ours on the far side:
//! `listen ... ssl` for a cluster's TLS (verified by CA and name, ALPN
//! http/1.1) and `listen ... proxy_protocol` for a cluster that announces
//! each client, from an HTTP route and from a tcp listener.

mod common;

use std::{net::SocketAddr, path::Path, time::Duration};

use common::{TestProxy, cluster, exchange_from, listener};
use switchyard_test_support::{ChildGuard, free_port, tls::certificate_with, wait_for};

/// nginx in the foreground as one process (so that its guard's kill ends
/// it all), with a TLS server on `tls` and a PROXY-protocol server on `pp`
/// that answers with the client address the header announced.
async fn nginx(dir: &Path, cert: &str, key: &str) -> (ChildGuard, SocketAddr, SocketAddr) {
    let (tls, pp) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {tls} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 location / {{ return 200 \"nginx over $ssl_protocol\"; }}\n  }}\n\
               server {{\n    listen {pp} proxy_protocol;\n\
                 location / {{ return 200 \"client=$proxy_protocol_addr:$proxy_protocol_port\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts (scripts/test installs it)");
    let guard = ChildGuard::new("nginx", child);
    let log = dir.join("error.log");
    wait_for(Duration::from_secs(10), "nginx to listen", || {
        let log = log.clone();
        async move {
            let up = tokio::net::TcpStream::connect(tls).await.is_ok()
                && tokio::net::TcpStream::connect(pp).await.is_ok();
            if !up {
                // Its own words, if it gave up.
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!text.contains("[emerg]"), "nginx: {text}");
            }
            up.then_some(())
        }
    })
    .await;
    (guard, tls, pp)
}

/// `GET /` sent from the loopback address `from` to `to`: the connection's
/// port and the whole answer.
async fn get_from(from: [u8; 4], to: SocketAddr) -> (u16, String) {
    let request = b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n";
    exchange_from(from, to, request).await
}

#[tokio::test]
async fn nginx_serves_a_tls_cluster_and_hears_each_client_over_the_proxy_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate_with(
        dir.path(),
        "nginx",
        "serverAuth",
        "DNS:localhost,IP:127.0.0.1",
    );
    let (_nginx, tls, pp) = nginx(dir.path(), &cert, &key).await;
    let toml = listener("secure", "tls-api", "")
        + &listener("announced", "pp-api", "")
        + "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"pp-raw\"\n\n"
        + &cluster(
            "tls-api",
            &[tls],
            &format!("tls = {{ ca = \"{ca}\", server_name = \"localhost\" }}"),
        )
        + &cluster("pp-api", &[pp], "proxy_protocol = \"v1\"")
        + &cluster("pp-raw", &[pp], "proxy_protocol = \"v2\"");
    let p = TestProxy::start(&toml).await;

    // TLS to nginx, verified against the CA and the name; Debian's nginx
    // 1.22 offers up to TLS 1.2 by default, rustls nothing older.
    let (_, answer) = get_from([127, 0, 0, 1], p.listener("secure")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("nginx over TLSv1.2") || answer.ends_with("nginx over TLSv1.3"),
        "{answer}"
    );

    // An HTTP route and a tcp listener each announce their own client.
    for (listener, from) in [("announced", [127, 0, 0, 12]), ("raw", [127, 0, 0, 13])] {
        let (port, answer) = get_from(from, p.listener(listener)).await;
        let client = format!("client={}:{port}", std::net::Ipv4Addr::from(from));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(&client),
            "{listener}: {answer}"
        );
    }
}
