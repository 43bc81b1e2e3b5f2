//! HTTP/1.1 protocol upgrades (WebSocket and friends), tunnelled as bytes.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchyard_balance::Target;
use tracing::debug;

use crate::{body::Body, cluster::Endpoint, error::ProxyError};

/// Sends an upgrade request on a dedicated upstream connection. When the
/// upstream agrees (101), both connections are spliced together until either
/// side closes; otherwise its answer is returned like any response.
pub async fn tunnel(
    endpoint: &Arc<Endpoint>,
    req: Request<Body>,
    downstream: OnUpgrade,
) -> Result<Response<Body>, ProxyError> {
    let in_flight = endpoint.load().start();
    let (mut resp, lease) = endpoint.pool().send_upgrade(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::incoming(body)));
    }
    let upstream = hyper::upgrade::on(&mut resp);
    let addr = endpoint.addr();
    tokio::spawn(async move {
        // The tunnel counts as in flight on the endpoint, and as an open
        // connection of the cluster, for its lifetime.
        let _in_flight = in_flight;
        let _lease = lease;
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
    Ok(Response::from_parts(parts, Body::incoming(body)))
}
