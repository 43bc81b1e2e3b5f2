//! TLS termination on listeners (rustls): TLS 1.2 and 1.3 with rustls' safe
//! defaults and the ring provider, ALPN `h2` and `http/1.1` so that clients
//! negotiate HTTP/2 over TLS.
//!
//! The certificates and keys are read when the listener is built; a file
//! that is missing or does not parse, or a key that does not match its
//! certificate, fails the start (and `switchyard check`).
//!
//! **SNI.** A listener may hold several certificates: a handshake gets the
//! first whose server names match the name the client asked for (exactly,
//! or a `*.example` name for one more label), else the first one.
//!
//! **Rotation.** At most every [`RELOAD_CHECK`], a handshake first looks at
//! the files' modification times; when either changed, the pair is read
//! again and, if it is usable, serves this and every later handshake. Open
//! connections keep the certificate they were set up with. A pair that
//! fails to load is logged and the previous one stays in use, so a
//! half-written rotation never takes the listener down.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use switchyard_config::{ListenerTls, TlsCertificate};
pub use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Why a listener's or a cluster's TLS settings cannot be used.
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
    #[error("a certificate in the CA file {path} cannot be used: {source}")]
    Ca { path: String, source: rustls::Error },
    #[error("no usable root certificate in the system's store (set `ca`): {}", errors.join("; "))]
    NoSystemRoots { errors: Vec<String> },
    #[error("`server_name` {name:?} is neither a DNS name nor an IP address")]
    ServerName { name: String },
    #[error("TLS client settings: {0}")]
    Client(rustls::Error),
    #[error("`tls` lists no certificate")]
    NoCertificates,
    #[error("the client CA file {path} cannot be used: {reason}")]
    ClientCa { path: String, reason: String },
}

/// The identity of a verified client certificate: its `spiffe://` URI SAN
/// (a SPIFFE ID), else its first DNS SAN, else its subject's common name.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let spiffe = names.iter().find_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some((*uri).to_owned()),
        _ => None,
    });
    let dns = || {
        names.iter().find_map(|n| match n {
            GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
    };
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    spiffe.or_else(dns).or_else(cn)
}

/// How often a handshake may look for rotated certificate files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The acceptor for a listener's `tls` settings.
pub fn acceptor(tls: &ListenerTls) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let by_sni = tls
        .certificates
        .iter()
        .map(|c| Reloading::new(c.clone(), provider.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let first = tls.certificates.first().ok_or(TlsError::NoCertificates)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| rejected(first, source))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|source| TlsError::Ca {
                    path: shown(ca),
                    source,
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: shown(ca),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni {
        certificates: by_sni,
    }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads and checks a certificate chain and its key.
fn load(tls: &TlsCertificate, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| TlsError::Key {
        path: shown(&tls.key),
        source,
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|source| rejected(tls, source))
}

fn rejected(tls: &TlsCertificate, source: rustls::Error) -> TlsError {
    TlsError::Rejected {
        cert: shown(&tls.cert),
        key: shown(&tls.key),
        source,
    }
}

/// A listener's certificates, chosen by the client's SNI.
#[derive(Debug)]
struct BySni {
    certificates: Vec<Reloading>,
}

impl BySni {
    fn choose(&self, sni: Option<&str>) -> &Reloading {
        let found = sni.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.certificates
                .iter()
                .find(|c| c.tls.server_names.iter().any(|n| n == &name))
                .or_else(|| {
                    // `*.example` covers exactly one more label.
                    let (_, parent) = name.split_once('.')?;
                    self.certificates.iter().find(|c| {
                        c.tls
                            .server_names
                            .iter()
                            .any(|n| n.strip_prefix("*.") == Some(parent))
                    })
                })
        });
        // `acceptor` refuses an empty list.
        found.unwrap_or(&self.certificates[0])
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.choose(hello.server_name());
        chosen.refresh();
        Some(chosen.current.load_full())
    }
}

/// One certificate, re-read when its files change.
#[derive(Debug)]
struct Reloading {
    tls: TlsCertificate,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// When the files were last looked at, and their modification times
    /// then.
    checked: Mutex<(Instant, Stamps)>,
}

type Stamps = (Option<SystemTime>, Option<SystemTime>);

impl Reloading {
    fn new(tls: TlsCertificate, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamps = stamps(&tls);
        let current = load(&tls, &provider)?;
        Ok(Self {
            tls,
            provider,
            current: ArcSwap::from_pointee(current),
            checked: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// Reloads the pair if its files changed since the last look, at most
    /// every [`RELOAD_CHECK`].
    fn refresh(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if checked.0.elapsed() < RELOAD_CHECK {
            return;
        }
        checked.0 = Instant::now();
        let now = stamps(&self.tls);
        if now == checked.1 {
            return;
        }
        match load(&self.tls, &self.provider) {
            Ok(key) => {
                checked.1 = now;
                self.current.store(Arc::new(key));
                info!(cert = %self.tls.cert.display(), "TLS certificate reloaded");
            }
            // Retried at the next look: the files may be mid-rotation.
            Err(e) => {
                warn!(error = %e, "TLS certificate files changed but cannot be used; keeping the previous certificate")
            }
        }
    }
}

fn stamps(tls: &TlsCertificate) -> Stamps {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&tls.cert), modified(&tls.key))
}

pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

pub fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A certificate close to (or past) its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub path: String,
    /// Whole days left; negative once expired.
    pub days_left: i64,
    /// `not_after` as the certificate states it.
    pub not_after: String,
}

impl std::fmt::Display for Expiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.days_left < 0 {
            write!(f, "certificate {} expired on {}", self.path, self.not_after)
        } else {
            write!(
                f,
                "certificate {} expires in {} day(s), on {}",
                self.path, self.days_left, self.not_after
            )
        }
    }
}

/// How close to its end a certificate is before `check` and the start
/// warn: two weeks leaves time to rotate it.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The first certificate of the PEM file `path` (the leaf of a chain, or a
/// CA), when it ends within `within` of `now` (Unix seconds) or already
/// has. Files that do not parse are `start`'s and `check`'s errors, not
/// this function's: they give `None`.
pub fn expiring(path: &Path, within: Duration, now: i64) -> Option<Expiring> {
    let first = certificates(path).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    let not_after = cert.validity().not_after;
    let left = not_after.timestamp() - now;
    let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
    (left <= within).then(|| Expiring {
        path: shown(path),
        days_left: left.div_euclid(24 * 3600),
        not_after: not_after.to_string(),
    })
}
