//! Serving one connection: the first-request, idle and write stall
//! timeouts around hyper's connection future.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
    time::Instant,
};
use tracing::debug;

use crate::BoxError;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// The first request must arrive within this of the accept.
    pub first_request: Duration,
    /// No request in flight for this long, or writes stalled for this long:
    /// the connection is closed.
    pub idle: Duration,
}

/// Request and write activity on one connection, for the timeouts.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Requests whose response body has not been sent (or dropped) yet.
    in_flight: AtomicU32,
    /// When the last request ended, in ms since `epoch`.
    last_ms: AtomicU64,
    /// Whether any request has started on the connection.
    started: AtomicBool,
    /// Since when a write has been waiting for the socket, in ms since
    /// `epoch` plus one; 0 while writes go through.
    write_blocked: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
            write_blocked: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// When the connection becomes idle if nothing happens meanwhile, or
    /// `None` while requests are in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.at(self.last_ms.load(Ordering::Relaxed)) + idle)
    }

    /// When a write that is waiting now counts as stalled, if one waits.
    fn stall_deadline(&self, idle: Duration) -> Option<Instant> {
        match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.at(since - 1) + idle),
        }
    }

    fn wrote(&self, progressed: bool) {
        if progressed {
            self.write_blocked.store(0, Ordering::Relaxed);
        } else if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked
                .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
        }
    }
}

/// One request counted in [`Activity`] until dropped.
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Active {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.started.store(true, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until the body has
    /// ended or been dropped (hyper drops it when the client resets the
    /// stream or the connection closes).
    struct Tracked<B> {
        #[pin]
        body: B,
        active: Option<Active>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.active.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket (TCP, or TLS over TCP), noting whether writes go through.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    fn note<T>(&self, polled: &Poll<io::Result<T>>) {
        self.activity.wrote(polled.is_ready());
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves one connection until it closes, a timeout closes it, or `stop`
/// turns true (then gracefully).
pub(crate) async fn serve<I, S, B>(
    stream: I,
    peer: SocketAddr,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut service = service.clone();
        // A guard, not a decrement after the await: hyper drops the future
        // (and later the body) of a request whose HTTP/2 stream the client
        // reset, and the guard goes with them.
        let active = Active::start(act.clone());
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let response = service.call(req).await?;
            Ok::<_, S::Error>(response.map(|body| Tracked {
                body,
                active: Some(active),
            }))
        }
    });
    let io = TokioIo::new(Watched {
        io: stream,
        activity: activity.clone(),
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = timeouts.idle;
    // Until the first request, the timer is the first-request timer.
    let timer = tokio::time::sleep(timeouts.first_request);
    tokio::pin!(timer);
    // Since when the connection has been asked to close gracefully.
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|stop| *stop), if closing.is_none() => {
                // HTTP/2: GOAWAY; HTTP/1.1: close after the response in
                // flight, or at once when idle. (An error means the server
                // itself is gone: the same.)
                conn.as_mut().graceful_shutdown();
                let now = Instant::now();
                closing = Some(now);
                timer.as_mut().reset(now + timeouts.first_request);
            }
            () = &mut timer => {
                let now = Instant::now();
                if !activity.started.load(Ordering::Relaxed) {
                    // Nothing to answer: no request head, maybe half a
                    // preface. Closed, not kept for the idle timeout.
                    debug!(%peer, "no request within the header read timeout; closing");
                    break;
                }
                let stall = activity.stall_deadline(idle);
                if stall.is_some_and(|at| at <= now) {
                    // The client stopped reading: a graceful close would
                    // wait for the very writes that do not go through.
                    debug!(%peer, "writes stalled for the idle timeout; closing");
                    break;
                }
                let idle_at = activity.idle_deadline(idle);
                let next_at = match closing {
                    None => {
                        if idle_at.is_some_and(|at| at <= now) {
                            debug!(%peer, "idle; closing");
                            conn.as_mut().graceful_shutdown();
                            closing = Some(now);
                            Some(now + timeouts.first_request)
                        } else {
                            idle_at
                        }
                    }
                    // Nothing in flight, and still open a header read
                    // timeout after GOAWAY: an HTTP/2 client that does not
                    // answer the ping of hyper's graceful close (or an
                    // HTTP/1.1 one that keeps sending half a head) is not
                    // waited for.
                    Some(since) if idle_at.is_some() => {
                        let due = since + timeouts.first_request;
                        if due <= now {
                            debug!(%peer, "still open after the graceful close; closing");
                            break;
                        }
                        Some(due)
                    }
                    Some(_) => None,
                };
                let next = [stall, next_at]
                    .into_iter()
                    .flatten()
                    .fold(now + idle, Instant::min);
                timer.as_mut().reset(next);
            }
        }
    }
}
