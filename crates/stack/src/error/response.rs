//! The one place where failures become responses.
//!
//! HTTP clients get a status code and a short text body; gRPC clients get a
//! trailers-only response (HTTP 200 with `grpc-status` and `grpc-message` in
//! the head), which every gRPC implementation understands. Both carry
//! `x-switchyard-error` naming the failure kind, so the reason for a proxy
//! answer is visible without reading logs.

use http::{HeaderValue, Response, StatusCode, header::CONTENT_TYPE};

use super::{ErrorKind, ProxyError};
use crate::body::Body;

/// The header naming why the proxy answered instead of the upstream.
pub const ERROR_HEADER: &str = "x-switchyard-error";

/// HTTP status for each failure kind.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NoRoute => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NoEndpoints | ErrorKind::RefusedStream | ErrorKind::Overloaded => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::ConnectFailed
        | ErrorKind::ConnectTimeout
        | ErrorKind::UpstreamTls
        | ErrorKind::UpstreamReset
        | ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
        ErrorKind::Timeout | ErrorKind::DeadlineExpired => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::DownstreamBody => StatusCode::BAD_REQUEST,
        ErrorKind::ClientLimit => StatusCode::TOO_MANY_REQUESTS,
        // These end a stream that is under way; no response carries them.
        ErrorKind::SendTimeout | ErrorKind::StreamIdle => StatusCode::REQUEST_TIMEOUT,
        // No HTTP exchange took place.
        ErrorKind::TlsHandshake | ErrorKind::ProxyProtocol => StatusCode::BAD_REQUEST,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// gRPC status code for each failure kind, following gRPC's HTTP-to-gRPC
/// mapping where one exists.
pub fn grpc_status(kind: ErrorKind) -> u8 {
    const CANCELLED: u8 = 1;
    const DEADLINE_EXCEEDED: u8 = 4;
    const PERMISSION_DENIED: u8 = 7;
    const RESOURCE_EXHAUSTED: u8 = 8;
    const UNIMPLEMENTED: u8 = 12;
    const INTERNAL: u8 = 13;
    const UNAVAILABLE: u8 = 14;
    match kind {
        // gRPC's HTTP-to-gRPC mapping: 400 is INTERNAL.
        ErrorKind::InvalidRequest => INTERNAL,
        ErrorKind::NoRoute => UNIMPLEMENTED,
        ErrorKind::Forbidden => PERMISSION_DENIED,
        ErrorKind::NoEndpoints
        | ErrorKind::ConnectFailed
        | ErrorKind::ConnectTimeout
        | ErrorKind::UpstreamTls
        | ErrorKind::RefusedStream
        | ErrorKind::UpstreamReset
        | ErrorKind::UpstreamProtocol => UNAVAILABLE,
        ErrorKind::Timeout | ErrorKind::DeadlineExpired => DEADLINE_EXCEEDED,
        ErrorKind::Overloaded | ErrorKind::ClientLimit => RESOURCE_EXHAUSTED,
        ErrorKind::DownstreamBody
        | ErrorKind::SendTimeout
        | ErrorKind::StreamIdle
        | ErrorKind::TlsHandshake
        | ErrorKind::ProxyProtocol => CANCELLED,
        ErrorKind::Internal => INTERNAL,
    }
}

/// Builds the response for a failed request.
pub fn error_response(err: &ProxyError, grpc: bool) -> Response<Body> {
    let kind = err.kind();
    let message = kind.to_string();
    let mut resp = if grpc {
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_status(kind))),
        );
        // The kind's text is plain ASCII, a valid grpc-message as is.
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(Body::full(format!("{message}\n")));
        *r.status_mut() = http_status(kind);
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(kind.as_str()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(http_status(ErrorKind::NoEndpoints), 503);
        assert_eq!(http_status(ErrorKind::ConnectFailed), 502);
        assert_eq!(http_status(ErrorKind::Timeout), 504);
        assert_eq!(grpc_status(ErrorKind::NoEndpoints), 14);
        assert_eq!(grpc_status(ErrorKind::Timeout), 4);
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let r = error_response(&ProxyError::new(ErrorKind::Timeout), true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()[ERROR_HEADER], "timeout");
        assert!(http_body::Body::is_end_stream(r.body()));
    }

    #[test]
    fn http_errors_have_status_and_reason() {
        let r = error_response(&ProxyError::new(ErrorKind::NoEndpoints), false);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[ERROR_HEADER], "no_endpoints");
    }
}
