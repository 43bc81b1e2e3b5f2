//! A proxy started from a TOML snippet, on loopback ports, for integration
//! tests.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use switchyard_proxy::Proxy;
use switchyard_stack::cluster::Cluster;
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    addrs: Vec<(String, SocketAddr)>,
    clusters: Vec<(String, Arc<Cluster>)>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<bool>>,
}

impl TestProxy {
    /// Starts a proxy from `toml`; `[admin]` is added on an ephemeral port
    /// unless the snippet has one.
    pub async fn start(toml: &str) -> TestProxy {
        Self::start_with(toml, switchyard_proxy::DiscoveryOptions::default()).await
    }

    /// Like [`TestProxy::start`] with explicit discovery settings (e.g. the
    /// test's own DNS server).
    pub async fn start_with(
        toml: &str,
        discovery: switchyard_proxy::DiscoveryOptions,
    ) -> TestProxy {
        let mut text = String::new();
        if !toml.contains("[admin]") {
            text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n\n");
        }
        text.push_str(toml);
        let config = switchyard_config::parse(&text, "test.toml")
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"));
        let metrics = Arc::new(switchyard_telemetry::Metrics::new());
        let proxy = Proxy::bind_with(config, metrics, discovery)
            .await
            .expect("proxy binds");
        Self::run(proxy).await
    }

    /// Starts a proxy from the configuration file at `path`, which a reload
    /// (`POST /reload`) reads again, as the binary does.
    pub async fn start_from_file(path: &std::path::Path) -> TestProxy {
        let config = switchyard_config::load(path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let proxy = Proxy::bind(config).await.expect("proxy binds");
        let path = path.to_owned();
        let loader: switchyard_proxy::Loader = Arc::new(move || {
            switchyard_config::load(&path)
                .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
        });
        Self::run(proxy.with_loader(loader)).await
    }

    async fn run(proxy: Proxy) -> TestProxy {
        let cluster_names: Vec<String> = proxy
            .admin_state()
            .view()
            .config
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let addrs = proxy.listener_addrs();
        let admin = proxy.admin_addr();
        let clusters = cluster_names
            .into_iter()
            .map(|n| {
                let c = proxy.cluster(&n).expect("cluster exists");
                (n, c)
            })
            .collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(proxy.run(async {
            let _ = stopped.await;
        }));
        let state_ready = admin;
        // Wait until the admin reports ready, so listeners are serving.
        switchyard_test_support::eventually(Duration::from_secs(5), || async move {
            matches!(
                switchyard_test_support::client::send_http1(
                    state_ready,
                    switchyard_test_support::client::request(http::Method::GET, "/ready", bytes::Bytes::new()),
                )
                .await,
                Ok(r) if r.status() == 200
            )
        })
        .await;
        TestProxy {
            addr: addrs.first().map(|(_, a)| *a).unwrap_or(admin),
            admin,
            addrs,
            clusters,
            stop: Some(stop),
            join: Some(join),
        }
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    pub fn cluster(&self, name: &str) -> Arc<Cluster> {
        self.clusters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns whether every connection drained in time.
    pub async fn shutdown(mut self) -> bool {
        self.begin_shutdown();
        self.join
            .take()
            .expect("not yet joined")
            .await
            .expect("proxy task")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// One `[[clusters]]` table with static endpoints.
pub fn cluster(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let list = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[clusters]]\nname = \"{name}\"\ndiscovery = {{ static = [{list}] }}\n{extra}\n\n")
}

/// An `http` listener on an ephemeral port sending everything to `cluster`.
pub fn listener(name: &str, cluster: &str, route_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  cluster = \"{cluster}\"\n{route_extra}\n\n"
    )
}

/// Sends a WebSocket upgrade request on a new connection to `addr`; returns
/// the connection and the response head.
pub async fn websocket_upgrade(addr: SocketAddr) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// Sends `bytes` to `to` on a connection from the loopback address `from`
/// (127.0.0.x: distinct client addresses on one host) and reads until the
/// peer closes; a reset reads as the end. Returns the connection's local
/// port and what came back.
pub async fn exchange_from(from: [u8; 4], to: SocketAddr, bytes: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read.await.expect("an answer or a close within 10 s");
    (port, String::from_utf8_lossy(&answer).into_owned())
}
