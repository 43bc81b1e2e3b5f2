//! TCP and UDP clusters in the admin API and metrics: `/clusters` reports
//! them as `tcp`/`udp` (not as the HTTP upstream protocol they never use),
//! each TCP connection and UDP session counts once as a request of its
//! endpoint, and the bytes moved each way are counted.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestProxy, cluster, listener};
use serde_json::Value;
use switchyard_test_support::{Backend, BackendConfig, client::get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// What the TCP server sends first on every connection.
const GREETING: &[u8] = b"hello\n";
/// What the UDP server puts in front of every reply.
const PREFIX: &[u8] = b"echo:";
const WAIT: Duration = Duration::from_secs(5);

/// Answers every datagram with `PREFIX` + the datagram.
async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut reply = PREFIX.to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    addr
}

async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let r = get(admin, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    String::from_utf8(r.body().to_vec()).expect("utf-8")
}

async fn clusters(admin: SocketAddr) -> Value {
    serde_json::from_str(&admin_text(admin, "/clusters").await).expect("/clusters is JSON")
}

fn cluster_of<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["clusters"]
        .as_array()
        .expect("clusters array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {all}"))
}

/// The value of one series in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/clusters` until `done` holds (or the wait is over) and returns
/// the last answer, so that the assertions after it show real figures.
async fn settled(admin: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = clusters(admin).await;
        if done(&v) || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tcp_and_udp_clusters_report_connections_sessions_and_bytes() {
    let tcp_backend = switchyard_test_support::tcp_echo(GREETING).await;
    let udp_backend = udp_echo().await;
    let http_backend = Backend::start(BackendConfig::new("web")).await;
    let toml = format!(
        "[[listeners]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"tcp-echo\"\n\n\
         [[listeners]]\nname = \"dgram\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"udp\"\ncluster = \"udp-echo\"\n\n{}{}{}{}",
        listener("public", "web", ""),
        cluster("tcp-echo", &[tcp_backend], ""),
        cluster("udp-echo", &[udp_backend], ""),
        cluster("web", &[http_backend.addr()], ""),
    );
    let p = TestProxy::start(&toml).await;

    // Before any traffic the roles are already known, with zero counts.
    let before = clusters(p.admin).await;
    assert_eq!(cluster_of(&before, "tcp-echo")["protocol"], "tcp");
    assert_eq!(cluster_of(&before, "udp-echo")["protocol"], "udp");
    assert_eq!(
        cluster_of(&before, "tcp-echo")["endpoints"][0]["bytes_rx"],
        0
    );

    // Three TCP connections, each sending a different amount.
    let mut tcp_sent = 0u64;
    for (i, len) in [100usize, 2_000, 70_000].into_iter().enumerate() {
        let mut s = TcpStream::connect(p.listener("raw")).await.unwrap();
        let mut greet = vec![0u8; GREETING.len()];
        s.read_exact(&mut greet).await.unwrap();
        assert_eq!(greet, GREETING);
        let payload = vec![i as u8; len];
        let (mut rd, mut wr) = s.into_split();
        let send = payload.clone();
        let writer = tokio::spawn(async move { wr.write_all(&send).await.unwrap() });
        let mut back = vec![0u8; len];
        rd.read_exact(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back, payload);
        tcp_sent += len as u64;
    }
    let tcp_received = tcp_sent + 3 * GREETING.len() as u64;

    // Two UDP clients (two sessions), three datagrams each.
    let mut udp_sent = 0u64;
    let mut udp_received = 0u64;
    for client in 0..2 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..3 {
            let msg = format!("client {client} datagram {i}");
            c.send_to(msg.as_bytes(), p.listener("dgram"))
                .await
                .unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = tokio::time::timeout(WAIT, c.recv_from(&mut buf))
                .await
                .expect("udp reply arrives")
                .unwrap();
            assert_eq!(&buf[..PREFIX.len()], PREFIX);
            udp_sent += msg.len() as u64;
            udp_received += n as u64;
        }
    }

    // An HTTP cluster stays what it was.
    assert_eq!(get(p.listener("public"), "/").await.status(), 200);

    let expect = |v: &Value| {
        let t = &cluster_of(v, "tcp-echo")["endpoints"][0];
        let u = &cluster_of(v, "udp-echo")["endpoints"][0];
        t["bytes_rx"] == tcp_received
            && t["bytes_tx"] == tcp_sent
            && t["requests"] == 3
            && u["bytes_rx"] == udp_received
            && u["bytes_tx"] == udp_sent
            && u["requests"] == 2
    };
    let v = settled(p.admin, expect).await;
    let tcp = cluster_of(&v, "tcp-echo");
    let udp = cluster_of(&v, "udp-echo");
    let web = cluster_of(&v, "web");
    assert_eq!(tcp["protocol"], "tcp", "{tcp}");
    assert_eq!(udp["protocol"], "udp", "{udp}");
    assert_eq!(web["protocol"], "http1", "{web}");

    let t = &tcp["endpoints"][0];
    assert_eq!(t["address"], tcp_backend.to_string());
    assert_eq!(t["tcp_connections"], 3, "{t}");
    assert_eq!(t["requests"], 3, "each connection is one request: {t}");
    assert_eq!(t["bytes_tx"], tcp_sent, "bytes sent to the endpoint: {t}");
    assert_eq!(
        t["bytes_rx"], tcp_received,
        "bytes received from the endpoint: {t}"
    );
    assert!(t.get("udp_sessions").is_none(), "{t}");

    let u = &udp["endpoints"][0];
    assert_eq!(u["udp_sessions"], 2, "{u}");
    assert_eq!(u["requests"], 2, "each session is one request: {u}");
    assert_eq!(u["bytes_tx"], udp_sent, "{u}");
    assert_eq!(u["bytes_rx"], udp_received, "{u}");
    assert!(u.get("tcp_connections").is_none(), "{u}");
    // The sessions are still open (the session timeout has not passed).
    assert_eq!(u["in_flight"], 2, "{u}");

    let w = &web["endpoints"][0];
    for field in ["bytes_rx", "bytes_tx", "tcp_connections", "udp_sessions"] {
        assert!(w.get(field).is_none(), "an HTTP endpoint has {field}: {w}");
    }

    let metrics = admin_text(p.admin, "/metrics").await;
    let series = |name: &str, cluster: &str, endpoint: SocketAddr, extra: &str| {
        let s = format!("{name}{{cluster=\"{cluster}\",endpoint=\"{endpoint}\"{extra}}}");
        sample(&metrics, &s).unwrap_or_else(|| panic!("no series {s} in\n{metrics}"))
    };
    let req = "switchyard_endpoint_requests_total";
    let bytes = "switchyard_endpoint_bytes_total";
    assert_eq!(series(req, "tcp-echo", tcp_backend, ""), 3.0);
    assert_eq!(series(req, "udp-echo", udp_backend, ""), 2.0);
    let rx = ",direction=\"rx\"";
    let tx = ",direction=\"tx\"";
    assert_eq!(
        series(bytes, "tcp-echo", tcp_backend, rx),
        tcp_received as f64
    );
    assert_eq!(series(bytes, "tcp-echo", tcp_backend, tx), tcp_sent as f64);
    assert_eq!(
        series(bytes, "udp-echo", udp_backend, rx),
        udp_received as f64
    );
    assert_eq!(series(bytes, "udp-echo", udp_backend, tx), udp_sent as f64);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with(bytes) && l.contains("cluster=\"web\"")),
        "HTTP endpoints export no byte series:\n{metrics}"
    );
    assert_eq!(
        series("switchyard_endpoint_in_flight", "udp-echo", udp_backend, ""),
        2.0
    );
}
