//! Rendered answers of `GET /v1/services/{service}`, shared by every
//! watcher woken by the same change.
//!
//! A thousand watchers of one service all wake at the same index and would
//! each serialize the same instance list; the first renders it and the rest
//! reuse its bytes. An answer at a given index never changes, so the cache
//! is never stale; it keeps the newest answer per service.
//!
//! For delta answers (`delta=true`) it also keeps the last few instance
//! lists it answered, by index: a watcher passes back the index of its last
//! answer, and the changes since that list are computed once per change and
//! shared the same way. A watcher whose list is no longer kept gets the
//! whole list again.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use axum::body::Bytes;
use serde::Serialize;
use switchyard_discovery::wire::Instance;

use crate::store::ServiceState;

/// Services whose answers are kept; past this the cache starts over, which
/// bounds its memory whatever names clients ask for.
const MAX_SERVICES: usize = 4096;

/// Answered lists kept per service for deltas. Watchers in step with the
/// registry ask relative to the newest; a few more serve those that lag a
/// change or two behind. The lists are shared with the store's snapshots,
/// so an entry costs a pointer until the store moves on.
const HISTORY: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct BodyCache {
    services: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Default)]
struct Entry {
    /// The newest full answer and its index.
    full: Option<(u64, Bytes)>,
    /// The newest delta answer: `(since, index, body)`.
    delta: Option<(u64, u64, Bytes)>,
    /// Lists answered, oldest first.
    history: VecDeque<(u64, Arc<[Instance]>)>,
}

impl Entry {
    fn remember(&mut self, state: &ServiceState) {
        if self.history.iter().any(|(i, _)| *i == state.index) {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history
            .push_back((state.index, state.instances.clone()));
    }
}

/// `ServiceInstances` borrowed from a shared snapshot.
#[derive(Serialize)]
struct Answer<'a> {
    service: &'a str,
    index: u64,
    instances: &'a [Instance],
}

/// `ServiceChanges` borrowed from two snapshots.
#[derive(Serialize)]
struct Changes<'a> {
    service: &'a str,
    index: u64,
    since: u64,
    changed: Vec<&'a Instance>,
    removed: Vec<&'a str>,
}

impl BodyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `state` (answered now) for later deltas and returns the
    /// service's entry. Nothing is kept for a service with no instances and
    /// no entry, so queries for made-up names leave nothing behind.
    fn with_entry<T>(
        &self,
        service: &str,
        state: &ServiceState,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Option<T> {
        let mut map = self.lock();
        if !map.contains_key(service) {
            if state.instances.is_empty() {
                return None;
            }
            if map.len() >= MAX_SERVICES {
                map.clear();
            }
        }
        let entry = map.entry(service.to_owned()).or_default();
        entry.remember(state);
        Some(f(entry))
    }

    /// The JSON answer for `service` at `state`.
    pub(crate) fn render(&self, service: &str, state: &ServiceState) -> Bytes {
        let cached = self.with_entry(service, state, |e| {
            e.full
                .as_ref()
                .filter(|(index, _)| *index == state.index)
                .map(|(_, body)| body.clone())
        });
        if let Some(Some(body)) = cached {
            return body;
        }
        let answer = Answer {
            service,
            index: state.index,
            instances: &state.instances,
        };
        // Strings, numbers and string maps always serialize.
        let body = Bytes::from(serde_json::to_vec(&answer).expect("an answer serializes"));
        self.with_entry(service, state, |e| {
            e.full = Some((state.index, body.clone()));
        });
        body
    }

    /// The changes from the list answered at `since` to `state`, or `None`
    /// when that list is not kept (the caller answers in full).
    pub(crate) fn render_delta(
        &self,
        service: &str,
        since: u64,
        state: &ServiceState,
    ) -> Option<Bytes> {
        let (cached, base) = self.with_entry(service, state, |e| {
            let cached = e
                .delta
                .as_ref()
                .filter(|(s, i, _)| *s == since && *i == state.index)
                .map(|(_, _, body)| body.clone());
            let base = e
                .history
                .iter()
                .find(|(i, _)| *i == since)
                .map(|(_, list)| list.clone());
            (cached, base)
        })?;
        if cached.is_some() {
            return cached;
        }
        // Computed outside the lock: a 10,000-instance diff takes about a
        // millisecond, and other services' watchers should not wait on it.
        let base = base?;
        let (changed, removed) = diff(&base, &state.instances);
        let answer = Changes {
            service,
            index: state.index,
            since,
            changed,
            removed,
        };
        let body = Bytes::from(serde_json::to_vec(&answer).expect("an answer serializes"));
        self.with_entry(service, state, |e| {
            e.delta = Some((since, state.index, body.clone()));
        });
        Some(body)
    }
}

/// Instances of `new` that are not in `old` as they are (added or changed),
/// and ids of `old` missing from `new`. Ids are unique within a service.
fn diff<'a>(old: &'a [Instance], new: &'a [Instance]) -> (Vec<&'a Instance>, Vec<&'a str>) {
    let before: HashMap<&str, &Instance> = old.iter().map(|i| (i.id.as_str(), i)).collect();
    let now: HashSet<&str> = new.iter().map(|i| i.id.as_str()).collect();
    let changed = new
        .iter()
        .filter(|i| before.get(i.id.as_str()) != Some(i))
        .collect();
    let removed = old
        .iter()
        .map(|i| i.id.as_str())
        .filter(|id| !now.contains(id))
        .collect();
    (changed, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, port: u16, weight: u32) -> Instance {
        Instance {
            id: id.to_owned(),
            address: ([127, 0, 0, 1], port).into(),
            weight,
            zone: None,
            metadata: Default::default(),
            draining: false,
            ttl: None,
        }
    }

    fn state(index: u64, list: Vec<Instance>) -> ServiceState {
        ServiceState {
            index,
            instances: list.into(),
        }
    }

    #[test]
    fn diff_finds_added_changed_and_removed() {
        let old = [inst("a", 1, 1), inst("b", 2, 1), inst("c", 3, 1)];
        let new = [inst("a", 1, 1), inst("b", 2, 5), inst("d", 4, 1)];
        let (changed, removed) = diff(&old, &new);
        let ids: Vec<&str> = changed.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["b", "d"]);
        assert_eq!(removed, ["c"]);
    }

    #[test]
    fn deltas_apply_to_kept_lists_only_and_are_shared() {
        let cache = BodyCache::default();
        let s1 = state(5, vec![inst("a", 1, 1), inst("b", 2, 1)]);
        let full = cache.render("api", &s1);
        assert!(
            std::str::from_utf8(&full)
                .unwrap()
                .contains("\"instances\"")
        );
        let s2 = state(9, vec![inst("a", 1, 3), inst("b", 2, 1)]);
        let d = cache
            .render_delta("api", 5, &s2)
            .expect("the list at 5 is kept");
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["since"], 5);
        assert_eq!(v["index"], 9);
        assert_eq!(v["changed"].as_array().unwrap().len(), 1);
        assert_eq!(v["changed"][0]["weight"], 3);
        assert_eq!(v["removed"].as_array().unwrap().len(), 0);
        // The same change for the next watcher: the same bytes.
        let again = cache.render_delta("api", 5, &s2).unwrap();
        assert_eq!(again.as_ptr(), d.as_ptr());
        // A list never answered: no delta.
        assert!(cache.render_delta("api", 7, &s2).is_none());
        // Only the last HISTORY lists are kept.
        for i in 0..HISTORY as u64 {
            cache.render("api", &state(10 + i, vec![inst("a", 1, 1)]));
        }
        let s3 = state(20, vec![inst("a", 1, 1)]);
        assert!(cache.render_delta("api", 5, &s3).is_none());
        assert!(cache.render_delta("api", 13, &s3).is_some());
        // Made-up names leave nothing behind.
        assert!(cache.render_delta("nope", 1, &state(9, vec![])).is_none());
        assert!(!cache.lock().contains_key("nope"));
    }
}
