//! The dashboard: one HTML page, a stylesheet and a script, compiled into
//! the binary with `include_str!` so that running it needs no files and no
//! build tool. The page draws everything from the `/events` feed.

use std::sync::Arc;

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::AdminState;

/// Where the dashboard lives on the admin listener.
pub const DASHBOARD_PATH: &str = "/dashboard";

const INDEX: &str = include_str!("../assets/index.html");
const CSS: &str = include_str!("../assets/dashboard.css");
const JS: &str = include_str!("../assets/dashboard.js");

const STATIC: [&str; 4] = [
    "/",
    DASHBOARD_PATH,
    "/assets/dashboard.css",
    "/assets/dashboard.js",
];

/// Whether `path` is one of the static files, which hold no data.
pub(crate) fn is_static(path: &str) -> bool {
    STATIC.contains(&path)
}

/// `no-cache`: a browser revalidates after an upgrade instead of running an
/// old script against a new feed.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary(DASHBOARD_PATH) }))
        .route(
            DASHBOARD_PATH,
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}
