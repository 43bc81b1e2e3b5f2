//! HTTP/1.1 protocol upgrades (WebSocket and friends), tunnelled as bytes.
//!
//! The upstream connection comes from the cluster like any request's: it
//! takes a request slot and a connection place for the tunnel's life,
//! counts in the endpoint's load, and its answer feeds outlier detection.

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchyard_balance::Target;
use tracing::debug;

use crate::{body::Body, cluster::Cluster, error::ProxyError};

/// Sends an upgrade request on a dedicated upstream connection. When the
/// upstream agrees (101), both connections are spliced together until either
/// side closes; otherwise its answer is returned like any response. Also
/// returns the endpoint that answered.
pub async fn tunnel(
    cluster: &Arc<Cluster>,
    hash: Option<u64>,
    req: Request<Body>,
    downstream: OnUpgrade,
) -> Result<(Response<Body>, SocketAddr), ProxyError> {
    let client = req
        .extensions()
        .get::<crate::upstream::ClientAddrs>()
        .copied();
    let mut up = cluster.connect_upgrade(hash, client.as_ref()).await?;
    let addr = up.endpoint.addr();
    let answer = up
        .sender
        .send_request(req)
        .await
        .map_err(|e| ProxyError::from_upstream(e).at(addr));
    cluster.upgrade_answered(&up, &answer);
    let mut resp = answer?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Ok((Response::from_parts(parts, Body::incoming(body)), addr));
    }
    let upstream = hyper::upgrade::on(&mut resp);
    let hold = up.hold;
    tokio::spawn(async move {
        // The tunnel holds its request slot, its connection's place and the
        // endpoint's in-flight count for its lifetime.
        let _hold = hold;
        match tokio::try_join!(downstream, upstream) {
            Ok((down, up)) => {
                let mut down = TokioIo::new(down);
                let mut up = TokioIo::new(up);
                match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                    Ok((tx, rx)) => debug!(%addr, tx, rx, "upgrade tunnel closed"),
                    Err(e) => debug!(%addr, error = %e, "upgrade tunnel failed"),
                }
            }
            Err(e) => debug!(%addr, error = %e, "upgrade did not complete"),
        }
    });
    let (parts, body) = resp.into_parts();
    Ok((Response::from_parts(parts, Body::incoming(body)), addr))
}
