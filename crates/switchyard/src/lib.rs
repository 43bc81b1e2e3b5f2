//! Switchyard for Rust services: the proxy's client stack as a library.
//!
//! A [`Client`] sends requests to a cluster of endpoints through the same
//! call path as a route of `switchyard proxy` (the stack's
//! [`stack::call`]): the head timeout and the caller's deadline, retries
//! with the cluster's retry budget and bounded replay of the request body,
//! hedging, admission limits, balancing, pooling, outlier ejection and
//! error classification. A Rust service gets the proxy's behaviour without
//! a sidecar hop.
//!
//! A `Client` is a [`tower::Service`] for requests with any `http_body`
//! body, so it drops into hyper and axum code, and [`Client::grpc`] is a
//! channel that tonic-generated clients accept
//! (`EchoClient::new(client.grpc())`), with retries that work for tonic
//! calls.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = switchyard::config::parse(
//!     r#"
//!     [[clusters]]
//!     name = "api"
//!     discovery = { static = ["127.0.0.1:9001", "127.0.0.1:9002"] }
//!     "#,
//!     "client.toml",
//! )?;
//! let client = switchyard::Client::builder(&config.clusters[0])
//!     .timeout(std::time::Duration::from_secs(2))
//!     .retry(switchyard::config::RetryPolicy::default())
//!     .build()?;
//! let req = http::Request::get("/users/7").body(switchyard::Body::empty())?;
//! let resp = client.send(req).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Client`]: a cluster client built from a [`config::ClusterConfig`]
//!   and a call policy ([`ClientBuilder`]: in code, or a route's TOML);
//!   it runs the cluster's discovery (static, the registry, DNS, etcd) in
//!   the background, as the proxy does, and with a tracer
//!   ([`ClientBuilder::tracer`]) records a span per call and per attempt.
//!   [`GrpcChannel`] is its face for tonic.
//! - [`context`]: the handled request's deadline, trace and retry marker,
//!   carried to the calls a handler makes ([`ContextLayer`] on a server).
//! - [`Server`]: serves a tonic service or an axum router with gRPC
//!   health and readiness, registration, deadline enforcement, a
//!   concurrency limit, a server span and metrics, and a graceful drain
//!   ([`server`]).
//! - [`registry`]: self-registration — register, heartbeat in the
//!   background, drain and deregister on shutdown
//!   ([`registry::Registration`]).
//! - [`discovery`]: the discovery sources (registry, DNS, etcd) for
//!   services that follow a cluster themselves.
//! - [`config`], [`balance`], [`stack`]: the underlying crates,
//!   re-exported for services that build their own; `proxy` (feature
//!   `proxy`) re-exports the whole proxy for a service that embeds one.
//!
//! # Features
//! - `server` (default): [`Server`] and its dependencies (the connection
//!   server, gRPC health).
//! - `proxy`: `switchyard::proxy`, the whole proxy (listeners, the admin
//!   API and its dashboard).
//!
//! A service that only calls others builds with `default-features =
//! false`: the client, the context, the registration client; no server,
//! no registry server or its store, no axum, no admin dashboard.

// The library's whole public face is documented.
#![warn(missing_docs)]

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};

pub mod context;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "server")]
#[doc = include_str!("../../../docs/library.md")]
pub mod guide {}

pub use context::{Context, ContextLayer};
#[cfg(feature = "server")]
pub use server::Server;
pub use switchyard_balance as balance;
pub use switchyard_config as config;
pub use switchyard_discovery as discovery;
pub use switchyard_discovery::registration as registry;
#[cfg(feature = "proxy")]
pub use switchyard_proxy as proxy;
pub use switchyard_stack as stack;
pub use switchyard_stack::{Body, ErrorKind, ProxyError, body::BoxError, server::tls::TlsError};

use switchyard_config::{ClusterConfig, Discovery, HedgePolicy, RetryPolicy, RouteConfig};
use switchyard_stack::{
    body::{DownstreamState, Source, StreamLimits},
    call::{
        AttemptLog, Call, CallPolicy, Deadlines, caller_timeout, is_grpc, remove_deadline_headers,
        set_upstream_target, within_head_timeout,
    },
    cluster::{Cluster, EndpointSpec},
    error::response::error_response,
};
use switchyard_telemetry::{
    Decision, Metrics,
    trace::{KeyValue, RequestTrace, Tracer},
};

/// Sends requests to one cluster under one call policy. Cheap to clone:
/// clones share the cluster (its connections, limits, budgets and
/// statistics).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cluster: Arc<Cluster>,
    policy: CallPolicy,
    /// The cluster's running discovery (registry, DNS, etcd); it stops when
    /// the last clone of the client is dropped.
    discovery: Option<switchyard_stack::cluster::discovery::ClusterDiscovery>,
    /// The cluster's active health checks and idle-connection sweep (on a
    /// runtime); they stop with the last clone of the client.
    _upkeep: Option<switchyard_stack::drain::Signal>,
    tracer: Option<Arc<Tracer>>,
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cluster's `tls` files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The cluster's discovery settings cannot be used (e.g. a bad URL).
    #[error("cluster {cluster}: cannot start discovery: {source}")]
    Discovery {
        /// The cluster's name.
        cluster: String,
        /// What is wrong with its settings.
        #[source]
        source: switchyard_discovery::SourceError,
    },
    /// Registry, DNS and etcd discovery, and active health checks, run as
    /// tasks of a tokio runtime.
    #[error(
        "cluster {0}: its discovery or health checks run on tokio; build the client inside a tokio runtime"
    )]
    NoRuntime(String),
}

/// Builds a [`Client`]. Every setting starts at a proxy route's default:
/// a 15 s head timeout, no stream limit, no retries, no hedging.
#[derive(Debug)]
pub struct ClientBuilder<'a> {
    config: &'a ClusterConfig,
    timeout: Duration,
    max_stream_duration: Option<Duration>,
    retry: Option<RetryPolicy>,
    hedge: Option<HedgePolicy>,
    metrics: Option<Arc<Metrics>>,
    tracer: Option<Arc<Tracer>>,
}

impl ClientBuilder<'_> {
    /// Bounds the time to the response head, all attempts included
    /// (counted from the end of the request body). A caller's shorter
    /// deadline (`grpc-timeout`, `x-switchyard-timeout-ms`) wins.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Ends a whole exchange, bodies included, at this age, and sends the
    /// remaining time upstream as the call's deadline.
    #[must_use]
    pub fn max_stream_duration(mut self, limit: Duration) -> Self {
        self.max_stream_duration = Some(limit);
        self
    }

    /// Retries under `policy` (see [`RetryPolicy`]; `RetryPolicy::default()`
    /// is a route's `retry = {}`).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Hedges idempotent requests under `policy`.
    #[must_use]
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedge = Some(policy);
        self
    }

    /// Takes the timeout, stream limit, retries and hedging of a route
    /// from the proxy's configuration, so a policy means the same in both.
    #[must_use]
    pub fn route(mut self, route: &RouteConfig) -> Self {
        self.timeout = route.timeout;
        self.max_stream_duration = route.max_stream_duration;
        self.retry = route.retry.as_deref().cloned();
        self.hedge = route.hedge.as_deref().cloned();
        self
    }

    /// Traces every call: a span for the call (continuing the trace of a
    /// `traceparent`/B3 header the request carries, else a new one, sampled
    /// by the tracer's ratio) with a client span per attempt, whose context
    /// goes upstream. Start the tracer with
    /// [`Tracer::start`](switchyard_telemetry::trace::Tracer::start) from a
    /// `[tracing]` configuration.
    #[must_use]
    pub fn tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Records the cluster's metrics in `metrics`, for a service that
    /// exposes or merges them; by default they go to a private registry.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A client for the cluster. With static discovery it starts with the
    /// configured endpoints. The other sources (the registry, DNS, etcd)
    /// run in the background on the current tokio runtime, as the proxy's
    /// do: the client starts empty and follows every set they find
    /// ([`Client::discovered`] waits for the first). Fails when the
    /// cluster's `tls` files or discovery settings cannot be used.
    pub fn build(self) -> Result<Client, BuildError> {
        let metrics = self.metrics.unwrap_or_else(|| Arc::new(Metrics::new()));
        let cluster = Arc::new(Cluster::new(self.config, metrics)?);
        let dynamic = !matches!(self.config.discovery, Discovery::Static(_));
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        if (dynamic || cluster.health_check().is_some()) && !runtime {
            return Err(BuildError::NoRuntime(self.config.name.clone()));
        }
        // Outside a runtime (static endpoints, no checks) idle pooled
        // connections are closed by their own idle timeout only when used.
        let upkeep = runtime.then(|| switchyard_stack::cluster::health::start_upkeep(&cluster));
        let discovery = switchyard_stack::cluster::discovery::start(
            self.config,
            cluster.clone(),
            &switchyard_stack::cluster::discovery::DiscoveryOptions::default(),
        )
        .map_err(|source| BuildError::Discovery {
            cluster: self.config.name.clone(),
            source,
        })?;
        let policy = CallPolicy::new(
            self.timeout,
            self.max_stream_duration,
            self.retry,
            self.hedge,
        );
        Ok(Client {
            inner: Arc::new(Inner {
                cluster,
                policy,
                discovery,
                _upkeep: upkeep,
                tracer: self.tracer,
            }),
        })
    }
}

impl Client {
    /// A client with a route's default policy (no retries); see
    /// [`Client::builder`] for more.
    pub fn new(config: &ClusterConfig) -> Result<Self, BuildError> {
        Self::builder(config).build()
    }

    /// A builder for a client of `config`'s cluster, with a route's
    /// default policy to start from.
    pub fn builder(config: &ClusterConfig) -> ClientBuilder<'_> {
        let defaults = CallPolicy::default();
        ClientBuilder {
            config,
            timeout: defaults.timeout(),
            max_stream_duration: None,
            retry: None,
            hedge: None,
            metrics: None,
            tracer: None,
        }
    }

    /// Waits up to `timeout` for the cluster's discovery to deliver its
    /// first endpoint set; `true` at once for static endpoints.
    pub async fn discovered(&self, timeout: Duration) -> bool {
        match &self.inner.discovery {
            Some(d) => d.wait_synced(timeout).await,
            None => true,
        }
    }

    /// Replaces the endpoint set; endpoints that stay keep their state. (A
    /// cluster with a discovery source replaces it again at its next
    /// change.)
    pub fn update(&self, endpoints: &[EndpointSpec]) {
        self.inner.cluster.update(endpoints);
    }

    /// Sends a request through the call path: within the head timeout (or
    /// the caller's deadline from `grpc-timeout` / `x-switchyard-timeout-ms`,
    /// which is also what goes upstream), with retries and hedges on other
    /// endpoints as the policy allows. A request without an authority gets
    /// the cluster's name, so virtual hosting works.
    ///
    /// Inside a handler running under [`ContextLayer`] (or a
    /// [`Context::scope`]), the request inherits what it does not set
    /// itself: the handled request's remaining deadline, its trace context,
    /// and, when it was a retry, no retries of its own.
    pub async fn send<B>(&self, mut req: Request<B>) -> Result<Response<Body>, ProxyError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Inner {
            cluster,
            policy,
            tracer,
            ..
        } = &*self.inner;
        let grpc = is_grpc(&req);
        let incoming_attempt = match Context::current() {
            Some(context) => context.apply(req.headers_mut(), grpc),
            None => 1,
        };
        let deadlines = Deadlines::of(policy, caller_timeout(req.headers(), grpc));
        if deadlines.expired() {
            cluster.decisions().count(Decision::DeadlineExpired);
            return Err(ProxyError::new(ErrorKind::DeadlineExpired));
        }
        let (mut parts, body) = req.into_parts();
        // The caller's trace context, if it sent one, is this call's
        // parent; each attempt then carries its own.
        let trace = tracer.as_ref().map(|t| (t, t.begin(&parts.headers)));
        let method = parts.method.clone();
        remove_deadline_headers(&mut parts.headers);
        set_upstream_target(&mut parts, cluster.protocol(), cluster.name())?;
        // A body failure is the caller's: never retried, never blamed on
        // the endpoint, never ended cleanly upstream.
        let body =
            (!body.is_end_stream()).then(|| (Source::caller(body), DownstreamState::default()));
        let state = body.as_ref().map(|(_, state)| state.clone());
        let call = Call {
            policy,
            cluster,
            deadlines,
            hash: None,
            grpc,
            incoming_attempt,
            tracing: trace.as_ref().map(|(tracer, t)| (*tracer, t)),
        };
        let mut log = AttemptLog::default();
        let sent = call.send(parts, body, &mut log);
        let answer = within_head_timeout(
            std::pin::pin!(sent),
            &deadlines,
            state.as_ref(),
            policy.timeout(),
        )
        .await
        .unwrap_or_else(|| Err(ProxyError::new(ErrorKind::Timeout)));
        if let Some((tracer, t)) = &trace {
            end_call_span(tracer, t, &method, cluster, &log, &answer);
        }
        let resp = answer?;
        Ok(match deadlines.stream_end() {
            Some(end) => resp.map(|b| {
                b.timed(StreamLimits {
                    deadline: Some(end),
                    idle: None,
                    grpc,
                })
            }),
            None => resp,
        })
    }

    /// This client as a gRPC channel for tonic-generated clients: failures
    /// become gRPC statuses (UNAVAILABLE, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED…) as the proxy answers them, instead of errors
    /// tonic would report as UNKNOWN.
    pub fn grpc(&self) -> GrpcChannel {
        GrpcChannel {
            client: self.clone(),
        }
    }

    /// The underlying cluster, for inspection (`snapshot()`).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.inner.cluster
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<B> tower::Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = BoxFuture<Response<Body>, ProxyError>;

    /// Always ready: limits are enforced per request (an overloaded
    /// cluster fails fast with [`ErrorKind::Overloaded`]), not by
    /// back-pressure.
    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.send(req).await })
    }
}

/// The gRPC status a failed call means, as [`GrpcChannel`] answers it and
/// the proxy would: `NoEndpoints`, `ConnectFailed`… are UNAVAILABLE,
/// `Timeout` and `DeadlineExpired` DEADLINE_EXCEEDED, `Overloaded`
/// RESOURCE_EXHAUSTED, and so on. The message is the failure's text, and
/// the `x-switchyard-error` metadata names the kind, so a caller of
/// [`Client::send`] that serves gRPC itself can pass the failure on
/// faithfully.
///
/// ```
/// use switchyard::{ErrorKind, ProxyError};
///
/// let status = switchyard::to_status(&ProxyError::new(ErrorKind::Overloaded));
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(status.metadata().get("x-switchyard-error").unwrap(), "overloaded");
/// ```
pub fn to_status(err: &ProxyError) -> tonic::Status {
    let kind = err.kind();
    let code = switchyard_stack::error::response::grpc_status(kind);
    let mut status = tonic::Status::new(tonic::Code::from(i32::from(code)), kind.to_string());
    status.metadata_mut().insert(
        switchyard_stack::error::response::ERROR_HEADER,
        tonic::metadata::MetadataValue::from_static(kind.as_str()),
    );
    status
}

/// A [`Client`] as a gRPC channel: see [`Client::grpc`].
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    client: Client,
}

impl<B> tower::Service<Request<B>> for GrpcChannel
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            Ok(match client.send(req).await {
                Ok(resp) => resp,
                Err(err) => error_response(&err, true),
            })
        })
    }
}

/// Ends a call's span when its response head (or its failure) is known:
/// named `METHOD cluster`, with the attempts made, the endpoint that
/// answered, the status, and on failure the error kind as `error.type`.
fn end_call_span(
    tracer: &Tracer,
    t: &RequestTrace,
    method: &http::Method,
    cluster: &Cluster,
    log: &AttemptLog,
    answer: &Result<Response<Body>, ProxyError>,
) {
    // Most traces are not sampled: build nothing for them.
    if !t.sampled {
        return;
    }
    let mut attrs = vec![
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("switchyard.cluster", cluster.name().to_owned()),
        KeyValue::new("switchyard.attempts", i64::from(log.attempts)),
    ];
    if let Some(ep) = log.endpoint {
        attrs.push(KeyValue::new("switchyard.endpoint", ep.to_string()));
    }
    let error = match answer {
        Ok(resp) => {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(resp.status().as_u16()),
            ));
            resp.status().is_server_error().then_some("http_5xx")
        }
        Err(e) => Some(e.kind().as_str()),
    };
    tracer.end_call(t, format!("{method} {}", cluster.name()), attrs, error);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_status` says what a tonic client of `GrpcChannel` would see.
    #[test]
    fn to_status_agrees_with_the_channels_answers() {
        for kind in [
            ErrorKind::NoEndpoints,
            ErrorKind::ConnectFailed,
            ErrorKind::ConnectTimeout,
            ErrorKind::RefusedStream,
            ErrorKind::UpstreamReset,
            ErrorKind::Timeout,
            ErrorKind::DeadlineExpired,
            ErrorKind::Overloaded,
            ErrorKind::Internal,
        ] {
            let err = ProxyError::new(kind);
            let answer = error_response(&err, true);
            let status = to_status(&err);
            assert_eq!(
                answer.headers()["grpc-status"].to_str().unwrap(),
                (status.code() as i32).to_string(),
                "{kind:?}"
            );
            assert_eq!(status.message(), kind.to_string());
        }
    }
}
