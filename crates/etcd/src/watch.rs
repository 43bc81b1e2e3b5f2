//! A prefix watch: one bidirectional `Watch` stream on one etcd member.
//!
//! The request half is kept open for the life of the watch (closing it
//! makes etcd end the stream); responses carry batches of events, each
//! batch complete at its header revision.

use tokio::sync::mpsc;
use tonic::{Streaming, transport::Channel};

use crate::{
    EtcdError, KeyValue,
    pb::{
        etcdserverpb::{
            WatchCreateRequest, WatchRequest, WatchResponse, watch_client::WatchClient,
            watch_request,
        },
        mvccpb::event::EventType,
    },
    prefix_end,
};

/// A change to one key.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete, only `key` and `mod_revision` are set.
    pub kv: KeyValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// The events of one revision range; the store is complete up to `revision`.
#[derive(Clone, Debug, Default)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// An open prefix watch.
#[derive(Debug)]
pub struct Watch {
    responses: Streaming<WatchResponse>,
    /// Kept so the request half stays open.
    _requests: mpsc::Sender<WatchRequest>,
}

impl Watch {
    pub(crate) async fn open(
        mut client: WatchClient<Channel>,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Self, EtcdError> {
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision,
                    // Progress notifications move the caller's revision on
                    // while nothing under the prefix changes, so a resume
                    // after a long quiet period does not hit compaction.
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        // The channel has room for this one message; it cannot be full.
        tx.try_send(create).map_err(|_| EtcdError::WatchClosed)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut responses = client
            .watch(stream)
            .await
            .map_err(|status| EtcdError::Rpc {
                op: "watch",
                status,
            })?
            .into_inner();
        // The first response confirms the watch (or reports compaction).
        match responses.message().await {
            Ok(Some(first)) => {
                check(&first)?;
                if !first.created {
                    return Err(EtcdError::WatchCancelled(
                        "etcd did not confirm the watch".into(),
                    ));
                }
            }
            Ok(None) => return Err(EtcdError::WatchClosed),
            Err(status) => {
                return Err(EtcdError::Rpc {
                    op: "watch",
                    status,
                });
            }
        }
        Ok(Self {
            responses,
            _requests: tx,
        })
    }

    /// The next batch of events; a batch without events is a progress
    /// notification. An error means the watch is over: open a new one
    /// from the last revision seen + 1.
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            let resp = match self.responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(EtcdError::WatchClosed),
                Err(status) => {
                    return Err(EtcdError::Rpc {
                        op: "watch",
                        status,
                    });
                }
            };
            check(&resp)?;
            if resp.created {
                continue;
            }
            let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
            let events = resp
                .events
                .into_iter()
                .filter_map(|e| {
                    let kind = match EventType::try_from(e.r#type) {
                        Ok(EventType::Put) => EventKind::Put,
                        Ok(EventType::Delete) => EventKind::Delete,
                        Err(_) => return None,
                    };
                    Some(Event { kind, kv: e.kv? })
                })
                .collect();
            return Ok(WatchBatch { revision, events });
        }
    }
}

fn check(resp: &WatchResponse) -> Result<(), EtcdError> {
    if resp.compact_revision > 0 {
        return Err(EtcdError::Compacted(resp.compact_revision));
    }
    if resp.canceled {
        return Err(EtcdError::WatchCancelled(resp.cancel_reason.clone()));
    }
    Ok(())
}
