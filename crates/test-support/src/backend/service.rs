//! Request handling: the fixed endpoints, then the switchable [`Mode`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::io::ConnCtl;
use super::{BACKEND_HEADER, Inner, Mode, stopped};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Size of the frames `/bytes/{n}` streams, a multiple of the 26-letter
/// pattern so every frame starts at `a`.
const BYTES_CHUNK: usize = 26 * 2048;

/// What a request handler can reach: the backend, its connection's control
/// block and the stop signal of the current run (which only the upgraded
/// tasks need: everything else is dropped with its connection).
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub(crate) inner: Arc<Inner>,
    pub(crate) ctl: Arc<ConnCtl>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The body `/bytes/{n}` returns: `abc…xyzabc…`, `n` bytes long.
pub fn expected_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

pub(crate) async fn handle(
    cx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut response = route(&cx, req).await;
    if let Ok(name) = HeaderValue::from_str(&cx.inner.name) {
        response.headers_mut().insert(BACKEND_HEADER, name);
    }
    Ok(response)
}

async fn route(cx: &ConnContext, req: Request<Incoming>) -> Response<Body> {
    let inner = &cx.inner;
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        // Not recorded: active health checks would drown the requests tests
        // care about.
        inner.stats.health_check();
        return if inner.healthy.load(Ordering::Relaxed) {
            text(StatusCode::OK, "ok")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
        };
    }
    inner.stats.record(&req);

    if path == "/echo" {
        return echo(req);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<usize>() {
            Ok(n) => bytes(n),
            Err(_) => text(StatusCode::BAD_REQUEST, "bytes/{n}: n must be a number"),
        };
    }
    if path == "/headers" {
        return headers_json(&req);
    }
    if path == "/ws" {
        return upgrade(req, cx.shutdown.clone());
    }

    let mode = (**inner.mode.load()).clone();
    match mode {
        Mode::Ok => ok(inner),
        Mode::Status(code) => match StatusCode::from_u16(code) {
            Ok(status) => text(status, inner.name.clone()),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("bad status {code}"),
            ),
        },
        Mode::Delay(delay) => {
            // If the backend stops meanwhile, the connection is dropped and
            // this future with it: the client sees a dead connection, not an
            // answer, as from a real instance dying.
            tokio::time::sleep(delay).await;
            ok(inner)
        }
        Mode::FailRatio(ratio) => {
            if fastrand::f64() < ratio {
                text(StatusCode::INTERNAL_SERVER_ERROR, inner.name.clone())
            } else {
                ok(inner)
            }
        }
        Mode::Garbage => {
            // Read the whole body first: closing a socket with unread input
            // makes the kernel send RST, which could hide the garbage.
            let _ = req.into_body().collect().await;
            cx.ctl.garbage.store(true, Ordering::Release);
            // hyper's attempt to write this response is what triggers the
            // garbage (see io.rs).
            ok(inner)
        }
        Mode::CloseWithoutResponse => {
            cx.ctl.close.notify_one();
            // The connection task drops this future together with the socket.
            std::future::pending().await
        }
        // Never resolves; dropped with its connection when the client gives
        // up or the backend stops (hyper also cancels h2 streams whose
        // connection is gone).
        Mode::Hang => std::future::pending().await,
    }
}

fn ok(inner: &Inner) -> Response<Body> {
    text(StatusCode::OK, inner.name.clone())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Streams the request body straight back, frame by frame, so arbitrarily
/// large bodies never sit in memory and streaming behaviour is observable.
fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut response = Response::new(body.map_err(BoxError::from).boxed());
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        response.headers_mut().insert(CONTENT_LENGTH, len.clone());
    }
    if let Some(ty) = parts.headers.get(CONTENT_TYPE) {
        response.headers_mut().insert(CONTENT_TYPE, ty.clone());
    }
    response
}

fn bytes(n: usize) -> Response<Body> {
    let chunk = Bytes::from(expected_bytes(n.min(BYTES_CHUNK)));
    let frames = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(BYTES_CHUNK);
            Some((
                Ok::<_, BoxError>(Frame::data(chunk.slice(..take))),
                left - take,
            ))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `{"name": "value"}`; a header sent several times maps to an array.
fn headers_json<B>(req: &Request<B>) -> Response<Body> {
    let mut map = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<serde_json::Value> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        let value = match <[_; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => serde_json::Value::Array(many),
        };
        map.insert(name.as_str().to_owned(), value);
    }
    let body = serde_json::Value::Object(map).to_string();
    let mut response = text(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// HTTP/1.1 Upgrade to any protocol, then a raw byte echo on the upgraded IO.
fn upgrade(mut req: Request<Incoming>, shutdown: watch::Receiver<bool>) -> Response<Body> {
    let wants_upgrade = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let Some(protocol) = req.headers().get(UPGRADE).cloned() else {
        return text(StatusCode::BAD_REQUEST, "/ws needs an Upgrade header");
    };
    if !wants_upgrade {
        return text(StatusCode::BAD_REQUEST, "/ws needs Connection: upgrade");
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = tokio::select! {
            upgraded = on_upgrade => upgraded,
            () = stopped(shutdown.clone()) => return,
        };
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "upgrade did not complete");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        tokio::select! {
            copied = tokio::io::copy(&mut rd, &mut wr) => {
                if let Err(err) = copied {
                    tracing::debug!(%err, "upgraded echo ended");
                }
                // Peer half-closed: echo that too so it sees EOF.
                let _ = wr.shutdown().await;
            }
            () = stopped(shutdown) => {}
        }
    });

    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(UPGRADE, protocol);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response
}
