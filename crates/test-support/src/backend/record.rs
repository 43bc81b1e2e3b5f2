//! What a backend remembers about the requests it received, so tests can
//! assert on what the proxy actually forwarded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method, Request, Uri, Version};

/// The head of one received request.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl RecordedRequest {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of header `name` that are valid UTF-8.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// Counters and a bounded ring of recent request heads.
///
/// The std mutexes are only held for a push or a copy, never across an await.
#[derive(Debug)]
pub(crate) struct Stats {
    total: AtomicU64,
    health_checks: AtomicU64,
    connections: AtomicU64,
    by_method: Mutex<HashMap<Method, u64>>,
    recent: Mutex<VecDeque<RecordedRequest>>,
    limit: usize,
}

impl Stats {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            total: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            by_method: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::with_capacity(limit.min(1024))),
            limit,
        }
    }

    pub(crate) fn record<B>(&self, req: &Request<B>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_method)
            .entry(req.method().clone())
            .or_insert(0) += 1;
        if self.limit > 0 {
            let mut recent = lock(&self.recent);
            if recent.len() == self.limit {
                recent.pop_front();
            }
            recent.push_back(RecordedRequest::of(req));
        }
    }

    pub(crate) fn health_check(&self) {
        self.health_checks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn by_method(&self, method: &Method) -> u64 {
        lock(&self.by_method).get(method).copied().unwrap_or(0)
    }

    pub(crate) fn recent(&self) -> Vec<RecordedRequest> {
        lock(&self.recent).iter().cloned().collect()
    }

    pub(crate) fn last(&self) -> Option<RecordedRequest> {
        lock(&self.recent).back().cloned()
    }

    pub(crate) fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.health_checks.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        lock(&self.by_method).clear();
        lock(&self.recent).clear();
    }
}

/// Locks ignoring poison: a test that panicked while holding the lock left
/// plain counters behind, which are still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
