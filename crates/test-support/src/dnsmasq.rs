//! A real DNS server for tests: Debian's `dnsmasq`, answering only the
//! records a test gives it, on a free loopback port.
//!
//! It reads no configuration file, no `/etc/hosts` and no upstream
//! resolvers (`--conf-file=/dev/null --no-hosts --no-resolv`), so nothing
//! it answers comes from beyond the test. A missing binary panics with what
//! to install: DNS tests fail, never skip.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{ChildGuard, etcd::find_binary, eventually::wait_for, ports::free_port};

/// One record dnsmasq should serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    /// A or AAAA, by the address family.
    Host { name: String, ip: IpAddr },
    Srv {
        name: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
}

impl DnsRecord {
    pub fn host(name: &str, ip: IpAddr) -> Self {
        Self::Host {
            name: name.into(),
            ip,
        }
    }

    pub fn srv(name: &str, target: &str, port: u16, priority: u16, weight: u16) -> Self {
        Self::Srv {
            name: name.into(),
            target: target.into(),
            port,
            priority,
            weight,
        }
    }

    fn arg(&self) -> String {
        match self {
            Self::Host { name, ip } => format!("--host-record={name},{ip}"),
            Self::Srv {
                name,
                target,
                port,
                priority,
                weight,
            } => format!("--srv-host={name},{target},{port},{priority},{weight}"),
        }
    }
}

/// A running dnsmasq.
#[derive(Debug)]
pub struct Dnsmasq {
    port: u16,
    ttl: u32,
    guard: ChildGuard,
}

impl Dnsmasq {
    /// Serves `records` with TTL `ttl` seconds on a free loopback port.
    pub async fn start(records: &[DnsRecord], ttl: u32) -> Dnsmasq {
        Self::start_on(free_port(), records, ttl).await
    }

    async fn start_on(port: u16, records: &[DnsRecord], ttl: u32) -> Dnsmasq {
        let bin = find_binary("dnsmasq").unwrap_or_else(|| {
            panic!(
                "the `dnsmasq` binary is not installed; install Debian's dnsmasq \
                 (`apt-get install dnsmasq`, which scripts/test does) — DNS tests fail rather than skip"
            )
        });
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-negcache",
            "--pid-file",
            "--user=root",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={ttl}"))
        .args(records.iter().map(DnsRecord::arg))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let guard = ChildGuard::from_std("dnsmasq", child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // dnsmasq also serves DNS over TCP on the port: once that accepts,
        // the UDP side is bound too.
        wait_for(
            Duration::from_secs(10),
            "dnsmasq to listen",
            || async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        Dnsmasq { port, ttl, guard }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Restarts on the same port serving `records` instead.
    pub async fn replace(&mut self, records: &[DnsRecord]) {
        self.guard.kill();
        let port = self.port;
        // The old process must have released the port before the new binds.
        wait_for(
            Duration::from_secs(10),
            "dnsmasq to release its port",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .err()
                    .map(|_| ())
            },
        )
        .await;
        *self = Self::start_on(port, records, self.ttl).await;
    }

    /// Stops answering (the port is then closed).
    pub fn stop(&mut self) {
        self.guard.kill();
    }
}
