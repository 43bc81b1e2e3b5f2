//! Real etcd for tests: one node or a cluster, on free loopback ports.
//!
//! Uses the `etcd` binary of Debian's `etcd-server` package (`scripts/test`
//! installs it). A missing binary panics with what to install: tests that
//! need etcd must fail, never skip. Each node's data lives in a private
//! directory that is removed when the [`Etcd`] is dropped, and each node
//! is killed by its own PID (see [`ChildGuard`]).
//!
//! Elections are tuned fast (50ms heartbeat, 500ms election timeout) so a
//! test that kills a member waits half a second for a new leader, not
//! several.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use http::Method;

use crate::{ChildGuard, client, eventually::wait_for, ports::free_port};

/// How long a fresh cluster may take to elect a leader and answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    nodes: Vec<Node>,
    root: PathBuf,
}

#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    /// Where `/health` answers in plaintext: the client port, or for a TLS
    /// member its metrics port.
    health_port: u16,
    /// `http` or `https`, for client URLs.
    scheme: &'static str,
    args: Vec<String>,
    guard: Option<ChildGuard>,
}

/// The `etcd` binary, or a panic saying how to get it.
pub fn etcd_binary() -> PathBuf {
    find_binary("etcd").unwrap_or_else(|| {
        panic!(
            "the `etcd` binary is not installed; install Debian's etcd-server \
             (`apt-get install etcd-server`, which scripts/test does) — tests that need etcd fail rather than skip"
        )
    })
}

pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Etcd {
    /// Starts a single-node etcd and waits until it answers.
    pub async fn start() -> Etcd {
        Self::cluster(1).await
    }

    /// Starts a single-node etcd whose clients must use TLS: it serves
    /// `https://127.0.0.1:P` with this certificate and key (PEM files).
    pub async fn start_tls(cert: &Path, key: &Path) -> Etcd {
        Self::start_with(1, Some((cert, key))).await
    }

    /// Starts an `n`-member cluster and waits until every member answers.
    pub async fn cluster(n: usize) -> Etcd {
        Self::start_with(n, None).await
    }

    async fn start_with(n: usize, tls: Option<(&Path, &Path)>) -> Etcd {
        let bin = etcd_binary();
        let root = std::env::temp_dir().join(format!(
            "switchyard-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&root).expect("creating the etcd scratch directory");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = root
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut nodes = Vec::with_capacity(n);
        let scheme = if tls.is_some() { "https" } else { "http" };
        for (i, (client_port, peer_port)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let data = root.join(&name);
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={scheme}://127.0.0.1:{client_port}"),
                format!("--advertise-client-urls={scheme}://127.0.0.1:{client_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster={}", initial.join(",")),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            let mut health_port = *client_port;
            if let Some((cert, key)) = tls {
                health_port = free_port();
                args.extend([
                    format!("--cert-file={}", cert.display()),
                    format!("--key-file={}", key.display()),
                    format!("--listen-metrics-urls=http://127.0.0.1:{health_port}"),
                ]);
            }
            let mut node = Node {
                name,
                client_port: *client_port,
                health_port,
                scheme,
                args,
                guard: None,
            };
            node.spawn(&bin, &root);
            nodes.push(node);
        }
        let etcd = Etcd { nodes, root };
        for i in 0..n {
            etcd.wait_healthy(i).await;
        }
        etcd
    }

    /// `http://127.0.0.1:P` of every member (`https://` for [`Etcd::start_tls`]).
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", n.scheme, n.client_port))
            .collect()
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].client_port))
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut g) = self.nodes[i].guard.take() {
            g.kill();
        }
    }

    /// Starts member `i` again with its data and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        let bin = etcd_binary();
        let root = self.root.clone();
        // A restarted member rejoins; "new" would be refused for existing data.
        for a in &mut self.nodes[i].args {
            if a == "--initial-cluster-state=new" {
                *a = "--initial-cluster-state=existing".into();
            }
        }
        self.nodes[i].spawn(&bin, &root);
        self.wait_healthy(i).await;
    }

    async fn wait_healthy(&self, i: usize) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].health_port));
        let what = format!(
            "etcd member {} on {addr} to report healthy",
            self.nodes[i].name
        );
        wait_for(START_TIMEOUT, &what, || async move {
            let req = client::request(Method::GET, "/health", bytes::Bytes::new());
            match client::send_http1(addr, req).await {
                Ok(r) if r.status() == 200 && r.body().windows(6).any(|w| w == b"\"true\"") => {
                    Some(())
                }
                _ => None,
            }
        })
        .await;
    }
}

impl Node {
    fn spawn(&mut self, bin: &Path, root: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(format!("{}.log", self.name)))
            .expect("creating the etcd log file");
        let child = Command::new(bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.guard = Some(ChildGuard::from_std(format!("etcd {}", self.name), child));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut g) = n.guard.take() {
                g.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
