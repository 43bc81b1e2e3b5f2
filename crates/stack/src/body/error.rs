//! Why a body stopped before its end.

/// A body failure, by the side that caused it. The request path classifies
/// attempts by it: a downstream failure is the client's, never the
/// endpoint's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The client's request body failed: a malformed chunk, a connection
    /// closed mid-upload, a reset stream.
    #[error("request body from the client failed")]
    Downstream(#[source] super::BoxError),
    /// A replay of a request body whose client side had already failed:
    /// the body is incomplete and must not end cleanly upstream.
    #[error("request body from the client is incomplete")]
    DownstreamIncomplete,
    /// The upstream's response body failed.
    #[error("response body from the upstream failed")]
    Upstream(#[source] hyper::Error),
    /// No data moved in either direction for the stream idle timeout.
    #[error("stream idle for longer than its idle timeout")]
    Idle,
    /// The route's `max_stream_duration` elapsed.
    #[error("stream exceeded the route's maximum duration")]
    MaxDuration,
}

impl BodyError {
    /// Whether the client's side caused the failure.
    pub fn is_downstream(&self) -> bool {
        matches!(
            self,
            BodyError::Downstream(_) | BodyError::DownstreamIncomplete
        )
    }
}
