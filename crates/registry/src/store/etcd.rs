//! The etcd store: etcd holds every registration; registry processes hold
//! no state of their own, so any number of them can serve one etcd cluster.
//!
//! Layout: one key per instance, `/switchyard/services/{service}/{id}`,
//! whose value is the JSON [`Instance`] record — the same record the etcd
//! discovery source reads, so a proxy can watch etcd directly. A TTL
//! registration is attached to an etcd lease of that TTL (rounded up to
//! whole seconds, etcd's granularity; etcd also enforces its own minimum,
//! about 2s with default settings): a heartbeat renews the lease, and when
//! it runs out etcd deletes the key, which every watcher sees.
//!
//! Reads: `GET` without an index reads etcd linearizably, so every registry
//! process answers the same. Blocking queries are served from a mirror
//! that one prefix watch keeps current (resuming from its last revision
//! after a failure, re-reading after a compaction), so a thousand watchers
//! cost one etcd watch per registry process, not a thousand.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use switchyard_discovery::{
    Backoff,
    wire::{Instance, ServiceSummary},
};
use switchyard_etcd::{Client, ClientOptions, EtcdError, EventKind, KeyValue};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Hub, Registered, ServiceState, Store, StoreFuture, summarize};
use crate::{error::StoreError, model::Record};

/// Where registrations live in etcd.
pub const ROOT: &str = "/switchyard/services/";

/// A registry store on an etcd cluster.
#[derive(Debug)]
pub struct EtcdStore {
    inner: Arc<Inner>,
    mirror_task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    hub: Hub,
    mirror: Mutex<Mirror>,
}

#[derive(Debug, Default)]
struct Mirror {
    /// The etcd revision up to which `services` is complete.
    revision: i64,
    services: HashMap<String, BTreeMap<String, Instance>>,
    /// Per service, the instances as served since its last change.
    snapshots: HashMap<String, Arc<[Instance]>>,
}

fn key(service: &str, id: &str) -> String {
    format!("{ROOT}{service}/{id}")
}

/// `(service, id)` of a key under [`ROOT`].
fn split(key: &[u8]) -> Option<(String, String)> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(ROOT)?;
    let (service, id) = key.split_once('/')?;
    Some((service.to_owned(), id.to_owned()))
}

/// The record in `kv`, its id taken from the key.
fn decode(kv: &KeyValue) -> Result<(String, Instance), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason,
    };
    let (service, id) = split(&kv.key).ok_or_else(|| corrupt("not a service/id key".into()))?;
    let mut inst: Instance =
        serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    inst.id = id;
    Ok((service, inst))
}

/// Entry point for the fuzz targets (`fuzz/`): [`decode`] of one etcd
/// key-value, as the store's reload and watch read it.
#[doc(hidden)]
pub fn decode_record(kv: &KeyValue) -> Result<(String, Instance), StoreError> {
    decode(kv)
}

fn encode(instance: &Instance) -> Vec<u8> {
    // Serializing a struct of strings, numbers and a string map cannot fail.
    serde_json::to_vec(instance).expect("an instance serializes")
}

fn not_found(service: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        service: service.to_owned(),
        id: id.to_owned(),
    }
}

fn index(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0).max(1)
}

impl EtcdStore {
    /// Connects and loads the mirror; fails when etcd cannot be read.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::new(endpoints, ClientOptions::default()).map_err(StoreError::Etcd)?;
        let inner = Arc::new(Inner {
            client,
            hub: Hub::new(),
            mirror: Mutex::new(Mirror::default()),
        });
        inner.reload().await?;
        info!(endpoints = %endpoints.join(","), revision = inner.lock().revision, "etcd store connected");
        let mirror_task = tokio::spawn(mirror_loop(inner.clone()));
        Ok(Self { inner, mirror_task })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.mirror_task.abort();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the mirror with a fresh read of everything.
    async fn reload(&self) -> Result<(), StoreError> {
        let range = self.client.range_prefix(ROOT.as_bytes()).await?;
        let mut services: HashMap<String, BTreeMap<String, Instance>> = HashMap::new();
        for kv in &range.kvs {
            match decode(kv) {
                Ok((service, inst)) => {
                    services
                        .entry(service)
                        .or_default()
                        .insert(inst.id.clone(), inst);
                }
                Err(e) => warn!(error = %e, "skipping an unreadable etcd record"),
            }
        }
        let names: Vec<String> = {
            let mut m = self.lock();
            let mut names: Vec<String> = m.services.keys().cloned().collect();
            names.extend(services.keys().cloned());
            m.services = services;
            m.snapshots.clear();
            m.revision = range.revision;
            names
        };
        // After a reload anything may have changed: wake every watcher.
        for n in names {
            self.hub.changed(&n, index(range.revision));
        }
        Ok(())
    }

    /// Follows the prefix watch until it breaks; resets `failures` once
    /// the watch is open again.
    async fn watch_once(&self, failures: &mut u32) -> Result<std::convert::Infallible, StoreError> {
        let from = self.lock().revision + 1;
        let mut watch = self.client.watch_prefix(ROOT.as_bytes(), from).await?;
        if *failures > 0 {
            info!(from_revision = from, "etcd watch resumed");
            *failures = 0;
        }
        loop {
            let batch = watch.next().await?;
            let mut changed: Vec<String> = Vec::new();
            {
                let mut m = self.lock();
                for ev in &batch.events {
                    let Some((service, id)) = split(&ev.kv.key) else {
                        continue;
                    };
                    match ev.kind {
                        EventKind::Put => match decode(&ev.kv) {
                            Ok((_, inst)) => {
                                m.services
                                    .entry(service.clone())
                                    .or_default()
                                    .insert(id, inst);
                            }
                            Err(e) => {
                                warn!(error = %e, "skipping an unreadable etcd record");
                                continue;
                            }
                        },
                        EventKind::Delete => {
                            if let Some(s) = m.services.get_mut(&service) {
                                s.remove(&id);
                            }
                        }
                    }
                    m.snapshots.remove(&service);
                    if !changed.contains(&service) {
                        changed.push(service);
                    }
                }
                m.revision = m.revision.max(batch.revision);
            }
            for s in &changed {
                self.hub.changed(s, index(batch.revision));
            }
        }
    }

    fn mirrored(&self, service: &str) -> ServiceState {
        let mut m = self.lock();
        let idx = index(m.revision);
        let instances = match (m.snapshots.get(service), m.services.get(service)) {
            (Some(snap), _) => snap.clone(),
            (None, Some(s)) => {
                let snap: Arc<[Instance]> = s.values().cloned().collect();
                m.snapshots.insert(service.to_owned(), snap.clone());
                snap
            }
            // Unknown services are not cached, so made-up names cost nothing.
            (None, None) => Arc::from(Vec::new()),
        };
        ServiceState {
            index: idx,
            instances,
        }
    }

    async fn get(&self, service: &str, id: &str) -> Result<(KeyValue, Instance), StoreError> {
        let (kv, _) = self.client.get(key(service, id).as_bytes()).await?;
        let kv = kv.ok_or_else(|| not_found(service, id))?;
        let (_, inst) = decode(&kv)?;
        Ok((kv, inst))
    }

    async fn register(&self, service: &str, record: Record) -> Result<Registered, StoreError> {
        let id = record.instance.id.clone();
        let k = key(service, &id);
        let (old, _) = self.client.get(k.as_bytes()).await?;
        let lease = match record.ttl {
            Some(ttl) => {
                let secs = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
                self.client.grant(secs.max(1)).await?
            }
            None => 0,
        };
        self.client
            .put(k.as_bytes(), encode(&record.instance), lease)
            .await?;
        if let Some(old) = &old {
            if old.lease != 0 && old.lease != lease {
                // The key moved to the new lease; the old one holds nothing.
                if let Err(e) = self.client.revoke(old.lease).await {
                    warn!(error = %e, lease = old.lease, "could not revoke a replaced lease; it will expire");
                }
            }
        }
        Ok(Registered {
            instance: record.instance,
            created: old.is_none(),
        })
    }

    async fn heartbeat(&self, service: &str, id: &str) -> Result<Instance, StoreError> {
        let (kv, inst) = self.get(service, id).await?;
        if kv.lease != 0 && self.client.keep_alive_once(kv.lease).await? == 0 {
            return Err(not_found(service, id));
        }
        Ok(inst)
    }

    async fn drain(&self, service: &str, id: &str) -> Result<Instance, StoreError> {
        loop {
            let (kv, mut inst) = self.get(service, id).await?;
            if inst.draining {
                return Ok(inst);
            }
            inst.draining = true;
            match self
                .client
                .put_if_unchanged(&kv.key, encode(&inst), kv.lease, kv.mod_revision)
                .await
            {
                Ok(Some(_)) => return Ok(inst),
                // Someone else wrote it meanwhile: read again.
                Ok(None) => continue,
                // The lease ran out between the read and the write.
                Err(e) if e.is_not_found() => {
                    return Err(not_found(service, id));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<(), StoreError> {
        let (kv, _) = self.get(service, id).await?;
        let (deleted, _) = self.client.delete(&kv.key).await?;
        if kv.lease != 0 {
            if let Err(e) = self.client.revoke(kv.lease).await {
                warn!(error = %e, lease = kv.lease, "could not revoke the lease of a deregistered instance; it will expire");
            }
        }
        if deleted == 0 {
            return Err(not_found(service, id));
        }
        Ok(())
    }

    async fn service(&self, service: &str) -> Result<ServiceState, StoreError> {
        let range = self
            .client
            .range_prefix(format!("{ROOT}{service}/").as_bytes())
            .await?;
        let mut instances = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            match decode(kv) {
                Ok((_, inst)) => instances.push(inst),
                Err(e) => warn!(error = %e, "skipping an unreadable etcd record"),
            }
        }
        Ok(ServiceState {
            index: index(range.revision),
            instances: instances.into(),
        })
    }

    async fn services(&self) -> Result<(u64, Vec<ServiceSummary>), StoreError> {
        let range = self.client.range_prefix(ROOT.as_bytes()).await?;
        let mut by: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for kv in &range.kvs {
            if let Ok((service, inst)) = decode(kv) {
                by.entry(service).or_default().push(inst);
            }
        }
        Ok((
            index(range.revision),
            summarize(by.iter().map(|(n, i)| (n.as_str(), i.as_slice()))),
        ))
    }

    async fn watch(
        &self,
        service: &str,
        idx: u64,
        wait: Duration,
    ) -> Result<ServiceState, StoreError> {
        let mirrored = index(self.lock().revision);
        if idx > mirrored {
            // Either the mirror lags a linearizable read made elsewhere, or
            // the client's index is from another etcd cluster.
            let current = index(self.client.current_revision().await?);
            if idx > current {
                return self.service(service).await;
            }
        }
        self.hub.wait(service, idx, wait).await;
        Ok(self.mirrored(service))
    }
}

async fn mirror_loop(inner: Arc<Inner>) {
    let backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        let err = match inner.watch_once(&mut failures).await {
            Err(StoreError::Etcd(EtcdError::Compacted(_))) => match inner.reload().await {
                Ok(()) => continue,
                Err(e) => e,
            },
            Err(e) => e,
        };
        if failures == 0 {
            warn!(error = %err, "etcd watch broke; blocking queries answer from the last known state until it resumes");
        }
        tokio::time::sleep(backoff.delay(failures)).await;
        failures = failures.saturating_add(1);
    }
}

impl Store for EtcdStore {
    fn register<'a>(&'a self, service: &'a str, record: Record) -> StoreFuture<'a, Registered> {
        Box::pin(self.inner.register(service, record))
    }

    fn heartbeat<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance> {
        Box::pin(self.inner.heartbeat(service, id))
    }

    fn drain<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance> {
        Box::pin(self.inner.drain(service, id))
    }

    fn deregister<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.inner.deregister(service, id))
    }

    fn services(&self) -> StoreFuture<'_, (u64, Vec<ServiceSummary>)> {
        Box::pin(self.inner.services())
    }

    fn service<'a>(&'a self, service: &'a str) -> StoreFuture<'a, ServiceState> {
        Box::pin(self.inner.service(service))
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: u64,
        wait: Duration,
    ) -> StoreFuture<'a, ServiceState> {
        Box::pin(self.inner.watch(service, index, wait))
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.inner.client.endpoints().join(","))
    }
}
