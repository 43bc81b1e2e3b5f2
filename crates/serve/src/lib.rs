//! Serving Switchyard's control-plane HTTP — the admin API and the registry
//! — with the limits a listener exposed to untrusted clients needs.
//!
//! `axum::serve` has no connection limit and no timeouts: every accepted
//! connection is kept until the client closes it. Ten thousand idle
//! connections to the admin port used every file descriptor of the process,
//! so the data plane could not accept and `/ready` stopped answering.
//! [`serve`] follows the data plane's server (`switchyard-stack`'s
//! `server` module) instead:
//!
//! - **A connection limit.** A semaphore permit is taken *before* each
//!   accept, so at the limit the accept loop waits and new clients wait in
//!   the kernel's accept backlog (see [`bind`]), costing this process no
//!   descriptor and no memory. Other listeners have their own limits and
//!   keep working.
//! - **A first-request timeout.** A connection that sends no request within
//!   the header read timeout of its accept — nothing at all, half an HTTP/2
//!   preface, a preface and no stream — is closed, not held.
//! - **A header read timeout** for HTTP/1.1 request heads (slowloris).
//!   hyper also runs it while it waits for the next request on a keep-alive
//!   connection, so an idle HTTP/1.1 connection closes after it.
//! - **An idle timeout.** A connection with no request in flight for this
//!   long is closed gracefully (HTTP/2 GOAWAY; a client that does not
//!   complete the close within the header read timeout is dropped, since
//!   hyper would wait for its answer to a ping). A request counts as in
//!   flight until its response body has been sent or dropped — a guard that
//!   travels with the body, so that an HTTP/2 stream the client reset does
//!   not leak the count — and long-lived responses (the admin's `/events`
//!   feed, the registry's blocking queries) are never idle.
//! - **A write stall timeout.** A response the client stops reading (the
//!   socket's buffers full) would hold the connection for as long as the
//!   response lasts, forever for a feed; a connection whose writes have made
//!   no progress for the idle timeout is closed.
//! - **HTTP/2 limits**: concurrent streams per connection, the header list
//!   size, and pings that find clients that vanished.
//! - **Graceful shutdown** on a future: stop accepting, then each
//!   connection finishes its in-flight requests (HTTP/2 gets GOAWAY,
//!   HTTP/1.1 closes after the current response).
//! - **Accept errors** (EMFILE when the process is out of descriptors) back
//!   off briefly, doubling up to a second, instead of spinning; a burst of
//!   them is logged once when it starts and once when accepting recovers.
//!
//! HTTP/1.1 and h2c (prior knowledge) are served on the same port by
//! hyper-util's auto builder. Protocol upgrades are not served: an upgraded
//! connection would leave hyper, and the permit that counts it, behind.
//!
//! # Defaults
//! [`Settings::default`] suits a small operator endpoint (the admin API);
//! each field's comment says why its value. The registry raises
//! `max_connections` (every proxy holds a blocking query open there).
//!
//! # File descriptors
//! [`fd`] raises the soft `RLIMIT_NOFILE` to the hard limit and checks
//! that the connection limits of a process, plus a reserve, fit below it.

mod conn;
pub mod fd;

use std::{
    error::Error as StdError,
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

/// What a control-plane listener allows its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Default 256: connections served at once; at the limit the listener
    /// stops accepting and new clients wait in the kernel backlog until one
    /// closes. An operator endpoint sees a handful of scrapers, probes and
    /// dashboards; 256 leaves room for many of each while bounding what an
    /// attacker can take (256 descriptors, a few MiB of buffers).
    pub max_connections: usize,
    /// Default 10s: a connection must send its first request, and an
    /// HTTP/1.1 client each request head, within this. Generous for a
    /// client across the world, short enough that a connection that sends
    /// nothing frees its slot quickly (the data plane's default too).
    pub header_read_timeout: Duration,
    /// Default 60s: a connection with no request in flight is closed after
    /// this (HTTP/2 GOAWAY; HTTP/1.1 connections already close after the
    /// header read timeout, which hyper runs between requests). Longer than
    /// Prometheus' usual 15–30s scrape interval, so a scraper's HTTP/2
    /// connection is reused; it also bounds a write stall (a client that
    /// stopped reading a response).
    pub idle_timeout: Duration,
    /// Default 100: concurrent HTTP/2 streams per connection, the minimum
    /// the HTTP/2 RFC recommends and what most servers use.
    pub max_concurrent_streams: u32,
    /// Default 64 KiB: the size of a request head (HTTP/1.1 read buffer,
    /// HTTP/2 header list); larger heads are refused (431). Far above what
    /// the admin and registry APIs need, it bounds the memory a connection
    /// can make the process hold (hyper's own default is about 400 KiB).
    pub max_header_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// HTTP/2 pings every 30s, and a connection whose peer does not answer one
/// within 10s is closed: a client that vanished while a long response (a
/// feed, a blocking query) was in flight is found within 40s.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel's accept backlog: where clients wait while the listener is
/// at its connection limit. Linux caps it at `net.core.somaxconn` (4096
/// by default since 5.4).
pub const BACKLOG: i32 = 4096;

/// Binds a listening socket with `SO_REUSEADDR` (a restart does not wait
/// for TIME_WAIT) and a deep accept backlog ([`BACKLOG`]).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for every connection to finish its in-flight
/// requests (HTTP/2 gets GOAWAY, HTTP/1.1 closes after the response in
/// progress). Long responses must end on their own at shutdown (the
/// admin's feed and the registry's blocking queries do); dropping the
/// returned future closes every connection at once.
///
/// `service` is any `tower::Service` for hyper requests, e.g.
/// `axum::Router::into_service()`; it is cloned per request.
///
/// Accept errors never end serving (they are retried with a backoff), so
/// this returns `Ok` — the `io::Result` is that of `axum::serve`, which it
/// replaces.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_tls(listener, None, service, settings, shutdown).await
}

/// Like [`serve`], over TLS when `tls` is given: each connection completes
/// its handshake within `header_read_timeout` (a client that stalls it is
/// dropped like a silent one), then HTTP/2 is chosen by ALPN.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(builder(&settings));
    let limit = Arc::new(Semaphore::new(
        settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let timeouts = conn::Timeouts {
        first_request: settings.header_read_timeout.min(settings.idle_timeout),
        idle: settings.idle_timeout,
    };
    // Tells every connection to finish gracefully; dropping the sender
    // (this future dropped) says the same, but then the `JoinSet` aborts
    // them anyway.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        // Waiting for a permit before accepting pushes back on clients via
        // the kernel backlog instead of taking descriptors without bound.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next() => continue,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next() => continue,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    drop(permit);
                    if let Some(pause) = errors.failed(&e) {
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            },
        };
        errors.succeeded();
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "set_nodelay failed");
        }
        let service = service.clone();
        let builder = builder.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        let handshake_timeout = settings.header_read_timeout;
        conns.spawn(async move {
            match tls {
                None => conn::serve(stream, peer, service, &builder, timeouts, stop).await,
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            conn::serve(stream, peer, service, &builder, timeouts, stop).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            debug!(%peer, "TLS handshake not done within the header read timeout")
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    // Stop accepting at once (clients in the backlog are refused); the open
    // connections finish their requests.
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// The hyper settings for a listener.
fn builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper requires a read buffer of at least 8 KiB.
        .max_buf_size(settings.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    b
}

/// Accept errors of the current burst: the first is logged as a warning,
/// the others counted until an accept succeeds again, with a pause that
/// grows per error in a row. Every listener's accept loop uses it (the data
/// plane's too), so that a descriptor shortage cannot flood the log.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    /// When the burst began and how many errors it had.
    burst: Option<(Instant, u64)>,
    pause: Duration,
}

/// The first pause after an accept error, doubled per error in a row up to
/// [`MAX_ACCEPT_PAUSE`]: short enough that accepting resumes soon after a
/// descriptor is free, long enough not to spin on EMFILE.
const MIN_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

impl AcceptErrors {
    /// Records a failed accept; returns how long to pause before the next,
    /// or `None` for errors that concern one connection only (it was reset
    /// while in the backlog): the next accept may succeed at once.
    pub fn failed(&mut self, e: &io::Error) -> Option<Duration> {
        if is_connection_error(e) {
            debug!(error = %e, "accepted connection was already gone");
            return None;
        }
        match &mut self.burst {
            Some((_, n)) => *n += 1,
            None => {
                warn!(error = %e, "accept failed; pausing the listener until accepting works again");
                self.burst = Some((Instant::now(), 1));
                self.pause = MIN_ACCEPT_PAUSE;
            }
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(MAX_ACCEPT_PAUSE);
        Some(pause)
    }

    /// Records a successful accept, ending a burst (logged once).
    pub fn succeeded(&mut self) {
        if let Some((since, n)) = self.burst.take() {
            info!(
                failed_accepts = n,
                after_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "accepting again"
            );
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
