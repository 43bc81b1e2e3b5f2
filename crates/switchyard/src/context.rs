//! The context of the request a service is handling, carried to the calls
//! it makes, as Go's `context.Context` is: the caller's remaining deadline,
//! its trace context, and whether the request is itself a retry.
//!
//! [`ContextLayer`] wraps a server's service (a tonic server, an axum
//! router, any `tower::Service<http::Request<_>>`): each request's handler
//! runs with its [`Context`] in a task-local, and every [`Client`] call
//! made from that handler inherits it with no code — the deadline goes
//! upstream as what remains of it, the trace continues, and a request that
//! was a retry is not retried again (retries multiply along a chain
//! otherwise). What the outgoing request sets itself wins; a handler can
//! also run a future under a context of its own ([`Context::scope`]).
//!
//! A task-local follows the handler's future, not tasks it spawns: run a
//! spawned future in `Context::current()`'s scope to carry it over.
//!
//! [`Client`]: crate::Client

use std::{
    future::Future,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use switchyard_policy::deadline;
use switchyard_stack::call::{ATTEMPT_HEADER, caller_timeout, is_grpc};
use tokio::{task::futures::TaskLocalFuture, time::Instant};

tokio::task_local! {
    static CURRENT: Context;
}

/// Trace context headers (W3C and B3) passed from the incoming request to
/// outgoing ones.
const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The trace context headers `headers` carries.
fn trace_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            Some((HeaderName::from_static(name), value.clone()))
        })
        .collect()
}

/// What a request being handled passes on to the calls made for it.
#[derive(Clone, Debug, Default)]
pub struct Context {
    deadline: Option<Instant>,
    trace: Vec<(HeaderName, HeaderValue)>,
    /// 1 for an original request, more for a retry.
    attempt: u32,
}

impl Context {
    /// The context of a request with these headers: its deadline
    /// (`grpc-timeout` for gRPC, `x-switchyard-timeout-ms`) counted from
    /// now, its trace headers, its `x-switchyard-attempt`.
    pub fn from_headers(headers: &HeaderMap, grpc: bool) -> Self {
        let deadline = caller_timeout(headers, grpc).map(|t| Instant::now() + t);
        let trace = trace_headers(headers);
        let attempt = headers
            .get(&ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
            .unwrap_or(1);
        Self {
            deadline,
            trace,
            attempt,
        }
    }

    /// The context of the request whose handler is running, if it runs
    /// under [`ContextLayer`] or [`Context::scope`].
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// What is left of the caller's deadline (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the request being handled is a retry of an earlier attempt.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    /// The same context with another deadline (sooner or later).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The same context with no deadline: calls get the client's timeout.
    #[must_use]
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Runs `f` with this context as the current one.
    pub fn scope<F: Future>(self, f: F) -> TaskLocalFuture<Context, F> {
        CURRENT.scope(self, f)
    }

    /// Makes the server span `t` the parent of the calls made under this
    /// context, in the caller's propagation format.
    #[cfg(feature = "server")]
    pub(crate) fn continue_trace(&mut self, t: &switchyard_telemetry::trace::RequestTrace) {
        let mut headers = HeaderMap::new();
        switchyard_telemetry::trace::propagation::inject(
            &mut headers,
            t.trace_id,
            t.span_id,
            t.parent.unwrap_or(0),
            t.sampled,
            t.tracestate.as_ref(),
            t.format,
        );
        self.trace = trace_headers(&headers);
    }

    /// Fills in what an outgoing request does not say itself: the remaining
    /// deadline and the trace context. Returns the attempt number the call
    /// stage takes as the incoming one.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, grpc: bool) -> u32 {
        let has_deadline = headers.contains_key(deadline::TIMEOUT_HEADER)
            || (grpc && headers.contains_key(deadline::GRPC_TIMEOUT_HEADER));
        if let (Some(remaining), false) = (self.remaining(), has_deadline) {
            let value = deadline::format_timeout_ms(remaining);
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(deadline::TIMEOUT_HEADER, value);
            }
        }
        if !TRACE_HEADERS.iter().any(|name| headers.contains_key(*name)) {
            for (name, value) in &self.trace {
                headers.insert(name.clone(), value.clone());
            }
        }
        self.attempt.max(1)
    }
}

/// Runs each request's handler with the request's [`Context`] current.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextLayer;

impl<S> tower::Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService { inner }
    }
}

/// The service of [`ContextLayer`].
#[derive(Clone, Debug)]
pub struct ContextService<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for ContextService<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Context, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let context = Context::from_headers(req.headers(), is_grpc(&req));
        context.scope(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn the_remaining_deadline_and_the_trace_go_on() {
        let incoming = headers(&[
            ("x-switchyard-timeout-ms", "500"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-switchyard-attempt", "2"),
        ]);
        let ctx = Context::from_headers(&incoming, false);
        assert!(ctx.is_retry());
        tokio::time::advance(Duration::from_millis(200)).await;
        let mut outgoing = HeaderMap::new();
        assert_eq!(ctx.apply(&mut outgoing, false), 2);
        assert_eq!(outgoing["x-switchyard-timeout-ms"], "300");
        assert_eq!(outgoing["traceparent"], incoming["traceparent"]);
        // What the outgoing request says itself wins.
        let mut own = headers(&[("x-switchyard-timeout-ms", "50"), ("b3", "1")]);
        ctx.apply(&mut own, false);
        assert_eq!(own["x-switchyard-timeout-ms"], "50");
        assert!(!own.contains_key("traceparent"));
        // A passed deadline goes on as zero: the call fails at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut late = HeaderMap::new();
        ctx.apply(&mut late, false);
        assert_eq!(late["x-switchyard-timeout-ms"], "0");
    }

    #[tokio::test]
    async fn the_context_is_current_inside_its_scope_only() {
        assert!(Context::current().is_none());
        let ctx = Context::default().with_deadline(Instant::now() + Duration::from_secs(1));
        let inside = ctx.scope(async { Context::current() }).await;
        assert!(inside.and_then(|c| c.deadline()).is_some());
        assert!(Context::current().is_none());
    }
}
