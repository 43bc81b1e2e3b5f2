//! The one body type of the request path.
//!
//! An enum rather than a boxed trait object: the proxy forwards hyper's
//! `Incoming` bodies in both directions and answers some requests itself, and
//! a closed set of variants keeps that free of per-request allocation.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

mod replay;

pub use replay::ReplayBody;

use crate::upstream::ResponseGuard;

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
    /// A request body that a retry can send again.
    Replay(ReplayBody),
    /// A response streamed from an upstream; the guard returns the connection
    /// to its pool and ends the in-flight count once the body is complete.
    Upstream {
        body: Incoming,
        guard: Option<ResponseGuard>,
    },
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Every variant is `Unpin`, so no projection is needed.
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx),
            Kind::Replay(body) => Pin::new(body).poll_frame(cx),
            Kind::Upstream { body, guard } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(g) = guard.take() {
                            g.complete();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) => {
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
            Kind::Replay(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Incoming(body) | Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Replay(body) => body.size_hint(),
        }
    }
}
