//! Active health checks: HTTP (path and expected statuses), gRPC
//! (`grpc.health.v1.Health/Check`) and TCP connect, every `interval` with
//! ±10% jitter so that a fleet of proxies does not probe in lockstep.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::future::join_all;
use http::{Request, header::HOST};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_balance::Target;
use switchyard_config::{HealthCheck, HealthCheckKind, UpstreamProtocol};
use tracing::debug;

use super::Cluster;
use crate::{body::Body, drain, upstream::connect};

/// Checks every endpoint of `cluster` until `watch` signals draining.
pub async fn run(cluster: Arc<Cluster>, mut watch: drain::Watch) {
    let Some(hc) = cluster.health_check().cloned() else {
        return;
    };
    let counted = cluster.metrics.health_checks(cluster.name());
    loop {
        let endpoints = cluster.endpoints();
        let results = join_all(
            endpoints
                .iter()
                .map(|ep| check(ep.addr(), cluster.name(), cluster.protocol(), &hc)),
        )
        .await;
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

/// One check of one endpoint; `true` when healthy.
pub async fn check(
    addr: SocketAddr,
    cluster: &str,
    protocol: UpstreamProtocol,
    hc: &HealthCheck,
) -> bool {
    let result = tokio::time::timeout(hc.timeout, async {
        match &hc.kind {
            HealthCheckKind::Tcp => connect(addr, hc.timeout)
                .await
                .map(|_| true)
                .map_err(|e| e.to_string()),
            HealthCheckKind::Http {
                path,
                expected_statuses,
            } => http_check(addr, cluster, protocol, path, expected_statuses, hc.timeout).await,
            HealthCheckKind::Grpc { service } => grpc_check(addr, service, hc.timeout).await,
        }
    })
    .await;
    match result {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            debug!(%addr, cluster, error = %e, "health check failed");
            false
        }
        Err(_) => {
            debug!(%addr, cluster, "health check timed out");
            false
        }
    }
}

async fn http_check(
    addr: SocketAddr,
    cluster: &str,
    protocol: UpstreamProtocol,
    path: &str,
    expected: &[u16],
    timeout: Duration,
) -> Result<bool, String> {
    let stream = connect(addr, timeout).await.map_err(|e| e.to_string())?;
    let io = TokioIo::new(stream);
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
            let req = Request::get(format!("http://{cluster}{path}"))
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

async fn grpc_check(addr: SocketAddr, service: &str, timeout: Duration) -> Result<bool, String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.into_inner().status == ServingStatus::Serving as i32)
}
