//! The registry's HTTP+JSON API under `/v1` (documented in `openapi.json`
//! at the crate root, served at `/v1/openapi.json`).
//!
//! The router is one linear table, [`ROUTES`] lists the same routes for the
//! test that keeps the OpenAPI document true, and every error goes through
//! [`ApiError`](crate::error::ApiError)'s one `IntoResponse`.

mod auth;
mod cache;
mod handlers;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, put},
};
use http::StatusCode;
use tokio::sync::watch;

use crate::{error::ApiError, store::Store};

/// Largest accepted request body. A registration is a few hundred bytes;
/// 64 KiB leaves room for generous metadata and refuses abuse early.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Longest hold of a blocking query by default: past this a dead client
/// holds a connection for too long.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Every `(method, path)` the router serves, in OpenAPI path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{service}"),
    ("PUT", "/v1/services/{service}/instances/{id}"),
    ("DELETE", "/v1/services/{service}/instances/{id}"),
    ("PUT", "/v1/services/{service}/instances/{id}/heartbeat"),
    ("PUT", "/v1/services/{service}/instances/{id}/drain"),
    ("GET", "/v1/openapi.json"),
];

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    /// Required on writes when set.
    pub token: Option<Arc<str>>,
    /// Turns true when the server shuts down, so blocking queries answer at
    /// once instead of holding the shutdown for their whole wait.
    pub shutdown: watch::Receiver<bool>,
    /// Longest `wait` of a blocking query.
    pub max_wait: std::time::Duration,
    pub bodies: Arc<cache::BodyCache>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store.describe())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The API router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/services", get(handlers::list))
        .route("/v1/services/{service}", get(handlers::get_service))
        .route(
            "/v1/services/{service}/instances/{id}",
            put(handlers::register).delete(handlers::deregister),
        )
        .route(
            "/v1/services/{service}/instances/{id}/heartbeat",
            put(handlers::heartbeat),
        )
        .route(
            "/v1/services/{service}/instances/{id}/drain",
            put(handlers::drain),
        )
        .route("/v1/openapi.json", get(handlers::openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Writes need the bearer token when one is configured.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route; see /v1/openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /v1/openapi.json",
    )
}
