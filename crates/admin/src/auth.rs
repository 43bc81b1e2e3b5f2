//! The admin bearer token.
//!
//! The admin endpoint shows the configuration, the topology and live
//! traffic figures, so anyone who can reach it learns a lot about the
//! system. On loopback only local processes can; beyond loopback a token is
//! mandatory ([`Token::resolve`] refuses to go on without one). Once a token
//! is configured it is required everywhere except:
//! - `/live` and `/ready`, which orchestrators probe without credentials and
//!   which reveal nothing but a status;
//! - the dashboard's static page and assets: they hold no data, and a
//!   browser cannot attach a bearer token to a page navigation. The page asks
//!   for the token and sends it as a header on its data requests.

use std::{fmt, net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use switchyard_config::AdminConfig;

use crate::{AdminState, dashboard};

/// The environment variable the proxy reads the token from when the config
/// names no `token_file`.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// A bearer token; its `Debug` form hides the secret.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why the admin token could not be set up; the proxy does not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the admin listener {listen} is not on loopback, so it needs a bearer token: set [admin] token_file or SWITCHYARD_ADMIN_TOKEN"
    )]
    Required { listen: SocketAddr },
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token file {path} is empty")]
    Empty { path: PathBuf },
}

impl Token {
    /// A token from its text, surrounding whitespace (a file's trailing
    /// newline) trimmed; `None` when nothing is left.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(Arc::from(t)))
    }

    /// The token for `admin`: from its `token_file`, else from `env` (the
    /// value of [`TOKEN_ENV`], passed in so that this crate reads no
    /// environment). An error when the file cannot be used, or when the
    /// listener is beyond loopback and there is no token.
    pub fn resolve(admin: &AdminConfig, env: Option<&str>) -> Result<Option<Token>, TokenError> {
        let token = match &admin.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(Token::new(&text).ok_or_else(|| TokenError::Empty { path: path.clone() })?)
            }
            None => env.and_then(Token::new),
        };
        if token.is_none() && !admin.listen.ip().is_loopback() {
            return Err(TokenError::Required {
                listen: admin.listen,
            });
        }
        Ok(token)
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        constant_time_eq(given, self.0.as_bytes())
    }
}

/// Compares without an early exit, so that response timing does not tell
/// how many leading bytes of a guess were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Paths served without a token; see the module docs for why.
fn is_open(path: &str) -> bool {
    matches!(path, "/live" | "/ready") || dashboard::is_static(path)
}

/// Middleware: answers 401 unless the request may pass.
pub(crate) async fn require_token(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    match &state.token {
        Some(token) if !is_open(req.uri().path()) && !token.admits(req.headers()) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"switchyard-admin\"",
            )],
            "a bearer token is required\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(listen: &str, token_file: Option<PathBuf>) -> AdminConfig {
        AdminConfig {
            listen: listen.parse().expect("test address"),
            token_file,
            ..AdminConfig::default()
        }
    }

    #[test]
    fn loopback_needs_no_token_but_honours_one() {
        assert!(
            Token::resolve(&admin("127.0.0.1:0", None), None)
                .expect("loopback")
                .is_none()
        );
        assert!(
            Token::resolve(&admin("[::1]:0", None), Some("  s3cret\n"))
                .expect("env")
                .is_some()
        );
    }

    #[test]
    fn beyond_loopback_a_token_is_required() {
        let err = Token::resolve(&admin("0.0.0.0:9901", None), None).expect_err("refused");
        assert!(matches!(err, TokenError::Required { .. }), "{err}");
        // A blank variable is no token.
        let err = Token::resolve(&admin("0.0.0.0:9901", None), Some(" ")).expect_err("refused");
        assert!(matches!(err, TokenError::Required { .. }), "{err}");
        assert!(
            Token::resolve(&admin("0.0.0.0:9901", None), Some("t"))
                .expect("env token")
                .is_some()
        );
    }

    #[test]
    fn token_file_wins_and_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("sy-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").expect("write token");
        let t = Token::resolve(&admin("0.0.0.0:1", Some(file.clone())), Some("from-env"))
            .expect("file token")
            .expect("some");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer from-file".parse().expect("header"),
        );
        assert!(t.admits(&h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer from-env".parse().expect("header"),
        );
        assert!(!t.admits(&h));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");

        std::fs::write(&file, "\n").expect("write empty");
        let err =
            Token::resolve(&admin("127.0.0.1:1", Some(file.clone())), None).expect_err("empty");
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        let err = Token::resolve(&admin("127.0.0.1:1", Some(dir.join("missing"))), None)
            .expect_err("missing");
        assert!(matches!(err, TokenError::Read { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
