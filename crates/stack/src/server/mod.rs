//! Downstream HTTP: accepting connections and serving HTTP/1.1 and h2c on one
//! port, with limits, timeouts and graceful shutdown.

mod conn;
pub mod proxy_protocol;
pub mod streams;
pub mod tls;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hyper_util::{rt::TokioTimer, server::conn::auto};
use switchyard_config::HttpServerConfig;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tracing::debug;

use self::streams::{ClientLimits, StreamExecutor, StreamTimeouts};
use crate::{drain, error::ErrorKind, proxy::HttpProxy};

/// Binds a listening socket with `SO_REUSEADDR` (restarts do not wait for
/// TIME_WAIT) and a deep accept backlog for connection bursts — the same
/// socket the control plane's listeners use.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    switchyard_serve::bind(addr)
}

/// Builds the hyper server settings for a listener.
fn builder(cfg: &HttpServerConfig) -> auto::Builder<StreamExecutor> {
    // HTTP/2 stream tasks are spawned through the stream executor, so that
    // the connection can end a stream that makes no progress.
    let mut b = auto::Builder::new(StreamExecutor);
    b.http1()
        .timer(TokioTimer::new())
        // hyper also applies this timer between keep-alive requests, so it
        // bounds both a trickling request head and an idle HTTP/1.1
        // connection.
        .header_read_timeout(cfg.header_read_timeout)
        // The read buffer bounds the request head; hyper answers 431 when a
        // head does not fit. hyper requires at least 8 KiB.
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .max_headers(cfg.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        // Fixed windows rather than adaptive ones: h2 budgets buffered small
        // DATA frames at half the connection window, and adaptive windows
        // start at 64 KiB (about 150 buffered gRPC messages).
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        // Pings find clients that vanished without closing the connection.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// What an http listener serves with: its request path and its server
/// settings. A reload swaps it whole ([`ArcSwap`]): each connection takes
/// the server settings current when it is accepted, and each request the
/// proxy (routes, clusters) current when it arrives, so a keep-alive
/// connection follows a reload from its next request while requests in
/// flight finish on what they started with.
pub struct HttpSite {
    pub proxy: Arc<HttpProxy>,
    pub cfg: HttpServerConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub trusted: Option<proxy_protocol::Trusted>,
}

impl std::fmt::Debug for HttpSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSite")
            .field("proxy", &self.proxy)
            .field("cfg", &self.cfg)
            .field("tls", &self.tls.is_some())
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// The per-listener serving state built from an [`HttpSite`]'s settings;
/// rebuilt when a reload changes them.
struct Serving {
    builder: Arc<auto::Builder<StreamExecutor>>,
    limit: Arc<Semaphore>,
    settings: Arc<conn::Settings>,
    clients: Arc<ClientLimits>,
}

impl Serving {
    fn new(cfg: &HttpServerConfig) -> Self {
        Self {
            builder: Arc::new(builder(cfg)),
            limit: Arc::new(Semaphore::new(cfg.max_connections)),
            settings: Self::settings(cfg),
            clients: ClientLimits::new(cfg.max_requests_per_client),
        }
    }

    fn settings(cfg: &HttpServerConfig) -> Arc<conn::Settings> {
        Arc::new(conn::Settings {
            max_age: cfg.max_connection_age,
            idle_timeout: cfg.idle_timeout,
            first_request_timeout: cfg.header_read_timeout,
            streams: StreamTimeouts {
                send: cfg.send_timeout,
                idle: cfg.stream_idle_timeout,
            },
        })
    }

    /// Applies changed settings to connections accepted from now on. The
    /// connection and per-client limits start afresh only when their value
    /// changed: connections open before then count against the old limit
    /// until they close.
    fn reconfigure(&mut self, old: &HttpServerConfig, new: &HttpServerConfig) {
        self.builder = Arc::new(builder(new));
        self.settings = Self::settings(new);
        if old.max_connections != new.max_connections {
            self.limit = Arc::new(Semaphore::new(new.max_connections));
        }
        if old.max_requests_per_client != new.max_requests_per_client {
            self.clients = ClientLimits::new(new.max_requests_per_client);
        }
    }
}

/// Accepts and serves connections until `watch` signals draining; every
/// connection then finishes its in-flight requests (HTTP/2 gets GOAWAY,
/// HTTP/1.1 closes after the current response). The connections belong to
/// this task: aborting it (when the grace period is over) closes them all.
///
/// With `tls`, each connection first completes a TLS handshake, within the
/// header read timeout (a client that stalls it is dropped like a silent
/// one); HTTP/2 is then chosen by ALPN.
pub async fn serve_http(
    listener: TcpListener,
    site: Arc<ArcSwap<HttpSite>>,
    mut watch: drain::Watch,
) {
    let mut current = site.load_full();
    let mut serving = Serving::new(&current.cfg);
    // What a connection was accepted on, for PROXY headers upstream; a
    // wildcard listener asks each connection.
    let listen_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut conns = JoinSet::new();
    let mut accept_errors = switchyard_serve::AcceptErrors::default();
    loop {
        // Waiting for a permit before accepting pushes back on clients via
        // the kernel backlog instead of growing memory without bound.
        let permit = tokio::select! {
            p = serving.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            Some(_) = conns.join_next() => continue,
            _ = watch.signaled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: pause (longer per error in a row)
                    // rather than spin, and log the burst once.
                    drop(permit);
                    if let Some(pause) = accept_errors.failed(&e) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            },
            Some(_) = conns.join_next() => continue,
            _ = watch.signaled() => break,
        };
        accept_errors.succeeded();
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        // A reload swapped the site: this connection is the first to use it.
        let latest = site.load_full();
        if !Arc::ptr_eq(&latest, &current) {
            if latest.cfg != current.cfg {
                serving.reconfigure(&current.cfg, &latest.cfg);
            }
            current = latest;
        }
        let conn = conn::Conn {
            proxy: current.proxy.clone(),
            site: site.clone(),
            builder: serving.builder.clone(),
            clients: serving.clients.clone(),
            settings: serving.settings.clone(),
            watch: watch.clone(),
        };
        let tls = current.tls.clone();
        let trusted = current.trusted.clone();
        let handshake_timeout = current.cfg.header_read_timeout;
        conns.spawn(async move {
            let mut stream = stream;
            let local = if listen_addr.ip().is_unspecified() {
                stream.local_addr().unwrap_or(listen_addr)
            } else {
                listen_addr
            };
            // A load balancer's PROXY header comes first, before TLS.
            let peer = match proxy_protocol::client_address(
                &mut stream,
                peer,
                trusted.as_ref(),
                handshake_timeout,
            )
            .await
            {
                Ok(client) => client,
                Err(e) => {
                    debug!(%peer, error = %e, "connection refused: PROXY protocol header");
                    conn.proxy
                        .metrics()
                        .error(ErrorKind::ProxyProtocol.as_str());
                    return;
                }
            };
            match tls {
                None => conn.serve(stream, peer, local, "http", None).await,
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            // Verified by the listener's client CA when it
                            // has one; there is no certificate otherwise.
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(tls::identity)
                                .map(Arc::from);
                            conn.serve(stream, peer, local, "https", identity).await;
                        }
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            conn.proxy.metrics().error(ErrorKind::TlsHandshake.as_str());
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake not done within the header read timeout");
                            conn.proxy.metrics().error(ErrorKind::TlsHandshake.as_str());
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    // Stop accepting at once; the open connections drain on their own.
    drop(listener);
    while conns.join_next().await.is_some() {}
}
