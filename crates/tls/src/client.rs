//! TLS client settings: whom to trust (a CA bundle, else the system's
//! roots) and, for mutual TLS, which certificate to present. Hostname
//! verification is rustls' and cannot be turned off.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

use crate::server::{TlsError, certificates, shown};

/// A client certificate and its key, for servers that require one.
#[derive(Clone, Copy, Debug)]
pub struct ClientIdentity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Client settings trusting `ca` (a PEM bundle; the system's roots when
/// `None`), presenting `identity` when given, offering `alpn` in order.
pub fn config(
    ca: Option<&Path>,
    identity: Option<ClientIdentity<'_>>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => ca_roots(ca)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Client)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(ClientIdentity { cert, key }) => {
            let chain = certificates(cert)?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                path: shown(key),
                source,
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|source| TlsError::Rejected {
                    cert: shown(cert),
                    key: shown(key),
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
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
