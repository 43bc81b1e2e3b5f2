//! An in-process registry on loopback and a JSON client for tests.
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;
use switchyard_registry::{
    RegistryServer,
    store::{Store, embedded::EmbeddedStore},
};
use switchyard_test_support::client;
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestRegistry {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestRegistry {
    /// An embedded registry in `dir` on `addr` (port 0 for any).
    pub async fn embedded(dir: &Path, addr: SocketAddr) -> Self {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir).await.expect("store opens"));
        Self::with_store(store, addr, None).await
    }

    pub async fn with_store(store: Arc<dyn Store>, addr: SocketAddr, token: Option<&str>) -> Self {
        let server = RegistryServer::bind_with_store(addr, store.clone(), token.map(str::to_owned))
            .await
            .expect("registry binds")
            .max_wait(Duration::from_secs(60));
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            stop: Some(stop),
            join: Some(join),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the listener is closed and the store
    /// released.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            j.await.expect("server task").expect("server ran");
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// An answer: status, headers and the body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Answer {
    /// The `error` code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }
}

/// Sends one request; `body` as JSON (content type set) when given.
pub async fn call(addr: SocketAddr, method: Method, path: &str, body: Option<&str>) -> Answer {
    call_with(addr, method, path, body, &[]).await
}

pub async fn call_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client::request(
        method.clone(),
        path,
        Bytes::from(body.unwrap_or("").to_owned()),
    );
    if body.is_some() {
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    }
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let resp = client::send_http1(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = if resp.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(resp.body()).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(resp.body())
            )
        })
    };
    Answer {
        status: resp.status(),
        headers: resp.headers().clone(),
        json,
    }
}

/// Registers `service/id` at `address` with an optional TTL.
pub async fn register(
    addr: SocketAddr,
    service: &str,
    id: &str,
    address: &str,
    ttl: Option<&str>,
) -> Answer {
    let body = match ttl {
        Some(t) => format!(r#"{{"address":"{address}","ttl":"{t}"}}"#),
        None => format!(r#"{{"address":"{address}"}}"#),
    };
    call(
        addr,
        Method::PUT,
        &format!("/v1/services/{service}/instances/{id}"),
        Some(&body),
    )
    .await
}

/// The instance ids of a service, sorted, and the answer's index.
pub async fn ids(addr: SocketAddr, service: &str) -> (Vec<String>, u64) {
    let a = call(addr, Method::GET, &format!("/v1/services/{service}"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let mut ids: Vec<String> = a.json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (ids, a.json["index"].as_u64().unwrap())
}
