//! A test server on loopback with a few behaviours, and raw clients.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_serve::Settings;
use tokio::{
    io::AsyncReadExt,
    net::TcpStream,
    sync::{oneshot, watch},
    task::JoinHandle,
    time::{Instant, Sleep},
};

pub type TestBody = BoxBody<Bytes, Infallible>;

/// Short timeouts so that tests see them fire.
pub fn quick(max_connections: usize) -> Settings {
    Settings {
        max_connections,
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    }
}

/// Only the header read (first request) timeout short: what closes a
/// connection within seconds is that timer, not the idle one.
pub fn quick_first_request() -> Settings {
    Settings {
        idle_timeout: Duration::from_secs(60),
        ..quick(16)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// Requests to `/hold` that have started.
    pub held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Serves:
    /// - `/`: "ok" at once;
    /// - `/slow`: "slow" after 1s (the head too);
    /// - `/stream`: 5 chunks 250ms apart;
    /// - `/hold`: waits until [`TestServer::release`], then "released";
    /// - `/endless`: 64 KiB chunks without end.
    pub async fn start(settings: Settings) -> TestServer {
        let listener = switchyard_serve::bind("127.0.0.1:0".parse().unwrap()).expect("binds");
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let service = {
            let held = held.clone();
            tower::service_fn(move |req: Request<Incoming>| {
                let held = held.clone();
                let mut released = released.clone();
                async move { Ok::<_, Infallible>(handle(req, &held, &mut released).await) }
            })
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(switchyard_serve::serve(
            listener,
            service,
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            held,
            release,
            stop: Some(stop),
            join: Some(join),
        }
    }

    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// Signals shutdown; the handle resolves when `serve` returned.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join.take().expect("not yet shut down")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.release.send(true);
    }
}

async fn handle(
    req: Request<Incoming>,
    held: &AtomicUsize,
    released: &mut watch::Receiver<bool>,
) -> Response<TestBody> {
    match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            text("slow")
        }
        "/stream" => Response::new(
            Ticking {
                left: 5,
                every: Duration::from_millis(250),
                sleep: Box::pin(tokio::time::sleep(Duration::from_millis(250))),
            }
            .boxed(),
        ),
        "/hold" => {
            held.fetch_add(1, Ordering::SeqCst);
            let _ = released.wait_for(|r| *r).await;
            text("released")
        }
        "/endless" => Response::new(Endless.boxed()),
        _ => text("ok"),
    }
}

fn text(s: &'static str) -> Response<TestBody> {
    Response::new(Full::new(Bytes::from_static(s.as_bytes())).boxed())
}

/// `left` chunks, one every `every`.
struct Ticking {
    left: u32,
    every: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Body for Ticking {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

/// Data for as long as the client reads it.
struct Endless;

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

/// Reads (and discards) until the peer closes; returns how long that took,
/// or panics after `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(start + limit, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

/// An HTTP/1.1 client connection; its task's handle resolves when it closes.
pub async fn http1(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// An h2c client connection; its task's handle resolves when it closes.
pub async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// `GET path` for HTTP/1.1 (origin form, with `Host`).
pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `GET path` for HTTP/2 (absolute form: `:scheme` and `:authority`).
pub fn get2(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The whole body of a response, as text.
pub async fn text_of(resp: Response<Incoming>) -> String {
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8")
}
