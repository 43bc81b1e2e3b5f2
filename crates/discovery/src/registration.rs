//! The registration client: a service registers itself, heartbeats in the
//! background and drains then deregisters on shutdown.
//!
//! ```no_run
//! # async fn example() -> Result<(), switchyard_discovery::registration::ClientError> {
//! use std::time::Duration;
//! use switchyard_discovery::registration::{Registration, RegistrationOptions};
//!
//! let opts = RegistrationOptions::new(
//!     "http://127.0.0.1:7400",
//!     "api",
//!     "api-1",
//!     "127.0.0.1:9001".parse().unwrap(),
//! );
//! let registration = Registration::register(opts).await?;
//! // ... serve until told to stop ...
//! // Proxies stop sending new requests, in-flight ones get 5s, then the
//! // instance disappears from the registry.
//! registration.shutdown(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! Heartbeats go every third of the TTL, so two can be lost before the
//! registration expires. A heartbeat answered 404 (the registration
//! expired, or the registry lost it) registers again — drained again if it
//! was draining — so an instance reappears by itself after a registry
//! outage.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    Backoff,
    http::{HttpClient, HttpError},
    wire::{ErrorBody, Instance, Registration as Body},
};
use http::Method;
use switchyard_config::format_duration;
use tokio::{sync::Mutex, task::JoinHandle};
use tracing::{info, warn};

/// What to register and where.
#[derive(Clone, Debug)]
pub struct RegistrationOptions {
    /// The registry's base URL, e.g. `http://127.0.0.1:7400`.
    pub registry: String,
    pub service: String,
    pub id: String,
    pub address: SocketAddr,
    /// Default 10s: a crashed instance disappears within 10s, at the cost
    /// of one small request every ~3s.
    pub ttl: Duration,
    /// Default 1.
    pub weight: u32,
    pub zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Bearer token, when the registry requires one for writes.
    pub token: Option<String>,
    /// Default 2s: per request to the registry.
    pub request_timeout: Duration,
    /// Default `None`: an `https://` registry's certificate must chain to
    /// the system's roots; set, to this PEM bundle instead.
    pub ca: Option<std::path::PathBuf>,
}

impl RegistrationOptions {
    pub fn new(registry: &str, service: &str, id: &str, address: SocketAddr) -> Self {
        Self {
            registry: registry.to_owned(),
            service: service.to_owned(),
            id: id.to_owned(),
            address,
            ttl: Duration::from_secs(10),
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
            token: None,
            request_timeout: Duration::from_secs(2),
            ca: None,
        }
    }
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the registry refused: {status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("invalid answer from the registry: {0}")]
    Decode(#[from] serde_json::Error),
}

impl ClientError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::Rejected { status: 404, .. })
    }
}

/// A live registration; heartbeats until dropped or shut down.
#[derive(Debug)]
pub struct Registration {
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    opts: RegistrationOptions,
    http: Mutex<HttpClient>,
    draining: AtomicBool,
}

impl Registration {
    /// Registers once (failing if the registry refuses or cannot be
    /// reached) and starts heartbeating.
    pub async fn register(opts: RegistrationOptions) -> Result<Self, ClientError> {
        let mut http = HttpClient::with_ca(&opts.registry, opts.ca.as_deref())?;
        if let Some(t) = &opts.token {
            http = http.with_token(t)?;
        }
        let shared = Arc::new(Shared {
            opts,
            http: Mutex::new(http),
            draining: AtomicBool::new(false),
        });
        shared.register().await?;
        info!(service = %shared.opts.service, id = %shared.opts.id, address = %shared.opts.address, "registered");
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
        Ok(Self { shared, heartbeat })
    }

    pub fn options(&self) -> &RegistrationOptions {
        &self.shared.opts
    }

    /// Asks for no new requests; the registration stays (and heartbeats).
    pub async fn drain(&self) -> Result<Instance, ClientError> {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.call(Method::PUT, "/drain", None).await
    }

    /// Stops heartbeating and removes the registration (already gone is
    /// fine).
    pub async fn deregister(self) -> Result<(), ClientError> {
        self.heartbeat.abort();
        match self.shared.call_raw(Method::DELETE, "", None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        info!(service = %self.shared.opts.service, id = %self.shared.opts.id, "deregistered");
        Ok(())
    }

    /// Drains, waits `grace` for callers to notice and in-flight requests
    /// to finish, then deregisters.
    pub async fn shutdown(self, grace: Duration) -> Result<(), ClientError> {
        let drained = self.drain().await;
        if let Err(e) = &drained {
            warn!(error = %e, "could not drain before deregistering");
        }
        if drained.is_ok() {
            tokio::time::sleep(grace).await;
        }
        self.deregister().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropped without shutdown: stop heartbeating and let the TTL
        // remove the registration.
        self.heartbeat.abort();
    }
}

impl Shared {
    fn path(&self, suffix: &str) -> String {
        format!(
            "/v1/services/{}/instances/{}{suffix}",
            self.opts.service, self.opts.id
        )
    }

    async fn register(&self) -> Result<Instance, ClientError> {
        let o = &self.opts;
        let body = Body {
            address: o.address.to_string(),
            ttl: Some(format_duration(o.ttl)),
            weight: Some(o.weight),
            zone: o.zone.clone(),
            metadata: (!o.metadata.is_empty()).then(|| o.metadata.clone()),
        };
        // A struct of strings and numbers always serializes.
        let body = serde_json::to_vec(&body).expect("a registration serializes");
        let inst = self.call(Method::PUT, "", Some(body)).await?;
        if self.draining.load(Ordering::Acquire) {
            return self.call(Method::PUT, "/drain", None).await;
        }
        Ok(inst)
    }

    async fn call(
        &self,
        method: Method,
        suffix: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Instance, ClientError> {
        let bytes = self.call_raw(method, suffix, body).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn call_raw(
        &self,
        method: Method,
        suffix: &str,
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, ClientError> {
        let path = self.path(suffix);
        let resp = self
            .http
            .lock()
            .await
            .send(method, &path, body, self.opts.request_timeout)
            .await?;
        if resp.status.is_success() {
            return Ok(resp.body);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(b) => (b.error, b.message),
            Err(_) => (
                resp.status.canonical_reason().unwrap_or("error").to_owned(),
                String::from_utf8_lossy(&resp.body).into_owned(),
            ),
        };
        Err(ClientError::Rejected {
            status: resp.status.as_u16(),
            code,
            message,
        })
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = (shared.opts.ttl / 3).max(Duration::from_millis(100));
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: every,
    };
    let mut failures = 0u32;
    let mut next = every;
    loop {
        tokio::time::sleep(next).await;
        let result = match shared.call(Method::PUT, "/heartbeat", None).await {
            Err(e) if e.is_not_found() => {
                info!(service = %shared.opts.service, id = %shared.opts.id, "registration lost (expired or registry reset); registering again");
                shared.register().await
            }
            other => other,
        };
        match result {
            Ok(_) => {
                if failures > 0 {
                    info!(service = %shared.opts.service, id = %shared.opts.id, "heartbeats reach the registry again");
                }
                failures = 0;
                next = every;
            }
            Err(e) => {
                if failures == 0 {
                    warn!(service = %shared.opts.service, id = %shared.opts.id, error = %e, "heartbeat failed; retrying");
                }
                next = backoff.delay(failures);
                failures = failures.saturating_add(1);
            }
        }
    }
}
