//! Downstream HTTP: accepting connections and serving HTTP/1.1 and h2c on one
//! port, with limits, timeouts and graceful shutdown.

mod conn;
pub mod proxy_protocol;
pub mod streams;
pub mod tls;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

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
    proxy: Arc<HttpProxy>,
    cfg: HttpServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    trusted: Option<proxy_protocol::Trusted>,
    mut watch: drain::Watch,
) {
    let builder = Arc::new(builder(&cfg));
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let settings = Arc::new(conn::Settings {
        max_age: cfg.max_connection_age,
        idle_timeout: cfg.idle_timeout,
        first_request_timeout: cfg.header_read_timeout,
        streams: StreamTimeouts {
            send: cfg.send_timeout,
            idle: cfg.stream_idle_timeout,
        },
    });
    let clients = ClientLimits::new(cfg.max_requests_per_client);
    let mut conns = JoinSet::new();
    let mut accept_errors = switchyard_serve::AcceptErrors::default();
    loop {
        // Waiting for a permit before accepting pushes back on clients via
        // the kernel backlog instead of growing memory without bound.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
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
        let conn = conn::Conn {
            proxy: proxy.clone(),
            builder: builder.clone(),
            clients: clients.clone(),
            settings: settings.clone(),
            watch: watch.clone(),
        };
        let tls = tls.clone();
        let trusted = trusted.clone();
        let handshake_timeout = cfg.header_read_timeout;
        conns.spawn(async move {
            let mut stream = stream;
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
                None => conn.serve(stream, peer, "http", None).await,
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
                            conn.serve(stream, peer, "https", identity).await;
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
