//! One handler per route: validate, call the store, answer JSON.

use std::time::Duration;

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use switchyard_config::parse_duration;
use switchyard_discovery::wire::{INDEX_HEADER, Registration, ServiceList};

use super::{AppState, OPENAPI};
use crate::{error::ApiError, model, store::ServiceState};

/// Default hold of a blocking query without `wait` (Consul's default).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) async fn list(State(state): State<AppState>) -> Result<Response> {
    let (index, services) = state.store.services().await?;
    Ok(with_index(index, Json(ServiceList { index, services })))
}

/// Query of `GET /v1/services/{service}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatchQuery {
    index: Option<u64>,
    wait: Option<String>,
    /// Answer only what changed since `index`, when possible.
    delta: Option<bool>,
}

pub(crate) async fn get_service(
    State(state): State<AppState>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response> {
    let Path(service) = path?;
    let Query(q) = query?;
    model::service_name(&service)?;
    if q.index.is_some_and(|i| i > i64::MAX as u64) {
        // Indexes are etcd revisions (int64) or the embedded counter.
        return Err(ApiError::bad_request(
            "invalid_query",
            "index is above 9223372036854775807 (the largest int64)",
        ));
    }
    let wait = match &q.wait {
        None => DEFAULT_WAIT.min(state.max_wait),
        Some(w) => {
            let d = parse_duration(w).map_err(|e| {
                ApiError::bad_request("invalid_query", format!("wait {w:?} is invalid: {e}"))
            })?;
            if d > state.max_wait {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "wait {w:?} is too long: at most {}",
                        switchyard_config::format_duration(state.max_wait)
                    ),
                ));
            }
            d
        }
    };
    let st: ServiceState = match q.index {
        // No index (or 0): answer at once.
        None | Some(0) => state.store.service(&service).await?,
        Some(index) => {
            // Up to wait/16 more spreads out watchers that all started
            // together, so their re-queries do not arrive in one burst.
            let wait = wait + (wait / 16).mul_f64(fastrand::f64());
            tokio::select! {
                r = state.store.watch(&service, index, wait) => r?,
                () = shutting_down(state.shutdown.clone()) => state.store.service(&service).await?,
            }
        }
    };
    let delta = match q.index {
        Some(since) if since > 0 && q.delta == Some(true) => {
            state.bodies.render_delta(&service, since, &st)
        }
        _ => None,
    };
    let body = delta.unwrap_or_else(|| state.bodies.render(&service, &st));
    Ok(with_index(
        st.index,
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        ),
    ))
}

pub(crate) async fn register(
    State(state): State<AppState>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    body: std::result::Result<Json<Registration>, JsonRejection>,
) -> Result<Response> {
    let (service, id) = names(path)?;
    let Json(reg) = body?;
    let record = model::registration(&id, reg)?;
    let done = state.store.register(&service, record).await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done.instance)).into_response())
}

pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    let (service, id) = names(path)?;
    Ok(Json(state.store.heartbeat(&service, &id).await?).into_response())
}

pub(crate) async fn drain(
    State(state): State<AppState>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    let (service, id) = names(path)?;
    Ok(Json(state.store.drain(&service, &id).await?).into_response())
}

pub(crate) async fn deregister(
    State(state): State<AppState>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode> {
    let (service, id) = names(path)?;
    state.store.deregister(&service, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn shutting_down(mut rx: tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = rx.wait_for(|down| *down).await.map(|_| ());
}

fn names(
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String)> {
    let Path((service, id)) = path?;
    model::service_name(&service)?;
    model::instance_id(&id)?;
    Ok((service, id))
}

fn with_index(index: u64, body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    resp
}
