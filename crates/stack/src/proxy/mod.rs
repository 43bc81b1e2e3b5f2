//! The HTTP proxy service: one request from downstream to upstream.
//!
//! `handle` is the whole L7 request path for one listener:
//! route match → headers → route timeout → cluster pick → endpoint pool →
//! response headers, with every failure mapped to a response in
//! [`crate::error::response`].

pub mod headers;
mod upgrade;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{
    HeaderValue, Request, Response, Uri, Version,
    header::{CONTENT_TYPE, HOST},
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::body::Incoming;
use switchyard_balance::hash_key;
use switchyard_config::{HashOn, UpstreamProtocol};
use switchyard_telemetry::ListenerMetrics;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::{
    body::Body,
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
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let Some(route) = self.router.route(&req) else {
            let err = ProxyError::new(ErrorKind::NoRoute);
            self.metrics.error(err.kind().as_str());
            return error_response(&err, grpc);
        };
        let result = tokio::time::timeout(route.timeout(), self.forward(route, req, conn)).await;
        let resp = match result {
            Ok(Ok(resp)) => resp,
            Ok(Err(err)) => self.fail(route, &err, grpc),
            Err(_) => self.fail(route, &ProxyError::new(ErrorKind::Timeout), grpc),
        };
        let elapsed = started.elapsed();
        route.metrics().record(resp.status().as_u16(), elapsed);
        if self.access_log {
            access_log(
                &self.listener,
                route,
                &method,
                &path,
                resp.status().as_u16(),
                elapsed,
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

    async fn forward(
        &self,
        route: &Route,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<Body>, ProxyError> {
        let cluster = route.cluster();
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
        let endpoint = cluster.pick(hash, &[])?;
        set_upstream_target(&mut parts, protocol, endpoint.pool().addr())?;
        let req = Request::from_parts(parts, Body::incoming(body));
        if let Some(on_upgrade) = on_upgrade {
            return upgrade::tunnel(&endpoint, req, on_upgrade).await;
        }
        let mut resp = cluster.send_to(&endpoint, req).await?;
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        Ok(resp)
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
    endpoint: SocketAddr,
) -> Result<(), ProxyError> {
    let authority: Authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => match parts
            .headers
            .get(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        {
            Some(a) => a,
            None => Authority::try_from(endpoint.to_string())
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

fn access_log(
    listener: &str,
    route: &Route,
    method: &http::Method,
    path: &str,
    status: u16,
    elapsed: Duration,
) {
    info!(
        target: "switchyard::access",
        listener,
        route = route.name(),
        method = method.as_str(),
        path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
    );
}
