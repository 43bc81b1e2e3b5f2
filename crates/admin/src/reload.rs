//! `POST /reload`: asks the process to read its configuration file again
//! and apply it. The admin API only carries the request; the proxy owns the
//! reload (it holds the sockets, clusters and listeners) and answers through
//! a [`Reloader`], which SIGHUP uses too.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::AdminState;

/// One reload asked for; the proxy sends its outcome on `reply`.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<ReloadOutcome>,
}

/// What a reload did, as `POST /reload` answers it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadOutcome {
    /// Whether the new configuration serves now. When false the running
    /// one serves unchanged.
    pub applied: bool,
    /// The generation serving after the reload.
    pub generation: u64,
    /// Why the reload was refused: located configuration errors, a bind
    /// failure, a TLS file that does not load, a setting that needs a
    /// restart.
    pub errors: Vec<String>,
    pub changes: ReloadChanges,
}

/// Names of what an applied reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadChanges {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    /// Kept their socket; new connections and requests use the new settings.
    pub listeners_updated: Vec<String>,
    pub clusters_added: Vec<String>,
    pub clusters_removed: Vec<String>,
    /// Rebuilt with new settings (their endpoints carry over when the way
    /// to connect to them is unchanged).
    pub clusters_updated: Vec<String>,
}

impl ReloadOutcome {
    /// A refused reload; `generation` keeps serving.
    pub fn refused(generation: u64, errors: Vec<String>) -> Self {
        Self {
            applied: false,
            generation,
            errors,
            changes: ReloadChanges::default(),
        }
    }
}

/// Sends reload requests to the proxy; cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader(mpsc::Sender<ReloadRequest>);

impl Reloader {
    /// A reloader and the receiver its owner serves the requests from.
    /// Requests wait in a short queue and are applied one at a time.
    pub fn channel() -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (tx, rx) = mpsc::channel(8);
        (Self(tx), rx)
    }

    /// Asks for a reload and waits for its outcome; `None` when nothing
    /// serves requests any more (the process is shutting down).
    pub async fn reload(&self) -> Option<ReloadOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.0.send(ReloadRequest { reply }).await.ok()?;
        outcome.await.ok()
    }
}

/// A browser page on another origin can send a simple POST to a loopback
/// admin port; such a request names its origin, and is refused unless that
/// origin is the admin's own (the dashboard).
fn cross_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).map(|h| h.as_bytes());
    let origin = origin.as_bytes();
    let own = host.is_some_and(|host| {
        origin
            .strip_prefix(b"http://")
            .or_else(|| origin.strip_prefix(b"https://"))
            == Some(host)
    });
    !own
}

pub(crate) async fn reload(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if cross_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "reload refused: cross-origin request\n",
        )
            .into_response();
    }
    let Some(reloader) = &state.reloader else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available: this process was not started from a configuration file\n",
        )
            .into_response();
    };
    match reloader.reload().await {
        Some(outcome) if outcome.applied => Json(outcome).into_response(),
        // The configuration (or what it asks for) is what is wrong.
        Some(outcome) => (StatusCode::UNPROCESSABLE_ENTITY, Json(outcome)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_foreign_origins_are_refused() {
        assert!(!cross_origin(&headers(&[("host", "127.0.0.1:9901")])));
        assert!(!cross_origin(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "http://127.0.0.1:9901")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "null")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:9901"),
            ("sec-fetch-site", "cross-site")
        ])));
    }
}
