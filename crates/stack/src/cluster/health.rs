//! Active health checks: HTTP (path and expected statuses), gRPC
//! (`grpc.health.v1.Health/Check`) and TCP connect, every `interval` with
//! ±10% jitter so that a fleet of proxies does not probe in lockstep. A
//! check connects as requests do, with the cluster's TLS when it has one.

use std::{net::SocketAddr, sync::Arc};

use futures_util::future::join_all;
use http::{Request, header::HOST};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_balance::Target;
use switchyard_config::{HealthCheck, HealthCheckKind, UpstreamProtocol};
use tracing::debug;

use super::Cluster;
use crate::{
    body::Body,
    drain,
    upstream::{UpstreamIo, open},
};

/// Starts a cluster's background upkeep on the current runtime: its
/// active health checks, when it configures them, until the returned
/// signal is dropped. The proxy runs it for each cluster, the library's
/// client for its own. (Idle upstream connections are swept by a task the
/// cluster's pools start with their first idle connection.)
pub fn start_upkeep(cluster: &Arc<Cluster>) -> drain::Signal {
    let (signal, watch) = drain::channel();
    if cluster.health_check().is_some() {
        tokio::spawn(run(cluster.clone(), watch));
    }
    signal
}

/// Checks every endpoint of `cluster` until `watch` signals draining.
pub async fn run(cluster: Arc<Cluster>, mut watch: drain::Watch) {
    let Some(hc) = cluster.health_check().cloned() else {
        return;
    };
    let counted = cluster.metrics.health_checks(cluster.name());
    loop {
        let endpoints = cluster.endpoints();
        let results = join_all(endpoints.iter().map(|ep| check(ep.addr(), &cluster, &hc))).await;
        for (ep, ok) in endpoints.iter().zip(results) {
            counted.record(ok);
            if let Some(t) = ep.health().record_check(ok, hc.healthy, hc.unhealthy) {
                cluster.transition(ep, t);
            }
        }
        let jitter = 0.9 + fastrand::f64() * 0.2;
        tokio::select! {
            _ = tokio::time::sleep(hc.interval.mul_f64(jitter)) => {}
            _ = watch.signaled() => return,
        }
    }
}

/// One check of one endpoint; `true` when healthy. Checks connect as
/// requests do: over the cluster's TLS when it has `tls`.
pub async fn check(addr: SocketAddr, cluster: &Cluster, hc: &HealthCheck) -> bool {
    let name = cluster.name();
    let tls = cluster.settings.tls.as_ref();
    let result = tokio::time::timeout(hc.timeout, async {
        // An upstream that expects a PROXY header gets one on every
        // connection: the LOCAL form, as the check has no client.
        let preface = cluster
            .settings
            .proxy_protocol
            .map(crate::server::proxy_protocol::local_header);
        let io = open(addr, hc.timeout, tls, preface.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let origin = || {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{name}")
        };
        match &hc.kind {
            HealthCheckKind::Tcp => Ok(true),
            HealthCheckKind::Http {
                path,
                expected_statuses,
            } => {
                http_check(
                    io,
                    name,
                    cluster.protocol(),
                    &origin(),
                    path,
                    expected_statuses,
                )
                .await
            }
            HealthCheckKind::Grpc { service } => grpc_check(io, &origin(), service).await,
        }
    })
    .await;
    match result {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            debug!(%addr, cluster = name, error = %e, "health check failed");
            false
        }
        Err(_) => {
            debug!(%addr, cluster = name, "health check timed out");
            false
        }
    }
}

async fn http_check(
    io: UpstreamIo,
    cluster: &str,
    protocol: UpstreamProtocol,
    origin: &str,
    path: &str,
    expected: &[u16],
) -> Result<bool, String> {
    let io = TokioIo::new(io);
    let status = match protocol {
        UpstreamProtocol::Http1 => {
            let (mut tx, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header(HOST, cluster)
                .header("user-agent", "switchyard-health")
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            tx.send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
        UpstreamProtocol::Http2 => {
            let (mut tx, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::get(format!("{origin}{path}"))
                .header("user-agent", "switchyard-health")
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            tx.send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
    };
    Ok(if expected.is_empty() {
        status.is_success()
    } else {
        expected.contains(&status.as_u16())
    })
}

/// `grpc.health.v1.Health/Check` with tonic's generated client, over an
/// HTTP/2 connection the check opened itself (so that it is TLS when the
/// cluster's is).
async fn grpc_check(io: UpstreamIo, origin: &str, service: &str) -> Result<bool, String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let origin = http::Uri::try_from(origin).map_err(|e| e.to_string())?;
    let resp = HealthClient::with_origin(H2(tx), origin)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.into_inner().status == ServingStatus::Serving as i32)
}

/// A hyper HTTP/2 connection as the service tonic's clients call.
#[derive(Clone)]
struct H2(http2::SendRequest<tonic::body::Body>);

type H2Future = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>,
>;

impl tower::Service<Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = H2Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> H2Future {
        Box::pin(self.0.send_request(req))
    }
}
