//! Request bodies that can be sent again.
//!
//! A retry needs the request body a second time, but the proxy streams
//! bodies instead of buffering them. A [`ReplayBody`] streams like any body
//! while keeping a copy of what went by, up to a cap; a retry gets a new
//! `ReplayBody` over the same state that first replays the copy and then
//! continues with whatever the client has not sent yet. A body larger than
//! the cap stops being copied and cannot be retried — it still streams.
//! Streaming calls (gRPC bidi) keep working because nothing waits for the
//! end of the body.
//!
//! A body whose client side failed is never replayed and never ends
//! cleanly: every view that reaches the point of failure fails too, so an
//! upstream never sees a truncated body as a complete request.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use super::{BodyError, DownstreamState, Source};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

#[derive(Debug)]
struct Shared {
    source: Source,
    chunks: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    trailers: Option<HeaderMap>,
    done: bool,
    overflowed: bool,
}

/// One attempt's view of a replayable request body.
#[derive(Debug)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    next: usize,
    trailers_sent: bool,
    hint: SizeHint,
    state: DownstreamState,
}

impl ReplayBody {
    /// Wraps `source`, copying up to `cap` bytes for replay; `state` learns
    /// how the client's side of the body went.
    pub fn new(source: impl Into<Source>, cap: usize, state: DownstreamState) -> Self {
        let source = source.into();
        let hint = source.size_hint();
        // A body known to exceed the cap will never be replayable; skip
        // copying it at all.
        let overflowed = hint.lower() > cap as u64;
        let done = source.is_end_stream();
        if done {
            state.mark_ended();
        }
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source,
                chunks: Vec::new(),
                buffered: 0,
                cap,
                trailers: None,
                done,
                overflowed,
            })),
            next: 0,
            trailers_sent: false,
            hint,
            state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The state is plain data, consistent even after a panic elsewhere.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh view for another attempt, or `None` when the body outgrew
    /// the cap and can no longer be replayed.
    pub fn replay(&self) -> Option<ReplayBody> {
        if self.lock().overflowed || self.state.failed() {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            next: 0,
            trailers_sent: false,
            hint: self.hint,
            state: self.state.clone(),
        })
    }

    /// Whether the client's side of this body failed.
    pub(super) fn state(&self) -> DownstreamState {
        self.state.clone()
    }

    /// Whether the whole body has been received (and is held in memory).
    pub fn is_complete(&self) -> bool {
        let s = self.lock();
        s.done && !s.overflowed
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if this.next < s.chunks.len() {
            let chunk = s.chunks[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.state.failed() {
            return Poll::Ready(Some(Err(BodyError::DownstreamIncomplete)));
        }
        if s.done {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        match Pin::new(&mut s.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                this.state.mark_ended();
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.mark_failed();
                Poll::Ready(Some(Err(BodyError::Downstream(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if s.source.is_end_stream() {
                    s.done = true;
                    this.state.mark_ended();
                }
                match frame.into_data() {
                    Ok(data) => {
                        if !s.overflowed {
                            s.buffered += data.len();
                            if s.buffered > s.cap {
                                s.overflowed = true;
                                s.chunks = Vec::new();
                            } else {
                                s.chunks.push(data.clone());
                                this.next = s.chunks.len();
                            }
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => {
                            s.trailers = Some(t.clone());
                            s.done = true;
                            this.state.mark_ended();
                            this.trailers_sent = true;
                            Poll::Ready(Some(Ok(Frame::trailers(t))))
                        }
                        // Unknown frame kinds are dropped.
                        Err(_) => {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.lock();
        s.done && self.next >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
