//! A minimal HTTP/1.1 JSON client for the registry API: one keep-alive
//! connection, reopened when it breaks; `https://` URLs go over TLS
//! (verified against a CA bundle, else the system's roots, and the URL's
//! host name).
//!
//! Every call the registry API offers is idempotent (PUT, DELETE, GET), so
//! a request that fails on a reused connection — the registry restarted
//! and closed it — is sent once more on a fresh one.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a request to the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid registry URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {authority} failed: {source}")]
    Request {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no answer from {authority} within {after:?}")]
    Timeout { authority: String, after: Duration },
    /// Boxed: rustls' errors and the file paths make it the largest.
    #[error("registry TLS settings: {0}")]
    Tls(#[source] Box<switchyard_tls::TlsError>),
}

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A client for one registry base URL (`http[s]://host:port[/prefix]`).
pub struct HttpClient {
    authority: String,
    base_path: String,
    token: Option<HeaderValue>,
    /// For `https://`: the TLS settings and the name the certificate must
    /// carry (the URL's host).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `url`; an `https://` one trusts the system's roots.
    pub fn new(url: &str) -> Result<Self, HttpError> {
        Self::with_ca(url, None)
    }

    /// A client for `url`; an `https://` one trusts `ca` (a PEM bundle),
    /// else the system's roots. A CA with an `http://` URL is refused:
    /// whoever set one expects TLS.
    pub fn with_ca(url: &str, ca: Option<&Path>) -> Result<Self, HttpError> {
        let invalid = |reason| HttpError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(invalid("only http:// and https:// are supported")),
            None => return Err(invalid("expected http://host:port or https://host:port")),
        };
        if ca.is_some() && !https {
            return Err(invalid("a CA is set, so the URL must be https://"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| invalid("the host is neither a DNS name nor an IP address"))?;
            let config = switchyard_tls::client::config(ca, None, &[b"http/1.1"])
                .map_err(|e| HttpError::Tls(Box::new(e)))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
        };
        Ok(Self {
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            token: None,
            tls,
            conn: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Result<Self, HttpError> {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            HttpError::InvalidUrl {
                url: self.authority.clone(),
                reason: "the token contains characters not allowed in a header",
            }
        })?;
        self.token = Some(value);
        Ok(self)
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request; `path` is appended to the base URL's path.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        let authority = self.authority.clone();
        let body = body.map(Bytes::from);
        let attempt = async {
            let reused = self.conn.is_some();
            match self.send_once(&method, path, body.clone()).await {
                Err(HttpError::Request { .. }) if reused => {
                    // The kept connection was closed under us; one fresh try.
                    self.conn = None;
                    self.send_once(&method, path, body).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                // A half-finished exchange leaves the connection unusable.
                self.conn = None;
                Err(HttpError::Timeout {
                    authority,
                    after: timeout,
                })
            }
        }
    }

    async fn send_once(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse, HttpError> {
        let mut conn = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        let request_err = |source| HttpError::Request {
            authority: self.authority.clone(),
            source,
        };
        conn.ready().await.map_err(request_err)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.base_path, path))
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, token.clone());
        }
        // Every part was validated when the client was built.
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .expect("request parts are valid");
        let resp = conn.send_request(req).await.map_err(request_err)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(request_err)?.to_bytes();
        self.conn = Some(conn);
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let connect_err = |source| HttpError::Connect {
            authority: self.authority.clone(),
            source,
        };
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        let request_err = |source| HttpError::Request {
            authority: self.authority.clone(),
            source,
        };
        match &self.tls {
            None => handshake(stream).await.map_err(request_err),
            Some((connector, name)) => {
                // A certificate that does not verify fails the connection;
                // there is no fallback to plaintext.
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(connect_err)?;
                handshake(stream).await.map_err(request_err)
            }
        }
    }
}

/// An HTTP/1.1 connection over `io`, driven by its own task, which ends
/// when the returned sender is dropped or the peer closes.
async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}
