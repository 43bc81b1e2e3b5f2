//! The demo's service registry: a Switchyard registry on the embedded store,
//! in this process, with every backend registered in it.
//!
//! The proxy finds both clusters through the registry (`discovery = {
//! registry = ... }`), so what a scenario does to registrations is what the
//! proxy routes by: a backend added mid-run registers and takes traffic; a
//! backend scaled in drains (no new requests), waits for its in-flight
//! requests, deregisters and stops. A killed backend stops heartbeating,
//! like a crashed process; its registration would expire after the TTL,
//! and a restart registers it again.
//!
//! The store lives in a temporary directory removed when the demo ends:
//! the same durable store `switchyard registry` uses, with nothing left
//! behind on the user's disk.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchyard_registry::client::{Registration, RegistrationOptions};
use switchyard_registry::server::{RegistryServer, ServerOptions};
use switchyard_registry::store::StoreSpec;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::backend::BackendHandle;
use crate::{DemoError, cluster_of};

/// Registrations expire 5 s after the last heartbeat (one every ~1.7 s): a
/// crashed demo backend leaves the registry within the run, while the
/// proxy's health checks and outlier detection react well before that.
const TTL: Duration = Duration::from_secs(5);

/// The running registry and the demo backends' registrations.
#[derive(Debug)]
pub(crate) struct Registry {
    addr: SocketAddr,
    url: String,
    registrations: Mutex<HashMap<String, Registration>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Holds the store's files; removed on drop.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Opens the embedded store in a fresh temporary directory and serves
    /// the registry API on 127.0.0.1, on a free port.
    pub(crate) async fn start() -> Result<Registry, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-demo-registry-")
            .tempdir()
            .map_err(|e| DemoError::Registry(format!("cannot create the store directory: {e}")))?;
        let server = RegistryServer::bind(ServerOptions {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            store: StoreSpec::Embedded(dir.path().to_path_buf()),
            token: None,
        })
        .await
        .map_err(|e| DemoError::Registry(e.to_string()))?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(Registry {
            addr,
            url: format!("http://{addr}"),
            registrations: Mutex::default(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL the proxy's discovery and the registrations use.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Registers `backend` in its cluster's service, under its name, and
    /// keeps it alive with heartbeats. Registering again replaces the
    /// previous registration (a restart).
    pub(crate) async fn register(&self, backend: &BackendHandle) -> Result<(), DemoError> {
        let mut opts = RegistrationOptions::new(
            &self.url,
            cluster_of(backend.protocol()),
            backend.name(),
            backend.addr(),
        );
        opts.ttl = TTL;
        let registration = Registration::register(opts)
            .await
            .map_err(|e| DemoError::Registry(format!("cannot register {}: {e}", backend.name())))?;
        self.registrations
            .lock()
            .await
            .insert(backend.name().to_owned(), registration);
        Ok(())
    }

    /// Stops heartbeating for `name` without deregistering: what a crash
    /// does. The registration expires after the TTL unless renewed.
    pub(crate) async fn abandon(&self, name: &str) {
        // Dropping a registration stops its heartbeat task.
        self.registrations.lock().await.remove(name);
    }

    /// Marks `name` draining: proxies send it no new requests.
    pub(crate) async fn drain(&self, name: &str) -> Result<(), DemoError> {
        let registrations = self.registrations.lock().await;
        let registration = registrations
            .get(name)
            .ok_or_else(|| DemoError::Scenario(format!("{name:?} is not registered")))?;
        registration
            .drain()
            .await
            .map_err(|e| DemoError::Registry(format!("cannot drain {name}: {e}")))?;
        Ok(())
    }

    /// Removes `name`'s registration.
    pub(crate) async fn deregister(&self, name: &str) -> Result<(), DemoError> {
        let registration = self.registrations.lock().await.remove(name);
        match registration {
            Some(r) => r
                .deregister()
                .await
                .map_err(|e| DemoError::Registry(format!("cannot deregister {name}: {e}"))),
            None => Ok(()),
        }
    }

    /// Stops heartbeats and the server, and waits for it to close.
    pub(crate) async fn shutdown(mut self) {
        self.registrations.lock().await.clear();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the demo registry stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "the demo registry task failed"),
            }
        }
    }
}
