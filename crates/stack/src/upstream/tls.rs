//! TLS origination to a cluster's endpoints (rustls, ring provider, TLS 1.2
//! and 1.3 with rustls' safe defaults).
//!
//! Every endpoint's certificate must chain to the cluster's `ca` (else the
//! system's roots) and carry its `server_name`, which is also sent as SNI;
//! hostname verification cannot be turned off. ALPN offers only the
//! cluster's protocol (`h2` or `http/1.1`), so an upstream cannot pick
//! another. A handshake that fails — a certificate that does not verify, a
//! peer that does not speak TLS — fails the connection as
//! [`ErrorKind::UpstreamTls`]: the request was never sent, and nothing is
//! ever retried in plaintext.

use std::sync::Arc;

use rustls_pki_types::ServerName;
use switchyard_config::UpstreamProtocol;
use switchyard_tls::client::ClientIdentity;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    error::{ErrorKind, ProxyError},
    server::tls::TlsError,
};

/// A cluster's TLS client settings, built once.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Reads the CA bundle (or the system's roots) and the client
    /// certificate, if any, for a cluster speaking `protocol`.
    pub fn new(
        tls: &switchyard_config::UpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Result<Self, TlsError> {
        let identity = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert: cert.as_path(),
                key: key.as_path(),
            }),
            _ => None,
        };
        let alpn: &[u8] = match protocol {
            UpstreamProtocol::Http1 => b"http/1.1",
            UpstreamProtocol::Http2 => b"h2",
        };
        let config = switchyard_tls::client::config(tls.ca.as_deref(), identity, &[alpn])?;
        let server_name =
            ServerName::try_from(tls.server_name.clone()).map_err(|_| TlsError::ServerName {
                name: tls.server_name.clone(),
            })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the handshake on a connected socket.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        addr: std::net::SocketAddr,
    ) -> Result<TlsStream<TcpStream>, ProxyError> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| ProxyError::with_source(ErrorKind::UpstreamTls, e).at(addr))
    }
}
