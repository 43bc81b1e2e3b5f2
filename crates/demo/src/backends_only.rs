//! `switchyard demo --backends-only`: the demo's HTTP backends alone, on the
//! fixed loopback ports `examples/proxy.toml` routes to, so that a newcomer's
//! first `switchyard proxy --config examples/proxy.toml` has something to
//! proxy to.
//!
//! They are the demo's own backends (see [`crate::backend`]): `GET /api/...`
//! answers 200 with a JSON body naming the instance, `/healthz` answers `ok`
//! for the example's health checks, anything else 404. Nothing else of the
//! demo runs: no registry, no proxy, no load, no faults.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::backend::{Fleet, Protocol};
use crate::{DemoError, say};

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The instances and their addresses: the `api` cluster's static endpoints
/// in `examples/proxy.toml` (a test keeps the two in step).
pub const EXAMPLE_BACKENDS: [(&str, SocketAddr); 2] =
    [("api-1", loopback(9001)), ("api-2", loopback(9002))];

/// The example's `public` listener, for the hint printed at start.
pub const EXAMPLE_PROXY: SocketAddr = loopback(8080);

/// What the backends did, for the closing line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub name: String,
    pub address: SocketAddr,
    /// `GET /api/...` requests answered.
    pub requests: u64,
}

/// Starts [`EXAMPLE_BACKENDS`], prints what they serve, and serves until
/// `stop` resolves or `duration` (if any) has passed; then stops them and
/// returns their counts. Fails at once if a port is in use.
pub async fn run(
    duration: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> Result<Vec<Served>, DemoError> {
    serve(&EXAMPLE_BACKENDS, duration, stop).await
}

/// [`run`] on explicit names and addresses.
pub async fn serve(
    backends: &[(&str, SocketAddr)],
    duration: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> Result<Vec<Served>, DemoError> {
    let fleet = Fleet::default();
    for (name, addr) in backends {
        if let Err(err) = fleet.add_at((*name).to_owned(), Protocol::Http, *addr) {
            fleet.shutdown().await;
            return Err(err);
        }
    }
    say("switchyard demo --backends-only: the HTTP backends examples/proxy.toml routes to");
    for backend in fleet.handles() {
        say(&format!(
            "  {:<6} http://{}   GET /api/... answers 200 naming the instance; /healthz answers ok",
            backend.name(),
            backend.addr()
        ));
    }
    say(&format!(
        "  next, in another terminal: switchyard proxy --config examples/proxy.toml\n  \
         then: curl http://{EXAMPLE_PROXY}/api/hello\n  \
         serving until Ctrl-C{}",
        duration.map_or_else(String::new, |d| format!(" or for {:.1}s", d.as_secs_f64()))
    ));
    let timeout = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop => {}
        () = timeout => {}
    }
    let served: Vec<Served> = fleet
        .handles()
        .iter()
        .map(|b| Served {
            name: b.name().to_owned(),
            address: b.addr(),
            requests: b.served(),
        })
        .collect();
    fleet.shutdown().await;
    let counts: Vec<String> = served
        .iter()
        .map(|s| format!("{} answered {}", s.name, s.requests))
        .collect();
    say(&format!("  stopped: {}", counts.join(", ")));
    Ok(served)
}
