//! Distributed tracing against a real OTLP backend nobody here wrote:
//! Arize Phoenix (from PyPI) receives spans from two chained proxies, and
//! the trace it stores has the expected parent/child structure.

mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{TestProxy, cluster};
use switchyard_test_support::{
    Backend, BackendConfig,
    client::get,
    phoenix::{Span, spans_of, start_phoenix},
    wait_for,
};

/// A proxy exporting to `endpoint` over `protocol` ("http" or "grpc").
fn route_proxy(service: &str, protocol: &str, endpoint: &str, upstream: SocketAddr) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\nservice_name = \"{service}\"\nsample_ratio = 1.0\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n  [[listeners.routes]]\n  name = \"{service}-route\"\n  cluster = \"api\"\n\n{}",
        cluster("api", &[upstream], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chained_proxies_produce_one_connected_trace() {
    // Arize Phoenix serves OTLP/HTTP on its HTTP port and OTLP/gRPC on its
    // gRPC port.
    let (_phoenix, phoenix, phoenix_grpc, _dir) = start_phoenix().await;
    let backend = Backend::start(BackendConfig::new("b")).await;
    // One hop exports over OTLP/HTTP, the other over OTLP/gRPC: both
    // exporters must land in the same trace.
    let http = format!("http://{phoenix}/v1/traces");
    let grpc = format!("http://{phoenix_grpc}");
    let hop_b = TestProxy::start(&route_proxy("hop-b", "http", &http, backend.addr())).await;
    let hop_a = TestProxy::start(&route_proxy("hop-a", "grpc", &grpc, hop_b.addr)).await;

    let r = get(hop_a.addr, "/traced").await;
    assert_eq!(r.status(), 200);
    let tp = backend
        .last_request()
        .unwrap()
        .header("traceparent")
        .expect("traceparent reaches the backend")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    let trace_id = parts[1].to_owned();
    assert_eq!(parts[3], "01", "sampled");

    let spans = wait_for(
        Duration::from_secs(30),
        "four spans of the trace in phoenix",
        || {
            let trace_id = trace_id.clone();
            async move {
                let s = spans_of(phoenix, &trace_id).await;
                (s.len() >= 4).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_id.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    let a_server = roots[0];
    assert_eq!(a_server.name, "GET hop-a-route");
    let child_of = |parent: &Span| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.parent_id.as_deref() == Some(parent.span_id.as_str()))
            .collect()
    };
    let a_attempt = child_of(a_server);
    assert_eq!(a_attempt.len(), 1, "{spans:#?}");
    assert_eq!(a_attempt[0].name, "GET");
    let b_server = child_of(a_attempt[0]);
    assert_eq!(b_server.len(), 1, "{spans:#?}");
    assert_eq!(b_server[0].name, "GET hop-b-route");
    let b_attempt = child_of(b_server[0]);
    assert_eq!(b_attempt.len(), 1, "{spans:#?}");
    // The backend's parent is hop B's attempt span.
    assert_eq!(parts[2], b_attempt[0].span_id, "{spans:#?}");
    assert!(by_id.contains_key(parts[2]));
}
