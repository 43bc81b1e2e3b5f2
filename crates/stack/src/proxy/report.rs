//! What is reported once a request is over: the gRPC status counter, the
//! access-log line and the server span.
//!
//! Plain HTTP requests are reported when their response head is sent. A
//! gRPC call's outcome is its `grpc-status`, which arrives in the trailers
//! after the messages unless the answer is trailers-only; such a call is
//! reported when the trailers (or the end of the stream) go by, through a
//! hook on the response body.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Version};
use opentelemetry::KeyValue;
use switchyard_telemetry::{
    RouteMetrics,
    metrics::{grpc_code_name, grpc_is_server_error},
    trace::{RequestTrace, Tracer},
};
use tracing::info;

use super::{AttemptLog, ConnInfo, headers};
use crate::{
    body::{GrpcEnd, OnGrpcEnd},
    cluster::Cluster,
    error::ErrorKind,
};

/// Request facts kept for the access log and the server span.
#[derive(Debug)]
pub(super) struct RequestDetail {
    path: String,
    authority: Option<String>,
    request_id: Option<String>,
    version: &'static str,
}

impl RequestDetail {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        Self {
            path: req.uri().path().to_owned(),
            authority: crate::route::request_host(req).map(str::to_owned),
            request_id: req
                .headers()
                .get(&headers::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            version: match req.version() {
                Version::HTTP_2 => "2",
                Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        }
    }
}

/// Everything reported about one request once it is over.
#[derive(Debug)]
pub(super) struct Report {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    /// Set for gRPC calls, whose status is counted per route.
    pub metrics: Option<RouteMetrics>,
    pub cluster: Arc<Cluster>,
    pub method: Method,
    /// Set when the access log or a sampled span needs it.
    pub detail: Option<RequestDetail>,
    pub status: u16,
    /// The response's Content-Length, when known.
    pub bytes: Option<u64>,
    /// Time to the response head.
    pub elapsed: Duration,
    pub log: AttemptLog,
    /// The failure the proxy answered for, if it did.
    pub error: Option<ErrorKind>,
    pub conn: ConnInfo,
    pub access_log: bool,
    pub trace: Option<(Arc<Tracer>, RequestTrace)>,
}

impl OnGrpcEnd for Report {
    fn grpc_end(self: Box<Self>, end: GrpcEnd) {
        self.finish(Some(end));
    }
}

impl Report {
    /// Reports the request; `grpc` is how a gRPC call ended.
    pub(super) fn finish(self, grpc: Option<GrpcEnd>) {
        let code = grpc.map(GrpcEnd::code);
        if let (Some(m), Some(code)) = (&self.metrics, code) {
            m.record_grpc(code);
        }
        let Some(d) = &self.detail else {
            return;
        };
        if self.access_log {
            self.access_log(d, code);
        }
        if let Some((tracer, t)) = &self.trace {
            if t.sampled {
                self.end_span(tracer, t, d, code);
            }
        }
    }

    /// Why the request failed, for logs and spans: the proxy's own error
    /// kind, else a server-side gRPC status, else a 5xx from the upstream.
    fn error_name(&self, code: Option<u32>) -> Option<&'static str> {
        if let Some(kind) = self.error {
            return Some(kind.as_str());
        }
        match code {
            Some(c) if grpc_is_server_error(c) => Some(grpc_code_name(c)),
            _ => (self.status >= 500).then_some("http_5xx"),
        }
    }

    /// One line per request, JSON when the log format is JSON. Written
    /// through the non-blocking log writer, so a slow log sink drops lines
    /// rather than delaying requests.
    fn access_log(&self, d: &RequestDetail, code: Option<u32>) {
        let log = &self.log;
        info!(
            target: "switchyard::access",
            listener = &*self.listener,
            method = self.method.as_str(),
            authority = d.authority.as_deref(),
            path = d.path.as_str(),
            protocol = d.version,
            status = self.status,
            grpc_status = code,
            duration_ms = self.elapsed.as_secs_f64() * 1000.0,
            bytes = self.bytes,
            route = &*self.route,
            cluster = self.cluster.name(),
            endpoint = log.endpoint.map(|e| e.to_string()),
            attempts = log.attempts,
            retries = log.retries,
            hedges = log.hedges,
            retry_refused = log.retry_refused.map(|d| d.as_str()),
            error = self.error_name(code),
            request_id = d.request_id.as_deref(),
            client_identity = self.conn.identity.as_deref(),
            trace_id = self.trace.as_ref().map(|(_, t)| format!("{:032x}", t.trace_id)),
            span_id = self.trace.as_ref().map(|(_, t)| format!("{:016x}", t.span_id)),
        );
    }

    /// Ends the request's server span with OpenTelemetry's HTTP and RPC
    /// semantic-convention attributes.
    fn end_span(&self, tracer: &Tracer, t: &RequestTrace, d: &RequestDetail, code: Option<u32>) {
        let log = &self.log;
        let mut attrs = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.path", d.path.clone()),
            KeyValue::new("url.scheme", self.conn.proto),
            KeyValue::new("http.route", self.route.to_string()),
            KeyValue::new("network.protocol.version", d.version),
            KeyValue::new("client.address", self.conn.peer.ip().to_string()),
            KeyValue::new("http.response.status_code", i64::from(self.status)),
            KeyValue::new("switchyard.listener", self.listener.to_string()),
            KeyValue::new("switchyard.cluster", self.cluster.name().to_owned()),
            KeyValue::new("switchyard.attempts", i64::from(log.attempts)),
            KeyValue::new("switchyard.retries", i64::from(log.retries)),
            KeyValue::new("switchyard.hedges", i64::from(log.hedges)),
        ];
        if let Some(a) = &d.authority {
            attrs.push(KeyValue::new("server.address", a.clone()));
        }
        if let Some(id) = &self.conn.identity {
            attrs.push(KeyValue::new("switchyard.client.identity", id.to_string()));
        }
        if let Some(ep) = log.endpoint {
            attrs.push(KeyValue::new("switchyard.endpoint", ep.to_string()));
        }
        if let Some(code) = code {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            attrs.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        }
        tracer.end_request(
            t,
            format!("{} {}", self.method, self.route),
            attrs,
            self.error_name(code),
        );
    }
}
