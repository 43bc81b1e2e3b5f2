//! A small typed etcd v3 client: the key-value, watch and lease calls that
//! the registry's etcd store and the etcd discovery source need.
//!
//! Why not the `etcd-client` crate: its build script runs a system `protoc`,
//! which a fresh machine does not have, and the workspace generates every
//! gRPC client without one (`protox`). The protos in `proto/` are etcd's
//! own, trimmed to these calls, so the wire format is etcd's.
//!
//! One [`Client`] balances over every given member (tonic's p2c balancer
//! over one HTTP/2 connection per member, with keep-alive pings so a dead
//! member is noticed); unary calls that fail because a member went away
//! are retried on another one within the request timeout, because every
//! call this crate offers is safe to repeat (puts and deletes are
//! idempotent, a repeated lease grant only leaves a lease that expires).
//!
//! # Layout
//! - [`Client`]: connect, range, put, compare-and-put, delete, leases,
//!   status; [`Client::watch_prefix`] opens a [`Watch`].
//! - [`watch`]: a prefix watch from a start revision, yielding batches of
//!   [`Event`]s; compaction is reported as [`EtcdError::Compacted`] so the
//!   caller can re-read and resume.
//! - [`EtcdError`]: connection, RPC and protocol failures.
//! - [`pb`]: the generated messages, for callers that need a raw field.

mod error;
pub mod watch;

use std::{future::Future, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::debug;

pub use error::EtcdError;
pub use watch::{Event, EventKind, Watch, WatchBatch};

/// The generated etcd messages and clients.
#[allow(missing_debug_implementations, clippy::all, rust_2018_idioms)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest, compare, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, request_op,
    watch_client::WatchClient,
};

pub use pb::mvccpb::KeyValue;

/// How the client reaches etcd.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Default 2s: a loopback or data-centre connect that takes longer means
    /// the member is down; the balancer then uses another one.
    pub connect_timeout: Duration,
    /// Default 10s: bounds every unary call including retries; long enough
    /// for an etcd leader election (1s election timeout by default) and a
    /// few attempts.
    pub request_timeout: Duration,
    /// Default 2s: bounds one attempt. A proposal caught in a leader change
    /// is dropped by etcd and only answered by its own request timeout
    /// (about 7s); giving up earlier and asking again is safe here (see the
    /// crate docs) and much faster.
    pub attempt_timeout: Duration,
    /// Default 2s: HTTP/2 pings on idle connections, so that a watch on a
    /// member that vanished without closing its socket is noticed.
    pub keep_alive_interval: Duration,
    /// Default `None`: `https://` members' certificates must chain to the
    /// system's roots (which `SSL_CERT_FILE` can replace); set, to this PEM
    /// bundle instead. Host names are always verified.
    pub ca: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(2),
            ca: None,
        }
    }
}

/// A cheap-to-clone etcd v3 client over all given members.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    endpoints: Vec<String>,
    opts: ClientOptions,
}

/// The keys under a prefix and the store revision they were read at.
#[derive(Clone, Debug, Default)]
pub struct Range {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// Pause between attempts of a unary call whose member went away: long
/// enough for the balancer to mark that member not ready.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl Client {
    /// A client over `endpoints` (`http://host:port`, or `https://` with
    /// [`ClientOptions::ca`] or the system's roots). Connections are made
    /// lazily, so this succeeds while etcd is down; calls fail until it is up.
    pub fn new(endpoints: &[String], opts: ClientOptions) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let ca = match &opts.ca {
            Some(path) => Some(Certificate::from_pem(std::fs::read(path).map_err(
                |source| EtcdError::Ca {
                    path: path.display().to_string(),
                    source,
                },
            )?)),
            None => None,
        };
        let mut list = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|_| EtcdError::InvalidEndpoint(url.clone()))?;
            if url.starts_with("https://") {
                // tonic verifies the URL's host against the certificate;
                // there is no way to skip it.
                let tls = match &ca {
                    Some(ca) => ClientTlsConfig::new().ca_certificate(ca.clone()),
                    None => ClientTlsConfig::new().with_native_roots(),
                };
                ep = ep.tls_config(tls).map_err(|source| EtcdError::Tls {
                    url: url.clone(),
                    source,
                })?;
            } else if ca.is_some() {
                return Err(EtcdError::CaWithoutTls(url.clone()));
            }
            let ep = ep
                .connect_timeout(opts.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(opts.keep_alive_interval)
                .keep_alive_timeout(opts.keep_alive_interval)
                .keep_alive_while_idle(true);
            list.push(ep);
        }
        Ok(Self {
            channel: Channel::balance_list(list.into_iter()),
            endpoints: endpoints.to_vec(),
            opts,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Every key starting with `prefix`, read linearizably.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<Range, EtcdError> {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let resp = self
            .call("range", |c| {
                let req = req.clone();
                async move { KvClient::new(c).range(req).await }
            })
            .await?;
        Ok(Range {
            revision: revision(resp.header.as_ref()),
            kvs: resp.kvs,
        })
    }

    /// One key and the store revision it was read at.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let req = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let resp = self
            .call("get", |c| {
                let req = req.clone();
                async move { KvClient::new(c).range(req).await }
            })
            .await?;
        Ok((resp.kvs.into_iter().next(), revision(resp.header.as_ref())))
    }

    /// Writes `key`; `lease` 0 means no lease. Returns the new revision.
    pub async fn put(&self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64, EtcdError> {
        let req = PutRequest {
            key: key.to_vec(),
            value,
            lease,
            ..Default::default()
        };
        let resp = self
            .call("put", |c| {
                let req = req.clone();
                async move { KvClient::new(c).put(req).await }
            })
            .await?;
        Ok(revision(resp.header.as_ref()))
    }

    /// Writes `key` only if it still has `mod_revision` (0: only if absent).
    /// Returns the new revision, or `None` when someone else wrote first.
    pub async fn put_if_unchanged(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        mod_revision: i64,
    ) -> Result<Option<i64>, EtcdError> {
        let req = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let resp = self
            .call("txn", |c| {
                let req = req.clone();
                async move { KvClient::new(c).txn(req).await }
            })
            .await?;
        Ok(resp.succeeded.then(|| revision(resp.header.as_ref())))
    }

    /// Deletes `key`; returns how many keys were deleted and the revision.
    pub async fn delete(&self, key: &[u8]) -> Result<(i64, i64), EtcdError> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let resp = self
            .call("delete", |c| {
                let req = req.clone();
                async move { KvClient::new(c).delete_range(req).await }
            })
            .await?;
        Ok((resp.deleted, revision(resp.header.as_ref())))
    }

    /// Grants a lease of `ttl` seconds (etcd's granularity); returns its id.
    pub async fn grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let req = LeaseGrantRequest { ttl, id: 0 };
        let resp = self
            .call("lease grant", |c| async move {
                LeaseClient::new(c).lease_grant(req).await
            })
            .await?;
        if !resp.error.is_empty() {
            return Err(EtcdError::Lease(resp.error));
        }
        Ok(resp.id)
    }

    /// Renews a lease once; returns its remaining TTL in seconds, 0 when the
    /// lease has already expired (its keys are gone).
    pub async fn keep_alive_once(&self, id: i64) -> Result<i64, EtcdError> {
        let resp = self
            .call("lease keep-alive", |c| async move {
                let out = tokio_stream::once(LeaseKeepAliveRequest { id });
                let mut stream = LeaseClient::new(c)
                    .lease_keep_alive(out)
                    .await?
                    .into_inner();
                match stream.message().await? {
                    Some(r) => Ok(tonic::Response::new(r)),
                    None => Err(tonic::Status::unavailable("keep-alive stream closed")),
                }
            })
            .await?;
        Ok(resp.ttl.max(0))
    }

    /// Revokes a lease, deleting its keys. An unknown lease is not an error.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let req = LeaseRevokeRequest { id };
        match self
            .call("lease revoke", |c| async move {
                LeaseClient::new(c).lease_revoke(req).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Rpc { status, .. }) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The current store revision, from whichever member answers.
    pub async fn current_revision(&self) -> Result<i64, EtcdError> {
        let resp = self
            .call("status", |c| async move {
                MaintenanceClient::new(c).status(StatusRequest {}).await
            })
            .await?;
        Ok(revision(resp.header.as_ref()))
    }

    /// Watches every key under `prefix` from `start_revision` (0: from now).
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let client = WatchClient::new(self.channel.clone());
        tokio::time::timeout(
            self.opts.request_timeout,
            Watch::open(client, prefix, start_revision),
        )
        .await
        .map_err(|_| EtcdError::Timeout {
            op: "watch",
            after: self.opts.request_timeout,
        })?
    }

    /// Runs one unary call, retrying transport-level failures (the member
    /// went away, no member ready yet) until the request timeout.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, EtcdError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.opts.request_timeout;
        let attempt = async {
            loop {
                match tokio::time::timeout(self.opts.attempt_timeout, f(self.channel.clone())).await
                {
                    Ok(Ok(resp)) => return Ok(resp.into_inner()),
                    Ok(Err(status)) if retryable(&status) => {
                        debug!(op, %status, "etcd call failed; retrying on another member");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Ok(Err(status)) => return Err(EtcdError::Rpc { op, status }),
                    Err(_) => {
                        debug!(op, "etcd call attempt timed out; asking again");
                    }
                }
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| EtcdError::Timeout { op, after: timeout })?
    }
}

/// Failures that say nothing reached a healthy member: safe to retry.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) || (status.code() == tonic::Code::Internal && status.message().contains("h2 protocol error"))
}

fn revision(header: Option<&pb::etcdserverpb::ResponseHeader>) -> i64 {
    header.map(|h| h.revision).unwrap_or_default()
}

/// The end of the key range of a prefix: the prefix with its last byte below
/// 0xff incremented (etcd's `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // An all-0xff (or empty) prefix covers every key: etcd's "\0" range end.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
