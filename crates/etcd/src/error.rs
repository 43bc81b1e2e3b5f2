//! Why an etcd call failed.

use std::time::Duration;

/// An etcd failure, classified so callers can decide without reading text.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("invalid etcd endpoint {0:?}: expected http://host:port or https://host:port")]
    InvalidEndpoint(String),
    #[error("etcd endpoint {0:?}: a CA is set, so it must be https://")]
    CaWithoutTls(String),
    #[error("cannot read the etcd CA file {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd TLS settings for {url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd {op} failed: {status}")]
    Rpc {
        op: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("etcd {op} did not complete within {after:?} (is a quorum of members up?)")]
    Timeout { op: &'static str, after: Duration },
    #[error("etcd lease error: {0}")]
    Lease(String),
    /// The watch asked for revisions etcd has compacted away; re-read the
    /// prefix and watch from the revision of that read.
    #[error("etcd compacted the history up to revision {0}")]
    Compacted(i64),
    #[error("etcd cancelled the watch: {0}")]
    WatchCancelled(String),
    #[error("the etcd watch stream ended")]
    WatchClosed,
}

impl EtcdError {
    /// Whether etcd answered that the key or lease does not exist (e.g. a
    /// put attached to a lease that has just expired).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// Whether etcd was unreachable or without quorum (as opposed to having
    /// answered with an error about the request itself).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::WatchClosed => true,
            Self::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ),
            _ => false,
        }
    }
}
