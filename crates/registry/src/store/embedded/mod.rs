//! The embedded store: every registration in memory, every change on disk
//! (redb, see `disk.rs`) before it is acknowledged.
//!
//! Reads never touch the disk. A mutation updates memory and queues its
//! writes under one lock, so the disk sees changes in the order memory
//! did; the caller is answered, and watchers woken, after the commit.
//!
//! TTLs run on tokio's clock (so tests control time with a paused
//! runtime). Heartbeats only move a deadline in memory: writing each one
//! would cost a disk commit per heartbeat for nothing durable. After a
//! restart, TTL instances therefore get one full TTL to heartbeat again,
//! and permanent ones are simply back.

mod disk;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use switchyard_discovery::wire::{Instance, ServiceSummary};
use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tracing::{info, warn};

use super::{Hub, Registered, ServiceState, Store, StoreFuture};
use crate::{error::StoreError, model::Record};
use disk::{Mutation, Op, Writer};

/// A registry store in a local directory.
#[derive(Debug)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    expiry: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    hub: Hub,
    writer: Writer,
    /// Wakes the expiry task when a deadline earlier than its next one
    /// appears.
    expiry_wake: Notify,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct State {
    index: u64,
    services: HashMap<String, Service>,
    /// Every TTL deadline, earliest first.
    deadlines: BTreeSet<(Instant, String, String)>,
}

#[derive(Debug, Default)]
struct Service {
    instances: BTreeMap<String, Entry>,
    /// The instances as served, built on the first read after a change.
    snapshot: Option<Arc<[Instance]>>,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    expires: Option<Instant>,
}

fn key(service: &str, id: &str) -> String {
    // Names cannot contain '/', so the split is unambiguous.
    format!("{service}/{id}")
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating it if needed.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        let d = dir.clone();
        let (loaded, db) = tokio::task::spawn_blocking(move || disk::open(&d))
            .await
            .map_err(|e| StoreError::Embedded(e.to_string()))??;
        let writer = disk::start_writer(db);
        let now = Instant::now();
        let mut state = State {
            // Answers never carry index 0 (it means "do not block"), so a
            // fresh store starts at 1 and its first change is 2: a watcher
            // of the empty store, holding 1, then wakes.
            index: loaded.index.max(1),
            ..State::default()
        };
        for (k, v) in loaded.instances {
            let (service, id) = k.split_once('/').ok_or_else(|| StoreError::Corrupt {
                key: k.clone(),
                reason: "no service/id separator".into(),
            })?;
            let instance: Instance =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: k.clone(),
                    reason: e.to_string(),
                })?;
            let record = Record::from_instance(instance);
            let expires = record.ttl.map(|t| now + t);
            if let Some(at) = expires {
                state
                    .deadlines
                    .insert((at, service.to_owned(), id.to_owned()));
            }
            state
                .services
                .entry(service.to_owned())
                .or_default()
                .instances
                .insert(id.to_owned(), Entry { record, expires });
        }
        let hub = Hub::new();
        for (service, idx) in loaded.service_index {
            hub.changed(&service, idx);
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            hub,
            writer,
            expiry_wake: Notify::new(),
            path: dir,
        });
        let expiry = tokio::spawn(expire_loop(inner.clone()));
        Ok(Self { inner, expiry })
    }

    /// The store's index.
    pub fn index(&self) -> u64 {
        self.inner.lock().index
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a queued mutation to be committed, then wakes watchers.
    async fn finish(
        &self,
        rx: tokio::sync::oneshot::Receiver<Result<(), String>>,
        services: &[&str],
        index: u64,
    ) -> Result<(), StoreError> {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StoreError::Embedded(e)),
            Err(_) => return Err(StoreError::Closed),
        }
        for s in services {
            self.hub.changed(s, index);
        }
        Ok(())
    }

    /// The service's instances, shared: built once after each change, so a
    /// thousand watchers woken by it read one list instead of copying it.
    fn state_of(&self, service: &str) -> ServiceState {
        let mut st = self.lock();
        let index = st.index;
        let instances = match st.services.get_mut(service) {
            Some(s) => s
                .snapshot
                .get_or_insert_with(|| {
                    s.instances
                        .values()
                        .map(|e| e.record.instance.clone())
                        .collect()
                })
                .clone(),
            None => Arc::default(),
        };
        ServiceState { index, instances }
    }

    async fn register(&self, service: &str, record: Record) -> Result<Registered, StoreError> {
        let id = record.instance.id.clone();
        let value = encode(&record.instance);
        let (rx, index, created, wake) = {
            let mut st = self.lock();
            st.index += 1;
            let index = st.index;
            let expires = record.ttl.map(|t| Instant::now() + t);
            let svc = st.services.entry(service.to_owned()).or_default();
            svc.snapshot = None;
            let old = svc.instances.insert(
                id.clone(),
                Entry {
                    record: record.clone(),
                    expires,
                },
            );
            if let Some(at) = old.as_ref().and_then(|o| o.expires) {
                st.deadlines.remove(&(at, service.to_owned(), id.clone()));
            }
            let mut wake = false;
            if let Some(at) = expires {
                wake = st.deadlines.first().is_none_or(|d| at < d.0);
                st.deadlines.insert((at, service.to_owned(), id.clone()));
            }
            let rx = self.writer.submit(Mutation {
                ops: vec![Op::Put {
                    key: key(service, &id),
                    value,
                }],
                services: vec![service.to_owned()],
                index,
            });
            (rx, index, old.is_none(), wake)
        };
        if wake {
            self.expiry_wake.notify_one();
        }
        self.finish(rx, &[service], index).await?;
        Ok(Registered {
            instance: record.instance,
            created,
        })
    }

    fn heartbeat(&self, service: &str, id: &str) -> Result<Instance, StoreError> {
        let mut st = self.lock();
        let entry = st
            .services
            .get_mut(service)
            .and_then(|s| s.instances.get_mut(id))
            .ok_or_else(|| not_found(service, id))?;
        let Some(ttl) = entry.record.ttl else {
            return Ok(entry.record.instance.clone());
        };
        let old = entry.expires;
        let new = Instant::now() + ttl;
        entry.expires = Some(new);
        let instance = entry.record.instance.clone();
        if let Some(old) = old {
            st.deadlines
                .remove(&(old, service.to_owned(), id.to_owned()));
        }
        st.deadlines
            .insert((new, service.to_owned(), id.to_owned()));
        Ok(instance)
    }

    async fn drain(&self, service: &str, id: &str) -> Result<Instance, StoreError> {
        let (rx, index, instance) = {
            let mut st = self.lock();
            st.index += 1;
            let index = st.index;
            let svc = st
                .services
                .get_mut(service)
                .ok_or_else(|| not_found(service, id))?;
            svc.snapshot = None;
            let entry = svc
                .instances
                .get_mut(id)
                .ok_or_else(|| not_found(service, id))?;
            if entry.record.instance.draining {
                let instance = entry.record.instance.clone();
                // Nothing changes; give the index back.
                st.index -= 1;
                return Ok(instance);
            }
            entry.record.instance.draining = true;
            let instance = entry.record.instance.clone();
            let rx = self.writer.submit(Mutation {
                ops: vec![Op::Put {
                    key: key(service, id),
                    value: encode(&instance),
                }],
                services: vec![service.to_owned()],
                index,
            });
            (rx, index, instance)
        };
        self.finish(rx, &[service], index).await?;
        Ok(instance)
    }

    async fn deregister(&self, service: &str, id: &str) -> Result<(), StoreError> {
        let (rx, index) = {
            let mut st = self.lock();
            let removed = st
                .services
                .get_mut(service)
                .and_then(|s| {
                    s.snapshot = None;
                    s.instances.remove(id)
                })
                .ok_or_else(|| not_found(service, id))?;
            if let Some(at) = removed.expires {
                st.deadlines
                    .remove(&(at, service.to_owned(), id.to_owned()));
            }
            st.index += 1;
            let index = st.index;
            let rx = self.writer.submit(Mutation {
                ops: vec![Op::Delete {
                    key: key(service, id),
                }],
                services: vec![service.to_owned()],
                index,
            });
            (rx, index)
        };
        self.finish(rx, &[service], index).await
    }

    /// Removes every instance whose deadline passed; returns the next
    /// deadline.
    async fn expire_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let (rx, index, services, next) = {
            let mut st = self.lock();
            let mut due = Vec::new();
            while let Some(first) = st.deadlines.first() {
                if first.0 > now {
                    break;
                }
                // Just checked that the set has a first element.
                let (_, service, id) = st.deadlines.pop_first().expect("non-empty");
                due.push((service, id));
            }
            let next = st.deadlines.first().map(|d| d.0);
            if due.is_empty() {
                return next;
            }
            st.index += 1;
            let index = st.index;
            let mut ops = Vec::with_capacity(due.len());
            let mut services: Vec<String> = Vec::new();
            for (service, id) in due {
                if let Some(s) = st.services.get_mut(&service) {
                    s.snapshot = None;
                    s.instances.remove(&id);
                }
                info!(%service, %id, "registration expired: no heartbeat within its ttl");
                ops.push(Op::Delete {
                    key: key(&service, &id),
                });
                if !services.contains(&service) {
                    services.push(service);
                }
            }
            let rx = self.writer.submit(Mutation {
                ops,
                services: services.clone(),
                index,
            });
            (rx, index, services, next)
        };
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        if let Err(e) = self.finish(rx, &names, index).await {
            warn!(error = %e, "could not persist expired registrations");
        }
        next
    }
}

async fn expire_loop(inner: Arc<Inner>) {
    loop {
        let next = inner.expire_due().await;
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = inner.expiry_wake.notified() => {}
                }
            }
            None => inner.expiry_wake.notified().await,
        }
    }
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

impl Store for EmbeddedStore {
    fn register<'a>(&'a self, service: &'a str, record: Record) -> StoreFuture<'a, Registered> {
        Box::pin(self.inner.register(service, record))
    }

    fn heartbeat<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance> {
        let r = self.inner.heartbeat(service, id);
        Box::pin(async move { r })
    }

    fn drain<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, Instance> {
        Box::pin(self.inner.drain(service, id))
    }

    fn deregister<'a>(&'a self, service: &'a str, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.inner.deregister(service, id))
    }

    fn services(&self) -> StoreFuture<'_, (u64, Vec<ServiceSummary>)> {
        let st = self.inner.lock();
        let mut out: Vec<ServiceSummary> = st
            .services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty())
            .map(|(name, s)| ServiceSummary {
                name: name.clone(),
                instances: s.instances.len(),
                draining: s
                    .instances
                    .values()
                    .filter(|e| e.record.instance.draining)
                    .count(),
            })
            .collect();
        let index = st.index;
        drop(st);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Box::pin(async move { Ok((index, out)) })
    }

    fn service<'a>(&'a self, service: &'a str) -> StoreFuture<'a, ServiceState> {
        let s = self.inner.state_of(service);
        Box::pin(async move { Ok(s) })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: u64,
        wait: Duration,
    ) -> StoreFuture<'a, ServiceState> {
        Box::pin(async move {
            if index <= self.index() {
                self.inner.hub.wait(service, index, wait).await;
            }
            Ok(self.inner.state_of(service))
        })
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.inner.path.display())
    }
}
