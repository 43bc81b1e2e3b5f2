//! The HTTP proxy service: one request from downstream to upstream.
//!
//! `handle` is the whole L7 request path for one listener:
//! route match → headers → route timeout → cluster pick → endpoint pool →
//! response headers, with every failure mapped to a response in
//! [`crate::error::response`].

mod attempt;
pub mod fault;
pub mod headers;
mod report;
mod upgrade;

pub use attempt::{ATTEMPT_HEADER, AttemptLog, is_idempotent, retry_reason};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{
    HeaderValue, Request, Response, Uri, Version,
    header::{CONTENT_TYPE, HOST},
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::body::Incoming;
use switchyard_balance::hash_key;
use switchyard_config::{HashOn, UpstreamProtocol};
use switchyard_policy::{Deadline, deadline};
use switchyard_telemetry::{
    Decision, ListenerMetrics,
    trace::{RequestTrace, Tracer},
};
use tokio::time::Instant;
use tracing::debug;

use self::{
    attempt::{Attempts, Head, RequestBody},
    report::{Report, RequestDetail},
};
use crate::{
    body::{Body, DownstreamState, GrpcEnd, ReplayBody, StreamLimits},
    cluster::Cluster,
    error::{
        ErrorKind, ProxyError,
        response::{ERROR_HEADER, error_response},
    },
    route::{Route, Router},
    server::streams::StreamCtl,
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

    /// Serves one request on downstream `stream`. Never fails: errors
    /// become responses.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        stream: &Arc<StreamCtl>,
    ) -> Response<Body> {
        let started = Instant::now();
        // Kept or generated first, so that the access log and every upstream
        // attempt carry the same id.
        headers::ensure_request_id(req.headers_mut());
        let grpc = is_grpc(&req);
        if !stream.admitted() {
            let err = ProxyError::new(ErrorKind::ClientLimit);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        }
        if !headers::one_authority(&mut req) {
            let err = ProxyError::new(ErrorKind::InvalidRequest);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        }
        let Some(route) = self.router.route(&req) else {
            let err = ProxyError::new(ErrorKind::NoRoute);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        };
        let cluster = route.cluster();
        let method = req.method().clone();
        let version = req.version();
        let trace = self.tracer.as_ref().map(|t| t.begin(req.headers()));
        let needs_detail = self.access_log || trace.as_ref().is_some_and(|t| t.sampled);
        let detail = needs_detail.then(|| RequestDetail::of(&req));
        let deadlines = Deadlines::of(route, incoming_timeout(req.headers(), grpc));
        // Tracked only for requests with a body: the route timeout counts
        // from its end, and a failure of it is the client's.
        let body = (!http_body::Body::is_end_stream(req.body()))
            .then(|| DownstreamState::new(Some(stream.clone())));
        let mut log = AttemptLog::default();
        let (mut resp, error) = if deadlines.head.expired() {
            // The caller has already given up: do not load an upstream.
            cluster.decisions().count(Decision::DeadlineExpired);
            let err = ProxyError::new(ErrorKind::DeadlineExpired);
            (self.fail(route, &err, grpc), Some(err.kind()))
        } else {
            let tracing = self.tracer.as_ref().zip(trace.as_ref());
            // Boxed: the forward future is most of the request's state;
            // boxing it keeps handle()'s own future (which hyper keeps per
            // connection and moves per request) small.
            let forward = Box::pin(self.forward(
                route,
                cluster,
                req,
                conn,
                deadlines,
                body.clone(),
                grpc,
                tracing,
                &mut log,
            ));
            // An injected delay runs inside the head timeout, as a slow
            // upstream's time would.
            let answer = match route.faults() {
                None => head_timeout(forward, &deadlines, body.as_ref(), route.timeout()).await,
                Some(faults) => {
                    let faulty = Box::pin(faults.around(grpc, forward));
                    head_timeout(faulty, &deadlines, body.as_ref(), route.timeout()).await
                }
            };
            match answer {
                Some(Ok(resp)) => (resp, None),
                Some(Err(err)) => (self.fail(route, &err, grpc), Some(err.kind())),
                None => {
                    let err = ProxyError::new(ErrorKind::Timeout);
                    (self.fail(route, &err, grpc), Some(err.kind()))
                }
            }
        };
        // The response follows the downstream connection's HTTP version,
        // whatever the upstream spoke.
        *resp.version_mut() = version;
        if let (Some(end), None) = (deadlines.stream, error) {
            resp = resp.map(|b| {
                b.timed(StreamLimits {
                    deadline: Some(end.instant()),
                    idle: None,
                    grpc,
                })
            });
        }
        let elapsed = started.elapsed();
        route.metrics().record(resp.status().as_u16(), elapsed);
        let head_status = grpc.then(|| grpc_status(resp.headers())).flatten();
        let report = (needs_detail || grpc).then(|| Report {
            listener: self.listener.clone(),
            route: route.name_arc().clone(),
            metrics: grpc.then(|| route.metrics().clone()),
            cluster: cluster.clone(),
            method,
            detail,
            status: resp.status().as_u16(),
            bytes: http_body::Body::size_hint(resp.body()).exact(),
            elapsed,
            log,
            error,
            conn,
            access_log: self.access_log,
            trace: self.tracer.clone().zip(trace),
        });
        match report {
            // A gRPC call whose status is still to come in its trailers is
            // reported when they arrive.
            Some(report) if grpc && head_status.is_none() && error.is_none() => {
                resp.map(|b| b.on_grpc_end(Box::new(report)))
            }
            Some(report) => {
                report.finish(head_status.map(GrpcEnd::Status));
                resp
            }
            None => resp,
        }
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
        cluster: &Arc<Cluster>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        deadlines: Deadlines,
        body_state: Option<DownstreamState>,
        grpc: bool,
        tracing: Option<(&Arc<Tracer>, &RequestTrace)>,
        log: &mut AttemptLog,
    ) -> Result<Response<Body>, ProxyError> {
        let protocol = cluster.protocol();
        // Upgrades (WebSocket) need an HTTP/1.1 hop on both sides and a
        // protocol the route allows (never h2c); otherwise the upgrade
        // headers are stripped like any hop-by-hop header and the request is
        // proxied as a plain request.
        let upgrade = req.version() == Version::HTTP_11
            && protocol == UpstreamProtocol::Http1
            && headers::is_upgrade(req.headers())
            && headers::upgrade_allowed(req.headers(), route.upgrades());
        let hash = request_hash(cluster, &req, conn.peer);
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::set_forwarded(&mut parts.headers, conn.peer.ip(), conn.proto);
        // The caller's deadline headers were read already; each attempt
        // sends the one deadline this hop works against, or none.
        parts.headers.remove(&attempt::TIMEOUT_HEADER);
        parts.headers.remove(&attempt::GRPC_TIMEOUT);
        let incoming_attempt = parts
            .headers
            .remove(&attempt::ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            .unwrap_or(1);
        if let Some(on_upgrade) = on_upgrade {
            // The authority falls back to the cluster name, as for any
            // request, so the head does not depend on the endpoint chosen.
            set_upstream_target(&mut parts, protocol, cluster.name())?;
            let req = Request::from_parts(
                parts,
                Body::downstream(body, body_state.unwrap_or_default()),
            );
            log.attempts = 1;
            let (resp, endpoint) = upgrade::tunnel(cluster, hash, req, on_upgrade).await?;
            log.endpoint = Some(endpoint);
            return Ok(resp);
        }
        // The authority falls back to the cluster name, which every endpoint
        // of the cluster answers to, so one head serves every attempt.
        set_upstream_target(&mut parts, protocol, cluster.name())?;
        if protocol == UpstreamProtocol::Http1
            && body_state.is_some()
            && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            // A body of unknown length, which hyper would drop on methods
            // such as GET (an HTTP/2 client sends DATA without a length):
            // chunked framing carries it to an HTTP/1.1 upstream.
            parts.headers.insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let wants_replay = route.retry().is_some() || route.hedge().is_some();
        let body = match body_state {
            None => RequestBody::Empty,
            Some(state) if wants_replay => {
                let cap = route
                    .retry()
                    .map_or(DEFAULT_REPLAY_CAP, |p| p.max_replay_bytes);
                RequestBody::Replay(ReplayBody::new(body, cap, state))
            }
            Some(state) => RequestBody::Once(Some(Body::downstream(body, state))),
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
            deadline: deadlines.head,
            upstream_deadline: deadlines.upstream,
            grpc,
            incoming_attempt,
            tracing,
        };
        let mut resp = attempts.run(log).await?;
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        // Only this hop's own answers name an error; an upstream's (another
        // proxy's) would be taken for ours.
        resp.headers_mut().remove(ERROR_HEADER);
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

/// Waits for `forward` until the head deadline: the route timeout counted
/// from the end of the request body (as Envoy counts it, so that a client
/// stream may last longer than the timeout), and never past the caller's
/// own deadline. `None` when it passed first.
async fn head_timeout<F: std::future::Future>(
    forward: F,
    deadlines: &Deadlines,
    body: Option<&DownstreamState>,
    route_timeout: Duration,
) -> Option<F::Output> {
    let Some(body) = body else {
        // No body: the deadline is fixed from the start.
        return tokio::time::timeout_at(deadlines.head.instant(), forward)
            .await
            .ok();
    };
    tokio::pin!(forward);
    let timer = tokio::time::sleep_until(deadlines.head.instant());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            out = &mut forward => return Some(out),
            () = &mut timer => {
                let now = Instant::now();
                // Still streaming: the timeout has not started. (A failed
                // body ends `forward` with the client's error soon.)
                let from_body = body.ended_at().unwrap_or(now) + route_timeout;
                let next = deadlines.caller.map_or(from_body, |c| from_body.min(c.instant()));
                if next <= now {
                    return None;
                }
                timer.as_mut().reset(next);
            }
        }
    }
}

/// The deadlines of one request.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    /// The caller's own deadline, if it sent one.
    caller: Option<Deadline>,
    /// By when the upstream's response head must arrive: the route timeout,
    /// shortened by the caller's deadline.
    head: Deadline,
    /// The end of the whole exchange the proxy enforces on the response
    /// body: the route's `max_stream_duration`, when set.
    stream: Option<Deadline>,
    /// What is sent upstream as the call's deadline: the caller's own
    /// (less the time spent here) or the stream limit, whichever is first;
    /// never the head timeout, which would cut long streams.
    upstream: Option<Deadline>,
}

impl Deadlines {
    fn of(route: &Route, caller: Option<Duration>) -> Self {
        let caller = caller.map(Deadline::after);
        let route_head = Deadline::after(route.timeout());
        let stream = route.max_stream_duration().map(Deadline::after);
        Self {
            caller,
            head: caller.map_or(route_head, |c| c.min(route_head)),
            stream,
            upstream: match (caller, stream) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// The `grpc-status` of a response head (a trailers-only answer).
fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok())
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
