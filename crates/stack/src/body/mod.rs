//! The one body type of the request path.
//!
//! An enum rather than a boxed trait object: the proxy forwards hyper's
//! `Incoming` bodies in both directions and answers some requests itself, and
//! a closed set of variants keeps that free of per-request allocation.
//!
//! A request body that fails on the client's side (a bad chunk, a client
//! that vanished mid-upload) marks its [`DownstreamState`], so that the
//! failure of the upstream attempt it breaks is classified as the client's
//! and never blamed on the endpoint, retried or ended cleanly upstream.

mod error;
mod grpc;
mod replay;
mod timed;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use tokio::time::Instant;

pub use error::BodyError;
pub use grpc::{GrpcEnd, GrpcObserved, OnGrpcEnd};
pub use replay::ReplayBody;
pub use timed::{StreamLimits, TimedBody};

use crate::{server::streams::StreamCtl, upstream::ResponseGuard};

/// How far a downstream request body has come, shared by every attempt
/// that sends it: whether it failed, and when it ended (the route timeout
/// counts from there, so a client stream may last longer than it).
#[derive(Clone, Debug)]
pub struct DownstreamState(Arc<StateInner>);

#[derive(Debug)]
struct StateInner {
    failed: AtomicBool,
    /// Nanoseconds after `epoch` at which the body ended, plus one; 0 while
    /// it is still streaming.
    ended: AtomicU64,
    epoch: Instant,
    /// The downstream stream whose progress the body's frames report.
    stream: Option<Arc<StreamCtl>>,
}

impl Default for DownstreamState {
    fn default() -> Self {
        Self::new(None)
    }
}

impl DownstreamState {
    /// The state of a body sent on `stream`: each frame counts as progress
    /// for the stream's idle timeout.
    pub fn new(stream: Option<Arc<StreamCtl>>) -> Self {
        Self(Arc::new(StateInner {
            failed: AtomicBool::new(false),
            ended: AtomicU64::new(0),
            epoch: Instant::now(),
            stream,
        }))
    }

    pub fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }

    /// When the body was received completely, or `None` while the client
    /// is still sending it (or after it failed).
    pub fn ended_at(&self) -> Option<Instant> {
        match self.0.ended.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.0.epoch + Duration::from_nanos(n - 1)),
        }
    }

    fn frame(&self) {
        if let Some(s) = &self.0.stream {
            s.request_frame();
        }
    }

    fn mark_failed(&self) {
        self.0.failed.store(true, Ordering::Release);
    }

    fn mark_ended(&self) {
        let n = u64::try_from(self.0.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        // Only the first end counts; replays end again later.
        let _ = self
            .0
            .ended
            .compare_exchange(0, n + 1, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Errors of a caller's own body type, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as it arrives: from a downstream connection, or a Rust
/// caller's own body type (tonic's, axum's) when the library sends it. A
/// failure of either is the caller's.
#[derive(Debug)]
pub enum Source {
    Incoming(Incoming),
    Caller(UnsyncBoxBody<Bytes, BoxError>),
}

impl Source {
    /// Any body with `Bytes` data, boxed.
    pub fn caller<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Source::Caller(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<Incoming> for Source {
    fn from(body: Incoming) -> Self {
        Source::Incoming(body)
    }
}

impl http_body::Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Source::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Source::Caller(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Incoming(body) => body.is_end_stream(),
            Source::Caller(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Incoming(body) => body.size_hint(),
            Source::Caller(body) => body.size_hint(),
        }
    }
}

/// A request or response body.
#[derive(Debug, Default)]
pub struct Body {
    kind: Kind,
}

#[derive(Debug, Default)]
enum Kind {
    #[default]
    Empty,
    Full(Option<Bytes>),
    /// Streamed from a peer as it arrives.
    Incoming(Incoming),
    /// A downstream request body streamed once to the upstream.
    Downstream {
        body: Source,
        state: DownstreamState,
    },
    /// A request body that a retry can send again.
    Replay(ReplayBody),
    /// A response streamed from an upstream; the guard returns the connection
    /// to its pool and ends the in-flight count once the body is complete.
    Upstream {
        body: Incoming,
        guard: Option<ResponseGuard>,
    },
    /// A body under stream limits (idle timeout, maximum duration); boxed
    /// because only some requests carry one.
    Timed(Box<TimedBody>),
    /// A gRPC response whose status is reported when its trailers pass.
    Grpc(Box<GrpcObserved>),
    /// Frames from a channel, for unit tests of body wrappers.
    #[cfg(test)]
    Test(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>),
}

impl Body {
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            return Self::empty();
        }
        Self {
            kind: Kind::Full(Some(data)),
        }
    }

    pub fn incoming(body: Incoming) -> Self {
        Self {
            kind: Kind::Incoming(body),
        }
    }

    /// A downstream request body sent once; `state` learns whether it
    /// failed.
    pub fn downstream(body: impl Into<Source>, state: DownstreamState) -> Self {
        let body = body.into();
        if http_body::Body::is_end_stream(&body) {
            state.mark_ended();
        }
        Self {
            kind: Kind::Downstream { body, state },
        }
    }

    /// This body under `limits`.
    pub fn timed(self, limits: StreamLimits) -> Self {
        Self {
            kind: Kind::Timed(Box::new(TimedBody::new(self, limits))),
        }
    }

    /// This body, telling `hook` how the gRPC call it carries ended.
    pub fn on_grpc_end(self, hook: Box<dyn OnGrpcEnd>) -> Self {
        Self {
            kind: Kind::Grpc(Box::new(GrpcObserved::new(self, hook))),
        }
    }

    /// The failure state of the downstream request body this body sends, if
    /// it sends one.
    pub fn downstream_state(&self) -> Option<DownstreamState> {
        match &self.kind {
            Kind::Downstream { state, .. } => Some(state.clone()),
            Kind::Replay(r) => Some(r.state()),
            Kind::Timed(t) => t.inner().downstream_state(),
            Kind::Grpc(g) => g.inner().downstream_state(),
            _ => None,
        }
    }

    /// A body fed from a channel, for unit tests.
    #[cfg(test)]
    pub(crate) fn test_channel(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>,
    ) -> Self {
        Self {
            kind: Kind::Test(rx),
        }
    }

    pub fn replay(body: ReplayBody) -> Self {
        Self {
            kind: Kind::Replay(body),
        }
    }

    /// An upstream response body. When it is already complete (HEAD, 204,
    /// 304, empty bodies) the guard completes at once: hyper may never poll a
    /// body that reports its end up front.
    pub(crate) fn upstream(body: Incoming, guard: ResponseGuard) -> Self {
        if http_body::Body::is_end_stream(&body) {
            guard.complete();
            return Self {
                kind: Kind::Incoming(body),
            };
        }
        Self {
            kind: Kind::Upstream {
                body,
                guard: Some(guard),
            },
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Every variant is `Unpin`, so no projection is needed.
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Upstream),
            Kind::Downstream { body, state } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => state.mark_ended(),
                    Poll::Ready(Some(Ok(_))) => {
                        state.frame();
                        if body.is_end_stream() {
                            state.mark_ended();
                        }
                    }
                    _ => {}
                }
                polled.map_err(|e| {
                    state.mark_failed();
                    BodyError::Downstream(e)
                })
            }
            Kind::Replay(body) => Pin::new(body).poll_frame(cx),
            Kind::Timed(body) => body.poll_frame(cx),
            Kind::Grpc(body) => body.poll_frame(cx),
            #[cfg(test)]
            Kind::Test(rx) => rx
                .poll_recv(cx)
                .map(|f| f.map(|f| Ok(f.unwrap_or_else(|e| match e {})))),
            Kind::Upstream { body, guard } => {
                let polled = Pin::new(&mut *body)
                    .poll_frame(cx)
                    .map_err(BodyError::Upstream);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(g) = guard.take() {
                            g.complete();
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(t), Some(g)) = (frame.trailers_ref(), guard.as_mut()) {
                            g.trailers(t);
                        }
                        // hyper's server stops polling once the body says it
                        // has ended, so complete as soon as that is known.
                        if body.is_end_stream() {
                            if let Some(g) = guard.take() {
                                g.complete();
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The connection is broken: dropping the guard drops
                        // the connection instead of pooling it.
                        guard.take();
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(data) => data.is_none(),
            Kind::Incoming(body) | Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Downstream { body, .. } => body.is_end_stream(),
            Kind::Replay(body) => body.is_end_stream(),
            Kind::Timed(body) => body.is_end_stream(),
            Kind::Grpc(body) => body.is_end_stream(),
            #[cfg(test)]
            Kind::Test(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Incoming(body) | Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Downstream { body, .. } => body.size_hint(),
            Kind::Replay(body) => body.size_hint(),
            Kind::Timed(body) => body.size_hint(),
            Kind::Grpc(body) => body.size_hint(),
            #[cfg(test)]
            Kind::Test(_) => SizeHint::default(),
        }
    }
}
