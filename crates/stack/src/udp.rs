//! The L4 UDP proxy: datagrams from each client address form a flow that is
//! pinned to one endpoint until it has been quiet for the session timeout.
//!
//! Each flow (session) counts once in the endpoint's requests
//! (`switchyard_endpoint_requests_total`) and as one in flight while it
//! lives; the payload bytes relayed to and from the endpoint count in
//! `switchyard_endpoint_bytes_total`.
//!
//! Sessions come from the cluster ([`Cluster::open_udp_session`]): each
//! holds a place under the cluster's `max_connections` (over it, the new
//! client's datagrams are dropped and counted as `overloaded`), and the
//! first reply, or an ICMP port unreachable, feeds outlier detection.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use switchyard_balance::Target;
use tokio::{net::UdpSocket, time::Instant};
use tracing::{debug, warn};

use crate::{
    cluster::{Cluster, Endpoint, L4Protocol},
    drain,
};

/// The largest UDP payload (65,535 minus the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Flows tracked at once; beyond this, datagrams from new clients are
/// dropped (and logged) rather than letting the flow table grow unbounded.
const MAX_FLOWS: usize = 16_384;

/// One client's session: the upstream socket connected to its endpoint.
#[derive(Clone)]
struct Flow {
    socket: Arc<UdpSocket>,
    endpoint: Arc<Endpoint>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

/// Binds a UDP listener.
pub async fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Where a udp listener sends its sessions. A reload swaps it whole; a
/// session keeps the endpoint and timeout it started with, new sessions use
/// the current site.
#[derive(Debug)]
pub struct UdpSite {
    pub cluster: Arc<Cluster>,
    pub session_timeout: Duration,
}

/// Relays datagrams until `watch` signals draining.
pub async fn serve_udp(socket: UdpSocket, site: Arc<ArcSwap<UdpSite>>, mut watch: drain::Watch) {
    // Normally done when the listener was built; idempotent.
    site.load().cluster.set_l4(L4Protocol::Udp);
    let socket = Arc::new(socket);
    let flows: Flows = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on some platforms; they concern
                    // one peer, not the listener.
                    debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
            _ = watch.signaled() => return,
        };
        let existing = lock(&flows).get(&client).cloned();
        let flow = match existing {
            Some(f) => f,
            None => {
                let current = site.load_full();
                let (cluster, timeout) = (&current.cluster, current.session_timeout);
                match open_flow(&socket, &flows, cluster, client, timeout, &watch).await {
                    Some(f) => f,
                    None => continue,
                }
            }
        };
        match flow.socket.send(&buf[..n]).await {
            Ok(sent) => {
                if let Some(l4) = flow.endpoint.l4() {
                    l4.sent(sent);
                }
            }
            Err(e) => debug!(%client, error = %e, "udp send upstream failed"),
        }
    }
}

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Flow>> {
    // Plain map operations cannot leave it inconsistent, even on a panic.
    flows.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates a flow for a new client: an upstream socket connected to a picked
/// endpoint, and a task relaying replies until the flow goes quiet.
async fn open_flow(
    listener: &Arc<UdpSocket>,
    flows: &Flows,
    cluster: &Arc<Cluster>,
    client: SocketAddr,
    timeout: Duration,
    watch: &drain::Watch,
) -> Option<Flow> {
    if lock(flows).len() >= MAX_FLOWS {
        warn!(%client, "udp flow table full, dropping datagram");
        return None;
    }
    // Admitted by the cluster (a place under max_connections for the
    // session's life) and counted as in flight on its endpoint.
    let session = match cluster.open_udp_session() {
        Ok(s) => s,
        Err(e) => {
            debug!(%client, error = %e, "no udp session");
            return None;
        }
    };
    let endpoint = session.endpoint.clone();
    let local: SocketAddr = if endpoint.addr().is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open an upstream udp socket");
            return None;
        }
    };
    if let Err(e) = upstream.connect(endpoint.addr()).await {
        debug!(endpoint = %endpoint.addr(), error = %e, "udp connect failed");
        return None;
    }
    let flow = Flow {
        socket: Arc::new(upstream),
        endpoint,
    };
    lock(flows).insert(client, flow.clone());
    let listener = listener.clone();
    let flows = flows.clone();
    let relay = flow.socket.clone();
    let endpoint = flow.endpoint.clone();
    let mut watch = watch.clone();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        // The session (counted when it was opened, before the first datagram
        // goes out) holds its place and in-flight unit until the flow ends.
        let _session = session;
        let mut answered = false;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut deadline = Instant::now() + timeout;
        loop {
            tokio::select! {
                r = relay.recv(&mut buf) => match r {
                    Ok(n) => {
                        deadline = Instant::now() + timeout;
                        if !answered {
                            answered = true;
                            cluster.udp_outcome(&endpoint, true);
                        }
                        if let Some(l4) = endpoint.l4() {
                            l4.received(n);
                        }
                        if let Err(e) = listener.send_to(&buf[..n], client).await {
                            debug!(%client, error = %e, "udp send downstream failed");
                        }
                    }
                    // ICMP port unreachable: nothing listens on the endpoint.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        debug!(%client, endpoint = %endpoint.addr(), "udp endpoint unreachable");
                        cluster.udp_outcome(&endpoint, false);
                    }
                    Err(e) => debug!(%client, error = %e, "udp receive from upstream failed"),
                },
                _ = tokio::time::sleep_until(deadline) => break,
                // Datagrams carry no request boundaries to wait for: a flow
                // ends as soon as the proxy drains.
                _ = watch.signaled() => break,
            }
        }
        lock(&flows).remove(&client);
    });
    Some(flow)
}
