//! Serving one downstream connection.

use std::{
    future::{Future, poll_fn},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use arc_swap::ArcSwap;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{rt::TokioIo, server::conn::auto};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tracing::debug;

use super::streams::{ClientLimits, ConnStreams, StreamExecutor, StreamTimeouts, WatchedBody};
use crate::{
    drain,
    proxy::{ConnInfo, HttpProxy},
};

#[derive(Debug)]
pub(super) struct Settings {
    pub max_age: Option<Duration>,
    pub idle_timeout: Duration,
    /// The first request must arrive within this of the accept (the
    /// listener's `header_read_timeout`): a connection that sends nothing,
    /// or half an HTTP/2 preface, is not kept for the whole idle timeout.
    pub first_request_timeout: Duration,
    pub streams: StreamTimeouts,
}

pub(super) struct Conn {
    /// The proxy current at the accept: the connection's metrics.
    pub proxy: Arc<HttpProxy>,
    /// Where each request finds the proxy current when it arrives.
    pub site: Arc<ArcSwap<super::HttpSite>>,
    pub builder: Arc<auto::Builder<StreamExecutor>>,
    pub clients: Arc<ClientLimits>,
    pub settings: Arc<Settings>,
    pub watch: drain::Watch,
}

/// Request activity on one connection, for the idle timeout. A request
/// counts as active until its response head is sent; a long response body
/// after that may be seen as idle, which is harmless because closing is
/// graceful (HTTP/2 streams in progress finish after GOAWAY, and HTTP/1.1
/// completes the response before closing).
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    last_ms: AtomicU64,
    /// Whether any request has started on the connection.
    started: AtomicBool,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection becomes idle if nothing happens meanwhile, or
    /// `None` while requests are in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch + last + idle)
    }
}

/// One request counted in [`Activity`] until dropped.
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

impl Conn {
    /// Serves HTTP/1.1 and HTTP/2 on `io` (a TCP stream, or TLS over one;
    /// `proto` is `http` or `https`, for `X-Forwarded-Proto`).
    pub async fn serve<I>(
        mut self,
        io: I,
        peer: SocketAddr,
        local: SocketAddr,
        proto: &'static str,
        identity: Option<Arc<str>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let metrics = self.proxy.metrics();
        metrics.connections_total.inc();
        metrics.connections_active.inc();
        let info = ConnInfo {
            peer,
            local,
            proto,
            identity,
        };
        let activity = Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
        });
        let streams = ConnStreams::new(Some(self.clients.slot(peer.ip())));
        let site = self.site.clone();
        let act = activity.clone();
        let svc_streams = streams.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            // One refcount per request; a reload in between is seen here.
            let proxy = site.load().proxy.clone();
            let streams = svc_streams.clone();
            // A guard, not a decrement after the await: hyper drops the
            // future of a request whose HTTP/2 stream the client reset.
            let active = Active::start(act.clone());
            let info = info.clone();
            async move {
                let stream = streams.current();
                let resp = proxy.handle(req, &info, &stream).await;
                drop(active);
                Ok::<_, std::convert::Infallible>(resp.map(|b| WatchedBody::new(b, stream)))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        tokio::pin!(conn);
        let age = tokio::time::sleep(self.settings.max_age.unwrap_or(FAR_FUTURE));
        tokio::pin!(age);
        let idle_timeout = self.settings.idle_timeout;
        // Until the first request, the idle timer is the first-request
        // timer; it becomes the idle timer when it fires after one began.
        let idle = tokio::time::sleep(self.settings.first_request_timeout.min(idle_timeout));
        tokio::pin!(idle);
        // Looks at the open streams every `interval` while there are any;
        // armed by the first stream opened after it found none.
        let timeouts = self.settings.streams;
        let interval = timeouts.interval();
        let watchdog = tokio::time::sleep(FAR_FUTURE);
        tokio::pin!(watchdog);
        let mut armed = false;
        let mut closing = false;
        loop {
            tokio::select! {
                biased;
                // hyper opens HTTP/2 streams from inside this poll, where
                // the stream executor finds the connection's streams.
                res = poll_fn(|cx| streams.enter(|| conn.as_mut().poll(cx))) => {
                    if let Err(e) = res {
                        debug!(%peer, error = %e, "downstream connection error");
                    }
                    break;
                }
                _ = self.watch.signaled(), if !closing => {
                    // HTTP/2: GOAWAY; HTTP/1.1: close after the response in
                    // flight, or at once when idle.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut age, if !closing && self.settings.max_age.is_some() => {
                    // Old connections go away so that clients reconnect and
                    // spread over endpoints added since.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut idle, if !closing => {
                    if !activity.started.load(Ordering::Relaxed) {
                        // Nothing arrived in time: not even a request head
                        // to answer, so the connection is simply closed.
                        debug!(%peer, "no request within the header read timeout; closing");
                        break;
                    }
                    match activity.idle_deadline(idle_timeout) {
                        Some(deadline) if deadline <= Instant::now() => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Some(deadline) => idle.as_mut().reset(deadline),
                        None => idle.as_mut().reset(Instant::now() + idle_timeout),
                    }
                }
                _ = poll_fn(|cx| {
                    if streams.take_opened() && !armed {
                        watchdog.as_mut().reset(Instant::now() + interval);
                        armed = true;
                    }
                    if armed { watchdog.as_mut().poll(cx) } else { Poll::Pending }
                }) => {
                    let now = Instant::now();
                    let sweep = streams.sweep(timeouts, now);
                    for kind in &sweep.ended {
                        debug!(%peer, reason = kind.as_str(), "ending a stream that made no progress");
                        metrics.error(kind.as_str());
                    }
                    if sweep.close {
                        // HTTP/1.1: the stream is the connection.
                        break;
                    }
                    if sweep.open > 0 {
                        watchdog.as_mut().reset(now + interval);
                    } else {
                        armed = false;
                    }
                }
            }
        }
        metrics.connections_active.dec();
    }
}

/// Stands in for "never" in timers that are disabled.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);
