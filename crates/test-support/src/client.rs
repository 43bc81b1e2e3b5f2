//! Minimal HTTP/1.1 and h2c clients built directly on hyper's connection
//! API, so tests observe exactly one connection per call (no pool hiding
//! reconnects) and see transport errors as errors.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens a TCP connection and performs the HTTP/1.1 handshake; the
/// connection is driven by a spawned task (with upgrades enabled).
pub async fn http1_connect<B>(addr: SocketAddr) -> Result<http1::SendRequest<B>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "test client http1 connection ended");
        }
    });
    Ok(sender)
}

/// Opens a TCP connection and performs the h2c (prior knowledge) handshake.
pub async fn h2c_connect<B>(addr: SocketAddr) -> Result<http2::SendRequest<B>, BoxError>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "test client h2c connection ended");
        }
    });
    Ok(sender)
}

/// Sends one request over a new HTTP/1.1 connection and collects the
/// response body. Adds `Host: <addr>` when missing.
pub async fn send_http1<B>(
    addr: SocketAddr,
    mut req: Request<B>,
) -> Result<Response<Bytes>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if !req.headers().contains_key(HOST) {
        req.headers_mut()
            .insert(HOST, HeaderValue::from_str(&addr.to_string())?);
    }
    let mut sender = http1_connect(addr).await?;
    collect(sender.send_request(req).await?).await
}

/// Sends one request over a new h2c connection and collects the response
/// body. A path-only URI is made absolute (`http://<addr><path>`), as h2
/// needs `:scheme` and `:authority`.
pub async fn send_h2c<B>(addr: SocketAddr, mut req: Request<B>) -> Result<Response<Bytes>, BoxError>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if req.uri().authority().is_none() {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = format!("http://{addr}{path}").parse::<Uri>()?;
    }
    let mut sender = h2c_connect(addr).await?;
    collect(sender.send_request(req).await?).await
}

/// A request with a buffered body, for `send_*`.
pub fn request(method: Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.into()));
    *req.method_mut() = method;
    *req.uri_mut() = path
        .parse()
        .unwrap_or_else(|err| panic!("test request path {path:?}: {err}"));
    req
}

/// `GET <path>` over HTTP/1.1; panics on transport errors.
pub async fn get(addr: SocketAddr, path: &str) -> Response<Bytes> {
    send_http1(addr, request(Method::GET, path, Bytes::new()))
        .await
        .unwrap_or_else(|err| panic!("GET http://{addr}{path}: {err}"))
}

async fn collect<B>(response: Response<B>) -> Result<Response<Bytes>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(Response::from_parts(parts, body))
}
