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

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{PrivateKeyDer, ServerName, pem::PemObject};
use switchyard_config::UpstreamProtocol;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    error::{ErrorKind, ProxyError},
    server::tls::{TlsError, certificates, shown},
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
        let roots = match &tls.ca {
            Some(ca) => ca_roots(ca)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Client)?
            .with_root_certificates(roots);
        let mut config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                    path: shown(key),
                    source,
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsError::Rejected {
                        cert: shown(cert),
                        key: shown(tls.key.as_deref().unwrap_or(Path::new(""))),
                        source,
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
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

fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: shown(path),
            source,
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Unparsable entries in the system bundle are skipped, as every TLS
    // client does; only a bundle with no usable root is an error.
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots {
            errors: found.errors.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(roots)
}
