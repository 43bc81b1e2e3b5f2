//! The Switchyard registry as a source: blocking queries on
//! `GET /v1/services/{service}?index=N&wait=...`.
//!
//! The first query is immediate; each later one passes the index of the
//! previous answer and is held by the registry until the service changes
//! past it (or the wait runs out, answering the same set). After a failure
//! (the registry restarted, a network blip) the next query does not block:
//! it reads the current set and index, so a registry that came back is
//! noticed at once and nothing that changed meanwhile is missed; watching
//! then resumes from that index. An index that went backwards means the
//! registry's store was replaced; the answer is taken as is.
//!
//! Blocking queries ask for deltas (`delta=true`): the registry answers only
//! the instances that changed since the index passed, or the whole list when
//! it no longer has the one the changes would apply to. The source keeps the
//! list it was last told and applies the changes to it.
//!
//! A blocking query is sent no sooner than [`DEFAULT_SETTLE`] after the
//! previous answer. A lone change is answered as soon as it happens (the
//! query is already waiting); a burst of changes (a deployment rolling, a
//! tenth of a 10,000-instance service replaced each second) reaches the
//! cluster as a few sets instead of one per registry commit, and each set
//! costs the cluster a pass over all its endpoints.

use std::{collections::BTreeMap, time::Duration};

use http::Method;
use tracing::debug;

use crate::{
    Discovered, Source, SourceError,
    http::HttpClient,
    wire::{ErrorBody, Instance, ServiceAnswer},
};

/// Watches one service of a registry.
#[derive(Debug)]
pub struct RegistrySource {
    client: HttpClient,
    service: String,
    index: u64,
    wait: Duration,
    /// The last query failed: the next one asks without blocking, so that a
    /// registry that came back is noticed (and the set refreshed) at once.
    resync: bool,
    /// The instances as of `index`, by id: what deltas apply to.
    instances: BTreeMap<String, Instance>,
    /// Ask for deltas; off after a registry refused the parameter (one that
    /// predates it).
    delta: bool,
    /// The least time from an answer to the next blocking query.
    settle: Duration,
    /// When the last answer came.
    answered: Option<tokio::time::Instant>,
}

/// Default wait of a blocking query: long enough that an idle watch costs
/// two requests a minute, short enough that a silently dead connection is
/// noticed within a minute.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Grace on top of the wait for the registry's jitter (up to wait/16) and
/// the network.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Default least time between an answer and the next blocking query: what
/// a change in a burst may wait, so that the burst arrives in few sets.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(20);

impl RegistrySource {
    /// Watches `service` at the registry `url` (`http://host:port`).
    pub fn new(url: &str, service: &str) -> Result<Self, SourceError> {
        Self::with_ca(url, service, None)
    }

    /// Like [`RegistrySource::new`]; an `https://` registry's certificate
    /// must chain to `ca` (a PEM bundle), else to the system's roots.
    pub fn with_ca(
        url: &str,
        service: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            client: HttpClient::with_ca(url, ca)?,
            service: service.to_owned(),
            index: 0,
            wait: DEFAULT_WAIT,
            resync: true,
            instances: BTreeMap::new(),
            delta: true,
            settle: DEFAULT_SETTLE,
            answered: None,
        })
    }

    /// Sets how long each blocking query may be held (default 30s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.max(Duration::from_millis(1));
        self
    }

    /// Sets the least time between an answer and the next blocking query
    /// (default 20 ms; zero asks again at once).
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The index of the last answer (0 before the first).
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl Source for RegistrySource {
    fn describe(&self) -> String {
        format!(
            "registry http://{} service {}",
            self.client.authority(),
            self.service
        )
    }

    async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
        let result = self.query().await;
        self.resync = result.is_err();
        result
    }
}

impl RegistrySource {
    async fn query(&mut self) -> Result<Vec<Discovered>, SourceError> {
        let blocking = !self.resync && self.index != 0;
        if let (true, Some(answered)) = (blocking, self.answered) {
            tokio::time::sleep_until(answered + self.settle).await;
        }
        let asked_delta = blocking && self.delta;
        let path = if blocking {
            format!(
                "/v1/services/{}?index={}&wait={}ms{}",
                self.service,
                self.index,
                self.wait.as_millis(),
                if asked_delta { "&delta=true" } else { "" }
            )
        } else {
            format!("/v1/services/{}", self.service)
        };
        let resp = self
            .client
            .send(Method::GET, &path, None, self.wait + ANSWER_GRACE)
            .await?;
        if !resp.status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&resp.body)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).into_owned());
            if asked_delta && resp.status == http::StatusCode::BAD_REQUEST {
                // A registry that predates deltas refuses the parameter.
                debug!(service = %self.service, %message, "registry refused delta=true; asking for whole lists");
                self.delta = false;
            }
            return Err(SourceError::Registry {
                status: resp.status.as_u16(),
                message,
            });
        }
        self.answered = Some(tokio::time::Instant::now());
        let answer: ServiceAnswer =
            serde_json::from_slice(&resp.body).map_err(SourceError::Decode)?;
        let index = match answer {
            ServiceAnswer::Full(full) => {
                if full.index < self.index {
                    debug!(service = %self.service, old = self.index, new = full.index, "registry index went backwards; resynchronised");
                }
                self.instances = full
                    .instances
                    .into_iter()
                    .map(|i| (i.id.clone(), i))
                    .collect();
                full.index
            }
            ServiceAnswer::Changes(changes) => {
                if changes.since != self.index {
                    // Changes to a list this source does not hold: start
                    // over with a whole one.
                    return Err(SourceError::Registry {
                        status: resp.status.as_u16(),
                        message: format!(
                            "changes since index {} answered to a query at {}",
                            changes.since, self.index
                        ),
                    });
                }
                for id in &changes.removed {
                    self.instances.remove(id);
                }
                for i in changes.changed {
                    self.instances.insert(i.id.clone(), i);
                }
                changes.index
            }
        };
        // Index 0 asks for no blocking; never send it back, or an idle
        // registry would be polled in a loop.
        self.index = index.max(1);
        Ok(self
            .instances
            .values()
            .map(Instance::to_discovered)
            .collect())
    }
}
