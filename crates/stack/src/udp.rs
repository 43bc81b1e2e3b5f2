//! The L4 UDP proxy: datagrams from each client address form a flow that is
//! pinned to one endpoint until it has been quiet for the session timeout.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use switchyard_balance::Target;
use tokio::{net::UdpSocket, time::Instant};
use tracing::{debug, warn};

use crate::{cluster::Cluster, drain};

/// The largest UDP payload (65,535 minus the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Flows tracked at once; beyond this, datagrams from new clients are
/// dropped (and logged) rather than letting the flow table grow unbounded.
const MAX_FLOWS: usize = 16_384;

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// Binds a UDP listener.
pub async fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Relays datagrams until `watch` signals draining.
pub async fn serve_udp(
    socket: UdpSocket,
    cluster: Arc<Cluster>,
    session_timeout: Duration,
    mut watch: drain::Watch,
) {
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
        let upstream = match existing {
            Some(u) => u,
            None => {
                match open_flow(&socket, &flows, &cluster, client, session_timeout, &watch).await {
                    Some(u) => u,
                    None => continue,
                }
            }
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(%client, error = %e, "udp send upstream failed");
        }
    }
}

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<UdpSocket>>> {
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
) -> Option<Arc<UdpSocket>> {
    if lock(flows).len() >= MAX_FLOWS {
        warn!(%client, "udp flow table full, dropping datagram");
        return None;
    }
    let endpoint = match cluster.pick(None, &[]) {
        Ok(e) => e,
        Err(e) => {
            debug!(%client, error = %e, "no udp endpoint");
            return None;
        }
    };
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
    let upstream = Arc::new(upstream);
    lock(flows).insert(client, upstream.clone());
    let listener = listener.clone();
    let flows = flows.clone();
    let relay = upstream.clone();
    let mut watch = watch.clone();
    tokio::spawn(async move {
        // The flow counts as one in-flight unit for least-request balancing.
        let _in_flight = endpoint.load().start();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut deadline = Instant::now() + timeout;
        loop {
            tokio::select! {
                r = relay.recv(&mut buf) => match r {
                    Ok(n) => {
                        deadline = Instant::now() + timeout;
                        if let Err(e) = listener.send_to(&buf[..n], client).await {
                            debug!(%client, error = %e, "udp send downstream failed");
                        }
                    }
                    // E.g. ICMP port unreachable from a dead endpoint.
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
    Some(upstream)
}
