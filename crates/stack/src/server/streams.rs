//! The streams of one downstream connection, watched for progress, and the
//! per-client-address limit on them.
//!
//! hyper writes a response body only as fast as the client takes it: while an
//! HTTP/2 client holds its window at zero, or an HTTP/1.1 client does not
//! read, hyper does not poll the body at all, so no timer inside the body can
//! fire. Each stream therefore carries a [`StreamCtl`] that its bodies update
//! with two relaxed atomic stores per frame, and the connection's own task
//! looks at them from outside a few times per timeout:
//!
//! - **send timeout**: the response handed over its last frame and has not
//!   been asked for another for `send_timeout` — the client is not reading;
//! - **stream idle**: no body frame moved either way for
//!   `stream_idle_timeout`.
//!
//! Ending a stream means resetting it (HTTP/2: the stream's task is dropped,
//! hyper sends `RST_STREAM`) or closing the connection (HTTP/1.1, one stream
//! at a time). Either way its response body is dropped, which releases the
//! cluster's request slot and the upstream connection at once.
//!
//! HTTP/2 streams are made killable by `StreamExecutor`: hyper spawns one
//! task per stream through it, from inside the connection's poll, where the
//! connection's `ConnStreams` are reachable through a task-local.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::error::ErrorKind;

tokio::task_local! {
    /// The connection whose poll is running: hyper calls the executor from
    /// there when a new HTTP/2 stream arrives.
    static CONN: Arc<ConnStreams>;
    /// The HTTP/2 stream whose task is being polled for the first time, for
    /// the service future to pick up.
    static STREAM: Arc<StreamCtl>;
}

/// Where a stream's response stands, for the watchdog.
mod state {
    /// The response head has not been sent.
    pub const HEAD: u8 = 0;
    /// The body was polled and had nothing ready: waiting on the upstream.
    pub const UPSTREAM: u8 = 1;
    /// The body handed over a frame and was not polled again: waiting on
    /// the client to take it.
    pub const CLIENT: u8 = 2;
    /// The body is complete (or failed); nothing is held for the upstream.
    pub const DONE: u8 = 3;
}

/// One downstream stream's progress, shared by its bodies and its
/// connection's watchdog.
#[derive(Debug)]
pub struct StreamCtl {
    /// Body frames moved either way; the watchdog compares it across looks.
    frames: AtomicU32,
    state: AtomicU8,
    killed: AtomicBool,
    /// The HTTP/2 stream task to wake when the stream is ended.
    waker: AtomicWaker,
    /// Served by its own task (HTTP/2) rather than the connection's.
    spawned: bool,
    /// `None` when the client was over its limit at the stream's start.
    client: Option<ClientPermit>,
}

impl StreamCtl {
    fn new(client: Option<&Arc<ClientSlot>>, spawned: bool) -> Self {
        Self {
            frames: AtomicU32::new(0),
            state: AtomicU8::new(state::HEAD),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            spawned,
            client: client.map_or(Some(ClientPermit(None)), |c| c.try_acquire()),
        }
    }

    /// False when the client already had its maximum of streams in flight
    /// when this one began; the request is then answered at once.
    pub fn admitted(&self) -> bool {
        self.client.is_some()
    }

    /// A request body frame arrived from the client.
    pub(crate) fn request_frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    fn response_polled<T, E>(&self, polled: &Poll<Option<Result<T, E>>>, end: bool) {
        let state = match polled {
            Poll::Ready(Some(Ok(_))) => {
                self.frames.fetch_add(1, Ordering::Relaxed);
                if end { state::DONE } else { state::CLIENT }
            }
            Poll::Ready(_) => state::DONE,
            Poll::Pending => state::UPSTREAM,
        };
        self.state.store(state, Ordering::Relaxed);
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The streams of one connection, and the client address they count
/// against.
#[derive(Debug)]
pub(super) struct ConnStreams {
    client: Option<Arc<ClientSlot>>,
    watched: Mutex<Watchlist>,
    /// Streams were opened since the watchdog last looked.
    opened: AtomicBool,
}

#[derive(Debug)]
struct Watchlist {
    streams: Vec<Watched>,
    /// Finished streams are pruned when the list reaches this length, so
    /// that a busy HTTP/1.1 connection does not pile up entries between two
    /// looks of the watchdog.
    prune_at: usize,
}

const MIN_PRUNE_AT: usize = 16;

#[derive(Debug)]
struct Watched {
    ctl: Weak<StreamCtl>,
    frames: u32,
    /// When the watchdog last saw `frames` change (or first saw the stream).
    since: Instant,
}

/// What the watchdog found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Sweep {
    /// Streams ended, by reason.
    pub ended: Vec<ErrorKind>,
    /// A stream served by the connection itself (HTTP/1.1) was ended: the
    /// connection must close.
    pub close: bool,
    /// Streams still open, so the watchdog looks again.
    pub open: usize,
}

/// The two limits the watchdog enforces.
#[derive(Clone, Copy, Debug)]
pub(super) struct StreamTimeouts {
    pub send: Duration,
    pub idle: Duration,
}

impl StreamTimeouts {
    /// How often the watchdog looks while streams are open: a stream is
    /// ended between its timeout and a quarter more.
    pub fn interval(&self) -> Duration {
        (self.send.min(self.idle) / 4).max(Duration::from_millis(10))
    }
}

impl ConnStreams {
    pub fn new(client: Option<Arc<ClientSlot>>) -> Arc<Self> {
        Arc::new(Self {
            client,
            watched: Mutex::new(Watchlist {
                streams: Vec::new(),
                prune_at: MIN_PRUNE_AT,
            }),
            opened: AtomicBool::new(false),
        })
    }

    /// Runs `f` (a poll of the connection) where [`StreamExecutor`] finds
    /// this connection.
    pub fn enter<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CONN.sync_scope(self.clone(), f)
    }

    /// A new stream on this connection, counted against its client.
    pub fn open(&self, spawned: bool) -> Arc<StreamCtl> {
        let ctl = Arc::new(StreamCtl::new(self.client.as_ref(), spawned));
        let mut list = lock(&self.watched);
        if list.streams.len() >= list.prune_at {
            list.streams.retain(|w| w.ctl.strong_count() > 0);
            list.prune_at = (2 * list.streams.len()).max(MIN_PRUNE_AT);
        }
        list.streams.push(Watched {
            ctl: Arc::downgrade(&ctl),
            frames: 0,
            since: Instant::now(),
        });
        drop(list);
        self.opened.store(true, Ordering::Release);
        ctl
    }

    /// The stream of the request being served: the one [`StreamExecutor`]
    /// opened for an HTTP/2 stream, else a new one (HTTP/1.1).
    pub fn current(&self) -> Arc<StreamCtl> {
        STREAM
            .try_with(Arc::clone)
            .unwrap_or_else(|_| self.open(false))
    }

    /// Whether streams were opened since the last call.
    pub fn take_opened(&self) -> bool {
        self.opened.swap(false, Ordering::AcqRel)
    }

    /// Ends the streams that broke a limit; forgets finished ones.
    pub fn sweep(&self, limits: StreamTimeouts, now: Instant) -> Sweep {
        let mut sweep = Sweep::default();
        lock(&self.watched).streams.retain_mut(|w| {
            let Some(ctl) = w.ctl.upgrade() else {
                return false;
            };
            let frames = ctl.frames.load(Ordering::Relaxed);
            if frames != w.frames {
                w.frames = frames;
                w.since = now;
            }
            let still = now.saturating_duration_since(w.since);
            let reason = match ctl.state.load(Ordering::Relaxed) {
                state::DONE => None,
                state::CLIENT if still >= limits.send => Some(ErrorKind::SendTimeout),
                _ if still >= limits.idle => Some(ErrorKind::StreamIdle),
                _ => None,
            };
            let Some(reason) = reason else {
                sweep.open += 1;
                return true;
            };
            sweep.ended.push(reason);
            if ctl.spawned {
                ctl.kill();
            } else {
                sweep.close = true;
            }
            false
        });
        sweep
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain bookkeeping, valid after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns hyper's HTTP/2 stream tasks so that the connection's watchdog can
/// end each of them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match CONN.try_with(|c| c.open(true)) {
            Ok(ctl) => {
                tokio::spawn(Killable {
                    fut,
                    ctl,
                    first: true,
                });
            }
            // Not called from a watched connection's poll.
            Err(_) => {
                tokio::spawn(fut);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 stream's task that ends when its stream is killed.
    struct Killable<F> {
        #[pin]
        fut: F,
        ctl: Arc<StreamCtl>,
        first: bool,
    }
}

impl<F: Future<Output = ()>> Future for Killable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.ctl.waker.register(cx.waker());
        if this.ctl.killed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if std::mem::take(this.first) {
            // The service future starts in this first poll and takes its
            // stream from here.
            let fut = this.fut;
            return STREAM.sync_scope(this.ctl.clone(), || fut.poll(cx));
        }
        this.fut.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports its progress to its stream.
    #[derive(Debug)]
    pub struct WatchedBody<B> {
        #[pin]
        inner: B,
        ctl: Arc<StreamCtl>,
    }
}

impl<B: HttpBody> WatchedBody<B> {
    pub fn new(inner: B, ctl: Arc<StreamCtl>) -> Self {
        if inner.is_end_stream() {
            // hyper will not poll a body that is complete up front.
            ctl.state.store(state::DONE, Ordering::Relaxed);
        }
        Self { inner, ctl }
    }
}

impl<B> HttpBody for WatchedBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        this.ctl
            .response_polled(&polled, this.inner.is_end_stream());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Requests in flight per client address on one listener.
#[derive(Debug)]
pub(super) struct ClientLimits {
    max: u32,
    slots: Mutex<HashMap<IpAddr, Weak<ClientSlot>>>,
}

impl ClientLimits {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The shared counter of `ip`, looked up once per connection.
    pub fn slot(self: &Arc<Self>, ip: IpAddr) -> Arc<ClientSlot> {
        let ip = ip.to_canonical();
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&ip).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(ClientSlot {
            ip,
            in_flight: AtomicU32::new(0),
            limits: self.clone(),
        });
        slots.insert(ip, Arc::downgrade(&slot));
        slot
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// One client address's streams in flight, shared by its connections.
#[derive(Debug)]
pub(super) struct ClientSlot {
    ip: IpAddr,
    in_flight: AtomicU32,
    limits: Arc<ClientLimits>,
}

impl ClientSlot {
    fn try_acquire(self: &Arc<Self>) -> Option<ClientPermit> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.limits.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ClientPermit(Some(self.clone())))
    }

    #[cfg(test)]
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        // The last connection of this address closed: forget it, unless a
        // new connection already put a fresh slot in its place.
        let mut slots = lock(&self.limits.slots);
        if slots.get(&self.ip).is_some_and(|w| w.strong_count() == 0) {
            slots.remove(&self.ip);
        }
    }
}

/// One stream counted against its client until dropped.
#[derive(Debug)]
struct ClientPermit(Option<Arc<ClientSlot>>);

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Some(slot) = &self.0 {
            slot.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http_body_util::BodyExt;

    use super::*;
    use crate::body::Body;

    const LIMITS: StreamTimeouts = StreamTimeouts {
        send: Duration::from_secs(30),
        idle: Duration::from_secs(300),
    };

    type Polled = Poll<Option<Result<Frame<Bytes>, crate::body::BodyError>>>;

    fn poll_once(body: &mut WatchedBody<Body>) -> Polled {
        let waker = futures_util::task::noop_waker();
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_does_not_take_ends_after_the_send_timeout() {
        let conn = ConnStreams::new(None);
        let ctl = conn.open(true);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = WatchedBody::new(Body::test_channel(rx), ctl.clone());
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        // hyper takes one frame, then stops polling: the client's window is
        // closed.
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        // The watchdog's first look sees the frame go by.
        assert_eq!(conn.sweep(LIMITS, Instant::now()).open, 1);
        let start = Instant::now();
        for step in 1..=3 {
            tokio::time::advance(LIMITS.send / 4).await;
            assert_eq!(conn.sweep(LIMITS, Instant::now()).open, 1, "step {step}");
        }
        tokio::time::advance(LIMITS.send / 4).await;
        let sweep = conn.sweep(LIMITS, Instant::now());
        assert_eq!(sweep.ended, vec![ErrorKind::SendTimeout]);
        assert!(
            !sweep.close,
            "an HTTP/2 stream is reset, not its connection"
        );
        assert!(ctl.killed.load(Ordering::Acquire));
        assert_eq!(start.elapsed(), LIMITS.send);
        assert_eq!(conn.sweep(LIMITS, Instant::now()), Sweep::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_upstream_is_not_a_send_timeout_but_ends_when_idle() {
        let conn = ConnStreams::new(None);
        let ctl = conn.open(false);
        let (_tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        let mut body = WatchedBody::new(Body::test_channel(rx), ctl.clone());
        assert!(poll_once(&mut body).is_pending());
        tokio::time::advance(LIMITS.send * 2).await;
        assert_eq!(conn.sweep(LIMITS, Instant::now()).open, 1);
        tokio::time::advance(LIMITS.idle).await;
        let sweep = conn.sweep(LIMITS, Instant::now());
        assert_eq!(sweep.ended, vec![ErrorKind::StreamIdle]);
        assert!(sweep.close, "an HTTP/1.1 stream closes its connection");
    }

    #[tokio::test(start_paused = true)]
    async fn request_frames_keep_a_stream_alive() {
        let conn = ConnStreams::new(None);
        let ctl = conn.open(true);
        for _ in 0..20 {
            tokio::time::advance(LIMITS.idle / 2).await;
            ctl.request_frame();
            assert_eq!(conn.sweep(LIMITS, Instant::now()).open, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn finished_streams_are_forgotten() {
        let conn = ConnStreams::new(None);
        let ctl = conn.open(false);
        let mut body = WatchedBody::new(Body::full("done"), ctl.clone());
        while body.frame().await.is_some() {}
        tokio::time::advance(LIMITS.idle * 2).await;
        assert_eq!(
            conn.sweep(LIMITS, Instant::now()).open,
            1,
            "done, still referenced"
        );
        drop((body, ctl));
        assert_eq!(conn.sweep(LIMITS, Instant::now()), Sweep::default());
    }

    #[test]
    fn finished_streams_do_not_pile_up_between_looks() {
        let conn = ConnStreams::new(None);
        for _ in 0..10_000 {
            drop(conn.open(false));
        }
        assert!(lock(&conn.watched).streams.len() <= MIN_PRUNE_AT);
    }

    #[test]
    fn a_client_over_its_limit_is_not_admitted_until_a_stream_ends() {
        let limits = ClientLimits::new(2);
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
        let a = ConnStreams::new(Some(limits.slot(ip)));
        let b = ConnStreams::new(Some(limits.slot(ip)));
        let other = ConnStreams::new(Some(limits.slot(IpAddr::V4(Ipv4Addr::LOCALHOST))));
        let first = a.open(true);
        let second = b.open(true);
        assert!(first.admitted() && second.admitted());
        assert!(!a.open(true).admitted(), "the limit spans connections");
        assert!(
            other.open(true).admitted(),
            "other clients are not affected"
        );
        drop(first);
        let third = b.open(true);
        assert!(third.admitted());
        assert_eq!(limits.slot(ip).in_flight(), 2);
        drop((second, third));
        assert_eq!(limits.slot(ip).in_flight(), 0);
    }

    #[test]
    fn client_addresses_are_forgotten_with_their_last_connection() {
        let limits = ClientLimits::new(2);
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        let a = limits.slot(mapped);
        let b = limits.slot("127.0.0.9".parse().unwrap());
        assert!(
            Arc::ptr_eq(&a, &b),
            "an IPv4-mapped address is the IPv4 client"
        );
        drop(a);
        assert_eq!(limits.tracked(), 1);
        drop(b);
        assert_eq!(limits.tracked(), 0);
    }
}
