//! A configurable HTTP backend that can be told, at runtime, to misbehave.
//!
//! One port serves HTTP/1.1 (with upgrades) and h2c prior knowledge, through
//! hyper-util's auto server. Behaviour is switched through a cheap-to-clone
//! [`BackendHandle`] (`set_mode`, `set_healthy`, `stop`, `restart`) and every
//! request is recorded so tests can assert on what the proxy forwarded.
//!
//! Fixed endpoints ignore the [`Mode`]:
//! - `/healthz`: 200 `ok` (503 after `set_healthy(false)`); counted apart
//!   (`health_checks()`) and not recorded.
//! - `/echo`: streams the request body back.
//! - `/bytes/{n}`: `n` bytes of `abc…z` repeated (see [`expected_bytes`]).
//! - `/headers`: the request headers as a JSON object.
//! - `/ws`: HTTP/1.1 Upgrade to whatever protocol is asked for (101), then
//!   a raw byte echo.
//!
//! Every other path answers according to the current [`Mode`]. Every response
//! carries `x-backend: <name>` so tests can tell which instance answered.

mod io;
mod record;
mod service;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Method;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use record::RecordedRequest;
pub use service::expected_bytes;

use io::{ConnCtl, ConnIo};
use record::Stats;
use service::ConnContext;

/// Response header naming the backend instance that answered.
pub const BACKEND_HEADER: &str = "x-backend";

/// How the backend answers requests outside the fixed endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with the backend's name as body.
    Ok,
    /// This status code, with the backend's name as body.
    Status(u16),
    /// Waits this long, then answers like `Ok`.
    Delay(Duration),
    /// Answers 500 for this fraction (0.0..=1.0) of requests, else like `Ok`.
    FailRatio(f64),
    /// Reads the request, then writes bytes that are not HTTP on the raw
    /// socket and closes it.
    Garbage,
    /// Reads the request head, then drops the connection without answering.
    CloseWithoutResponse,
    /// Never answers; the request only ends when the client gives up or
    /// the backend stops (which drops the connection).
    Hang,
}

/// How to start a [`Backend`].
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Body of `Mode::Ok` answers and value of the `x-backend` header.
    pub name: String,
    /// Where to listen; `None` means 127.0.0.1 on an ephemeral port.
    pub addr: Option<SocketAddr>,
    /// Initial mode.
    pub mode: Mode,
    /// How many recent request heads to keep.
    pub record_limit: usize,
}

impl BackendConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addr: None,
            mode: Mode::Ok,
            record_limit: 256,
        }
    }

    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn record_limit(mut self, limit: usize) -> Self {
        self.record_limit = limit;
        self
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::new("backend")
    }
}

/// A running backend. Stops serving when dropped or on [`Backend::shutdown`];
/// derefs to its [`BackendHandle`] for control and inspection.
#[derive(Debug)]
pub struct Backend {
    handle: BackendHandle,
}

/// Control and inspection of a [`Backend`]; clones share the same backend.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) name: String,
    addr: SocketAddr,
    pub(crate) mode: ArcSwap<Mode>,
    pub(crate) healthy: AtomicBool,
    pub(crate) stats: Stats,
    /// The current listening run, `None` while stopped. Held only to swap.
    run: Mutex<Option<Run>>,
    /// Set once the owning `Backend` is gone: restarting is then refused.
    retired: AtomicBool,
}

/// One bind of the port: its stop signal and its accept loop.
#[derive(Debug)]
struct Run {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Binds and starts serving; panics if the address cannot be bound.
    pub async fn start(config: BackendConfig) -> Backend {
        let what = format!("starting backend {:?} on {:?}", config.name, config.addr);
        Self::try_start(config).await.expect(&what)
    }

    /// Binds and starts serving.
    pub async fn try_start(config: BackendConfig) -> std::io::Result<Backend> {
        let listener = bind(config.addr.unwrap_or((Ipv4Addr::LOCALHOST, 0).into()))?;
        let inner = Arc::new(Inner {
            name: config.name,
            addr: listener.local_addr()?,
            mode: ArcSwap::from_pointee(config.mode),
            healthy: AtomicBool::new(true),
            stats: Stats::new(config.record_limit),
            run: Mutex::new(None),
            retired: AtomicBool::new(false),
        });
        let handle = BackendHandle { inner };
        handle.launch(listener);
        Ok(Backend { handle })
    }

    /// A handle that outlives borrows of the backend (e.g. to move into tasks).
    pub fn handle(&self) -> BackendHandle {
        self.handle.clone()
    }

    /// Stops serving and waits until the port is released and every
    /// connection is closed.
    pub async fn shutdown(self) {
        self.handle.inner.retired.store(true, Ordering::Relaxed);
        self.handle.stop().await;
    }
}

impl Deref for Backend {
    type Target = BackendHandle;

    fn deref(&self) -> &BackendHandle {
        &self.handle
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.handle.inner.retired.store(true, Ordering::Relaxed);
        if let Some(run) = self.handle.take_run() {
            run.shutdown.send_replace(true);
            // Aborting drops the listener and the JoinSet, which aborts the
            // connection tasks; nothing can be awaited in Drop.
            run.task.abort();
        }
    }
}

impl BackendHandle {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bound address; unchanged across `stop`/`restart`.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://<addr><path>`, e.g. `url("/echo")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.inner.addr, path)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.mode.store(Arc::new(mode));
    }

    pub fn mode(&self) -> Mode {
        (**self.inner.mode.load()).clone()
    }

    /// Whether `/healthz` answers 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Requests received, all methods, `/healthz` excluded.
    pub fn requests(&self) -> u64 {
        self.inner.stats.total()
    }

    /// Requests received with this method, `/healthz` excluded.
    pub fn requests_with_method(&self, method: &Method) -> u64 {
        self.inner.stats.by_method(method)
    }

    /// `/healthz` requests received.
    pub fn health_checks(&self) -> u64 {
        self.inner.stats.health_checks()
    }

    /// TCP connections accepted (shows whether a client reuses connections).
    pub fn connections(&self) -> u64 {
        self.inner.stats.connections()
    }

    /// The most recent request heads, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.inner.stats.recent()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.stats.last()
    }

    /// Zeroes every counter and forgets recorded requests.
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
    }

    pub fn is_running(&self) -> bool {
        self.lock_run().is_some()
    }

    /// Simulates the instance dying: unbinds the port and drops every open
    /// connection (in-flight requests fail). Returns once the port is free.
    pub async fn stop(&self) {
        let Some(run) = self.take_run() else {
            return;
        };
        run.shutdown.send_replace(true);
        if let Err(err) = run.task.await {
            tracing::warn!(backend = %self.inner.name, %err, "accept loop ended abnormally");
        }
    }

    /// Simulates the instance coming back: stops it if running, then binds
    /// the same address again. Panics if the port was taken meanwhile.
    pub async fn restart(&self) {
        self.try_restart().await.unwrap_or_else(|err| {
            panic!(
                "rebinding backend {:?} on {}: {err}",
                self.inner.name, self.inner.addr
            )
        });
    }

    pub async fn try_restart(&self) -> std::io::Result<()> {
        self.stop().await;
        if self.inner.retired.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the backend was shut down"));
        }
        let listener = bind(self.inner.addr)?;
        self.launch(listener);
        Ok(())
    }

    fn launch(&self, listener: TcpListener) {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.inner.clone(), listener, rx));
        let previous = self.lock_run().replace(Run { shutdown, task });
        debug_assert!(previous.is_none(), "launch while a run is active");
    }

    fn take_run(&self) -> Option<Run> {
        self.lock_run().take()
    }

    fn lock_run(&self) -> std::sync::MutexGuard<'_, Option<Run>> {
        self.inner
            .run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Binds with SO_REUSEADDR so `restart` can rebind the port while
/// connections of the previous run linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Resolves once `shutdown` turns true or its sender is gone.
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(shutdown.clone()) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(serve_connection(inner.clone(), stream, shutdown.clone()));
            }
            Err(err) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(backend = %inner.name, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, shutdown: watch::Receiver<bool>) {
    // Tests measure latency; Nagle would add 40 ms stalls to small writes.
    let _ = stream.set_nodelay(true);
    inner.stats.connection();
    let ctl = Arc::new(ConnCtl::default());
    let cx = Arc::new(ConnContext {
        inner,
        ctl: ctl.clone(),
        shutdown: shutdown.clone(),
    });
    let io = TokioIo::new(ConnIo::new(stream, ctl.clone()));
    let service = service_fn(move |req| service::handle(cx.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::select! {
        served = conn => {
            if let Err(err) = served {
                tracing::debug!(%err, "backend connection ended with an error");
            }
        }
        // Mode::CloseWithoutResponse: dropping `conn` closes the socket.
        () = ctl.close.notified() => {}
        () = stopped(shutdown) => {}
    }
}
