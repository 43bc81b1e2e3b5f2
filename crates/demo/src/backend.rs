//! The demo's backend services: small HTTP and gRPC servers on loopback whose
//! behaviour a scenario changes while load runs.
//!
//! Both kinds share one accept loop (hyper-util's auto server, so one port
//! speaks HTTP/1.1 and h2c) and one [`BackendHandle`]; only the per-request
//! handler differs. Serving gRPC through the same loop rather than tonic's
//! `Server` is what makes [`BackendHandle::stop`] a real crash for both kinds:
//! the listener closes and every open connection is dropped at once.
//!
//! - HTTP: `GET /api/...` answers 200 with `{"backend": name, "path": path}`;
//!   `/healthz` answers 200 `ok` (for health checks, not counted); anything
//!   else is 404.
//! - gRPC: `switchyard.demo.v1.Inventory/GetItem` answers an `Item` naming
//!   the backend in `served_by`.
//!
//! Every counted answer waits a random latency in the configured range first,
//! so the balancer's latency view has something realistic to work with.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codegen::Service as _;

use crate::pb::inventory_server::{Inventory, InventoryServer};
use crate::pb::{GetItemRequest, Item};

/// Default answer latency: a few milliseconds, like a service doing a cache
/// lookup; the jitter keeps endpoints distinguishable to a latency-aware
/// balancer without making the demo slow.
pub const DEFAULT_LATENCY: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_millis(5));

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and h2c on one port, answering `GET /api/...`.
    Http,
    /// gRPC (HTTP/2), serving `switchyard.demo.v1.Inventory`.
    Grpc,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        })
    }
}

/// A running backend, owned by the [`Fleet`]. Dropping it kills it.
#[derive(Debug)]
pub struct Backend {
    handle: BackendHandle,
}

/// Control and inspection of one backend; clones share it. This is what
/// scenario events act on.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    protocol: Protocol,
    /// Fixed for the backend's life, so a restart comes back where the
    /// proxy's static discovery expects it.
    addr: SocketAddr,
    served: AtomicU64,
    /// Answer latency range in microseconds, `(min, max)`.
    latency_us: Mutex<(u64, u64)>,
    /// The current listening run; `None` while stopped.
    run: Mutex<Option<Run>>,
}

/// One bind of the port: its stop signal and its accept loop.
#[derive(Debug)]
struct Run {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving; must be
    /// called within a Tokio runtime.
    pub fn start(name: impl Into<String>, protocol: Protocol) -> std::io::Result<Backend> {
        let listener = bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let (min, max) = DEFAULT_LATENCY;
        let inner = Arc::new(Inner {
            name: name.into(),
            protocol,
            addr: listener.local_addr()?,
            served: AtomicU64::new(0),
            latency_us: Mutex::new((micros(min), micros(max))),
            run: Mutex::new(None),
        });
        let handle = BackendHandle { inner };
        handle.launch(listener);
        Ok(Backend { handle })
    }

    pub fn handle(&self) -> BackendHandle {
        self.handle.clone()
    }
}

impl std::ops::Deref for Backend {
    type Target = BackendHandle;

    fn deref(&self) -> &BackendHandle {
        &self.handle
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(run) = self.handle.lock_run().take() {
            run.stop.send_replace(true);
            // Nothing can be awaited in Drop; aborting drops the listener and
            // the connection set, which aborts every connection.
            run.task.abort();
        }
    }
}

impl BackendHandle {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Requests answered (counted ones only: `/api/...` and `GetItem`).
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::Relaxed)
    }

    pub fn is_running(&self) -> bool {
        self.lock_run().is_some()
    }

    /// Every answer from now on waits a uniformly random time in `min..=max`.
    pub fn set_latency(&self, min: Duration, max: Duration) {
        let (min, max) = (micros(min), micros(max));
        *lock(&self.inner.latency_us) = (min.min(max), min.max(max));
    }

    pub fn latency(&self) -> (Duration, Duration) {
        let (min, max) = *lock(&self.inner.latency_us);
        (Duration::from_micros(min), Duration::from_micros(max))
    }

    /// Simulates a crash: unbinds the port and drops every open connection,
    /// so in-flight requests fail. Returns once the port is free.
    pub async fn stop(&self) {
        let Some(run) = self.lock_run().take() else {
            return;
        };
        run.stop.send_replace(true);
        if let Err(err) = run.task.await {
            // A panicked accept loop is a bug here; the port is free anyway.
            tracing::warn!(backend = %self.inner.name, %err, "accept loop ended abnormally");
        }
    }

    /// Brings a stopped backend back on the same address (a restart). Does
    /// nothing if it is running.
    pub async fn start(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = bind(self.inner.addr)?;
        self.launch(listener);
        Ok(())
    }

    fn launch(&self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.inner.clone(), listener, stopped));
        *self.lock_run() = Some(Run { stop, task });
    }

    fn lock_run(&self) -> MutexGuard<'_, Option<Run>> {
        lock(&self.inner.run)
    }
}

/// The demo's backends, in start order: HTTP ones (`api-N`), then gRPC ones
/// (`inventory-N`).
#[derive(Debug, Default)]
pub struct Fleet {
    backends: Vec<Backend>,
}

impl Fleet {
    /// Starts `http` HTTP backends and `grpc` gRPC backends.
    pub fn start(http: usize, grpc: usize) -> Result<Fleet, crate::DemoError> {
        let mut fleet = Fleet::default();
        let wanted = (1..=http)
            .map(|i| (format!("api-{i}"), Protocol::Http))
            .chain((1..=grpc).map(|i| (format!("inventory-{i}"), Protocol::Grpc)));
        for (name, protocol) in wanted {
            let backend = Backend::start(name.clone(), protocol)
                .map_err(|source| crate::DemoError::Backend { name, source })?;
            fleet.backends.push(backend);
        }
        Ok(fleet)
    }

    pub fn handles(&self) -> Vec<BackendHandle> {
        self.backends.iter().map(Backend::handle).collect()
    }

    pub fn get(&self, name: &str) -> Option<BackendHandle> {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .map(Backend::handle)
    }

    /// Addresses of the backends speaking `protocol`, for the proxy config.
    pub fn addrs(&self, protocol: Protocol) -> Vec<SocketAddr> {
        self.backends
            .iter()
            .filter(|b| b.protocol() == protocol)
            .map(|b| b.addr())
            .collect()
    }

    /// Stops every backend and waits until their ports are free.
    pub async fn shutdown(self) {
        for backend in &self.backends {
            backend.stop().await;
        }
    }
}

/// Binds with SO_REUSEADDR so a restart can rebind the port while
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

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(serve_connection(inner.clone(), stream));
            }
            // E.g. EMFILE: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    drop(listener);
    // Aborts every connection: a crash, not a drain.
    conns.shutdown().await;
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    // Latencies are a few ms; Nagle would add 40 ms stalls to small writes.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (a client that went away) are routine and need no
    // reporting: the load generator accounts for every failed request.
    let _ = match inner.protocol {
        Protocol::Http => {
            let svc = service_fn(move |req| answer_http(inner.clone(), req));
            builder.serve_connection(io, svc).await
        }
        Protocol::Grpc => {
            let server = InventoryServer::new(InventoryService { inner });
            let svc = service_fn(move |req: Request<Incoming>| server.clone().call(req));
            builder.serve_connection(io, svc).await
        }
    };
}

async fn answer_http(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path();
    let (status, content_type, body) = if path == "/healthz" {
        (StatusCode::OK, "text/plain", Bytes::from_static(b"ok"))
    } else if path.starts_with("/api/") && req.method() == Method::GET {
        inner.pause().await;
        let body = serde_json::json!({ "backend": inner.name, "path": path });
        inner.served.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::OK,
            "application/json",
            Bytes::from(body.to_string()),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found"),
        )
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// The gRPC `Inventory` service of one backend.
#[derive(Debug)]
struct InventoryService {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn get_item(
        &self,
        request: tonic::Request<GetItemRequest>,
    ) -> Result<tonic::Response<Item>, tonic::Status> {
        let sku = request.into_inner().sku;
        self.inner.pause().await;
        // A stable fake stock level, so repeated lookups look consistent.
        let quantity = sku
            .bytes()
            .fold(7u32, |acc, b| acc.wrapping_mul(31) ^ u32::from(b))
            % 100;
        self.inner.served.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(Item {
            name: format!("item {sku}"),
            sku,
            quantity,
            served_by: self.inner.name.clone(),
        }))
    }
}

impl Inner {
    /// Waits the backend's answer latency.
    async fn pause(&self) {
        let (min, max) = *lock(&self.latency_us);
        let wait = fastrand::u64(min..=max);
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Locks ignoring poisoning: every value guarded here is valid whatever a
/// panicking holder was doing (a pair of numbers, an optional run).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
