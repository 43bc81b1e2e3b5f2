//! The HTTP proxy service: one request from downstream to upstream.
//!
//! `handle` is the whole L7 request path for one listener:
//! route match → headers → route timeout → cluster pick → endpoint pool →
//! response headers, with every failure mapped to a response in
//! [`crate::error::response`].

mod attempt;
pub mod headers;
mod upgrade;

pub use attempt::{ATTEMPT_HEADER, AttemptLog, is_idempotent, retry_reason};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{
    HeaderValue, Request, Response, Uri, Version,
    header::{CONTENT_TYPE, HOST},
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::body::Incoming;
use opentelemetry::KeyValue;
use switchyard_balance::{Target, hash_key};
use switchyard_config::{HashOn, UpstreamProtocol};
use switchyard_policy::{Deadline, deadline};
use switchyard_telemetry::{
    Decision, ListenerMetrics,
    trace::{RequestTrace, Tracer},
};
use tokio::time::Instant;
use tracing::{debug, info};

use self::attempt::{Attempts, Head, RequestBody};
use crate::{
    body::{Body, ReplayBody},
    cluster::Cluster,
    error::{
        ErrorKind, ProxyError,
        response::{ERROR_HEADER, error_response},
    },
    route::{Route, Router},
};

/// Everything one HTTP listener needs to serve requests.
#[derive(Debug)]
pub struct HttpProxy {
    listener: Arc<str>,
    router: Router,
    metrics: ListenerMetrics,
    access_log: bool,
    tracer: Option<Arc<Tracer>>,
}

/// Per-connection facts the request path needs.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The scheme the client used, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

impl HttpProxy {
    pub fn new(listener: &str, router: Router, metrics: ListenerMetrics, access_log: bool) -> Self {
        Self {
            listener: Arc::from(listener),
            router,
            metrics,
            access_log,
            tracer: None,
        }
    }

    /// Records a span per request and per attempt with `tracer`.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Option<Arc<Tracer>>) -> Self {
        self.tracer = tracer;
        self
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    /// Serves one request. Never fails: errors become responses.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        // Kept or generated first, so that the access log and every upstream
        // attempt carry the same id.
        headers::ensure_request_id(req.headers_mut());
        let grpc = is_grpc(&req);
        let Some(route) = self.router.route(&req) else {
            let err = ProxyError::new(ErrorKind::NoRoute);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        };
        let cluster = route.cluster();
        let method = req.method().clone();
        let trace = self.tracer.as_ref().map(|t| t.begin(req.headers()));
        let needs_detail = self.access_log || trace.as_ref().is_some_and(|t| t.sampled);
        let detail = needs_detail.then(|| RequestDetail::of(&req, conn));
        // The route's timeout, shortened by the caller's own deadline.
        let mut deadline = Deadline::after(route.timeout());
        if let Some(d) = incoming_timeout(req.headers(), grpc) {
            deadline = deadline.min(Deadline::after(d));
        }
        let mut log = AttemptLog::default();
        let resp = if deadline.expired() {
            // The caller has already given up: do not load an upstream.
            cluster.decisions().count(Decision::DeadlineExpired);
            self.fail(route, &ProxyError::new(ErrorKind::DeadlineExpired), grpc)
        } else {
            let tracing = self.tracer.as_ref().zip(trace.as_ref());
            // Boxed: the forward future is most of the request's state;
            // boxing it keeps handle()'s own future (which hyper keeps per
            // connection and moves per request) small.
            let forward = Box::pin(
                self.forward(route, cluster, req, conn, deadline, grpc, tracing, &mut log),
            );
            match tokio::time::timeout_at(deadline.instant(), forward).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(err)) => self.fail(route, &err, grpc),
                Err(_) => self.fail(route, &ProxyError::new(ErrorKind::Timeout), grpc),
            }
        };
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        route.metrics().record(status, elapsed);
        if let (Some(d), true) = (&detail, self.access_log) {
            access_log(
                &self.listener,
                route,
                cluster,
                &method,
                d,
                &resp,
                elapsed,
                &log,
                trace.as_ref(),
            );
        }
        if let (Some(tracer), Some(t), Some(d)) = (&self.tracer, &trace, &detail) {
            if t.sampled {
                self.end_span(
                    tracer, t, d, route, cluster, &method, &resp, conn, grpc, &log,
                );
            }
        }
        resp
    }

    /// Ends the request's server span with OpenTelemetry's HTTP and RPC
    /// semantic-convention attributes.
    #[allow(clippy::too_many_arguments)]
    fn end_span(
        &self,
        tracer: &Tracer,
        t: &RequestTrace,
        d: &RequestDetail,
        route: &Route,
        cluster: &Cluster,
        method: &http::Method,
        resp: &Response<Body>,
        conn: ConnInfo,
        grpc: bool,
        log: &AttemptLog,
    ) {
        let status = resp.status().as_u16();
        let error = resp
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| ErrorKind::from_str_name(v.to_str().ok()?))
            .map(ErrorKind::as_str)
            .or_else(|| (status >= 500).then_some("http_5xx"));
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", d.path.clone()),
            KeyValue::new("url.scheme", conn.proto),
            KeyValue::new("http.route", route.name().to_owned()),
            KeyValue::new("network.protocol.version", d.version),
            KeyValue::new("client.address", conn.peer.ip().to_string()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("switchyard.listener", self.listener.to_string()),
            KeyValue::new("switchyard.cluster", cluster.name().to_owned()),
            KeyValue::new("switchyard.attempts", i64::from(log.attempts)),
            KeyValue::new("switchyard.retries", i64::from(log.retries)),
            KeyValue::new("switchyard.hedges", i64::from(log.hedges)),
        ];
        if let Some(a) = &d.authority {
            attrs.push(KeyValue::new("server.address", a.clone()));
        }
        if let Some(ep) = log.endpoint {
            attrs.push(KeyValue::new("switchyard.endpoint", ep.to_string()));
        }
        if grpc {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
            if let Some(code) = code {
                attrs.push(KeyValue::new("rpc.grpc.status_code", code));
            }
        }
        tracer.end_request(t, format!("{} {}", method, route.name()), attrs, error);
    }

    fn fail(&self, route: &Route, err: &ProxyError, grpc: bool) -> Response<Body> {
        self.metrics.error(err.kind().as_str());
        debug!(
            listener = %self.listener,
            route = route.name(),
            error = %err,
            cause = ?std::error::Error::source(err),
            "request failed"
        );
        error_response(err, grpc)
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        route: &Route,
        cluster: &Cluster,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        deadline: Deadline,
        grpc: bool,
        tracing: Option<(&Arc<Tracer>, &RequestTrace)>,
        log: &mut AttemptLog,
    ) -> Result<Response<Body>, ProxyError> {
        let protocol = cluster.protocol();
        // Upgrades (WebSocket) need an HTTP/1.1 hop on both sides; towards an
        // HTTP/2 cluster the upgrade headers are stripped like any hop-by-hop
        // header and the request is proxied as a plain request.
        let upgrade = req.version() == Version::HTTP_11
            && protocol == UpstreamProtocol::Http1
            && headers::is_upgrade(req.headers());
        let hash = request_hash(cluster, &req, conn.peer);
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::set_forwarded(&mut parts.headers, conn.peer.ip(), conn.proto);
        let incoming_attempt = parts
            .headers
            .remove(&attempt::ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            .unwrap_or(1);
        if let Some(on_upgrade) = on_upgrade {
            let endpoint = cluster.pick(hash, &[])?;
            set_upstream_target(&mut parts, protocol, endpoint.addr())?;
            let req = Request::from_parts(parts, Body::incoming(body));
            log.attempts = 1;
            log.endpoint = Some(endpoint.addr());
            return upgrade::tunnel(&endpoint, req, on_upgrade).await;
        }
        // The authority falls back to the cluster name, which every endpoint
        // of the cluster answers to, so one head serves every attempt.
        set_upstream_target(&mut parts, protocol, cluster.name())?;
        let wants_replay = route.retry().is_some() || route.hedge().is_some();
        let body = if http_body::Body::is_end_stream(&body) {
            RequestBody::Empty
        } else if wants_replay {
            let cap = route
                .retry()
                .map_or(DEFAULT_REPLAY_CAP, |p| p.max_replay_bytes);
            RequestBody::Replay(ReplayBody::new(body, cap))
        } else {
            RequestBody::Once(Some(Body::incoming(body)))
        };
        let attempts = Attempts {
            route,
            cluster,
            head: Head {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
            },
            body,
            hash,
            deadline,
            grpc,
            incoming_attempt,
            tracing,
        };
        let mut resp = attempts.run(log).await?;
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        Ok(resp)
    }
}

/// Replay cap for hedged routes without a retry policy (Linkerd's bound).
const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// The caller's remaining time: `grpc-timeout` for gRPC, and Switchyard's
/// `x-switchyard-timeout-ms` for anything. Malformed values are ignored.
fn incoming_timeout(h: &http::HeaderMap, grpc: bool) -> Option<Duration> {
    let from_grpc = grpc
        .then(|| h.get(deadline::GRPC_TIMEOUT_HEADER))
        .flatten()
        .and_then(|v| deadline::parse_grpc_timeout(v.as_bytes()));
    let from_http = h
        .get(deadline::TIMEOUT_HEADER)
        .and_then(|v| deadline::parse_timeout_ms(v.as_bytes()));
    match (from_grpc, from_http) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// gRPC requests get gRPC-shaped errors.
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The consistent-hash key of a request, for clusters that hash.
fn request_hash<B>(cluster: &Cluster, req: &Request<B>, peer: SocketAddr) -> Option<u64> {
    match cluster.hash_on()? {
        HashOn::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashOn::SourceIp => Some(match peer.ip() {
            std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
    }
}

/// Shapes the request line for the upstream protocol: origin-form with a
/// `Host` header for HTTP/1.1, absolute URI with `:authority` for HTTP/2.
fn set_upstream_target(
    parts: &mut http::request::Parts,
    protocol: UpstreamProtocol,
    fallback: impl std::fmt::Display,
) -> Result<(), ProxyError> {
    let authority: Authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => match parts
            .headers
            .get(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        {
            Some(a) => a,
            None => Authority::try_from(fallback.to_string())
                .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?,
        },
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        UpstreamProtocol::Http1 => {
            if !parts.headers.contains_key(HOST) {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?;
                parts.headers.insert(HOST, host);
            }
            parts.uri = Uri::from(path);
            parts.version = Version::HTTP_11;
        }
        UpstreamProtocol::Http2 => {
            parts.headers.remove(HOST);
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(path);
            parts.uri = Uri::from_parts(uri)
                .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?;
            parts.version = Version::HTTP_2;
        }
    }
    Ok(())
}

/// Request facts kept for the access log and the server span.
#[derive(Debug)]
struct RequestDetail {
    path: String,
    authority: Option<String>,
    request_id: Option<String>,
    version: &'static str,
}

impl RequestDetail {
    fn of<B>(req: &Request<B>, _conn: ConnInfo) -> Self {
        Self {
            path: req.uri().path().to_owned(),
            authority: crate::route::request_host(req).map(str::to_owned),
            request_id: req
                .headers()
                .get(&headers::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            version: match req.version() {
                Version::HTTP_2 => "2",
                Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        }
    }
}

/// One line per request, JSON when the log format is JSON. Written through
/// the non-blocking log writer, so a slow log sink drops lines rather than
/// delaying requests. `bytes` is the response's Content-Length when known.
#[allow(clippy::too_many_arguments)]
fn access_log(
    listener: &str,
    route: &Route,
    cluster: &Cluster,
    method: &http::Method,
    d: &RequestDetail,
    resp: &Response<Body>,
    elapsed: Duration,
    log: &AttemptLog,
    trace: Option<&RequestTrace>,
) {
    info!(
        target: "switchyard::access",
        listener,
        method = method.as_str(),
        authority = d.authority.as_deref(),
        path = d.path.as_str(),
        protocol = d.version,
        status = resp.status().as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        bytes = http_body::Body::size_hint(resp.body()).exact(),
        route = route.name(),
        cluster = cluster.name(),
        endpoint = log.endpoint.map(|e| e.to_string()),
        attempts = log.attempts,
        retries = log.retries,
        hedges = log.hedges,
        retry_refused = log.retry_refused.map(|d| d.as_str()),
        error = resp.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()),
        request_id = d.request_id.as_deref(),
        trace_id = trace.map(|t| format!("{:032x}", t.trace_id)),
        span_id = trace.map(|t| format!("{:016x}", t.span_id)),
    );
}
