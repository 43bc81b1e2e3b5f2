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

use std::time::Duration;

use http::Method;
use tracing::debug;

use crate::{
    Discovered, Source, SourceError,
    http::HttpClient,
    wire::{ErrorBody, ServiceInstances},
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
}

/// Default wait of a blocking query: long enough that an idle watch costs
/// two requests a minute, short enough that a silently dead connection is
/// noticed within a minute.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Grace on top of the wait for the registry's jitter (up to wait/16) and
/// the network.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

impl RegistrySource {
    /// Watches `service` at the registry `url` (`http://host:port`).
    pub fn new(url: &str, service: &str) -> Result<Self, SourceError> {
        Ok(Self {
            client: HttpClient::new(url)?,
            service: service.to_owned(),
            index: 0,
            wait: DEFAULT_WAIT,
            resync: true,
        })
    }

    /// Sets how long each blocking query may be held (default 30s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.max(Duration::from_millis(1));
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
        let path = if self.resync || self.index == 0 {
            format!("/v1/services/{}", self.service)
        } else {
            format!(
                "/v1/services/{}?index={}&wait={}ms",
                self.service,
                self.index,
                self.wait.as_millis()
            )
        };
        let resp = self
            .client
            .send(Method::GET, &path, None, self.wait + ANSWER_GRACE)
            .await?;
        if !resp.status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&resp.body)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).into_owned());
            return Err(SourceError::Registry {
                status: resp.status.as_u16(),
                message,
            });
        }
        let answer: ServiceInstances =
            serde_json::from_slice(&resp.body).map_err(SourceError::Decode)?;
        if answer.index < self.index {
            debug!(service = %self.service, old = self.index, new = answer.index, "registry index went backwards; resynchronised");
        }
        // Index 0 asks for no blocking; never send it back, or an idle
        // registry would be polled in a loop.
        self.index = answer.index.max(1);
        Ok(answer.instances.iter().map(|i| i.to_discovered()).collect())
    }
}
