//! Attempts: one request, possibly sent several times — retried after a
//! retryable failure, or hedged after a delay — within one deadline.
//!
//! Safe by default: a failure that provably never reached the upstream
//! (connect failure, refused stream) is retried for any method; anything
//! else only for idempotent methods (RFC 9110 §9.2.2) unless the route opts
//! non-idempotent requests in. Every retry needs the cluster's retry budget
//! and concurrent-retry limit; every hedge needs the route's extra-load
//! budget. A request that is already a retry at an earlier hop is not retried
//! here (no retry amplification along a chain) unless the route says so.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use opentelemetry::KeyValue;
use switchyard_balance::Target;
use switchyard_config::{HedgeDelay, RetryOn, RetryPolicy};
use switchyard_policy::{Backoff, Deadline, Permit, deadline};
use switchyard_telemetry::{
    Decision,
    trace::{AttemptSpan, RequestTrace, Tracer},
};

use super::CallPolicy;
use crate::{
    body::{Body, ReplayBody},
    cluster::{Cluster, Endpoint},
    error::{ErrorKind, ProxyError},
    upstream::ClientAddrs,
};

/// The attempt number of this hop's request, sent upstream so the next hop
/// knows whether it is handling a retry.
pub static ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-switchyard-attempt");
pub(super) static TIMEOUT_HEADER: HeaderName = HeaderName::from_static(deadline::TIMEOUT_HEADER);
pub(super) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static(deadline::GRPC_TIMEOUT_HEADER);

/// The request line and headers, reused for every attempt.
#[derive(Debug)]
pub(super) struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// For a cluster that sends the PROXY protocol: the client each
    /// attempt's connection names.
    pub client: Option<ClientAddrs>,
}

/// The request body as attempts need it.
#[derive(Debug)]
pub(super) enum RequestBody {
    /// No body at all: every attempt sends an empty one.
    Empty,
    /// A streamed body that only one attempt can send.
    Once(Option<Body>),
    /// A body that later attempts can send again (while under the cap).
    Replay(ReplayBody),
}

impl RequestBody {
    fn next(&mut self) -> Option<Body> {
        match self {
            RequestBody::Empty => Some(Body::empty()),
            RequestBody::Once(b) => b.take(),
            RequestBody::Replay(r) => r.replay().map(Body::replay),
        }
    }

    fn is_complete(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Once(_) => false,
            RequestBody::Replay(r) => r.is_complete(),
        }
    }
}

/// What happened, for the access log.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttemptLog {
    pub attempts: u32,
    pub retries: u32,
    pub hedges: u32,
    pub endpoint: Option<SocketAddr>,
    pub retry_refused: Option<Decision>,
}

/// Everything the attempt loop needs about one request.
pub(super) struct Attempts<'a> {
    pub policy: &'a CallPolicy,
    pub cluster: &'a Arc<Cluster>,
    pub head: Head,
    pub body: RequestBody,
    pub hash: Option<u64>,
    /// By when the response head must arrive; retries stop at it.
    pub deadline: Deadline,
    /// The deadline sent upstream with each attempt, if the call has one.
    pub upstream_deadline: Option<Deadline>,
    pub grpc: bool,
    /// The attempt number the previous hop sent (1 when absent).
    pub incoming_attempt: u32,
    /// The tracer and this request's trace, when tracing is on.
    pub tracing: Option<(&'a Arc<Tracer>, &'a RequestTrace)>,
}

type AttemptResult = (Arc<Endpoint>, Result<Response<Body>, ProxyError>);
/// An attempt ready to start: where, what, and its span.
type Prepared = (Arc<Endpoint>, Request<Body>, Option<SpanGuard>);

impl Attempts<'_> {
    /// Runs attempts until one answer is final.
    pub async fn run(mut self, log: &mut AttemptLog) -> Result<Response<Body>, ProxyError> {
        let idempotent = is_idempotent(&self.head.method);
        let policy = self
            .policy
            .retry()
            .filter(|p| self.incoming_attempt <= 1 || p.retry_retried);
        let max_attempts = policy.map_or(1, |p| p.attempts.max(1));
        if policy.is_some() {
            self.cluster.deposit();
        }
        let hedge = self
            .policy
            .hedge()
            .filter(|_| idempotent && self.incoming_attempt <= 1 && self.body.is_complete());
        if let Some(h) = hedge {
            h.budget.deposit();
        }
        let backoff = policy.map(|p| Backoff::new(p.backoff_base, p.backoff_max));

        let cluster = self.cluster;
        let per_try = policy.and_then(|p| p.per_try_timeout);
        // The common case: one attempt, nothing to race it. No attempt set,
        // no hedge timer, no list of tried endpoints.
        if max_attempts == 1 && hedge.is_none() {
            let (ep, req, span) = self.prepare(&[], log, false, false)?;
            let (ep, res) = attempt(cluster, ep, req, per_try, span).await;
            log.endpoint = Some(ep.addr());
            return res;
        }
        if hedge.is_none() {
            return self
                .one_at_a_time(log, policy, idempotent, max_attempts, backoff, per_try)
                .await;
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut retry_permits: Vec<Permit> = Vec::new();
        let (ep, req, span) =
            self.prepare(&tried, log, max_attempts > 1 || hedge.is_some(), false)?;
        tried.push(ep.addr());
        in_flight.push(attempt(cluster, ep, req, per_try, span));

        let hedge_delay = hedge.and_then(|h| match h.policy.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile(p) => self.cluster.latency_percentile(p),
        });
        let hedge_timer = tokio::time::sleep(hedge_delay.unwrap_or(Duration::ZERO));
        tokio::pin!(hedge_timer);
        let mut hedge_armed = hedge_delay.is_some();
        let hedge_max = hedge.map_or(1, |h| h.policy.max_attempts);

        loop {
            tokio::select! {
                Some((ep, res)) = in_flight.next() => {
                    log.endpoint = Some(ep.addr());
                    let Some(reason) = retry_reason(&res, policy, idempotent) else {
                        return res;
                    };
                    if !in_flight.is_empty() {
                        // Another (hedged) attempt is still running; its
                        // answer may yet succeed.
                        continue;
                    }
                    let Some(wait) =
                        self.retry_wait(reason, log, max_attempts, backoff, &mut retry_permits)
                    else {
                        return res;
                    };
                    tokio::time::sleep(wait).await;
                    let more = log.attempts + 1 < max_attempts;
                    let Ok((ep, req, span)) = self.prepare(&tried, log, more, false) else {
                        // The body outgrew the replay cap: the failure stands.
                        return res;
                    };
                    log.retries += 1;
                    tried.push(ep.addr());
                    in_flight.push(attempt(cluster, ep, req, per_try, span));
                }
                _ = &mut hedge_timer, if hedge_armed => {
                    hedge_armed = false;
                    let h = hedge.expect("the hedge timer is armed only with a hedge policy");
                    if log.attempts >= hedge_max {
                        continue;
                    }
                    if !h.budget.withdraw() {
                        self.cluster.decisions().count(Decision::HedgeBudgetExhausted);
                        continue;
                    }
                    let more = log.attempts + 1 < hedge_max || max_attempts > log.attempts + 1;
                    if let Ok((ep, req, span)) = self.prepare(&tried, log, more, true) {
                        tried.push(ep.addr());
                        self.cluster.decisions().count(Decision::Hedge);
                        log.hedges += 1;
                        in_flight.push(attempt(cluster, ep, req, per_try, span));
                        if let Some(d) = hedge_delay {
                            if log.attempts < hedge_max {
                                hedge_timer.as_mut().reset(tokio::time::Instant::now() + d);
                                hedge_armed = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether a retryable failure is retried: attempts left, the deadline
    /// not passed, a retry admitted by the cluster's budget (its permit kept
    /// in `permits` for the call's life), and a backoff that fits in the
    /// time left. The backoff to wait, or `None` when the failure stands.
    fn retry_wait(
        &self,
        reason: RetryOn,
        log: &mut AttemptLog,
        max_attempts: u32,
        backoff: Option<Backoff>,
        permits: &mut Vec<Permit>,
    ) -> Option<Duration> {
        tracing::debug!(
            ?reason,
            attempt = log.attempts,
            "attempt failed with a retryable result"
        );
        if log.attempts >= max_attempts || self.deadline.expired() {
            return None;
        }
        match self.cluster.admit_retry() {
            Ok(permit) => permits.push(permit),
            Err(why) => {
                log.retry_refused = Some(why);
                return None;
            }
        }
        // `backoff` is set whenever a policy allows retries.
        let wait = backoff.map_or(Duration::ZERO, |b| b.delay(log.retries + 1));
        (wait < self.deadline.remaining()).then_some(wait)
    }

    /// Retries without hedging: one attempt at a time, awaited in place.
    /// Nothing races an attempt, so there is no attempt set to allocate
    /// (and copy each attempt's future into) and no timer; the decisions
    /// are those of the hedging loop in `run`.
    async fn one_at_a_time(
        &mut self,
        log: &mut AttemptLog,
        policy: Option<&RetryPolicy>,
        idempotent: bool,
        max_attempts: u32,
        backoff: Option<Backoff>,
        per_try: Option<Duration>,
    ) -> Result<Response<Body>, ProxyError> {
        let cluster = self.cluster;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retry_permits: Vec<Permit> = Vec::new();
        let (mut ep, mut req, mut span) = self.prepare(&tried, log, max_attempts > 1, false)?;
        loop {
            let (done, res) = attempt(cluster, ep, req, per_try, span).await;
            log.endpoint = Some(done.addr());
            let Some(reason) = retry_reason(&res, policy, idempotent) else {
                return res;
            };
            let Some(wait) =
                self.retry_wait(reason, log, max_attempts, backoff, &mut retry_permits)
            else {
                return res;
            };
            tokio::time::sleep(wait).await;
            tried.push(done.addr());
            let more = log.attempts + 1 < max_attempts;
            let Ok(next) = self.prepare(&tried, log, more, false) else {
                // The body outgrew the replay cap: the failure stands.
                return res;
            };
            log.retries += 1;
            (ep, req, span) = next;
        }
    }

    /// Builds the next attempt for an endpoint not tried yet (when one is
    /// left): the body view, the attempt number and the time budget.
    fn prepare(
        &mut self,
        tried: &[SocketAddr],
        log: &mut AttemptLog,
        keep_head: bool,
        hedge: bool,
    ) -> Result<Prepared, ProxyError> {
        let endpoint = self.cluster.pick(self.hash, tried)?;
        let body = self
            .body
            .next()
            .ok_or_else(|| ProxyError::new(ErrorKind::Internal))?;
        log.attempts += 1;
        let mut headers = if keep_head {
            self.head.headers.clone()
        } else {
            std::mem::take(&mut self.head.headers)
        };
        let number = if self.incoming_attempt > 1 {
            // Already a retry upstream of us: say so to every later hop.
            self.incoming_attempt
        } else {
            log.attempts
        };
        headers.insert(ATTEMPT_HEADER.clone(), attempt_value(number));
        // The call's own deadline, never the route or per-try timeout: those
        // bound the wait for the response head here, and sent upstream they
        // would end long streams. One value, in the header each protocol
        // reads.
        if let Some(d) = self.upstream_deadline {
            let budget = d.remaining();
            if self.grpc {
                // grpc-timeout strings are valid header values.
                if let Ok(v) = HeaderValue::from_str(&deadline::format_grpc_timeout(budget)) {
                    headers.insert(GRPC_TIMEOUT.clone(), v);
                }
            }
            headers.insert(
                TIMEOUT_HEADER.clone(),
                HeaderValue::from(deadline::timeout_ms(budget)),
            );
        }
        let span = self.tracing.map(|(tracer, trace)| {
            let span = tracer.attempt(trace, &mut headers);
            SpanGuard {
                tracer: tracer.clone(),
                trace: trace.clone(),
                span,
                number: log.attempts,
                hedge,
                method: self.head.method.clone(),
                endpoint: endpoint.addr(),
                done: false,
            }
        });
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = headers;
        if let Some(client) = self.head.client {
            req.extensions_mut().insert(client);
        }
        Ok((endpoint, req, span))
    }
}

/// Ends an attempt's span when the attempt completes — or, when a hedge
/// loses and its future is dropped, as cancelled.
struct SpanGuard {
    tracer: Arc<Tracer>,
    trace: RequestTrace,
    span: AttemptSpan,
    number: u32,
    hedge: bool,
    method: Method,
    endpoint: SocketAddr,
    done: bool,
}

impl SpanGuard {
    fn finish(mut self, res: &Result<Response<Body>, ProxyError>) {
        self.done = true;
        let (status, error) = match res {
            Ok(r) => (
                Some(r.status().as_u16()),
                r.status().is_server_error().then_some("http_5xx"),
            ),
            Err(e) => (None, Some(e.kind().as_str())),
        };
        self.end(status, error);
    }

    fn end(&self, status: Option<u16>, error: Option<&'static str>) {
        // Most traces are not sampled: build nothing for them.
        if !self.trace.sampled {
            return;
        }
        let mut attrs = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("server.address", self.endpoint.ip().to_string()),
            KeyValue::new("server.port", i64::from(self.endpoint.port())),
            KeyValue::new(
                "http.request.resend_count",
                i64::from(self.number.saturating_sub(1)),
            ),
            KeyValue::new("switchyard.attempt", i64::from(self.number)),
            KeyValue::new("switchyard.hedge", self.hedge),
        ];
        if let Some(s) = status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        self.tracer.end_attempt(
            &self.trace,
            self.span,
            self.method.to_string(),
            attrs,
            error,
        );
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if !self.done {
            self.end(None, Some("cancelled"));
        }
    }
}

/// The attempt number as a header value; the usual ones need no allocation.
fn attempt_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// One attempt on one endpoint, bounded by the per-try timeout.
async fn attempt(
    cluster: &Arc<Cluster>,
    endpoint: Arc<Endpoint>,
    req: Request<Body>,
    per_try: Option<Duration>,
    span: Option<SpanGuard>,
) -> AttemptResult {
    let res = match per_try {
        Some(t) => match tokio::time::timeout(t, cluster.send_to(&endpoint, req)).await {
            Ok(r) => r,
            Err(_) => {
                cluster.record_timeout(&endpoint, t);
                Err(ProxyError::new(ErrorKind::Timeout).at(endpoint.addr()))
            }
        },
        None => cluster.send_to(&endpoint, req).await,
    };
    if let Some(span) = span {
        span.finish(&res);
    }
    (endpoint, res)
}

/// RFC 9110 §9.2.2: methods whose repetition has no additional effect.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Why a result may be retried under `policy`, or `None` when it is final.
pub fn retry_reason(
    res: &Result<Response<Body>, ProxyError>,
    policy: Option<&RetryPolicy>,
    idempotent: bool,
) -> Option<RetryOn> {
    let p = policy?;
    let on = |c: RetryOn| p.on.contains(&c).then_some(c);
    let safe = idempotent || p.non_idempotent;
    match res {
        Err(e) => match e.kind() {
            // Never reached the upstream: safe for every method.
            // A failed TLS handshake is a failed connect: no request byte
            // went out, and another endpoint's certificate may be fine.
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls => {
                on(RetryOn::ConnectFailure)
            }
            ErrorKind::RefusedStream => on(RetryOn::RefusedStream),
            ErrorKind::UpstreamReset if safe => on(RetryOn::Reset),
            ErrorKind::UpstreamProtocol | ErrorKind::Timeout if safe => on(RetryOn::Status5xx)
                .or_else(|| on(RetryOn::GatewayError))
                .or_else(|| on(RetryOn::Reset)),
            _ => None,
        },
        Ok(resp) => {
            // gRPC (gRFC A6): a status the route lists is the operator's
            // statement that the method may be retried, and a trailers-only
            // answer carries no response byte yet, so it is retried whatever
            // the HTTP method (every gRPC call is a POST).
            let grpc = match resp.headers().get("grpc-status").map(HeaderValue::as_bytes) {
                Some(b"14") => on(RetryOn::Unavailable),
                Some(b"8") => on(RetryOn::ResourceExhausted),
                Some(b"4") => on(RetryOn::DeadlineExceeded),
                Some(b"1") => on(RetryOn::Cancelled),
                _ => None,
            };
            if grpc.is_some() {
                return grpc;
            }
            if !safe {
                return None;
            }
            let status = resp.status();
            if status.is_server_error() {
                if let Some(c) = on(RetryOn::Status5xx) {
                    return Some(c);
                }
            }
            if matches!(status.as_u16(), 502..=504) {
                if let Some(c) = on(RetryOn::GatewayError) {
                    return Some(c);
                }
            }
            p.status_codes
                .contains(&status.as_u16())
                .then_some(RetryOn::Status5xx)
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use switchyard_config::RetryPolicy;

    use super::*;

    fn policy(on: &[RetryOn], non_idempotent: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            per_try_timeout: None,
            on: on.to_vec(),
            status_codes: vec![429],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            non_idempotent,
            max_replay_bytes: 65536,
            retry_retried: false,
        }
    }

    fn status(code: u16) -> Result<Response<Body>, ProxyError> {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(r)
    }

    fn grpc(code: &'static str) -> Result<Response<Body>, ProxyError> {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static(code));
        Ok(r)
    }

    fn err(kind: ErrorKind) -> Result<Response<Body>, ProxyError> {
        Err(ProxyError::new(kind))
    }

    #[test]
    fn no_policy_never_retries() {
        assert_eq!(
            retry_reason(&err(ErrorKind::ConnectFailed), None, true),
            None
        );
    }

    #[test]
    fn unsent_failures_are_retried_for_any_method() {
        let p = policy(&[RetryOn::ConnectFailure, RetryOn::RefusedStream], false);
        assert_eq!(
            retry_reason(&err(ErrorKind::ConnectFailed), Some(&p), false),
            Some(RetryOn::ConnectFailure)
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::ConnectTimeout), Some(&p), false),
            Some(RetryOn::ConnectFailure)
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::RefusedStream), Some(&p), false),
            Some(RetryOn::RefusedStream)
        );
    }

    #[test]
    fn maybe_sent_failures_need_idempotency_or_opt_in() {
        let p = policy(&[RetryOn::Reset, RetryOn::Status5xx], false);
        assert_eq!(
            retry_reason(&err(ErrorKind::UpstreamReset), Some(&p), false),
            None
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::UpstreamReset), Some(&p), true),
            Some(RetryOn::Reset)
        );
        assert_eq!(retry_reason(&status(500), Some(&p), false), None);
        assert_eq!(
            retry_reason(&status(500), Some(&p), true),
            Some(RetryOn::Status5xx)
        );
        let opted = policy(&[RetryOn::Reset], true);
        assert_eq!(
            retry_reason(&err(ErrorKind::UpstreamReset), Some(&opted), false),
            Some(RetryOn::Reset)
        );
    }

    #[test]
    fn status_and_grpc_conditions() {
        let p = policy(&[RetryOn::GatewayError, RetryOn::Unavailable], false);
        assert_eq!(
            retry_reason(&status(503), Some(&p), true),
            Some(RetryOn::GatewayError)
        );
        assert_eq!(retry_reason(&status(500), Some(&p), true), None);
        assert_eq!(
            retry_reason(&status(429), Some(&p), true),
            Some(RetryOn::Status5xx)
        );
        assert_eq!(retry_reason(&status(200), Some(&p), true), None);
        assert_eq!(
            retry_reason(&grpc("14"), Some(&p), true),
            Some(RetryOn::Unavailable)
        );
        assert_eq!(retry_reason(&grpc("8"), Some(&p), true), None);
        assert_eq!(retry_reason(&grpc("0"), Some(&p), true), None);
    }

    #[test]
    fn listed_grpc_statuses_are_retried_for_post() {
        // Every gRPC call is a POST: a listed status in a trailers-only
        // answer is retryable without `non_idempotent`.
        let p = policy(&[RetryOn::Unavailable, RetryOn::Reset], false);
        assert_eq!(
            retry_reason(&grpc("14"), Some(&p), false),
            Some(RetryOn::Unavailable)
        );
        assert_eq!(retry_reason(&grpc("8"), Some(&p), false), None);
        // A reset may have been processed: still not retried for POST.
        assert_eq!(
            retry_reason(&err(ErrorKind::UpstreamReset), Some(&p), false),
            None
        );
    }

    #[test]
    fn overload_and_expired_deadlines_are_final() {
        let p = policy(
            &[RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Status5xx],
            true,
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::Overloaded), Some(&p), true),
            None
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::DeadlineExpired), Some(&p), true),
            None
        );
        assert_eq!(
            retry_reason(&err(ErrorKind::NoEndpoints), Some(&p), true),
            None
        );
    }

    #[test]
    fn idempotent_methods_per_rfc_9110() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
