//! Per-endpoint connection pools for HTTP/1.1 and HTTP/2.

use std::{
    collections::VecDeque,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_balance::InFlight;
use switchyard_config::{ProxyProtocolVersion, UpstreamProtocol};
use switchyard_policy::{Limit, Permit};
use tokio::{sync::Notify, time::Instant};
use tracing::debug;

use super::{io::open, tls::UpstreamTls};
use crate::{
    body::Body,
    error::{ErrorKind, ProxyError},
    server::proxy_protocol,
};

/// The downstream connection a request came in on, for the PROXY protocol
/// header of a cluster that sends one: the client (as announced to the
/// proxy, when a trusted balancer sent a header itself) and the address it
/// connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddrs {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

/// How a cluster talks to its endpoints.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// Open connections across the cluster (`limits.max_connections`).
    pub connections: Arc<Limit>,
    /// Requests waiting for a connection (`limits.max_pending`).
    pub pending: Arc<Limit>,
    /// Woken whenever a connection becomes idle or closes, for pending
    /// requests.
    pub released: Arc<Notify>,
    /// The cluster's pools that hold idle HTTP/1.1 connections, for a
    /// request at `max_connections` to reclaim a place from.
    idle_pools: Arc<IdlePools>,
    /// The cluster's pools that hold a shared HTTP/2 connection, oldest
    /// first, for a request at `max_connections` to free a place from.
    h2_pools: Arc<IdlePools>,
    /// TLS to the endpoints, when the cluster has `tls`.
    pub tls: Option<UpstreamTls>,
    /// The PROXY protocol header each connection starts with, when the
    /// cluster has `proxy_protocol`. Such a connection names one client, so
    /// it is private to one request: never pooled, never shared.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

impl PoolSettings {
    pub fn new(
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        max_connections: usize,
        max_pending: usize,
    ) -> Self {
        Self {
            protocol,
            connect_timeout,
            idle_timeout,
            max_idle,
            connections: Limit::new(max_connections),
            pending: Limit::new(max_pending),
            released: Arc::new(Notify::new()),
            idle_pools: Arc::default(),
            h2_pools: Arc::default(),
            tls: None,
            proxy_protocol: None,
        }
    }
}

/// The connections to one endpoint.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    settings: Arc<PoolSettings>,
    /// HTTP/1.1 keep-alive connections with no request on them, oldest first.
    /// A plain mutex: it is held for a push or a pop, never across an await.
    idle: Mutex<VecDeque<Idle>>,
    /// The shared HTTP/2 connection, once established.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// Serialises HTTP/2 connection attempts so that a burst of requests
    /// opens one connection rather than one each.
    h2_connecting: tokio::sync::Mutex<()>,
    /// Connections currently open to this endpoint.
    open: Arc<AtomicUsize>,
    /// Whether this pool is in the cluster's `IdlePools` queue.
    queued: AtomicBool,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.inner.addr)
            .field("open", &self.open_connections())
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl Pool {
    pub fn new(addr: SocketAddr, settings: Arc<PoolSettings>) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                settings,
                idle: Mutex::new(VecDeque::new()),
                h2: Mutex::new(None),
                h2_connecting: tokio::sync::Mutex::new(()),
                open: Arc::new(AtomicUsize::new(0)),
                queued: AtomicBool::new(false),
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    pub fn idle_connections(&self) -> usize {
        self.inner.lock_idle().len()
    }

    /// Sends a request and returns the response head; the returned checkin
    /// puts an HTTP/1.1 connection back in the pool once its response body is
    /// complete.
    pub async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), ProxyError> {
        let res = match (
            self.inner.settings.proxy_protocol,
            self.inner.settings.protocol,
        ) {
            // Connecting (TCP, TLS, the HTTP handshake) makes a large
            // future and happens rarely: boxed where it is awaited, so that
            // every request's future does not carry its size (it is moved
            // and copied with the request's state all the way up).
            (Some(_), _) => Box::pin(self.send_private(req)).await,
            (None, UpstreamProtocol::Http1) => self.send_h1(req).await,
            (None, UpstreamProtocol::Http2) => self.send_h2(req).await.map(|r| (r, None)),
        };
        res.map_err(|e| e.at(self.inner.addr))
    }

    /// A place under the cluster's `max_connections` for a new connection.
    fn connection_permit(&self) -> Result<Permit, ProxyError> {
        self.inner
            .settings
            .connections
            .try_acquire()
            .ok_or_else(|| ProxyError::new(ErrorKind::Overloaded))
    }

    /// The PROXY header a new connection for `client` starts with, if the
    /// cluster sends one; a connection with no downstream client (the
    /// library's, a health check) says so with the LOCAL form.
    fn preface(&self, client: Option<&ClientAddrs>) -> Option<Vec<u8>> {
        let version = self.inner.settings.proxy_protocol?;
        Some(match client {
            Some(c) => proxy_protocol::header(version, c.client, c.local),
            None => proxy_protocol::local_header(version),
        })
    }

    /// A request to a cluster that sends the PROXY protocol, on a new
    /// connection of its own that names its client and closes with the
    /// response (HAProxy keeps such connections private to their client
    /// too). At the connection limit it is refused rather than queued.
    async fn send_private(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), ProxyError> {
        let permit = self.connection_permit()?;
        let preface = self.preface(req.extensions().get::<ClientAddrs>());
        let resp = match self.inner.settings.protocol {
            UpstreamProtocol::Http1 => {
                let mut tx = self.connect_h1(permit, preface.as_deref()).await?;
                tx.send_request(req).await
            }
            UpstreamProtocol::Http2 => {
                let mut tx = self.connect_h2(permit, preface.as_deref()).await?;
                tx.send_request(req).await
            }
        };
        // The sender is dropped here: the connection ends with the response.
        resp.map(|r| (r, None)).map_err(ProxyError::from_upstream)
    }

    async fn send_h1(
        &self,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), ProxyError> {
        let settings = &self.inner.settings;
        let mut pending: Option<Permit> = None;
        loop {
            // Try idle connections first; each one is tried at most once.
            while let Some(mut tx) = self.inner.take_idle() {
                if !tx.is_ready() && tx.ready().await.is_err() {
                    continue; // closed while idle
                }
                match tx.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, Some(self.checkin(tx)))),
                    Err(mut e) => match e.take_message() {
                        // Not a byte was written: the connection was stale,
                        // and the request is intact for another one.
                        Some(r) => req = r,
                        None => return Err(ProxyError::from_upstream(e.into_error())),
                    },
                }
            }
            if let Some(permit) = settings.connections.try_acquire() {
                drop(pending);
                let mut tx = Box::pin(self.connect_h1(permit, None)).await?;
                return match tx.send_request(req).await {
                    Ok(resp) => Ok((resp, Some(self.checkin(tx)))),
                    Err(e) => Err(ProxyError::from_upstream(e)),
                };
            }
            // At the cluster's connection limit: wait as a pending request
            // for a connection to come back or close, within max_pending.
            if pending.is_none() {
                pending = Some(
                    settings
                        .pending
                        .try_acquire()
                        .ok_or_else(|| ProxyError::new(ErrorKind::Overloaded))?,
                );
            }
            let released = settings.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.inner.lock_idle().is_empty()
                && settings.connections.current() >= settings.connections.max()
            {
                // Idle connections to other endpoints may be what holds the
                // places: a cluster with more endpoints than
                // `max_connections` would otherwise wait for an idle timeout.
                // Closing the oldest one frees its place once its task ends,
                // which wakes this request (or another waiting one).
                settings.idle_pools.reclaim();
                released.await;
            }
        }
    }

    async fn send_h2(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let mut tx = self.h2_connection().await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    // The shared connection closed before taking the
                    // request: forget it and use a fresh one, once.
                    self.inner.forget_h2(&tx);
                    let mut tx = self.h2_connection().await?;
                    tx.send_request(req)
                        .await
                        .map_err(ProxyError::from_upstream)
                }
                None => Err(ProxyError::from_upstream(e.into_error())),
            },
        }
    }

    /// Opens a dedicated HTTP/1.1 connection that supports protocol upgrades
    /// (WebSocket); it is never pooled. The lease holds the connection's
    /// place under the cluster's connection limit: the caller keeps it for
    /// as long as the upgraded tunnel lives. Nothing is sent yet, so a
    /// failure here leaves the request free to go to another endpoint.
    pub async fn connect_upgrade(
        &self,
        client: Option<&ClientAddrs>,
    ) -> Result<(http1::SendRequest<Body>, ConnectionLease), ProxyError> {
        let permit = self.connection_permit()?;
        let addr = self.inner.addr;
        let stream = self.open(self.preface(client).as_deref()).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::from_upstream(e).at(addr))?;
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        let lease = ConnectionLease {
            permit: Some(permit),
            open: self.inner.open.clone(),
            released: self.inner.settings.released.clone(),
        };
        // Ends when the connection closes or hands its socket to the
        // upgrade; the lease, not this task, tracks the tunnel.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream upgrade connection ended");
            }
        });
        Ok((tx, lease))
    }

    /// A new connection to the endpoint, through the cluster's TLS when it
    /// has one, starting with `preface` (a PROXY protocol header) if given.
    async fn open(&self, preface: Option<&[u8]>) -> Result<super::UpstreamIo, ProxyError> {
        let settings = &self.inner.settings;
        open(
            self.inner.addr,
            settings.connect_timeout,
            settings.tls.as_ref(),
            preface,
        )
        .await
    }

    async fn connect_h1(
        &self,
        permit: Permit,
        preface: Option<&[u8]>,
    ) -> Result<http1::SendRequest<Body>, ProxyError> {
        let addr = self.inner.addr;
        let stream = self.open(preface).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::from_upstream)?;
        let open = self.inner.open.clone();
        let released = self.inner.settings.released.clone();
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "upstream connection ended");
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            released.notify_one();
        });
        Ok(tx)
    }

    async fn h2_connection(&self) -> Result<http2::SendRequest<Body>, ProxyError> {
        if let Some(tx) = self.inner.current_h2() {
            return Ok(tx);
        }
        let _connecting = self.inner.h2_connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(tx) = self.inner.current_h2() {
            return Ok(tx);
        }
        let permit = match self.inner.settings.connections.try_acquire() {
            Some(permit) => permit,
            None => self.h2_place().await?,
        };
        let tx = Box::pin(self.connect_h2(permit, None)).await?;
        *self.inner.lock_h2() = Some(tx.clone());
        let settings = &self.inner.settings;
        settings.h2_pools.push(Arc::downgrade(&self.inner));
        Ok(tx)
    }

    /// A place for a new HTTP/2 connection at the cluster's connection
    /// limit: another endpoint's shared connection (the oldest) is let go,
    /// so that a cluster of more endpoints than `max_connections` can reach
    /// all of them. Its streams in flight finish; the connection closes
    /// after them and frees its place, which this waits for up to the
    /// connect timeout. Refused (`overloaded`) when no other endpoint has
    /// a connection to let go, or the place does not come in time.
    async fn h2_place(&self) -> Result<Permit, ProxyError> {
        let settings = &self.inner.settings;
        let overloaded = || ProxyError::new(ErrorKind::Overloaded);
        let deadline = Instant::now() + settings.connect_timeout;
        let mut released_one = false;
        loop {
            let released = settings.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(permit) = settings.connections.try_acquire() {
                return Ok(permit);
            }
            if !released_one {
                released_one = settings.h2_pools.release_h2(&self.inner);
                if !released_one {
                    return Err(overloaded());
                }
            }
            tokio::time::timeout_at(deadline, released)
                .await
                .map_err(|_| overloaded())?;
        }
    }

    async fn connect_h2(
        &self,
        permit: Permit,
        preface: Option<&[u8]>,
    ) -> Result<http2::SendRequest<Body>, ProxyError> {
        let addr = self.inner.addr;
        let stream = self.open(preface).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Grow windows with the bandwidth-delay product so that large
            // gRPC messages are not throttled by the 64 KiB default.
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            // Detect upstreams that vanished without closing the socket.
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::from_upstream)?;
        let open = self.inner.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let released = self.inner.settings.released.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "upstream h2 connection ended");
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            released.notify_one();
        });
        Ok(tx)
    }

    fn checkin(&self, tx: http1::SendRequest<Body>) -> Checkin {
        Checkin {
            pool: self.inner.clone(),
            tx,
        }
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").field("addr", &self.addr).finish()
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // The lock guards plain data and no code panics while holding it, so
        // a poisoned lock still holds a consistent queue.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_h2(&self) -> std::sync::MutexGuard<'_, Option<http2::SendRequest<Body>>> {
        self.h2.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pops the most recently used idle connection: it is the warmest and the
    /// furthest from the upstream's idle timeout. Expired ones are dropped.
    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let timeout = self.settings.idle_timeout;
        let now = Instant::now();
        let mut idle = self.lock_idle();
        while let Some(i) = idle.pop_back() {
            if now.duration_since(i.since) < timeout && !i.tx.is_closed() {
                return Some(i.tx);
            }
        }
        None
    }

    /// Closes idle connections older than the idle timeout, so that unused
    /// connections do not hold file descriptors.
    fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        let now = Instant::now();
        self.lock_idle()
            .retain(|i| now.duration_since(i.since) < timeout && !i.tx.is_closed());
    }

    fn current_h2(&self) -> Option<http2::SendRequest<Body>> {
        let guard = self.lock_h2();
        guard.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    fn forget_h2(&self, _stale: &http2::SendRequest<Body>) {
        let mut guard = self.lock_h2();
        if guard.as_ref().is_some_and(|tx| tx.is_closed()) {
            *guard = None;
        }
    }
}

/// The pools of one cluster that have had idle HTTP/1.1 connections, in the
/// order they first had one since they were last found empty: the front is
/// the one whose idle connections have waited longest. Each pool is in it
/// at most once (its `queued` flag), and entries of dropped pools (removed
/// endpoints) are pruned as the queue grows, so it is bounded by the pools
/// alive.
///
/// It is also what the idle sweep walks: every pool with an idle connection
/// is in it.
#[derive(Debug, Default)]
struct IdlePools {
    queue: Mutex<IdleQueue>,
    /// The sweep task runs (started by the first idle connection).
    sweeping: AtomicBool,
}

#[derive(Debug, Default)]
struct IdleQueue {
    pools: VecDeque<Weak<Inner>>,
    /// The length at which dropped pools are pruned next.
    prune_at: usize,
}

impl IdlePools {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, pool: Weak<Inner>) {
        let mut q = self.lock();
        q.pools.push_back(pool);
        if q.pools.len() > q.prune_at {
            q.pools.retain(|p| p.strong_count() > 0);
            q.prune_at = (2 * q.pools.len()).max(64);
        }
    }

    /// Starts, once, the task that closes the cluster's idle connections
    /// past `idle_timeout` (checking every half of it), which ends once the
    /// cluster is gone. Started by the first connection put back, so a
    /// cluster that never pools one (a sidecar knows every service, and
    /// uses a few) has no task.
    fn start_sweeping(self: &Arc<Self>, idle_timeout: Duration) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let pools = Arc::downgrade(self);
        let period = (idle_timeout / 2).max(Duration::from_millis(100));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pools) = pools.upgrade() else { return };
                pools.sweep();
            }
        });
    }

    /// Lets go of the shared HTTP/2 connection of the pool that has held
    /// one longest, other than `except`; returns whether there was one.
    /// Dropping the last sender makes hyper close the connection once its
    /// streams in flight end.
    fn release_h2(&self, except: &Inner) -> bool {
        let released = {
            let mut q = self.lock();
            let mut released = None;
            let mut skipped = None;
            while let Some(weak) = q.pools.pop_front() {
                let Some(pool) = weak.upgrade() else { continue };
                if std::ptr::eq(Arc::as_ptr(&pool), except) {
                    skipped = Some(weak);
                    continue;
                }
                if let Some(tx) = pool.lock_h2().take() {
                    released = Some(tx);
                    break;
                }
            }
            if let Some(weak) = skipped {
                q.pools.push_front(weak);
            }
            released
        };
        released.is_some()
    }

    /// Sweeps every pool with idle connections and forgets dropped ones.
    fn sweep(&self) {
        let mut q = self.lock();
        q.pools.retain(|weak| match weak.upgrade() {
            Some(pool) => {
                pool.sweep();
                true
            }
            None => false,
        });
    }

    /// Closes the oldest idle connection of the pool that has waited
    /// longest; returns whether there was one.
    fn reclaim(&self) -> bool {
        let closed = {
            let mut q = self.lock();
            let mut closed = None;
            while let Some(weak) = q.pools.pop_front() {
                let Some(pool) = weak.upgrade() else { continue };
                // Cleared before the look, so that a connection put back
                // meanwhile queues the pool again.
                pool.queued.store(false, Ordering::Release);
                let mut idle = pool.lock_idle();
                let Some(oldest) = idle.pop_front() else {
                    continue;
                };
                if !idle.is_empty() && !pool.queued.swap(true, Ordering::AcqRel) {
                    q.pools.push_back(weak);
                }
                closed = Some(oldest);
                break;
            }
            closed
        };
        // Dropped outside the locks: the connection's task sees its last
        // sender gone, closes the socket and frees its place.
        closed.is_some()
    }
}

/// A dedicated upstream connection's place under the cluster's connection
/// limit; dropping it frees the place and wakes a request waiting for one.
#[derive(Debug)]
pub struct ConnectionLease {
    permit: Option<Permit>,
    open: Arc<AtomicUsize>,
    released: Arc<Notify>,
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        // Freed before the wake-up, so the woken request finds the place.
        drop(self.permit.take());
        self.released.notify_one();
    }
}

/// An HTTP/1.1 connection lent to one request; goes back to the pool when the
/// response body is complete.
pub struct Checkin {
    pool: Arc<Inner>,
    tx: http1::SendRequest<Body>,
}

impl Checkin {
    fn put_back(self) {
        if self.tx.is_closed() {
            return;
        }
        {
            let mut idle = self.pool.lock_idle();
            if idle.len() < self.pool.settings.max_idle {
                idle.push_back(Idle {
                    tx: self.tx,
                    since: Instant::now(),
                });
            }
        }
        // A pool enters the queue once and stays until a reclaim finds it
        // empty: one relaxed load per request otherwise.
        if !self.pool.queued.load(Ordering::Relaxed)
            && !self.pool.queued.swap(true, Ordering::AcqRel)
        {
            let settings = &self.pool.settings;
            settings.idle_pools.push(Arc::downgrade(&self.pool));
            settings.idle_pools.start_sweeping(settings.idle_timeout);
        }
        self.pool.settings.released.notify_one();
    }
}

impl fmt::Debug for Checkin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkin")
            .field("addr", &self.pool.addr)
            .finish()
    }
}

/// Lives as long as an upstream response body: ends the endpoint's in-flight
/// count and, on a complete body, returns the connection to its pool.
#[derive(Debug)]
pub struct ResponseGuard {
    checkin: Option<Checkin>,
    _in_flight: InFlight,
    _request: Option<Permit>,
    outcome: Option<crate::cluster::DeferredOutcome>,
}

impl ResponseGuard {
    pub(crate) fn new(
        checkin: Option<Checkin>,
        in_flight: InFlight,
        request: Option<Permit>,
    ) -> Self {
        Self {
            checkin,
            _in_flight: in_flight,
            _request: request,
            outcome: None,
        }
    }

    /// Records the endpoint's outlier outcome from the trailers.
    pub(crate) fn defer_outcome(&mut self, outcome: crate::cluster::DeferredOutcome) {
        self.outcome = Some(outcome);
    }

    /// The response's trailers went by.
    pub(crate) fn trailers(&mut self, t: &http::HeaderMap) {
        if let Some(o) = self.outcome.take() {
            o.trailers(t);
        }
    }

    /// The body was read to its end: the connection can serve again.
    pub(crate) fn complete(mut self) {
        if let Some(c) = self.checkin.take() {
            c.put_back();
        }
    }
}
