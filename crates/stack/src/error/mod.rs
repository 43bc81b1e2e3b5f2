//! Typed, classified proxy errors.
//!
//! Every failure on the request path becomes a [`ProxyError`] whose
//! [`ErrorKind`] says where it came from and whether the request may have
//! reached the upstream. Retry and breaker decisions act on that class, never
//! on an error's text; [`response`] turns an error into the one response the
//! client sees.

pub mod response;

use std::{error::Error as StdError, fmt, net::SocketAddr};

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, at the granularity that policy and responses need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is malformed or ambiguous (a duplicate or missing
    /// `Host`, a `host` that disagrees with `:authority`).
    InvalidRequest,
    /// No route matched the request.
    NoRoute,
    /// The route admits only listed client certificate identities, and the
    /// client's is not one of them (or it has none).
    Forbidden,
    /// The cluster has no endpoint to send to.
    NoEndpoints,
    /// The TCP connection to the upstream could not be made.
    ConnectFailed,
    /// The TCP connection to the upstream did not complete in time.
    ConnectTimeout,
    /// The TLS handshake with the upstream failed: its certificate did not
    /// verify (chain, name, expiry) or it does not speak TLS.
    UpstreamTls,
    /// The upstream refused the stream before processing it (HTTP/2
    /// `REFUSED_STREAM`, or `GOAWAY` with the stream above the last id).
    RefusedStream,
    /// The upstream connection closed or was reset mid-request.
    UpstreamReset,
    /// The upstream answered something that is not valid HTTP.
    UpstreamProtocol,
    /// The route's timeout elapsed before the upstream's response head.
    Timeout,
    /// The request's own deadline (e.g. `grpc-timeout`) had already passed.
    DeadlineExpired,
    /// A cluster limit was reached and the request was failed fast.
    Overloaded,
    /// The downstream request body failed while it was being forwarded.
    DownstreamBody,
    /// The client already has its listener's `max_requests_per_client`
    /// requests in flight.
    ClientLimit,
    /// The client took none of a ready response for the listener's
    /// `send_timeout`; the stream was ended.
    SendTimeout,
    /// No body frame moved either way for the listener's
    /// `stream_idle_timeout`; the stream was ended.
    StreamIdle,
    /// A client's TLS handshake failed or did not finish in time.
    TlsHandshake,
    /// A connection from a trusted load balancer did not start with a
    /// valid PROXY protocol header in time.
    ProxyProtocol,
    /// A bug or resource failure inside the proxy.
    Internal,
}

impl ErrorKind {
    /// Stable snake_case name used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamTls => "upstream_tls",
            ErrorKind::RefusedStream => "refused_stream",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DeadlineExpired => "deadline_expired",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::DownstreamBody => "downstream_body",
            ErrorKind::ClientLimit => "client_limit",
            ErrorKind::SendTimeout => "send_timeout",
            ErrorKind::StreamIdle => "stream_idle",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::ProxyProtocol => "proxy_protocol",
            ErrorKind::Internal => "internal",
        }
    }

    /// All kinds, for pre-registering metric series.
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::InvalidRequest,
        ErrorKind::NoRoute,
        ErrorKind::Forbidden,
        ErrorKind::NoEndpoints,
        ErrorKind::ConnectFailed,
        ErrorKind::ConnectTimeout,
        ErrorKind::UpstreamTls,
        ErrorKind::RefusedStream,
        ErrorKind::UpstreamReset,
        ErrorKind::UpstreamProtocol,
        ErrorKind::Timeout,
        ErrorKind::DeadlineExpired,
        ErrorKind::Overloaded,
        ErrorKind::DownstreamBody,
        ErrorKind::ClientLimit,
        ErrorKind::SendTimeout,
        ErrorKind::StreamIdle,
        ErrorKind::TlsHandshake,
        ErrorKind::ProxyProtocol,
        ErrorKind::Internal,
    ];

    /// The kind named by [`ErrorKind::as_str`], e.g. from an
    /// `x-switchyard-error` header.
    pub fn from_str_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True when the request provably never reached the upstream, so that
    /// sending it again cannot duplicate its effect, whatever its method.
    pub fn not_sent(self) -> bool {
        matches!(
            self,
            ErrorKind::NoEndpoints
                | ErrorKind::ConnectFailed
                | ErrorKind::ConnectTimeout
                | ErrorKind::UpstreamTls
                | ErrorKind::RefusedStream
                | ErrorKind::Overloaded
        )
    }

    /// Whether the failure says something about the endpoint's health (as
    /// opposed to the client, the route or the proxy itself).
    pub fn blames_endpoint(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectFailed
                | ErrorKind::ConnectTimeout
                | ErrorKind::UpstreamTls
                | ErrorKind::UpstreamReset
                | ErrorKind::UpstreamProtocol
                | ErrorKind::Timeout
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::NoRoute => "no route matched the request",
            ErrorKind::Forbidden => "the client's identity may not use this route",
            ErrorKind::NoEndpoints => "no healthy endpoint available",
            ErrorKind::ConnectFailed => "upstream connect failed",
            ErrorKind::ConnectTimeout => "upstream connect timed out",
            ErrorKind::UpstreamTls => "upstream TLS handshake failed",
            ErrorKind::RefusedStream => "upstream refused the stream",
            ErrorKind::UpstreamReset => "upstream connection reset",
            ErrorKind::UpstreamProtocol => "upstream sent an invalid response",
            ErrorKind::Timeout => "upstream request timed out",
            ErrorKind::DeadlineExpired => "request deadline expired",
            ErrorKind::Overloaded => "cluster overloaded",
            ErrorKind::DownstreamBody => "request body failed",
            ErrorKind::ClientLimit => "too many requests in flight from this client",
            ErrorKind::SendTimeout => "client took no response data in time",
            ErrorKind::StreamIdle => "stream idle too long",
            ErrorKind::TlsHandshake => "TLS handshake failed",
            ErrorKind::ProxyProtocol => "invalid or missing PROXY protocol header",
            ErrorKind::Internal => "internal proxy error",
        };
        f.write_str(text)
    }
}

/// A failure on the request path with its class, the endpoint involved (if
/// any) and the underlying cause.
#[derive(Debug)]
pub struct ProxyError {
    kind: ErrorKind,
    endpoint: Option<SocketAddr>,
    source: Option<BoxError>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            endpoint: None,
            source: None,
        }
    }

    pub fn with_source(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            endpoint: None,
            source: Some(source.into()),
        }
    }

    #[must_use]
    pub fn at(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The same failure, classified as `kind`: for a cause the place that
    /// made the error could not see (the client's body failing under an
    /// attempt that looks like an upstream reset).
    #[must_use]
    pub fn reclassified(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Classifies an error from hyper's client side.
    pub fn from_upstream(err: hyper::Error) -> Self {
        let kind = classify_hyper(&err);
        Self::with_source(kind, err)
    }
}

fn classify_hyper(err: &hyper::Error) -> ErrorKind {
    if find_source::<crate::body::BodyError>(err).is_some_and(|b| b.is_downstream()) {
        // Our own request body failed on the client's side.
        return ErrorKind::DownstreamBody;
    }
    if tls_failure(err) {
        // In TLS 1.3 a server checks the client's certificate after the
        // client has finished its side of the handshake, so its refusal
        // arrives as an alert on the first read. The server never accepted
        // the connection: nothing was processed.
        return ErrorKind::UpstreamTls;
    }
    if let Some(h2) = find_source::<h2::Error>(err) {
        if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return ErrorKind::RefusedStream;
        }
        if h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR) {
            // A graceful GOAWAY that did not include our stream: the server
            // promises it did not process it.
            return ErrorKind::RefusedStream;
        }
        if h2.is_go_away() || h2.is_reset() || h2.is_io() {
            return ErrorKind::UpstreamReset;
        }
        return ErrorKind::UpstreamProtocol;
    }
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        ErrorKind::UpstreamProtocol
    } else if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_body_write_aborted() {
        ErrorKind::DownstreamBody
    } else {
        // Closed, canceled, incomplete message and raw I/O errors all mean the
        // connection went away under the request.
        ErrorKind::UpstreamReset
    }
}

/// Whether a TLS error (wrapped in an I/O error, as TLS streams report
/// them) is in the cause chain.
fn tls_failure(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            // `io::Error::source` skips the wrapped error itself.
            if inner.is::<rustls::Error>() {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// Walks the cause chain looking for an error of type `E`.
pub fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)?;
        if let Some(ep) = self.endpoint {
            write!(f, " ({ep})")?;
        }
        Ok(())
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
