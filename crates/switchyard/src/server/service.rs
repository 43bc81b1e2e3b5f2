//! What the server does around each request before and after the
//! service's handler: readiness and gRPC health answers, the concurrency
//! limit, the caller's deadline, the handler's [`Context`] and drain
//! signal, the server span and the metrics.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context as TaskContext, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body::Frame;
use switchyard_stack::{
    Body, ErrorKind, ProxyError, call::is_grpc, error::response::error_response,
};
use switchyard_telemetry::{
    ListenerMetrics, RouteMetrics,
    trace::{KeyValue, RequestTrace, Tracer},
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::futures::TaskLocalFuture,
    time::{Instant, Sleep},
};
use tonic_health::{pb::health_server::HealthServer, server::HealthService};
use tower::Service;

/// What the health service's `call` returns.
type HealthFuture =
    tonic::codegen::BoxFuture<Response<tonic::body::Body>, std::convert::Infallible>;

use super::Drain;
use crate::{BoxError, context::Context};

/// The path prefix of the `grpc.health.v1.Health` service.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Error kinds the server counts in `switchyard_proxy_errors_total` under
/// its name.
pub(super) const REJECTIONS: [&str; 2] = ["overloaded", "deadline_expired"];

/// State every request of one server shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) limit: Arc<Semaphore>,
    pub(super) health: HealthServer<HealthService>,
    pub(super) readiness_path: Option<String>,
    /// False from the moment the server reports NOT_SERVING.
    pub(super) serving: AtomicBool,
    pub(super) drain: Drain,
    pub(super) metrics: RouteMetrics,
    pub(super) errors: ListenerMetrics,
    pub(super) tracer: Option<Arc<Tracer>>,
    /// When the last request arrived, in milliseconds since `epoch`: the
    /// drain waits for new requests to stop.
    last_request_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        max_concurrent_requests: usize,
        health: HealthServer<HealthService>,
        readiness_path: Option<String>,
        drain: Drain,
        metrics: RouteMetrics,
        errors: ListenerMetrics,
        tracer: Option<Arc<Tracer>>,
    ) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(
                max_concurrent_requests.clamp(1, Semaphore::MAX_PERMITS),
            )),
            health,
            readiness_path,
            serving: AtomicBool::new(true),
            drain,
            metrics,
            errors,
            tracer,
            last_request_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// How long ago the last request (other than a probe) arrived.
    pub(super) fn since_last_request(&self) -> Duration {
        let last = Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request_ms.store(now, Ordering::Relaxed);
    }

    /// Requests being handled now (their response bodies included).
    pub(super) fn in_flight(&self, max: usize) -> usize {
        max.clamp(1, Semaphore::MAX_PERMITS) - self.limit.available_permits()
    }
}

/// The server's service around the user's: see the module docs.
#[derive(Debug)]
pub struct ServerService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for ServerService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> ServerService<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError> + Send,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let path = req.uri().path();
        if shared.readiness_path.as_deref() == Some(path)
            && matches!(*req.method(), Method::GET | Method::HEAD)
        {
            return ServerFuture::local(readiness(shared.serving.load(Ordering::Acquire)));
        }
        if path.starts_with(HEALTH_PREFIX) {
            // Always ready: tonic's generated servers have no back-pressure.
            // A `Watch` stream never ends by itself: it would hold the
            // drain for its whole grace period.
            let watch = path == WATCH_PATH;
            return ServerFuture::from(FutureState::Health {
                fut: shared.health.clone().call(req),
                drain: watch.then(|| shared.drain.clone()),
            });
        }
        shared.touch();
        let grpc = is_grpc(&req);
        // Reject fast at the limit: a queue in front of a saturated
        // handler only turns overload into latency for every caller.
        let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
            return ServerFuture::local(self.reject(ErrorKind::Overloaded, grpc));
        };
        let trace = shared
            .tracer
            .as_ref()
            .map(|tracer| (tracer.clone(), tracer.begin(req.headers())));
        let mut context = Context::from_headers(req.headers(), grpc);
        if let Some((_, t)) = &trace {
            // The handler's calls are children of this server's span.
            context.continue_trace(t);
        }
        if context.remaining() == Some(Duration::ZERO) {
            // The caller has given up: running the handler is wasted work.
            return ServerFuture::local(self.reject(ErrorKind::DeadlineExpired, grpc));
        }
        // Only a span needs the path.
        let path = trace.as_ref().map(|_| path.to_owned());
        req.extensions_mut().insert(shared.drain.clone());
        let guard = Guard {
            _permit: permit,
            shared: shared.clone(),
            start: Instant::now(),
            trace,
            method: req.method().clone(),
            path,
            grpc,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            grpc_code: None,
        };
        let deadline = context
            .deadline()
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        // tower's advice for a cloned service: call the one that was
        // polled ready, keep the fresh clone for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ServerFuture::from(FutureState::Handler {
            fut: context.scope(inner.call(req)),
            deadline,
            guard: Some(guard),
        })
    }
}

impl<S> ServerService<S> {
    fn reject(&self, kind: ErrorKind, grpc: bool) -> Response<Body> {
        self.shared.errors.error(kind.as_str());
        let resp = error_response(&ProxyError::new(kind), grpc);
        self.shared
            .metrics
            .record(resp.status().as_u16(), Duration::ZERO);
        if grpc {
            if let Some(code) = grpc_status(resp.headers()) {
                self.shared.metrics.record_grpc(code);
            }
        }
        resp
    }
}

/// `/ready`: 200 while serving, 503 once draining, so that a load
/// balancer or an orchestrator's probe stops sending.
fn readiness(serving: bool) -> Response<Body> {
    let (status, text) = if serving {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    };
    let mut resp = Response::new(Body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Held from the handler's start to the end of its response body: the
/// concurrency permit, and what the metrics and the span record when the
/// exchange ends (dropped with the body, so a reset stream counts too).
struct Guard {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    start: Instant,
    trace: Option<(Arc<Tracer>, RequestTrace)>,
    method: Method,
    path: Option<String>,
    grpc: bool,
    status: StatusCode,
    grpc_code: Option<u32>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("path", &self.path)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.record(self.status.as_u16(), self.start.elapsed());
        if let (true, Some(code)) = (self.grpc, self.grpc_code) {
            metrics.record_grpc(code);
        }
        let (Some((tracer, t)), Some(path)) = (&self.trace, self.path.take()) else {
            return;
        };
        // Most traces are not sampled: build nothing for them.
        if !t.sampled {
            return;
        }
        let mut attrs = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.path", path.clone()),
            KeyValue::new("http.response.status_code", i64::from(self.status.as_u16())),
        ];
        let error = if self.grpc {
            let code = self.grpc_code.unwrap_or(2);
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            attrs.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            switchyard_telemetry::metrics::grpc_is_server_error(code).then_some("grpc_error")
        } else {
            self.status.is_server_error().then_some("http_5xx")
        };
        // OpenTelemetry's names: `package.Service/Method` for gRPC, the
        // method alone for HTTP (the path is not a low-cardinality route).
        let name = if self.grpc {
            path.trim_start_matches('/').to_owned()
        } else {
            self.method.to_string()
        };
        tracer.end_request(t, name, attrs, error);
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ServerService`].
    pub struct ServerFuture<F> {
        #[pin]
        state: FutureState<F>,
    }
}

impl<F> std::fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFuture").finish_non_exhaustive()
    }
}

impl<F, E, ResBody> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ServerBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.project()
            .state
            .poll(cx)
            .map(|out| out.map(|resp| resp.map(|state| ServerBody { state })))
    }
}

pin_project_lite::pin_project! {
    #[project = ServerFutureProj]
    enum FutureState<F> {
        Ready { resp: Option<Response<Body>> },
        Health { fut: HealthFuture, drain: Option<Drain> },
        Handler {
            #[pin] fut: TaskLocalFuture<Context, F>,
            deadline: Option<Pin<Box<Sleep>>>,
            guard: Option<Guard>,
        },
    }
}

impl<F> ServerFuture<F> {
    fn local(resp: Response<Body>) -> Self {
        Self::from(FutureState::Ready { resp: Some(resp) })
    }

    fn from(state: FutureState<F>) -> Self {
        Self { state }
    }
}

impl<F, E, ResBody> Future for FutureState<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<BodyState<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServerFutureProj::Ready { resp } => {
                let resp = resp.take().expect("polled after completion");
                Poll::Ready(Ok(resp.map(|body| BodyState::Local { body })))
            }
            ServerFutureProj::Health { fut, drain } => {
                let resp = match ready!(fut.as_mut().poll(cx)) {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                let drain = drain.take().map(|d| {
                    Box::pin(async move { d.signaled().await })
                        as Pin<Box<dyn Future<Output = ()> + Send>>
                });
                Poll::Ready(Ok(resp.map(|body| BodyState::Health {
                    body,
                    drain,
                    ended: false,
                })))
            }
            ServerFutureProj::Handler {
                fut,
                deadline,
                guard,
            } => {
                if let Poll::Ready(out) = fut.poll(cx) {
                    let mut guard = guard.take().expect("polled after completion");
                    let resp = out?;
                    guard.status = resp.status();
                    // A trailers-only gRPC answer carries its status in the
                    // head.
                    guard.grpc_code = grpc_status(resp.headers());
                    // A gRPC deadline covers the whole call, streams
                    // included; an HTTP one the wait for the head.
                    let deadline = if guard.grpc { deadline.take() } else { None };
                    return Poll::Ready(Ok(resp.map(|body| BodyState::Handler {
                        body,
                        guard: Some(guard),
                        deadline,
                    })));
                }
                if let Some(sleep) = deadline {
                    ready!(sleep.as_mut().poll(cx));
                    // The caller's deadline passed first: the handler is
                    // dropped (cancelled, like a Go context) and the caller
                    // told so.
                    let mut guard = guard.take().expect("polled after completion");
                    guard
                        .shared
                        .errors
                        .error(ErrorKind::DeadlineExpired.as_str());
                    let resp =
                        error_response(&ProxyError::new(ErrorKind::DeadlineExpired), guard.grpc);
                    guard.status = resp.status();
                    guard.grpc_code = grpc_status(resp.headers());
                    drop(guard);
                    return Poll::Ready(Ok(resp.map(|body| BodyState::Local { body })));
                }
                Poll::Pending
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`ServerService`]: the handler's, a health
    /// answer, or one the server made itself (readiness, rejections).
    pub struct ServerBody<B> {
        #[pin]
        state: BodyState<B>,
    }
}

impl<B> std::fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBody").finish_non_exhaustive()
    }
}

impl<B> http_body::Body for ServerBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().state.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.state.size_hint()
    }
}

pin_project_lite::pin_project! {
    #[project = ServerBodyProj]
    enum BodyState<B> {
        Handler {
            #[pin] body: B,
            guard: Option<Guard>,
            deadline: Option<Pin<Box<Sleep>>>,
        },
        Health {
            #[pin] body: tonic::body::Body,
            drain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
            ended: bool,
        },
        Local { #[pin] body: Body },
    }
}

impl<B> http_body::Body for BodyState<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ServerBodyProj::Handler {
                body,
                guard,
                deadline,
            } => {
                let Some(g) = guard else {
                    return Poll::Ready(None);
                };
                let frame = match body.poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if let Some(sleep) = deadline {
                            ready!(sleep.as_mut().poll(cx));
                            // The stream outlived the caller's deadline: it
                            // ends here with gRPC's DEADLINE_EXCEEDED.
                            g.grpc_code = Some(4);
                            g.shared.errors.error(ErrorKind::DeadlineExpired.as_str());
                            *guard = None;
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", HeaderValue::from_static("4"));
                            trailers.insert(
                                "grpc-message",
                                HeaderValue::from_static("deadline exceeded"),
                            );
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        return Poll::Pending;
                    }
                };
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                            g.grpc_code = Some(code);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        *guard = None;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    None => {
                        *guard = None;
                        Poll::Ready(None)
                    }
                }
            }
            ServerBodyProj::Health { body, drain, ended } => {
                if *ended {
                    return Poll::Ready(None);
                }
                if let Poll::Ready(frame) = body.poll_frame(cx) {
                    return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
                }
                // The inner stream is polled first, so the NOT_SERVING that
                // precedes the drain signal goes out before the end.
                let Some(signal) = drain else {
                    return Poll::Pending;
                };
                ready!(signal.as_mut().poll(cx));
                *drain = None;
                *ended = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                trailers.insert("grpc-message", HeaderValue::from_static("server draining"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            ServerBodyProj::Local { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Handler { body, guard, .. } => guard.is_none() || body.is_end_stream(),
            Self::Health { body, ended, .. } => *ended || body.is_end_stream(),
            Self::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Handler { body, guard, .. } if guard.is_some() => body.size_hint(),
            Self::Handler { .. } => http_body::SizeHint::with_exact(0),
            Self::Health { body, .. } => body.size_hint(),
            Self::Local { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::atomic::AtomicUsize};

    use http_body_util::BodyExt;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;

    fn shared(limit: usize) -> Arc<Shared> {
        let (reporter, _) = tonic_health::server::health_reporter();
        let metrics = switchyard_telemetry::Metrics::new();
        let (tx, rx) = watch::channel(false);
        // The drain sender lives as long as the test.
        std::mem::forget(tx);
        Arc::new(Shared::new(
            limit,
            HealthServer::new(HealthService::from_health_reporter(reporter)),
            Some("/ready".to_owned()),
            Drain { rx },
            metrics.route("test", "server"),
            metrics.listener("test", &REJECTIONS),
            None,
        ))
    }

    /// A handler that answers after `delay`, counting the calls that
    /// started.
    fn handler(
        delay: Duration,
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone {
        tower::service_fn(move |_req: Request<Body>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(Body::full("ok")))
            }
        })
    }

    fn get(headers: &[(&'static str, &'static str)]) -> Request<Body> {
        let mut req = Request::get("/x").body(Body::empty()).unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, HeaderValue::from_static(v));
        }
        req
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_never_reaches_the_handler() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServerService::new(handler(Duration::ZERO, calls.clone()), shared(8));
        let resp = svc
            .oneshot(get(&[("x-switchyard-timeout-ms", "0")]))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_a_slow_handler_short() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServerService::new(handler(Duration::from_secs(10), calls.clone()), shared(8));
        let started = Instant::now();
        let resp = svc
            .oneshot(get(&[("x-switchyard-timeout-ms", "250")]))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_counts_a_request_until_its_body_is_gone() {
        let calls = Arc::new(AtomicUsize::new(0));
        let shared = shared(1);
        let svc = ServerService::new(handler(Duration::ZERO, calls.clone()), shared.clone());
        let first = svc.clone().oneshot(get(&[])).await.unwrap();
        assert_eq!(shared.in_flight(1), 1);
        // Refused while the first response's body is still being sent.
        let refused = svc.clone().oneshot(get(&[])).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Probes are not counted against the limit.
        let ready = svc
            .clone()
            .oneshot(Request::get("/ready").body(Body::empty()).unwrap());
        assert_eq!(ready.await.unwrap().status(), StatusCode::OK);
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(shared.in_flight(1), 0);
        let again = svc.oneshot(get(&[])).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_stream_ends_at_the_deadline() {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            let ticks = futures_util::stream::unfold(0u8, |n| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![n]))),
                    n + 1,
                ))
            });
            let body = http_body_util::StreamBody::new(ticks);
            Ok::<_, Infallible>(Response::new(body))
        });
        let svc = ServerService::new(svc, shared(8));
        let req = Request::post("/pkg.Svc/Stream")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "350m")
            .body(Body::empty())
            .unwrap();
        let collected = svc
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "4");
        assert_eq!(collected.to_bytes().len(), 3);
    }
}
