//! Rendered answers of `GET /v1/services/{service}`, shared by every
//! watcher woken by the same change.
//!
//! A thousand watchers of one service all wake at the same index and would
//! each serialize the same instance list; the first renders it and the rest
//! reuse its bytes. An answer at a given index never changes, so the cache
//! is never stale; it keeps the newest answer per service.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use axum::body::Bytes;
use serde::Serialize;
use switchyard_discovery::wire::Instance;

use crate::store::ServiceState;

/// Services whose answers are kept; past this the cache starts over, which
/// bounds its memory whatever names clients ask for.
const MAX_SERVICES: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct BodyCache {
    bodies: Mutex<HashMap<String, (u64, Bytes)>>,
}

/// `ServiceInstances` borrowed from a shared snapshot.
#[derive(Serialize)]
struct Answer<'a> {
    service: &'a str,
    index: u64,
    instances: &'a [Instance],
}

impl BodyCache {
    /// The JSON answer for `service` at `state`.
    pub(crate) fn render(&self, service: &str, state: &ServiceState) -> Bytes {
        {
            let map = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((index, body)) = map.get(service) {
                if *index == state.index {
                    return body.clone();
                }
            }
        }
        let answer = Answer {
            service,
            index: state.index,
            instances: &state.instances,
        };
        // Strings, numbers and string maps always serialize.
        let body = Bytes::from(serde_json::to_vec(&answer).expect("an answer serializes"));
        if !state.instances.is_empty() {
            let mut map = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_SERVICES && !map.contains_key(service) {
                map.clear();
            }
            map.insert(service.to_owned(), (state.index, body.clone()));
        }
        body
    }
}
