//! Stream limits on a body: an optional end of the whole stream (the route's
//! `max_stream_duration`) and an optional idle timeout (no frame for that
//! long ends the stream).
//!
//! gRPC streams that reach their maximum duration end with trailers
//! `grpc-status: 4` (DEADLINE_EXCEEDED), as a gRPC server would end them;
//! every other limit ends the body with an error, so that hyper resets the
//! stream or closes the connection instead of framing a truncated body as
//! complete.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{Body, BodyError};

/// What bounds a stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamLimits {
    /// The stream ends here, whatever it is doing.
    pub deadline: Option<Instant>,
    /// The stream ends when no frame arrived for this long.
    pub idle: Option<Duration>,
    /// End at the deadline with gRPC trailers instead of an error.
    pub grpc: bool,
}

impl StreamLimits {
    pub fn is_unlimited(&self) -> bool {
        self.deadline.is_none() && self.idle.is_none()
    }

    /// When the timer should fire next, given the last progress.
    fn next_check(&self, last: Instant) -> Instant {
        let idle = self.idle.map(|d| last + d);
        match (idle, self.deadline) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            // Not constructed without a limit; a far instant is harmless.
            (None, None) => last + Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// A body bounded by [`StreamLimits`].
#[derive(Debug)]
pub struct TimedBody {
    inner: Body,
    limits: StreamLimits,
    timer: Pin<Box<Sleep>>,
    /// When the last frame went by; the idle timer is re-armed lazily from
    /// it, so a frame costs a clock read and no timer update.
    last: Instant,
    done: bool,
}

impl TimedBody {
    pub(super) fn new(inner: Body, limits: StreamLimits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limits,
            timer: Box::pin(tokio::time::sleep_until(limits.next_check(now))),
            last: now,
            done: false,
        }
    }

    pub(super) fn inner(&self) -> &Body {
        &self.inner
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                if self.limits.idle.is_some() {
                    self.last = Instant::now();
                }
                return Poll::Ready(Some(frame));
            }
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if self.limits.deadline.is_some_and(|d| d <= now) {
                self.done = true;
                if self.limits.grpc {
                    return Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers()))));
                }
                return Poll::Ready(Some(Err(BodyError::MaxDuration)));
            }
            if self.limits.idle.is_some_and(|idle| now >= self.last + idle) {
                self.done = true;
                return Poll::Ready(Some(Err(BodyError::Idle)));
            }
            // Progress since the timer was armed: re-arm from it.
            let next = self.limits.next_check(self.last);
            self.timer.as_mut().reset(next);
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The trailers a gRPC server sends for a call past its deadline.
fn deadline_trailers() -> HeaderMap {
    let mut t = HeaderMap::with_capacity(2);
    t.insert("grpc-status", HeaderValue::from_static("4"));
    t.insert(
        "grpc-message",
        HeaderValue::from_static("stream exceeded the route's max_stream_duration"),
    );
    t
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grpc_stream_ends_with_deadline_trailers() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let body = Body::test_channel(rx).timed(StreamLimits {
            deadline: Some(Instant::now() + Duration::from_secs(2)),
            idle: None,
            grpc: true,
        });
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let mut body = body;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = Instant::now();
        let end = body.frame().await.unwrap().unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let trailers = end.into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "4");
        assert!(body.frame().await.is_none());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_frame() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = Body::test_channel(rx).timed(StreamLimits {
            deadline: None,
            idle: Some(Duration::from_secs(5)),
            grpc: false,
        });
        let started = Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then silence, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::Idle), "{err:?}");
        // Three frames 4 s apart kept it alive; it ended 5 s after the last.
        assert_eq!(started.elapsed(), Duration::from_secs(17));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn http_stream_past_its_duration_fails_instead_of_ending() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = Body::test_channel(rx).timed(StreamLimits {
            deadline: Some(Instant::now() + Duration::from_secs(1)),
            idle: None,
            grpc: false,
        });
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::MaxDuration), "{err:?}");
    }
}
