//! Binding and running the registry: the token rule, the store, the HTTP
//! server (`switchyard-serve`: a connection limit, header read and idle
//! timeouts) and its graceful shutdown.

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
    #[error("TLS: {0}")]
    Tls(#[source] Box<switchyard_tls::TlsError>),
}

/// Default 4,096: connections the registry serves at once. Every proxy
/// holds one connection per service it watches, open in a blocking query
/// most of the time (and each registered instance heartbeats on one), so
/// the limit must count watchers, not requests: 4,096 serves, e.g., a
/// thousand proxies watching four services each. At the limit the registry
/// stops accepting; new clients wait in the kernel backlog until a
/// connection closes, which for a blocking query can be its whole `wait`
/// (30s by default) — raise it (`--max-connections`) before the fleet
/// reaches it. Idle, each connection costs a descriptor and some KiB.
pub const MAX_CONNECTIONS: usize = 4096;

/// The registry's serving settings: [`MAX_CONNECTIONS`]; the header read
/// timeout (10s) and idle timeout (60s) of the admin API, which suit it
/// too: clients send a request as soon as they connect, a blocking query
/// is a request in flight (never idle, however long its wait), and a
/// watcher asks again at once after each answer.
pub fn serve_settings() -> switchyard_serve::Settings {
    switchyard_serve::Settings {
        max_connections: MAX_CONNECTIONS,
        ..switchyard_serve::Settings::default()
    }
}

/// A bound registry, ready to [`run`](RegistryServer::run).
pub struct RegistryServer {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    serve: switchyard_serve::Settings,
    tls: Option<switchyard_tls::server::TlsAcceptor>,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryServer")
            .field("addr", &self.addr)
            .field("state", &self.state)
            .field("serve", &self.serve)
            .field("tls", &self.tls.is_some())
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
        let listener = switchyard_serve::bind(listen).map_err(|source| StartError::Bind {
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
            serve: serve_settings(),
            tls: None,
        })
    }

    /// Serves HTTPS with these certificates, as a proxy listener's `tls`
    /// does: chosen by SNI, re-read when their files rotate, and with
    /// `client_ca` every client must present a certificate that chains to
    /// it. Fails when the files cannot be used.
    pub fn tls(mut self, tls: &switchyard_config::ListenerTls) -> Result<Self, StartError> {
        let acceptor =
            switchyard_tls::server::acceptor(tls).map_err(|e| StartError::Tls(Box::new(e)))?;
        self.tls = Some(acceptor);
        Ok(self)
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

    /// Connections served at once (default [`MAX_CONNECTIONS`]); at the
    /// limit new clients wait in the kernel backlog.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.serve.max_connections = max.max(1);
        self
    }

    /// All the serving settings (connection limit, timeouts), e.g. short
    /// timeouts in tests.
    pub fn serve_settings(mut self, settings: switchyard_serve::Settings) -> Self {
        self.serve = settings;
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
        info!(
            addr = %self.addr,
            store = %self.state.store.describe(),
            auth = self.state.token.is_some(),
            tls = self.tls.is_some(),
            max_connections = self.serve.max_connections,
            "registry listening"
        );
        let app = api::router(self.state);
        let tx = self.shutdown;
        switchyard_serve::serve_tls(
            self.listener,
            self.tls,
            app.into_service(),
            self.serve,
            async move {
                shutdown.await;
                info!("registry shutting down");
                let _ = tx.send(true);
            },
        )
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
