//! WebSocket upgrades and TCP connections reach endpoints through their
//! cluster like HTTP requests do: they pass its limits, count in its load
//! and statistics, skip endpoints that refuse connections and feed those
//! failures into outlier detection.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestProxy, cluster, listener, websocket_upgrade};
use switchyard_telemetry::Decision;
use switchyard_test_support::{Backend, BackendConfig, RefusedAddr, assert_eventually};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const OUTLIER: &str =
    "balance = \"round-robin\"\noutlier = { consecutive_failures = 1, max_ejection_percent = 100 }";

async fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn websocket_tunnels_hold_a_request_slot_and_skip_refusing_endpoints() {
    let refused = RefusedAddr::new();
    let ws = Backend::start(BackendConfig::new("ws")).await;
    let p = TestProxy::start(
        &(listener("public", "api", "")
            + &cluster(
                "api",
                &[refused.addr(), ws.addr()],
                &format!("{OUTLIER}\nlimits = {{ max_requests = 1 }}"),
            )),
    )
    .await;
    let (mut first, head) = websocket_upgrade(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo(&mut first, b"ping").await;
    let snap = p.cluster("api").snapshot();
    assert_eq!(snap.active_requests, 1, "the open tunnel holds a slot");
    let live = snap
        .endpoints
        .iter()
        .find(|e| e.address == ws.addr())
        .unwrap();
    assert_eq!((live.in_flight, live.requests), (1, 1));
    // While it is open the cluster (max_requests = 1) is full.
    let (_, head) = websocket_upgrade(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("x-switchyard-error: overloaded"), "{head}");
    drop(first);
    assert_eventually!(
        p.cluster("api").snapshot().active_requests == 0,
        Duration::from_secs(5)
    );
    // Round-robin offers the refusing endpoint to one of the next two
    // upgrades; both reach the live one, and the refusing one is ejected.
    for _ in 0..2 {
        let (mut s, head) = websocket_upgrade(p.addr).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        echo(&mut s, b"again").await;
        drop(s);
        assert_eventually!(
            p.cluster("api").snapshot().active_requests == 0,
            Duration::from_secs(5)
        );
    }
    let snap = p.cluster("api").snapshot();
    let dead = snap
        .endpoints
        .iter()
        .find(|e| e.address == refused.addr())
        .unwrap();
    assert_eq!(dead.state, "ejected", "{snap:?}");
}

#[tokio::test]
async fn tcp_connections_are_admitted_by_the_cluster_and_feed_outlier_detection() {
    let refused = RefusedAddr::new();
    let echo_addr = switchyard_test_support::tcp_echo(b"").await;
    let toml = format!(
        "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"echo\"\n\n{}",
        cluster(
            "echo",
            &[refused.addr(), echo_addr],
            &format!("{OUTLIER}\nlimits = {{ max_connections = 2 }}")
        )
    );
    let p = TestProxy::start(&toml).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.listener("raw")).await.unwrap();
        echo(&mut s, b"hello").await;
        open.push(s);
    }
    let snap = p.cluster("echo").snapshot();
    let dead = snap
        .endpoints
        .iter()
        .find(|e| e.address == refused.addr())
        .unwrap();
    assert_eq!(dead.state, "ejected", "a refused connect counts: {snap:?}");
    // A third connection is over max_connections: closed at once.
    let mut third = TcpStream::connect(p.listener("raw")).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(p.cluster("echo").decisions().get(Decision::Overloaded), 1);
    // Closing one frees its place.
    drop(open.pop());
    assert_eventually!(
        {
            let mut s = TcpStream::connect(p.listener("raw")).await.unwrap();
            s.write_all(b"x").await.is_ok()
                && tokio::time::timeout(Duration::from_millis(500), s.read(&mut [0u8; 1]))
                    .await
                    .is_ok_and(|r| r.is_ok_and(|n| n == 1))
        },
        Duration::from_secs(5)
    );
}

/// A UDP echo server on loopback.
async fn udp_echo() -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

fn udp_proxy(endpoints: &[SocketAddr], extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"dgram\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\ncluster = \"u\"\nudp_session_timeout = \"500ms\"\n\n{}",
        cluster("u", endpoints, extra)
    )
}

/// Sends `msg` from a fresh client socket; the reply, if one comes soon.
async fn udp_ask(proxy: SocketAddr, msg: &[u8]) -> (tokio::net::UdpSocket, Option<Vec<u8>>) {
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(msg, proxy).await.unwrap();
    let mut buf = [0u8; 2048];
    let reply = tokio::time::timeout(Duration::from_millis(300), c.recv(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|n| buf[..n].to_vec());
    (c, reply)
}

#[tokio::test]
async fn udp_sessions_are_admitted_by_the_cluster() {
    let echo = udp_echo().await;
    let p = TestProxy::start(&udp_proxy(&[echo], "limits = { max_connections = 1 }")).await;
    let addr = p.listener("dgram");
    let (_first, reply) = udp_ask(addr, b"one").await;
    assert_eq!(reply.as_deref(), Some(&b"one"[..]));
    // The first session holds the cluster's only place.
    let (_, reply) = udp_ask(addr, b"two").await;
    assert_eq!(reply, None, "over max_connections: dropped");
    assert_eq!(p.cluster("u").decisions().get(Decision::Overloaded), 1);
    // Once it has been quiet for the session timeout, its place is free.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, reply) = udp_ask(addr, b"three").await;
    assert_eq!(reply.as_deref(), Some(&b"three"[..]));
}

#[tokio::test]
async fn an_unreachable_udp_endpoint_is_ejected() {
    let echo = udp_echo().await;
    // A UDP port that was free a moment ago: datagrams to it are answered
    // with ICMP port unreachable.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let p = TestProxy::start(&udp_proxy(&[dead, echo], OUTLIER)).await;
    let addr = p.listener("dgram");
    let mut clients = Vec::new();
    for i in 0..4u8 {
        clients.push(udp_ask(addr, &[i]).await.0);
    }
    assert_eventually!(
        p.cluster("u")
            .snapshot()
            .endpoints
            .iter()
            .any(|e| e.address == dead && e.state == "ejected"),
        Duration::from_secs(5)
    );
    // New sessions all reach the live endpoint.
    for i in 10..14u8 {
        let (_, reply) = udp_ask(addr, &[i]).await;
        assert_eq!(reply.as_deref(), Some(&[i][..]));
    }
}
