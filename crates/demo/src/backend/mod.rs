//! The demo's backend services: small HTTP and gRPC servers on loopback whose
//! behaviour a scenario changes while load runs.
//!
//! Both kinds share one accept loop (hyper-util's auto server, so one port
//! speaks HTTP/1.1 and h2c) and one [`BackendHandle`]; only the per-request
//! handler differs (see `serve.rs`). Serving gRPC through the same loop rather
//! than tonic's `Server` is what makes [`BackendHandle::stop`] a real crash
//! for both kinds: the listener closes and every open connection is dropped
//! at once.
//!
//! - HTTP: `GET /api/...` answers 200 with `{"backend": name, "path": path}`;
//!   `/healthz` answers 200 `ok` (for health checks, not counted); anything
//!   else is 404.
//! - gRPC: `switchyard.demo.v1.Inventory/GetItem` answers an `Item` naming
//!   the backend in `served_by`; `grpc.health.v1.Health` answers SERVING for
//!   the whole server (`""`) for as long as the backend runs.
//!
//! Every counted answer waits a random latency in the configured range first,
//! so the balancer's latency view has something realistic to work with. With
//! an error rate set ([`BackendHandle::set_error_rate`]), that share of
//! counted requests fails instead: HTTP 503, gRPC `UNAVAILABLE` — the
//! answers of an overloaded or half-broken instance that health checks do
//! not catch, so only passive detection and retries can.

mod serve;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

/// Default answer latency: a few milliseconds, like a service doing a cache
/// lookup; the jitter keeps endpoints distinguishable to a latency-aware
/// balancer without making the demo slow.
pub const DEFAULT_LATENCY: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_millis(5));

/// Error rates are kept in parts per million: fine enough for any rate a
/// scenario asks for, and an integer fits an atomic.
const PPM: f64 = 1_000_000.0;

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
    /// Requests answered successfully.
    served: AtomicU64,
    /// Requests failed on purpose (the error rate).
    failed: AtomicU64,
    /// `served` when the backend last (re)started, so a report can tell
    /// whether traffic came back after a restart.
    served_at_start: AtomicU64,
    restarts: AtomicU32,
    /// Answer latency range in microseconds, `(min, max)`.
    latency_us: Mutex<(u64, u64)>,
    /// Share of counted requests to fail, in parts per million.
    error_ppm: AtomicU32,
    /// The `grpc.health.v1` statuses; SERVING for `""` from the start.
    health: HealthReporter,
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
        Backend::start_at(name, protocol, (Ipv4Addr::LOCALHOST, 0).into())
    }

    /// Binds `addr` (port 0: an ephemeral one) and starts serving; must be
    /// called within a Tokio runtime. Fails if the port is in use.
    pub fn start_at(
        name: impl Into<String>,
        protocol: Protocol,
        addr: SocketAddr,
    ) -> std::io::Result<Backend> {
        let listener = bind(addr)?;
        let (min, max) = DEFAULT_LATENCY;
        let inner = Arc::new(Inner {
            name: name.into(),
            protocol,
            addr: listener.local_addr()?,
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            served_at_start: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            latency_us: Mutex::new((micros(min), micros(max))),
            error_ppm: AtomicU32::new(0),
            health: HealthReporter::new(),
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

    /// Requests answered successfully (counted ones only: `/api/...` and
    /// `GetItem`).
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::Relaxed)
    }

    /// Counted requests failed on purpose by the error rate.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// How many times [`BackendHandle::start`] brought it back.
    pub fn restarts(&self) -> u32 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Requests served since the last restart; `None` if it never restarted.
    pub fn served_since_restart(&self) -> Option<u64> {
        (self.restarts() > 0).then(|| {
            self.served()
                .saturating_sub(self.inner.served_at_start.load(Ordering::Relaxed))
        })
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

    /// From now on, fails this share (clamped to `0.0..=1.0`) of counted
    /// requests: HTTP 503 or gRPC `UNAVAILABLE`, after the usual latency.
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        // In 0..=1e6 after the clamp, so the cast is exact enough and cannot
        // overflow.
        let ppm = (rate * PPM).round() as u32;
        self.inner.error_ppm.store(ppm, Ordering::Relaxed);
    }

    pub fn error_rate(&self) -> f64 {
        f64::from(self.inner.error_ppm.load(Ordering::Relaxed)) / PPM
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
        self.inner
            .served_at_start
            .store(self.served(), Ordering::Relaxed);
        self.inner.restarts.fetch_add(1, Ordering::Relaxed);
        self.launch(listener);
        Ok(())
    }

    fn launch(&self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve::accept_loop(self.inner.clone(), listener, stopped));
        *self.lock_run() = Some(Run { stop, task });
    }

    fn lock_run(&self) -> MutexGuard<'_, Option<Run>> {
        lock(&self.inner.run)
    }
}

/// The demo's backends, in start order: HTTP ones (`api-N`), then gRPC ones
/// (`inventory-N`), then any a scenario added while the demo ran.
#[derive(Debug, Default)]
pub struct Fleet {
    backends: Mutex<Vec<Backend>>,
}

impl Fleet {
    /// Starts `http` HTTP backends and `grpc` gRPC backends.
    pub fn start(http: usize, grpc: usize) -> Result<Fleet, crate::DemoError> {
        let fleet = Fleet::default();
        let wanted = (1..=http)
            .map(|i| (format!("api-{i}"), Protocol::Http))
            .chain((1..=grpc).map(|i| (format!("inventory-{i}"), Protocol::Grpc)));
        for (name, protocol) in wanted {
            fleet.add(name, protocol)?;
        }
        Ok(fleet)
    }

    /// Starts one more backend (scaling out). Names are unique.
    pub fn add(&self, name: String, protocol: Protocol) -> Result<BackendHandle, crate::DemoError> {
        self.add_at(name, protocol, (Ipv4Addr::LOCALHOST, 0).into())
    }

    /// Starts one more backend on `addr` (port 0: an ephemeral one). Names
    /// are unique.
    pub fn add_at(
        &self,
        name: String,
        protocol: Protocol,
        addr: SocketAddr,
    ) -> Result<BackendHandle, crate::DemoError> {
        if self.get(&name).is_some() {
            return Err(crate::DemoError::Scenario(format!(
                "a backend named {name:?} already exists"
            )));
        }
        let backend = Backend::start_at(name.clone(), protocol, addr)
            .map_err(|source| crate::DemoError::Backend { name, addr, source })?;
        let handle = backend.handle();
        lock(&self.backends).push(backend);
        Ok(handle)
    }

    pub fn handles(&self) -> Vec<BackendHandle> {
        lock(&self.backends).iter().map(Backend::handle).collect()
    }

    pub fn get(&self, name: &str) -> Option<BackendHandle> {
        lock(&self.backends)
            .iter()
            .find(|b| b.name() == name)
            .map(Backend::handle)
    }

    /// Stops every backend and waits until their ports are free.
    pub async fn shutdown(self) {
        let backends = self
            .backends
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        for backend in &backends {
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Locks ignoring poisoning: every value guarded here is valid whatever a
/// panicking holder was doing (a pair of numbers, an optional run).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
