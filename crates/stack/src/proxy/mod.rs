//! The HTTP proxy service: one request from downstream to upstream.
//!
//! `handle` is the L7 request path for one listener: route match →
//! headers → fault injection → the route's [`Call`] (deadlines, attempts,
//! cluster, endpoint) → response headers, with every failure mapped to a
//! response in [`crate::error::response`].

pub mod fault;
pub mod headers;
mod report;
mod upgrade;

pub use crate::call::{ATTEMPT_HEADER, AttemptLog, is_idempotent, retry_reason};

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use switchyard_balance::hash_key;
use switchyard_config::{HashOn, UpstreamProtocol};
use switchyard_telemetry::{
    Decision, ListenerMetrics,
    trace::{RequestTrace, Tracer},
};
use tokio::time::Instant;
use tracing::debug;

use self::report::{Report, RequestDetail};
use crate::{
    body::{Body, DownstreamState, GrpcEnd, StreamLimits},
    call::{
        Call, Deadlines, caller_timeout, is_grpc, remove_deadline_headers, set_upstream_target,
        within_head_timeout,
    },
    cluster::Cluster,
    error::{
        ErrorKind, ProxyError,
        response::{ERROR_HEADER, error_response},
    },
    route::{Route, Router},
    server::streams::StreamCtl,
    upstream::ClientAddrs,
};

/// Everything one HTTP listener needs to serve requests.
#[derive(Debug)]
pub struct HttpProxy {
    listener: Arc<str>,
    router: Router,
    metrics: ListenerMetrics,
    access_log: bool,
    tracer: Option<Arc<Tracer>>,
    /// Where the client's certificate identity goes upstream.
    identity_header: Option<http::HeaderName>,
}

/// Per-connection facts the request path needs.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client: the peer, or the client a trusted balancer announced
    /// in a PROXY protocol header.
    pub peer: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    /// The scheme the client used, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The client's verified certificate identity, on listeners with a
    /// client CA.
    pub identity: Option<Arc<str>>,
}

impl HttpProxy {
    pub fn new(listener: &str, router: Router, metrics: ListenerMetrics, access_log: bool) -> Self {
        Self {
            listener: Arc::from(listener),
            router,
            metrics,
            access_log,
            tracer: None,
            identity_header: None,
        }
    }

    /// Sends each client's certificate identity upstream in `header`
    /// (and removes any client's own header of that name). The
    /// configuration checked the name; one that is not a header name is
    /// ignored.
    #[must_use]
    pub fn with_identity_header(mut self, header: Option<&str>) -> Self {
        self.identity_header = header.and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
        self
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
        conn: &ConnInfo,
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
        if !route.admits(conn.identity.as_deref()) {
            let err = ProxyError::new(ErrorKind::Forbidden);
            return self.fail(route, &err, grpc);
        }
        let cluster = route.cluster();
        if cluster.sends_proxy_protocol() {
            // Its upstream connections start with a header naming this
            // client; the pool reads it from here.
            req.extensions_mut().insert(ClientAddrs {
                client: conn.peer,
                local: conn.local,
            });
        }
        let method = req.method().clone();
        let version = req.version();
        let trace = self.tracer.as_ref().map(|t| t.begin(req.headers()));
        let needs_detail = self.access_log || trace.as_ref().is_some_and(|t| t.sampled);
        let detail = needs_detail.then(|| RequestDetail::of(&req));
        let deadlines = Deadlines::of(route.call(), caller_timeout(req.headers(), grpc));
        // Tracked only for requests with a body: the route timeout counts
        // from its end, and a failure of it is the client's.
        let body = (!http_body::Body::is_end_stream(req.body()))
            .then(|| DownstreamState::new(Some(stream.clone())));
        let mut log = AttemptLog::default();
        let (mut resp, error) = if deadlines.expired() {
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
            let timeout = route.call().timeout();
            let answer = match route.faults() {
                None => {
                    within_head_timeout(std::pin::pin!(forward), &deadlines, body.as_ref(), timeout)
                        .await
                }
                Some(faults) => {
                    let faulty = Box::pin(faults.around(grpc, forward));
                    within_head_timeout(std::pin::pin!(faulty), &deadlines, body.as_ref(), timeout)
                        .await
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
        if let (Some(end), None) = (deadlines.stream_end(), error) {
            resp = resp.map(|b| {
                b.timed(StreamLimits {
                    deadline: Some(end),
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
            conn: conn.clone(),
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
        conn: &ConnInfo,
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
        if let Some(name) = &self.identity_header {
            // Only this listener's verification may name the client.
            parts.headers.remove(name);
            if let Some(v) = conn
                .identity
                .as_deref()
                .and_then(|i| HeaderValue::from_str(i).ok())
            {
                parts.headers.insert(name.clone(), v);
            }
        }
        // The caller's deadline headers were read already.
        remove_deadline_headers(&mut parts.headers);
        let incoming_attempt = parts
            .headers
            .remove(&ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            .unwrap_or(1);
        set_upstream_target(&mut parts, protocol, cluster.name())?;
        if let Some(on_upgrade) = on_upgrade {
            let req = Request::from_parts(
                parts,
                Body::downstream(body, body_state.unwrap_or_default()),
            );
            log.attempts = 1;
            let (resp, endpoint) = upgrade::tunnel(cluster, hash, req, on_upgrade).await?;
            log.endpoint = Some(endpoint);
            return Ok(resp);
        }
        let call = Call {
            policy: route.call(),
            cluster,
            deadlines,
            hash,
            grpc,
            incoming_attempt,
            tracing,
        };
        let body = body_state.map(|state| (body.into(), state));
        let mut resp = call.send(parts, body, log).await?;
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        // Only this hop's own answers name an error; an upstream's (another
        // proxy's) would be taken for ours.
        resp.headers_mut().remove(ERROR_HEADER);
        Ok(resp)
    }
}

/// The `grpc-status` of a response head (a trailers-only answer).
fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok())
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
