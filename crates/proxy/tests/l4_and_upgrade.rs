//! TCP listeners and HTTP/1.1 upgrades (WebSocket) tunnelled as bytes.

mod common;

use common::{TestProxy, cluster, listener};
use switchyard_test_support::{Backend, BackendConfig, RefusedAddr};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn tcp_listener_proxies_server_first_protocols_and_skips_dead_endpoints() {
    let echo = switchyard_test_support::tcp_echo(b"220 hello\r\n").await;
    let refused = RefusedAddr::new();
    let dead = refused.addr();
    let toml = format!(
        "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"echo\"\n\n{}",
        cluster("echo", &[dead, echo], "balance = \"round-robin\"")
    );
    let p = TestProxy::start(&toml).await;
    for _ in 0..4 {
        let mut s = TcpStream::connect(p.listener("raw")).await.unwrap();
        // The server's greeting arrives without the client sending anything:
        // the proxy does not wait to sniff a protocol.
        let mut greet = [0u8; 11];
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut greet))
            .await
            .expect("greeting arrives promptly")
            .unwrap();
        assert_eq!(&greet, b"220 hello\r\n");
        let payload = vec![7u8; 256 * 1024];
        let (mut rd, mut wr) = s.into_split();
        let send = payload.clone();
        let writer = tokio::spawn(async move { wr.write_all(&send).await.unwrap() });
        let mut back = vec![0u8; payload.len()];
        rd.read_exact(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back, payload);
    }
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let b = Backend::start(BackendConfig::new("ws")).await;
    let p =
        TestProxy::start(&(listener("public", "api", "") + &cluster("api", &[b.addr()], ""))).await;
    let (mut s, head) = common::websocket_upgrade(p.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"ping"[..], b"second frame", &[0u8, 1, 2, 255]] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn udp_flows_are_relayed_and_pinned() {
    // Two UDP echo servers that prefix their replies with their name.
    let mut servers = Vec::new();
    for name in ["u1", "u2"] {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        servers.push(s.local_addr().unwrap());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf).await else {
                    return;
                };
                let mut reply = name.as_bytes().to_vec();
                reply.push(b':');
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from).await;
            }
        });
    }
    let toml = format!(
        "[[listeners]]\nname = \"dns\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\ncluster = \"echo\"\n\n{}",
        cluster("echo", &servers, "balance = \"round-robin\"")
    );
    let p = TestProxy::start(&toml).await;
    let target = p.listener("dns");
    let mut seen = std::collections::HashSet::new();
    for client_no in 0..4 {
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut first_server = None;
        for i in 0..3 {
            let msg = format!("c{client_no}-m{i}");
            c.send_to(msg.as_bytes(), target).await.unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) =
                tokio::time::timeout(std::time::Duration::from_secs(2), c.recv_from(&mut buf))
                    .await
                    .expect("udp reply arrives")
                    .unwrap();
            assert_eq!(from, target);
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (server, echoed) = reply.split_once(':').unwrap();
            assert_eq!(echoed, msg);
            // A flow stays on one endpoint.
            assert_eq!(*first_server.get_or_insert(server.to_owned()), server);
        }
        seen.insert(first_server.unwrap());
    }
    assert_eq!(seen.len(), 2, "flows from different clients are balanced");
}
