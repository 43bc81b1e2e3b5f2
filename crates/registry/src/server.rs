//! Binding and running the registry: the token rule, the store, the HTTP
//! server and its graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};
use tracing::info;

use crate::{
    api::{self, AppState},
    error::StoreError,
    store::{self, Store, StoreSpec},
};

/// How to start a registry.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub store: StoreSpec,
    /// Bearer token for writes; required when `listen` is not loopback.
    pub token: Option<String>,
}

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "listening on {addr} (beyond loopback) needs a token for writes: pass --token-file FILE"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("the token is empty")]
    EmptyToken,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound registry, ready to [`run`](RegistryServer::run).
pub struct RegistryServer {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryServer")
            .field("addr", &self.addr)
            .field("state", &self.state)
            .finish()
    }
}

impl RegistryServer {
    /// Checks the token rule, opens the store and binds the listener.
    pub async fn bind(opts: ServerOptions) -> Result<Self, StartError> {
        check_token(opts.listen, opts.token.as_deref())?;
        let store = store::open(&opts.store).await?;
        Self::bind_with_store(opts.listen, store, opts.token).await
    }

    /// Like [`RegistryServer::bind`] with a store opened by the caller.
    pub async fn bind_with_store(
        listen: SocketAddr,
        store: Arc<dyn Store>,
        token: Option<String>,
    ) -> Result<Self, StartError> {
        check_token(listen, token.as_deref())?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let (shutdown, rx) = watch::channel(false);
        Ok(Self {
            listener,
            addr,
            state: AppState {
                store,
                token: token.map(Arc::from),
                shutdown: rx,
                max_wait: api::MAX_WAIT,
                bodies: Arc::default(),
            },
            shutdown,
        })
    }

    /// The bound address (a port 0 in the options becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Caps the `wait` of blocking queries (default 10m); longer ones are
    /// refused with 400. Tests that fuzz the API lower it so that no
    /// generated query holds the run for minutes.
    pub fn max_wait(mut self, max: std::time::Duration) -> Self {
        self.state.max_wait = max;
        self
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves; blocking queries then answer at
    /// once and open connections are closed after their response.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        info!(addr = %self.addr, store = %self.state.store.describe(), auth = self.state.token.is_some(), "registry listening");
        let app = api::router(self.state);
        let tx = self.shutdown;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                info!("registry shutting down");
                let _ = tx.send(true);
            })
            .await
    }
}

fn check_token(listen: SocketAddr, token: Option<&str>) -> Result<(), StartError> {
    match token {
        Some("") => Err(StartError::EmptyToken),
        None if !listen.ip().is_loopback() => Err(StartError::TokenRequired { addr: listen }),
        _ => Ok(()),
    }
}
