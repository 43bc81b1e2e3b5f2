//! Watching a gRPC response body for the call's status.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::{Body, BodyError};

/// How a gRPC call's response stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcEnd {
    /// Trailers (or a trailers-only head) carried this `grpc-status`.
    Status(u32),
    /// The stream ended without trailers: a broken server.
    Missing,
    /// The stream failed (reset, connection lost) before its trailers.
    Failed,
    /// The client went away before the end.
    Cancelled,
}

impl GrpcEnd {
    /// The status the client is left with, as gRPC clients report it.
    pub fn code(self) -> u32 {
        match self {
            GrpcEnd::Status(c) => c,
            GrpcEnd::Missing => 2,   // UNKNOWN
            GrpcEnd::Failed => 14,   // UNAVAILABLE
            GrpcEnd::Cancelled => 1, // CANCELLED
        }
    }
}

/// Told once how a gRPC response stream ended.
pub trait OnGrpcEnd: Send + Sync + std::fmt::Debug + 'static {
    fn grpc_end(self: Box<Self>, end: GrpcEnd);
}

/// A response body that reports its call's end to a hook.
#[derive(Debug)]
pub struct GrpcObserved {
    inner: Body,
    hook: Option<Box<dyn OnGrpcEnd>>,
}

impl GrpcObserved {
    pub(super) fn new(inner: Body, hook: Box<dyn OnGrpcEnd>) -> Self {
        Self {
            inner,
            hook: Some(hook),
        }
    }

    fn end(&mut self, end: GrpcEnd) {
        if let Some(hook) = self.hook.take() {
            hook.grpc_end(end);
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    let code = t
                        .get("grpc-status")
                        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok());
                    self.end(code.map_or(GrpcEnd::Missing, GrpcEnd::Status));
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(GrpcEnd::Failed),
            Poll::Ready(None) => self.end(GrpcEnd::Missing),
            Poll::Pending => {}
        }
        polled
    }

    pub(super) fn inner(&self) -> &Body {
        &self.inner
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcObserved {
    fn drop(&mut self) {
        // hyper never polls a body that reports its end up front.
        let end = if self.inner.is_end_stream() {
            GrpcEnd::Missing
        } else {
            GrpcEnd::Cancelled
        };
        self.end(end);
    }
}
