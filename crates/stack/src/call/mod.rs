//! One call to a cluster under a call policy: the logical part of the
//! request path, shared by the proxy's routes and the library's clients.
//!
//! A [`CallPolicy`] is the typed target every step reads its settings from:
//! the head timeout, the stream limit, retries and hedging. A [`Call`] sends
//! one request under it: the caller's deadline shortens the head timeout and
//! is the only deadline sent upstream ([`Deadlines`]), the request body is
//! made replayable when a retry or hedge may need it again, and
//! `attempt` runs the attempts over the cluster's balancer and endpoints.
//! The proxy wraps a call in its route's steps (headers, fault injection,
//! reporting); the library's client calls it directly.

pub(crate) mod attempt;

use std::{sync::Arc, time::Duration};

use http::{
    HeaderValue, Request, Response, Uri, Version,
    header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING},
    uri::{Authority, PathAndQuery, Scheme},
};
use switchyard_config::{
    DEFAULT_ROUTE_TIMEOUT, HedgePolicy, RetryPolicy, RouteConfig, UpstreamProtocol,
};
use switchyard_policy::{Budget, Deadline, deadline};
use switchyard_telemetry::trace::{RequestTrace, Tracer};
use tokio::time::Instant;

pub use attempt::{ATTEMPT_HEADER, AttemptLog, is_idempotent, retry_reason};

use self::attempt::{Attempts, Head, RequestBody};
use crate::{
    body::{Body, DownstreamState, ReplayBody, Source},
    cluster::Cluster,
    error::{ErrorKind, ProxyError},
    upstream::ClientAddrs,
};

/// Replay cap for hedged calls without a retry policy (Linkerd's bound).
const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// Window over which hedge-eligible requests are counted.
const HEDGE_BUDGET_TTL: Duration = Duration::from_secs(10);

/// What a call may do: the same settings as a route's, so that a policy
/// means the same in the proxy and in the library.
#[derive(Debug)]
pub struct CallPolicy {
    timeout: Duration,
    max_stream_duration: Option<Duration>,
    // Boxed: most routes have neither, and a gateway may hold 100,000.
    retry: Option<Box<RetryPolicy>>,
    hedge: Option<Box<Hedge>>,
}

/// A hedging policy and its extra-load budget.
#[derive(Debug)]
pub struct Hedge {
    pub policy: HedgePolicy,
    /// Hedges may add at most `max_extra_load` over the recent
    /// hedge-eligible requests of this policy's route (or client), so one
    /// route's hedging cannot spend another's.
    pub budget: Budget,
}

impl Default for CallPolicy {
    /// A route's defaults: a 15 s head timeout, no stream limit, no
    /// retries, no hedging.
    fn default() -> Self {
        Self::new(DEFAULT_ROUTE_TIMEOUT, None, None, None)
    }
}

impl CallPolicy {
    pub fn new(
        timeout: Duration,
        max_stream_duration: Option<Duration>,
        retry: Option<RetryPolicy>,
        hedge: Option<HedgePolicy>,
    ) -> Self {
        Self {
            timeout,
            max_stream_duration,
            retry: retry.map(Box::new),
            hedge: hedge.map(|policy| {
                Box::new(Hedge {
                    budget: Budget::new(policy.max_extra_load, 0, HEDGE_BUDGET_TTL),
                    policy,
                })
            }),
        }
    }

    /// The call policy of a configured route.
    pub fn of_route(rc: &RouteConfig) -> Self {
        Self::new(
            rc.timeout,
            rc.max_stream_duration,
            rc.retry.as_deref().cloned(),
            rc.hedge.as_deref().cloned(),
        )
    }

    /// Bounds the time to the upstream's response head, all attempts
    /// included, counted from the end of the request body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bounds a whole exchange, bodies included, when set.
    pub fn max_stream_duration(&self) -> Option<Duration> {
        self.max_stream_duration
    }

    pub fn retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_deref()
    }

    pub fn hedge(&self) -> Option<&Hedge> {
        self.hedge.as_deref()
    }
}

/// One request to a cluster under a policy.
#[derive(Debug)]
pub struct Call<'a> {
    pub policy: &'a CallPolicy,
    pub cluster: &'a Arc<Cluster>,
    pub deadlines: Deadlines,
    /// The consistent-hash key, for clusters that hash.
    pub hash: Option<u64>,
    /// gRPC calls send their deadline as `grpc-timeout` too.
    pub grpc: bool,
    /// The attempt number the previous hop sent (1 when absent).
    pub incoming_attempt: u32,
    /// The tracer and this request's trace, when tracing is on.
    pub tracing: Option<(&'a Arc<Tracer>, &'a RequestTrace)>,
}

impl Call<'_> {
    /// Sends the request `parts` (shaped for the cluster's protocol by
    /// [`set_upstream_target`]) with `body`, `None` when there is none,
    /// running attempts until one answer is final. The head timeout is the
    /// caller's to apply ([`within_head_timeout`]), since what runs inside it
    /// differs: the proxy puts injected faults there.
    pub async fn send(
        self,
        mut parts: http::request::Parts,
        body: Option<(Source, DownstreamState)>,
        log: &mut AttemptLog,
    ) -> Result<Response<Body>, ProxyError> {
        if self.cluster.protocol() == UpstreamProtocol::Http1
            && body.is_some()
            && !parts.headers.contains_key(CONTENT_LENGTH)
        {
            // A body of unknown length, which hyper would drop on methods
            // such as GET (an HTTP/2 client sends DATA without a length):
            // chunked framing carries it to an HTTP/1.1 upstream.
            parts
                .headers
                .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        let policy = self.policy;
        let wants_replay = policy.retry().is_some() || policy.hedge().is_some();
        let body = match body {
            None => RequestBody::Empty,
            Some((source, state)) if wants_replay => {
                let cap = policy
                    .retry()
                    .map_or(DEFAULT_REPLAY_CAP, |p| p.max_replay_bytes);
                RequestBody::Replay(ReplayBody::new(source, cap, state))
            }
            Some((source, state)) => RequestBody::Once(Some(Body::downstream(source, state))),
        };
        let attempts = Attempts {
            policy,
            cluster: self.cluster,
            head: Head {
                client: parts.extensions.get::<ClientAddrs>().copied(),
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
            },
            body,
            hash: self.hash,
            deadline: self.deadlines.head,
            upstream_deadline: self.deadlines.upstream,
            grpc: self.grpc,
            incoming_attempt: self.incoming_attempt,
            tracing: self.tracing,
        };
        attempts.run(log).await
    }
}

/// The caller's remaining time: `grpc-timeout` for gRPC, and Switchyard's
/// `x-switchyard-timeout-ms` for anything. Malformed values are ignored.
pub fn caller_timeout(h: &http::HeaderMap, grpc: bool) -> Option<Duration> {
    let from_grpc = grpc
        .then(|| h.get(deadline::GRPC_TIMEOUT_HEADER))
        .flatten()
        .and_then(|v| deadline::parse_grpc_timeout(v.as_bytes()));
    let from_http = h
        .get(deadline::TIMEOUT_HEADER)
        .and_then(|v| deadline::parse_timeout_ms(v.as_bytes()));
    match (from_grpc, from_http) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Removes the caller's deadline headers, read already by
/// [`caller_timeout`]: each attempt sends the one deadline this hop works
/// against, or none.
pub fn remove_deadline_headers(h: &mut http::HeaderMap) {
    h.remove(&attempt::TIMEOUT_HEADER);
    h.remove(&attempt::GRPC_TIMEOUT);
}

/// Waits for `call` until the head deadline: the policy's timeout counted
/// from the end of the request body (as Envoy counts it, so that a client
/// stream may last longer than the timeout), and never past the caller's
/// own deadline. `None` when it passed first.
///
/// `call` is taken pinned where the caller holds it: a request's future is
/// large (kilobytes: the attempts, the pool, hyper's send), and taken by
/// value it would be held twice in this future's state, then copied into
/// the caller's box with it.
pub async fn within_head_timeout<F: std::future::Future>(
    mut call: std::pin::Pin<&mut F>,
    deadlines: &Deadlines,
    body: Option<&DownstreamState>,
    timeout: Duration,
) -> Option<F::Output> {
    let Some(body) = body else {
        // No body: the deadline is fixed from the start.
        return tokio::time::timeout_at(deadlines.head.instant(), call)
            .await
            .ok();
    };
    let timer = tokio::time::sleep_until(deadlines.head.instant());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            out = call.as_mut() => return Some(out),
            () = &mut timer => {
                let now = Instant::now();
                // Still streaming: the timeout has not started. (A failed
                // body ends `call` with the client's error soon.)
                let from_body = body.ended_at().unwrap_or(now) + timeout;
                let next = deadlines.caller.map_or(from_body, |c| from_body.min(c.instant()));
                if next <= now {
                    return None;
                }
                timer.as_mut().reset(next);
            }
        }
    }
}

/// The deadlines of one call.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// The caller's own deadline, if it sent one.
    caller: Option<Deadline>,
    /// By when the upstream's response head must arrive: the policy's
    /// timeout, shortened by the caller's deadline.
    head: Deadline,
    /// The end of the whole exchange, enforced on the response body: the
    /// policy's `max_stream_duration`, when set.
    stream: Option<Deadline>,
    /// What is sent upstream as the call's deadline: the caller's own
    /// (less the time spent here) or the stream limit, whichever is first;
    /// never the head timeout, which would cut long streams.
    upstream: Option<Deadline>,
}

impl Deadlines {
    /// The deadlines of a call starting now, for a caller that has
    /// `caller` left.
    pub fn of(policy: &CallPolicy, caller: Option<Duration>) -> Self {
        let caller = caller.map(Deadline::after);
        let head = Deadline::after(policy.timeout());
        let stream = policy.max_stream_duration().map(Deadline::after);
        Self {
            caller,
            head: caller.map_or(head, |c| c.min(head)),
            stream,
            upstream: match (caller, stream) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Whether the response head is already too late: the caller has
    /// given up, and no upstream should be loaded.
    pub fn expired(&self) -> bool {
        self.head.expired()
    }

    /// When the whole exchange must end, if it has a limit.
    pub fn stream_end(&self) -> Option<Instant> {
        self.stream.map(|d| d.instant())
    }
}

/// gRPC requests get gRPC-shaped errors and deadlines.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Shapes the request line for the upstream protocol: origin-form with a
/// `Host` header for HTTP/1.1, absolute URI with `:authority` for HTTP/2.
/// The authority is the request's, else `fallback` (the cluster's name,
/// which every endpoint of the cluster answers to, so one head serves every
/// attempt).
pub fn set_upstream_target(
    parts: &mut http::request::Parts,
    protocol: UpstreamProtocol,
    fallback: impl std::fmt::Display,
) -> Result<(), ProxyError> {
    let authority: Authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => match parts
            .headers
            .get(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        {
            Some(a) => a,
            None => Authority::try_from(fallback.to_string())
                .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?,
        },
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        UpstreamProtocol::Http1 => {
            if !parts.headers.contains_key(HOST) {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?;
                parts.headers.insert(HOST, host);
            }
            parts.uri = Uri::from(path);
            parts.version = Version::HTTP_11;
        }
        UpstreamProtocol::Http2 => {
            parts.headers.remove(HOST);
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(path);
            parts.uri = Uri::from_parts(uri)
                .map_err(|e| ProxyError::with_source(ErrorKind::Internal, e))?;
            parts.version = Version::HTTP_2;
        }
    }
    Ok(())
}
