//! The L4 TCP proxy: each accepted connection is spliced to one endpoint of
//! a cluster. No protocol sniffing: server-speaks-first protocols (MySQL,
//! SMTP, Redis replicas) work without delay.
//!
//! Each connection counts once in the endpoint's requests
//! (`switchyard_endpoint_requests_total`) once the upstream connect
//! succeeded, and the bytes it moves to and from the endpoint in
//! `switchyard_endpoint_bytes_total`.
//!
//! The upstream connection comes from the cluster
//! ([`Cluster::connect_tcp`]): it holds a place under the cluster's
//! `max_connections` for its life (over it, the client's connection is
//! closed and counted as `overloaded`), a failed connect is tried on another
//! endpoint and counts against the failed one in outlier detection.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    time::Instant,
};
use tracing::debug;

use crate::{
    cluster::{Cluster, L4Protocol, L4Stats},
    drain,
    error::ProxyError,
    server::{
        proxy_protocol::{Trusted, client_address},
        tls::TlsAcceptor,
    },
};

/// A TCP listener has no request head to time; a TLS client gets this long
/// to finish its handshake (the HTTP listeners' default header read timeout).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tcp listener sends its connections to, and how. A reload swaps
/// it whole; each connection uses the one current when it is accepted.
pub struct TcpSite {
    pub cluster: Arc<Cluster>,
    pub idle_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
    pub trusted: Option<Trusted>,
}

impl std::fmt::Debug for TcpSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSite")
            .field("cluster", &self.cluster.name())
            .field("idle_timeout", &self.idle_timeout)
            .field("tls", &self.tls.is_some())
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// Accepts and proxies connections until `watch` signals draining; open
/// connections then continue until they close or `watch`'s owner stops
/// waiting.
///
/// With `tls`, each client connection first completes a TLS handshake
/// (within [`TLS_HANDSHAKE_TIMEOUT`]) and the decrypted bytes are spliced to
/// the endpoint (over the cluster's own TLS when it has `tls`, else in
/// plaintext).
pub async fn serve_tcp(
    listener: TcpListener,
    site: Arc<ArcSwap<TcpSite>>,
    mut watch: drain::Watch,
) {
    // Normally done when the listener was built; idempotent.
    site.load().cluster.set_l4(L4Protocol::Tcp);
    let listen_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Connections belong to this task, so aborting it closes them.
    let mut conns = tokio::task::JoinSet::new();
    let mut accept_errors = switchyard_serve::AcceptErrors::default();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    if let Some(pause) = accept_errors.failed(&e) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            },
            Some(_) = conns.join_next() => continue,
            _ = watch.signaled() => break,
        };
        accept_errors.succeeded();
        let current = site.load_full();
        let cluster = current.cluster.clone();
        let idle_timeout = current.idle_timeout;
        let watch = watch.clone();
        let tls = current.tls.clone();
        let trusted = current.trusted.clone();
        conns.spawn(async move {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            // The address the client connected to, for a PROXY header the
            // cluster sends.
            let local = stream.local_addr().unwrap_or(listen_addr);
            // A load balancer's PROXY header comes first, before TLS.
            let peer =
                match client_address(&mut stream, peer, trusted.as_ref(), TLS_HANDSHAKE_TIMEOUT)
                    .await
                {
                    Ok(client) => client,
                    Err(e) => {
                        debug!(%peer, error = %e, "connection refused: PROXY protocol header");
                        return;
                    }
                };
            let done = match tls {
                None => proxy_connection(stream, peer, local, &cluster, idle_timeout, watch).await,
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            proxy_connection(stream, peer, local, &cluster, idle_timeout, watch)
                                .await
                        }
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake not done in time");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = done {
                debug!(%peer, cluster = cluster.name(), error = %e, "tcp proxy failed");
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn proxy_connection<D>(
    mut downstream: D,
    peer: SocketAddr,
    local: SocketAddr,
    cluster: &Cluster,
    idle_timeout: Duration,
    mut watch: drain::Watch,
) -> Result<(), ProxyError>
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    // Admitted by the cluster (max_connections), tried on up to three
    // endpoints, and counted in the endpoint's load and outlier state.
    let upstream = cluster.connect_tcp(None, peer, local).await?;
    let endpoint = upstream.endpoint.clone();
    let activity = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let mut down = Tracked::new(&mut downstream, activity.clone(), epoch, None);
    let mut up_stream = upstream.stream;
    let mut up = Tracked::new(&mut up_stream, activity.clone(), epoch, endpoint.l4());
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 64 * 1024, 64 * 1024);
    tokio::pin!(copy);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            res = &mut copy => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "tcp connection ended with an error");
                }
                return Ok(());
            }
            _ = &mut idle => {
                let last = epoch + Duration::from_millis(activity.load(Ordering::Relaxed));
                if last + idle_timeout <= Instant::now() {
                    debug!(%peer, "tcp connection idle, closing");
                    return Ok(());
                }
                idle.as_mut().reset(last + idle_timeout);
            }
            // Draining leaves open TCP connections alone: the proxy cannot
            // know when a byte stream is at a safe point. The process owner
            // bounds the wait with the shutdown grace period.
            _ = watch.signaled(), if !watch.is_signaled() => {}
        }
    }
}

/// Records the time of the last byte moved in either direction, and on
/// the upstream side the bytes read from (rx) and written to (tx) the
/// endpoint.
struct Tracked<'a, I> {
    io: &'a mut I,
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
    bytes: Option<&'a L4Stats>,
}

impl<'a, I> Tracked<'a, I> {
    fn new(
        io: &'a mut I,
        last_ms: Arc<AtomicU64>,
        epoch: Instant,
        bytes: Option<&'a L4Stats>,
    ) -> Self {
        Self {
            io,
            last_ms,
            epoch,
            bytes,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut *self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.touch();
            if let Some(b) = self.bytes {
                b.received(read);
            }
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut *self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = res {
            self.touch();
            if let Some(b) = self.bytes {
                b.sent(n);
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Binds a TCP listener like the HTTP one.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    crate::server::bind(addr)
}
