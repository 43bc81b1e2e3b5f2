//! etcd as a source: every key under a prefix is one instance, its value a
//! JSON [`Instance`] record (what the registry's etcd store writes).
//!
//! The first call reads the prefix and opens a watch from the revision of
//! that read + 1; later calls apply the watch's events. When the watch
//! breaks (a member died, the network blinked) the next call re-opens it
//! from the last revision seen + 1, so no event is lost and none is applied
//! twice. If etcd compacted that history away, the prefix is read again.
//! A value that is not a valid record is skipped with a warning: one bad
//! key must not hide the other instances.

use std::collections::BTreeMap;

use switchyard_etcd::{Client, ClientOptions, EtcdError, EventKind, KeyValue, Watch};
use tracing::warn;

use crate::{Discovered, Source, SourceError, wire::Instance};

/// Watches the instances under one etcd prefix.
#[derive(Debug)]
pub struct EtcdSource {
    client: Client,
    prefix: String,
    /// The revision up to which `instances` is complete; 0 before the first
    /// read and after a compaction.
    revision: i64,
    watch: Option<Watch>,
    instances: BTreeMap<Vec<u8>, Discovered>,
}

impl EtcdSource {
    /// Watches `prefix` on the etcd cluster at `endpoints`.
    pub fn new(endpoints: &[String], prefix: &str) -> Result<Self, SourceError> {
        Self::with_ca(endpoints, prefix, None)
    }

    /// Like [`EtcdSource::new`]; `https://` members' certificates must
    /// chain to `ca` (a PEM bundle), else to the system's roots.
    pub fn with_ca(
        endpoints: &[String],
        prefix: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, SourceError> {
        let opts = ClientOptions {
            ca: ca.map(std::path::Path::to_path_buf),
            ..ClientOptions::default()
        };
        Self::with_client(Client::new(endpoints, opts)?, prefix)
    }

    pub fn with_client(client: Client, prefix: &str) -> Result<Self, SourceError> {
        if prefix.is_empty() {
            return Err(SourceError::Invalid("the etcd prefix is empty".into()));
        }
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            revision: 0,
            watch: None,
            instances: BTreeMap::new(),
        })
    }

    /// The revision up to which the set is complete.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn set(&self) -> Vec<Discovered> {
        self.instances.values().cloned().collect()
    }

    fn apply_put(&mut self, kv: &KeyValue) {
        match parse(&kv.value) {
            Ok(inst) => {
                self.instances.insert(kv.key.clone(), inst.to_discovered());
            }
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "skipping an etcd value that is not an instance record");
                self.instances.remove(&kv.key);
            }
        }
    }

    async fn step(&mut self) -> Result<Vec<Discovered>, SourceError> {
        if self.revision == 0 {
            let range = self.client.range_prefix(self.prefix.as_bytes()).await?;
            self.instances.clear();
            for kv in &range.kvs {
                self.apply_put(kv);
            }
            self.revision = range.revision;
            self.watch = Some(
                self.client
                    .watch_prefix(self.prefix.as_bytes(), self.revision + 1)
                    .await?,
            );
            return Ok(self.set());
        }
        let Some(mut watch) = self.watch.take() else {
            // Resuming after a broken watch: reopen from where it stopped
            // and report the (unchanged) set so the driver knows it works.
            self.watch = Some(
                self.client
                    .watch_prefix(self.prefix.as_bytes(), self.revision + 1)
                    .await?,
            );
            return Ok(self.set());
        };
        // An error drops `watch`: the next call reopens it.
        loop {
            let batch = watch.next().await?;
            let mut changed = false;
            for ev in &batch.events {
                match ev.kind {
                    EventKind::Put => {
                        self.apply_put(&ev.kv);
                        changed = true;
                    }
                    EventKind::Delete => {
                        changed |= self.instances.remove(&ev.kv.key).is_some();
                    }
                }
            }
            self.revision = self.revision.max(batch.revision);
            if changed {
                self.watch = Some(watch);
                return Ok(self.set());
            }
        }
    }
}

fn parse(value: &[u8]) -> Result<Instance, serde_json::Error> {
    serde_json::from_slice(value)
}

impl Source for EtcdSource {
    fn describe(&self) -> String {
        format!(
            "etcd {} prefix {}",
            self.client.endpoints().join(","),
            self.prefix
        )
    }

    async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
        let result = self.step().await;
        if let Err(e) = &result {
            self.watch = None;
            if let SourceError::Etcd(EtcdError::Compacted(_)) = e {
                self.revision = 0;
            }
        }
        result
    }
}
