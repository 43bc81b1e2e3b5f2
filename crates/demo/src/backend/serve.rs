//! The serving side of a demo backend: the accept loop, and the HTTP and gRPC
//! handlers with their latency and injected errors.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::codegen::Service as _;
use tonic::server::NamedService as _;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use super::{Inner, Protocol, lock};
use crate::pb::inventory_server::{Inventory, InventoryServer};
use crate::pb::{GetItemRequest, Item};

pub(super) async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(serve_connection(inner.clone(), stream));
            }
            // E.g. EMFILE: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    drop(listener);
    // Aborts every connection: a crash, not a drain.
    conns.shutdown().await;
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    // Latencies are a few ms; Nagle would add 40 ms stalls to small writes.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connection errors (a client that went away) are routine and need no
    // reporting: the load generator accounts for every failed request.
    let _ = match inner.protocol {
        Protocol::Http => {
            let svc = service_fn(move |req| answer_http(inner.clone(), req));
            builder.serve_connection(io, svc).await
        }
        Protocol::Grpc => {
            let health =
                HealthServer::new(HealthService::from_health_reporter(inner.health.clone()));
            let inventory = InventoryServer::new(InventoryService { inner });
            // A two-service router by path prefix, all tonic's `Routes` would
            // do here, without a second server stack.
            let svc = service_fn(move |req: Request<Incoming>| {
                let is_health = req
                    .uri()
                    .path()
                    .strip_prefix('/')
                    .and_then(|p| p.strip_prefix(HealthServer::<HealthService>::NAME))
                    .is_some_and(|rest| rest.starts_with('/'));
                let (mut health, mut inventory) = (health.clone(), inventory.clone());
                async move {
                    if is_health {
                        health.call(req).await
                    } else {
                        inventory.call(req).await
                    }
                }
            });
            builder.serve_connection(io, svc).await
        }
    };
}

async fn answer_http(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path();
    let (status, content_type, body) = if path == "/healthz" {
        (StatusCode::OK, "text/plain", Bytes::from_static(b"ok"))
    } else if path.starts_with("/api/") && req.method() == Method::GET {
        inner.pause().await;
        if inner.should_fail() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"injected failure"),
            )
        } else {
            let body = serde_json::json!({ "backend": inner.name, "path": path });
            inner.served.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                "application/json",
                Bytes::from(body.to_string()),
            )
        }
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found"),
        )
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// The gRPC `Inventory` service of one backend.
#[derive(Debug)]
struct InventoryService {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn get_item(
        &self,
        request: tonic::Request<GetItemRequest>,
    ) -> Result<tonic::Response<Item>, tonic::Status> {
        let sku = request.into_inner().sku;
        self.inner.pause().await;
        if self.inner.should_fail() {
            // Returned before any message, so tonic answers trailers-only:
            // the status is in the response head, where a proxy can see it.
            return Err(tonic::Status::unavailable("injected failure"));
        }
        // A stable fake stock level, so repeated lookups look consistent.
        let quantity = sku
            .bytes()
            .fold(7u32, |acc, b| acc.wrapping_mul(31) ^ u32::from(b))
            % 100;
        self.inner.served.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(Item {
            name: format!("item {sku}"),
            sku,
            quantity,
            served_by: self.inner.name.clone(),
        }))
    }
}

impl Inner {
    /// Waits the backend's answer latency.
    async fn pause(&self) {
        let (min, max) = *lock(&self.latency_us);
        let wait = fastrand::u64(min..=max);
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
    }

    /// Draws whether this request fails on purpose, and counts it if so.
    fn should_fail(&self) -> bool {
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        let fail = ppm > 0 && fastrand::u32(0..1_000_000) < ppm;
        if fail {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }
}
