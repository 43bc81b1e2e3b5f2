//! `GET /routes`: each listener's routes in the order they are matched, with
//! their destinations and policies, so that an operator can answer "where
//! does this request go and what happens when it fails" without reading the
//! config file.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use switchyard_config::{
    Destination, HedgeDelay, HedgePolicy, ListenerConfig, ListenerProtocol, RetryPolicy,
    RouteConfig, RouteMatch, format_duration,
};

use crate::{AdminState, View};

#[derive(Serialize)]
pub(crate) struct RoutesBody<'a> {
    listeners: Vec<ListenerRoutes<'a>>,
}

/// `/routes` parameters, all optional: one listener by `listener`, and a
/// page of each listener's routes (`offset`, `limit`).
#[derive(Debug, Deserialize)]
pub(crate) struct RoutesQuery {
    listener: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct ListenerRoutes<'a> {
    name: &'a str,
    protocol: &'static str,
    /// The bound address.
    address: String,
    /// The cluster of a tcp or udp listener, which has no routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    /// Routes in all, before the page.
    routes_total: usize,
    routes: Vec<RouteView<'a>>,
}

#[derive(Serialize)]
struct RouteView<'a> {
    name: &'a str,
    #[serde(rename = "match")]
    matcher: &'a RouteMatch,
    destination: &'a Destination,
    /// Every cluster the route can send to.
    clusters: Vec<&'a str>,
    timeout: String,
    retry: Option<&'a RetryPolicy>,
    hedge: Option<&'a HedgePolicy>,
    /// One line each, e.g. "3 attempts, 500ms per try, on 5xx, reset".
    retry_summary: Option<String>,
    hedge_summary: Option<String>,
}

pub(crate) fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Udp => "udp",
    }
}

/// The clusters a route can send to, in configuration order.
pub(crate) fn route_clusters(route: &RouteConfig) -> Vec<&str> {
    match &route.destination {
        Destination::Cluster(c) => vec![c.as_str()],
        Destination::Split(split) => split.iter().map(|w| w.cluster.as_str()).collect(),
    }
}

fn retry_summary(r: &RetryPolicy) -> String {
    let mut s = format!("{} attempts", r.attempts);
    if let Some(t) = r.per_try_timeout {
        s.push_str(&format!(", {} per try", format_duration(t)));
    }
    let mut on: Vec<String> =
        r.on.iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    on.extend(r.status_codes.iter().map(u16::to_string));
    if !on.is_empty() {
        s.push_str(", on ");
        s.push_str(&on.join(", "));
    }
    s
}

fn hedge_summary(h: &HedgePolicy) -> String {
    let delay = match h.delay {
        HedgeDelay::Fixed(d) => format!("after {}", format_duration(d)),
        HedgeDelay::Percentile(p) => format!("after p{p} latency"),
    };
    format!(
        "up to {} attempts, {delay}, at most {:.0}% extra load",
        h.max_attempts,
        h.max_extra_load * 100.0
    )
}

fn listener_routes<'a>(view: &View, l: &'a ListenerConfig, q: &RoutesQuery) -> ListenerRoutes<'a> {
    ListenerRoutes {
        name: &l.name,
        protocol: protocol_name(l.protocol),
        address: view.listener_addr(&l.name, l.listen).to_string(),
        cluster: l.cluster.as_deref(),
        routes_total: l.routes.len(),
        routes: l.routes[crate::page::range(l.routes.len(), q.offset, q.limit)]
            .iter()
            .map(|r| RouteView {
                name: &r.name,
                matcher: &r.matcher,
                destination: &r.destination,
                clusters: route_clusters(r),
                timeout: format_duration(r.timeout),
                retry: r.retry.as_deref(),
                hedge: r.hedge.as_deref(),
                retry_summary: r.retry.as_deref().map(retry_summary),
                hedge_summary: r.hedge.as_deref().map(hedge_summary),
            })
            .collect(),
    }
}

pub(crate) async fn routes(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<RoutesQuery>,
) -> Response {
    let view = state.view();
    let listeners: Vec<ListenerRoutes<'_>> = view
        .config
        .listeners
        .iter()
        .filter(|l| q.listener.as_deref().is_none_or(|n| l.name == n))
        .map(|l| listener_routes(&view, l, &q))
        .collect();
    if let (Some(name), true) = (&q.listener, listeners.is_empty()) {
        return (StatusCode::NOT_FOUND, format!("no listener {name}\n")).into_response();
    }
    Json(&RoutesBody { listeners }).into_response()
}
