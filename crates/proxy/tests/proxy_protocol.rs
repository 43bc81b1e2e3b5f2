//! The PROXY protocol on listeners, from a real load balancer: HAProxy
//! (`send-proxy` and `send-proxy-v2`) in front of the proxy announces each
//! client, and the proxy forwards that address, not the balancer's. And
//! from the proxy to an upstream: a cluster with `proxy_protocol` announces
//! each client to HAProxy's `accept-proxy`, from tcp listeners and from
//! HTTP routes, and its health checks send the LOCAL form.
//! Clients connect from distinct loopback addresses (127.0.0.2, 127.0.0.3...)
//! so the announced address differs from the balancer's 127.0.0.1.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestProxy, cluster, exchange_from, listener};
use switchyard_test_support::{Backend, BackendConfig, ChildGuard, free_port, wait_for};

/// HAProxy in TCP mode on a free port, sending every connection to `to`
/// with a PROXY header (`send` is `send-proxy` or `send-proxy-v2`).
async fn haproxy(dir: &std::path::Path, to: SocketAddr, send: &str) -> (ChildGuard, SocketAddr) {
    start_haproxy(dir, send, |front| {
        format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n\
             frontend fe\n  bind {front}\n  default_backend be\n\nbackend be\n  server s1 {to} {send}\n"
        )
    })
    .await
}

/// HAProxy in the foreground with the configuration `sections` writes for
/// a free front address; returns once it listens there.
async fn start_haproxy(
    dir: &std::path::Path,
    name: &str,
    sections: impl FnOnce(SocketAddr) -> String,
) -> (ChildGuard, SocketAddr) {
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.join(format!("{name}.cfg"));
    std::fs::write(
        &config,
        format!("global\n  maxconn 64\n\n{}", sections(front)),
    )
    .unwrap();
    let child = tokio::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts (scripts/test installs it)");
    let guard = ChildGuard::new("haproxy", child);
    wait_for(
        Duration::from_secs(10),
        "haproxy to listen",
        || async move { tokio::net::TcpStream::connect(front).await.ok().map(drop) },
    )
    .await;
    (guard, front)
}

/// Sends one request to `to` from the loopback address `from`, with `prefix`
/// written first; returns what came back (empty when the connection was
/// closed without an answer).
async fn request_from(from: [u8; 4], to: SocketAddr, prefix: &[u8]) -> String {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(b"GET /who HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n");
    exchange_from(from, to, &bytes).await.1
}

#[tokio::test]
async fn the_client_announced_by_haproxy_is_the_one_forwarded() {
    let b = Backend::start(BackendConfig::new("api")).await;
    let toml = listener("public", "api", "").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nproxy_protocol = { trusted = [\"127.0.0.1\"] }\n",
    ) + &cluster("api", &[b.addr()], "");
    let p = TestProxy::start(&toml).await;
    let dir = tempfile::tempdir().unwrap();
    let forwarded = || {
        b.last_request()
            .and_then(|r| r.header("x-forwarded-for").map(str::to_owned))
    };

    for (send, from) in [
        ("send-proxy", [127, 0, 0, 2]),
        ("send-proxy-v2", [127, 0, 0, 3]),
    ] {
        let (_haproxy, front) = haproxy(dir.path(), p.addr, send).await;
        let answer = request_from(from, front, b"").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{send}: {answer}");
        let client = std::net::Ipv4Addr::from(from).to_string();
        assert_eq!(forwarded().as_deref(), Some(client.as_str()), "{send}");
    }

    // An untrusted peer is served as it is, with its own address; the
    // header it could send is not believed (it would be a bad request).
    let answer = request_from([127, 0, 0, 4], p.addr, b"").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(forwarded().as_deref(), Some("127.0.0.4"));
    let forged = request_from(
        [127, 0, 0, 4],
        p.addr,
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n",
    )
    .await;
    assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");

    // A v2 header with an IPv6 client, written by hand from the trusted
    // address: that client is the one forwarded.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v2.extend_from_slice(&[0x1F, 0x90, 0x00, 0x50]);
    let answer = request_from([127, 0, 0, 1], p.addr, &v2).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(forwarded().as_deref(), Some("2001:db8::7"));

    // A trusted source that sends no header is refused and counted.
    let before = b.requests();
    let answer = request_from([127, 0, 0, 1], p.addr, b"").await;
    assert_eq!(
        answer, "",
        "a trusted peer without a header must not be served"
    );
    assert_eq!(b.requests(), before);
    let metrics = p.cluster("api").metrics().render();
    assert!(
        metrics.contains(
            "switchyard_proxy_errors_total{listener=\"public\",kind=\"proxy_protocol\"} 1"
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("proxy_protocol"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// HAProxy in HTTP mode on a free port, requiring a PROXY header
/// (`accept-proxy`) and answering every request with the client address
/// the header announced.
async fn haproxy_echoing_the_client(dir: &std::path::Path) -> (ChildGuard, SocketAddr) {
    start_haproxy(dir, "accept-proxy", |front| {
        format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n\
             frontend fe\n  bind {front} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"client=%[src]:%[src_port]\"\n"
        )
    })
    .await
}

#[tokio::test]
async fn a_tcp_cluster_announces_each_client_to_an_upstream_that_accepts_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (_haproxy, upstream) = haproxy_echoing_the_client(dir.path()).await;
    for (version, from) in [("v1", [127, 0, 0, 5]), ("v2", [127, 0, 0, 6])] {
        let toml = format!(
            "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"api\"\n\n{}",
            cluster(
                "api",
                &[upstream],
                &format!("proxy_protocol = \"{version}\"")
            )
        );
        let p = TestProxy::start(&toml).await;
        let (port, answer) = exchange_from(
            from,
            p.listener("raw"),
            b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
        )
        .await;
        let client = format!("client={}:{port}", std::net::Ipv4Addr::from(from));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(&client),
            "{version}: {answer}"
        );
    }
}

#[tokio::test]
async fn an_http_cluster_announces_each_client_on_connections_of_its_own() {
    use http_body_util::BodyExt;
    let dir = tempfile::tempdir().unwrap();
    let (_haproxy, upstream) = haproxy_echoing_the_client(dir.path()).await;
    for (version, from) in [("v1", [127, 0, 0, 7]), ("v2", [127, 0, 0, 8])] {
        let text = listener("public", "api", "")
            + &cluster(
                "api",
                &[upstream],
                &format!(
                    "proxy_protocol = \"{version}\"\nhealth = {{ http = \"/\", interval = \"100ms\", timeout = \"80ms\", healthy = 1, unhealthy = 1 }}"
                ),
            );
        let p = TestProxy::start(&text).await;
        // Two clients, each with two requests on one keep-alive connection:
        // every answer names the client that sent it.
        for client in [from, [127, 0, 0, 9]] {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((client, 0))).unwrap();
            let stream = socket.connect(p.addr).await.unwrap();
            let port = stream.local_addr().unwrap().port();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for _ in 0..2 {
                let req = http::Request::builder()
                    .uri("/")
                    .header("host", "api")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let resp = tx.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200, "{version}");
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let expected = format!("client={}:{port}", std::net::Ipv4Addr::from(client));
                assert_eq!(String::from_utf8_lossy(&body), expected, "{version}");
            }
        }
        // Health checks reach the same upstream with the LOCAL form.
        let admin = p.admin;
        wait_for(
            Duration::from_secs(5),
            "health checks to pass",
            || async move {
                let m = switchyard_test_support::client::get(admin, "/metrics").await;
                let m = String::from_utf8_lossy(m.body()).into_owned();
                m.lines()
                    .any(|l| {
                        l.starts_with(
                            "switchyard_health_checks_total{cluster=\"api\",result=\"passed\"}",
                        ) && !l.ends_with(" 0")
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

#[test]
fn a_udp_listener_may_not_use_a_cluster_that_sends_the_proxy_protocol() {
    let text = "[[listeners]]\nname = \"dns\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\ncluster = \"api\"\n\n".to_owned()
        + &cluster(
            "api",
            &["127.0.0.1:9".parse().unwrap()],
            "proxy_protocol = \"v2\"",
        );
    let err = switchyard_config::parse(&text, "pp.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("sends the PROXY protocol, which a udp listener cannot"),
        "{}",
        lines[0]
    );
}
