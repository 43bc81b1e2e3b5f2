//! A server for a Rust service — a tonic service or router, an axum
//! router, any `tower::Service` for HTTP — that behaves well in a fleet:
//!
//! - **Health**: `grpc.health.v1.Health` (`Check` and `Watch`) and an HTTP
//!   readiness route (`/ready` by default) answer SERVING / 200 until the
//!   server starts draining, then NOT_SERVING / 503. Probes pass no limit.
//! - **Registration**: with [`ServerBuilder::registry`], the server
//!   registers itself in the Switchyard registry under its name and
//!   address, heartbeats within the TTL, and drains and deregisters when it
//!   stops; clients that discover it there (the proxy, the library's
//!   [`Client`](crate::Client)) follow.
//! - **Deadlines**: a request whose caller's deadline (`grpc-timeout`,
//!   `x-switchyard-timeout-ms`) has already passed is answered
//!   DEADLINE_EXCEEDED / 504 without running the handler; a handler still
//!   running at the deadline is cancelled (dropped) and the caller told so;
//!   a gRPC response stream still open at the deadline ends with
//!   DEADLINE_EXCEEDED. The handler reads what remains from
//!   [`Context::current`](crate::Context::current), and its calls through a
//!   `Client` inherit it.
//! - **Tracing and metrics**: a server span per request (continuing the
//!   caller's trace, the parent of the handler's calls) with a tracer, and
//!   the proxy's request metrics (`switchyard_requests_total`, the duration
//!   histogram, `switchyard_grpc_requests_total`) under the server's name.
//! - **A concurrency limit that rejects fast**: beyond
//!   [`ServerBuilder::max_concurrent_requests`] requests in flight (response
//!   bodies included), a request is answered RESOURCE_EXHAUSTED / 503 at
//!   once instead of queueing.
//! - **Graceful drain** when the shutdown future resolves (e.g.
//!   [`shutdown_signal`]: SIGTERM or Ctrl-C), in this order: mark the
//!   instance draining in the registry; wait until requests stop arriving
//!   (its watchers have seen it), at most [`DrainTimes::notice`]; report
//!   NOT_SERVING; stop accepting and send HTTP/2 GOAWAY (HTTP/1.1
//!   connections close after their response) and signal [`Drain`] to the
//!   handlers, so long-lived streams can end; give the requests in flight
//!   [`DrainTimes::grace`], then close what is left; deregister; return.
//!
//! Connections are served by `switchyard-serve`, the control plane's
//! server: HTTP/1.1 and h2c on one port, a connection limit taken before
//! accept, header-read, first-request and idle timeouts, HTTP/2 limits.
//!
//! ```no_run
//! # async fn example(router: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let server = switchyard::Server::builder("pricing")
//!     .registry("http://127.0.0.1:7400")
//!     .bind("127.0.0.1:50051".parse()?)
//!     .await?;
//! server.serve(router, switchyard::server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod service;

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use switchyard_discovery::registration::{ClientError, Registration, RegistrationOptions};
use switchyard_telemetry::{Metrics, trace::Tracer};
use tokio::{net::TcpListener, sync::watch};
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

pub use service::{ServerBody, ServerFuture, ServerService};

use crate::BoxError;

/// Tells handlers that the server is draining: long-lived streams should
/// finish (a last message, then end) instead of holding shutdown up to its
/// grace period. Every request carries one in its extensions (tonic:
/// `request.extensions().get::<Drain>()`; axum: `Extension<Drain>`).
#[derive(Clone, Debug)]
pub struct Drain {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// Whether the server has started draining.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the server starts draining (at once if it has, or if
    /// the server is gone).
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|draining| *draining).await;
    }
}

/// How long each step of a drain may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainTimes {
    /// Default 5s: after marking the instance draining in the registry,
    /// the longest wait for requests to stop arriving. Watchers (the proxy,
    /// library clients) see the change within milliseconds through their
    /// blocking queries; the bound covers a slow or partitioned one.
    pub notice: Duration,
    /// Default 500ms: no new request for this long means the watchers have
    /// seen the drain.
    pub quiet: Duration,
    /// Default 20s: for the requests in flight once the server stops
    /// accepting; what is left after it is closed. With `notice`, it fits
    /// in Kubernetes' default 30s termination grace period.
    pub grace: Duration,
}

impl Default for DrainTimes {
    fn default() -> Self {
        Self {
            notice: Duration::from_secs(5),
            quiet: Duration::from_millis(500),
            grace: Duration::from_secs(20),
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the operating system refused.
        #[source]
        source: io::Error,
    },
    /// A server that registers must say which address its callers use; an
    /// unspecified one (`0.0.0.0`, `[::]`) cannot be dialled.
    #[error(
        "server {0} listens on {1}, which callers cannot dial; set the address to register with `advertise`"
    )]
    Unadvertised(String, SocketAddr),
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The registry refused the registration or could not be reached; the
    /// server did not serve.
    #[error("cannot register in the registry: {0}")]
    Register(#[source] ClientError),
    /// Serving ended with an I/O error.
    #[error("serving failed: {0}")]
    Io(#[from] io::Error),
}

/// What [`ServerBuilder::registration`] keeps.
type AdjustRegistration = Box<dyn FnOnce(&mut RegistrationOptions) + Send>;

/// Builds a [`Server`]; see [`Server::builder`].
pub struct ServerBuilder {
    name: String,
    settings: switchyard_serve::Settings,
    max_concurrent_requests: usize,
    readiness_path: Option<String>,
    drain: DrainTimes,
    registry: Option<String>,
    advertise: Option<SocketAddr>,
    instance_id: Option<String>,
    registration: Option<AdjustRegistration>,
    health_services: Vec<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Option<Arc<Metrics>>,
    tracer: Option<Arc<Tracer>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("readiness_path", &self.readiness_path)
            .field("drain", &self.drain)
            .field("registry", &self.registry)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// Default 1024 requests in flight: far above what one instance of a
/// typical service handles at once, low enough that a flood is refused
/// before memory and latency grow without bound.
const MAX_CONCURRENT_REQUESTS: usize = 1024;

impl ServerBuilder {
    /// The connection settings (limits and timeouts). The defaults differ
    /// from the admin API's: 10,000 connections, 1,024 streams per HTTP/2
    /// connection (one client connection per instance carries all of a
    /// caller's requests), a 5 minute idle timeout.
    #[must_use]
    pub fn connections(mut self, settings: switchyard_serve::Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Requests handled at once, response bodies included; more are
    /// answered RESOURCE_EXHAUSTED / 503 at once. Default 1024.
    #[must_use]
    pub fn max_concurrent_requests(mut self, limit: usize) -> Self {
        self.max_concurrent_requests = limit;
        self
    }

    /// Where the HTTP readiness route answers (`GET`, `HEAD`); `None` to
    /// leave every path to the service. Default `/ready`.
    #[must_use]
    pub fn readiness_path(mut self, path: Option<&str>) -> Self {
        self.readiness_path = path.map(str::to_owned);
        self
    }

    /// How long each step of the drain may take.
    #[must_use]
    pub fn drain(mut self, times: DrainTimes) -> Self {
        self.drain = times;
        self
    }

    /// Registers in the registry at `url` under the server's name.
    #[must_use]
    pub fn registry(mut self, url: &str) -> Self {
        self.registry = Some(url.to_owned());
        self
    }

    /// The address to register; by default the bound one.
    #[must_use]
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The instance id to register; by default `name-address`.
    #[must_use]
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = Some(id.to_owned());
        self
    }

    /// Adjusts the registration (TTL, weight, zone, metadata, token, CA).
    #[must_use]
    pub fn registration(
        mut self,
        f: impl FnOnce(&mut RegistrationOptions) + Send + 'static,
    ) -> Self {
        self.registration = Some(Box::new(f));
        self
    }

    /// A gRPC service name (`package.Service`) that the health service
    /// reports alongside the server as a whole (`""`).
    #[must_use]
    pub fn health_service(mut self, name: &str) -> Self {
        self.health_services.push(name.to_owned());
        self
    }

    /// Serves over TLS (HTTP/2 by ALPN) with this acceptor, e.g. one built
    /// by `switchyard-tls` from a listener's `tls` settings.
    #[must_use]
    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Records the request metrics in `metrics`; by default in a private
    /// registry ([`Server::metrics`]).
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Traces every request with a server span.
    #[must_use]
    pub fn tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Binds the listening socket (so a port in use fails here, before
    /// anything registers).
    pub async fn bind(self, addr: SocketAddr) -> Result<Server, BindError> {
        let listener = switchyard_serve::bind(addr)
            .and_then(|l| Ok((l.local_addr()?, l)))
            .map_err(|source| BindError::Listen { addr, source });
        let (local_addr, listener) = listener?;
        let registration = match &self.registry {
            None => None,
            Some(url) => {
                let address = self.advertise.unwrap_or(local_addr);
                if address.ip().is_unspecified() {
                    return Err(BindError::Unadvertised(self.name, local_addr));
                }
                let id = self.instance_id.clone().unwrap_or_else(|| {
                    let host = address.ip().to_string().replace(':', "-");
                    format!("{}-{host}-{}", self.name, address.port())
                });
                let mut opts = RegistrationOptions::new(url, &self.name, &id, address);
                if let Some(f) = self.registration {
                    f(&mut opts);
                }
                Some(opts)
            }
        };
        let (health, _) = tonic_health::server::health_reporter();
        let health_server = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        let (drain_tx, drain_rx) = watch::channel(false);
        let metrics = self.metrics.unwrap_or_default();
        let shared = Arc::new(service::Shared::new(
            self.max_concurrent_requests,
            health_server,
            self.readiness_path,
            Drain { rx: drain_rx },
            metrics.route(&self.name, "server"),
            metrics.listener(&self.name, &service::REJECTIONS),
            self.tracer,
        ));
        let server = Server {
            name: self.name,
            listener,
            local_addr,
            settings: self.settings,
            max_concurrent_requests: self.max_concurrent_requests,
            drain: self.drain,
            registration,
            registered: None,
            health,
            health_services: self.health_services,
            tls: self.tls,
            metrics,
            shared,
            drain_tx,
        };
        set_health(
            &server.shared,
            &server.health,
            &server.health_services,
            true,
        )
        .await;
        Ok(server)
    }
}

/// A bound server, ready to serve a service: see the [module](self) docs.
pub struct Server {
    name: String,
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: switchyard_serve::Settings,
    max_concurrent_requests: usize,
    drain: DrainTimes,
    registration: Option<RegistrationOptions>,
    /// Registered ahead of `serve` by [`Server::register`].
    registered: Option<Registration>,
    health: HealthReporter,
    health_services: Vec<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<Metrics>,
    shared: Arc<service::Shared>,
    drain_tx: watch::Sender<bool>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server named `name`: its registry service, its metrics' listener
    /// label.
    pub fn builder(name: &str) -> ServerBuilder {
        ServerBuilder {
            name: name.to_owned(),
            settings: switchyard_serve::Settings {
                max_connections: 10_000,
                idle_timeout: Duration::from_secs(300),
                max_concurrent_streams: 1024,
                ..switchyard_serve::Settings::default()
            },
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            readiness_path: Some("/ready".to_owned()),
            drain: DrainTimes::default(),
            registry: None,
            advertise: None,
            instance_id: None,
            registration: None,
            health_services: Vec::new(),
            tls: None,
            metrics: None,
            tracer: None,
        }
    }

    /// The bound address (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health reporter, for statuses of services of its own.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// The registry the request metrics go to (render it with
    /// `Metrics::render`, or pass one in with [`ServerBuilder::metrics`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The drain signal its handlers get.
    pub fn drain_signal(&self) -> Drain {
        self.shared.drain.clone()
    }

    /// Registers in the registry now rather than when `serve` starts, so
    /// that the caller knows the instance is listed (clients that connect
    /// before `serve` wait in the accept backlog). Does nothing for a
    /// server without a registry or one already registered.
    pub async fn register(&mut self) -> Result<(), ServeError> {
        if let (Some(opts), None) = (&self.registration, &self.registered) {
            let registration = Registration::register(opts.clone())
                .await
                .map_err(ServeError::Register)?;
            self.registered = Some(registration);
        }
        Ok(())
    }

    /// Serves `service` until `shutdown` resolves, then drains (see the
    /// [module](self) docs) and returns. Registers first when the server
    /// has a registry, and fails if the registry refuses.
    ///
    /// `service` is any `tower::Service` for hyper requests: an
    /// `axum::Router`, tonic's `Routes` or a generated `…Server`.
    pub async fn serve<S, B>(
        self,
        service: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError>
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Self {
            name,
            listener,
            local_addr,
            settings,
            max_concurrent_requests,
            drain: times,
            registration,
            registered,
            health,
            health_services,
            tls,
            metrics: _,
            shared,
            drain_tx,
        } = self;
        // Clients that connect while the registration is under way wait in
        // the accept backlog.
        let registration = match (registered, registration) {
            (Some(registered), _) => Some(registered),
            (None, Some(opts)) => Some(
                Registration::register(opts)
                    .await
                    .map_err(ServeError::Register)?,
            ),
            (None, None) => None,
        };
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let svc = ServerService::new(service, shared.clone());
        let serving = switchyard_serve::serve_tls(listener, tls, svc, settings, stopped);
        tokio::pin!(serving);
        info!(server = %name, addr = %local_addr, "serving");

        tokio::select! {
            result = &mut serving => {
                // Serving never ends by itself; if it does, leave the
                // registry too.
                if let Some(r) = registration {
                    let _ = r.deregister().await;
                }
                return result.map_err(ServeError::from);
            }
            () = shutdown => {}
        }
        info!(server = %name, "draining");
        // 1. Callers that discover the instance stop choosing it…
        if let Some(r) = &registration {
            match r.drain().await {
                Ok(_) => {
                    // 2. …which shows as requests no longer arriving.
                    tokio::select! {
                        _ = &mut serving => {}
                        () = quiet(&shared, times) => {}
                    }
                }
                Err(e) => {
                    warn!(server = %name, error = %e, "could not mark the instance draining");
                }
            }
        }
        // 3. Probes and health watchers see NOT_SERVING.
        set_health(&shared, &health, &health_services, false).await;
        // 4. Stop accepting, GOAWAY, and tell long streams to end.
        let _ = stop_tx.send(true);
        let _ = drain_tx.send(true);
        // 5. The requests in flight get the grace period.
        if tokio::time::timeout(times.grace, &mut serving)
            .await
            .is_err()
        {
            warn!(
                server = %name,
                in_flight = shared.in_flight(max_concurrent_requests),
                grace = ?times.grace,
                "grace period over; closing the connections left"
            );
        }
        // 6. Gone from the registry.
        if let Some(r) = registration {
            if let Err(e) = r.deregister().await {
                warn!(server = %name, error = %e, "could not deregister; the registration expires with its TTL");
            }
        }
        info!(server = %name, "drained");
        Ok(())
    }
}

/// Reports the server (and its named services) SERVING or NOT_SERVING, in
/// gRPC health and on the readiness route.
async fn set_health(
    shared: &service::Shared,
    health: &HealthReporter,
    services: &[String],
    serving: bool,
) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    shared.serving.store(serving, Ordering::Release);
    health.set_service_status("", status).await;
    for name in services {
        health.set_service_status(name, status).await;
    }
}

/// Resolves once no request has arrived for `times.quiet`, or after
/// `times.notice` at most.
async fn quiet(shared: &service::Shared, times: DrainTimes) {
    let end = tokio::time::Instant::now() + times.notice;
    loop {
        let idle = shared.since_last_request();
        if idle >= times.quiet {
            return;
        }
        let next = (tokio::time::Instant::now() + (times.quiet - idle)).min(end);
        tokio::time::sleep_until(next).await;
        if next == end {
            return;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): what orchestrators send to stop
/// a process.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
