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
use switchyard_balance::{Target, hash_key};
use switchyard_config::{HashOn, UpstreamProtocol};
use switchyard_policy::{Deadline, deadline};
use switchyard_telemetry::{Decision, ListenerMetrics};
use tokio::time::Instant;
use tracing::{debug, info};

use self::attempt::{Attempts, Head, RequestBody};
use crate::{
    body::{Body, ReplayBody},
    cluster::Cluster,
    error::{ErrorKind, ProxyError, response::error_response},
    route::{Route, Router},
};

/// Everything one HTTP listener needs to serve requests.
#[derive(Debug)]
pub struct HttpProxy {
    listener: Arc<str>,
    router: Router,
    metrics: ListenerMetrics,
    access_log: bool,
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
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    /// Serves one request. Never fails: errors become responses.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(&req);
        let Some(route) = self.router.route(&req) else {
            let err = ProxyError::new(ErrorKind::NoRoute);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        };
        let cluster = route.cluster();
        let method = req.method().clone();
        let path = if self.access_log {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
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
            let forward = self.forward(route, cluster, req, conn, deadline, grpc, &mut log);
            match tokio::time::timeout_at(deadline.instant(), forward).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(err)) => self.fail(route, &err, grpc),
                Err(_) => self.fail(route, &ProxyError::new(ErrorKind::Timeout), grpc),
            }
        };
        let elapsed = started.elapsed();
        route.metrics().record(resp.status().as_u16(), elapsed);
        if self.access_log {
            access_log(
                &self.listener,
                route,
                cluster,
                &method,
                &path,
                resp.status().as_u16(),
                elapsed,
                &log,
            );
        }
        resp
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
        headers::ensure_request_id(&mut parts.headers);
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

#[allow(clippy::too_many_arguments)]
fn access_log(
    listener: &str,
    route: &Route,
    cluster: &Cluster,
    method: &http::Method,
    path: &str,
    status: u16,
    elapsed: Duration,
    log: &AttemptLog,
) {
    info!(
        target: "switchyard::access",
        listener,
        route = route.name(),
        cluster = cluster.name(),
        method = method.as_str(),
        path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        endpoint = log.endpoint.map(|e| e.to_string()),
        attempts = log.attempts,
        retries = log.retries,
        hedges = log.hedges,
        retry_refused = log.retry_refused.map(|d| d.as_str()),
    );
}
