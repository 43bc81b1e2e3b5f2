//! TLS termination on HTTP listeners (rustls): TLS 1.2 and 1.3 with rustls'
//! safe defaults and the ring provider, ALPN `h2` and `http/1.1` so that
//! clients negotiate HTTP/2 over TLS. The certificate and key are read once,
//! when the listener is built; a file that is missing or does not parse, or
//! a key that rustls refuses, fails the start (and `switchyard check`).

use std::{path::Path, sync::Arc};

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use switchyard_config::ListenerTls;
pub use tokio_rustls::TlsAcceptor;

/// Why a listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {path}: {source}")]
    Cert {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the certificate file {path} holds no PEM certificate")]
    NoCert { path: String },
    #[error("cannot read a private key from {path}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the certificate in {cert} and the key in {key} cannot be used: {source}")]
    Rejected {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// The acceptor for a listener's `tls` settings.
pub fn acceptor(tls: &ListenerTls) -> Result<TlsAcceptor, TlsError> {
    let certs = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| TlsError::Key {
        path: shown(&tls.key),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rejected = |source| TlsError::Rejected {
        cert: shown(&tls.cert),
        key: shown(&tls.key),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Cert {
            path: shown(path),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { path: shown(path) });
    }
    Ok(certs)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}
