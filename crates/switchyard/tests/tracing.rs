//! The library client's traces in a real OTLP backend (Arize Phoenix): a
//! call span continuing the caller's trace, with a client span per
//! attempt, and the last attempt's context reaching the endpoint.

use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt;
use switchyard::{Body, Client};
use switchyard_test_support::{
    Backend, BackendConfig, Mode,
    phoenix::{spans_of, start_phoenix},
    wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_call_is_a_span_with_a_child_per_attempt() {
    let (_phoenix, phoenix, _grpc, _dir) = start_phoenix().await;
    let failing = Backend::start(BackendConfig::new("failing").mode(Mode::Status(503))).await;
    let good = Backend::start(BackendConfig::new("good")).await;
    let config = switchyard::config::parse(
        &format!(
            "[tracing]\notlp_endpoint = \"http://{phoenix}/v1/traces\"\nprotocol = \"http\"\nservice_name = \"lib\"\n\n\
             [[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\ndiscovery = {{ static = [\"{}\", \"{}\"] }}\n",
            failing.addr(),
            good.addr()
        ),
        "client.toml",
    )
    .unwrap();
    let tracer = switchyard_telemetry::trace::Tracer::start(config.tracing.as_ref().unwrap(), None)
        .expect("tracer");
    let client = Client::builder(&config.clusters[0])
        .retry(switchyard::config::RetryPolicy {
            on: vec![switchyard::config::RetryOn::GatewayError],
            ..switchyard::config::RetryPolicy::default()
        })
        .tracer(Arc::clone(&tracer))
        .build()
        .unwrap();
    // The caller's context, as a handler would pass on from its request:
    // sampled, so the default 10% ratio does not apply. Round-robin starts
    // somewhere: of two calls, one meets the failing endpoint first and is
    // retried on the good one.
    let caller_span = "00f067aa0ba902b7";
    let mut traced = None;
    for trace_id in [
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "5bf92f3577b34da6a3ce929d0e0e4737",
    ] {
        let before = failing.requests();
        let req = http::Request::get("/traced")
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .body(Body::empty())
            .unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        if failing.requests() > before {
            traced = Some(trace_id);
            break;
        }
    }
    let trace_id = traced.expect("one call was retried");
    let upstream = good
        .last_request()
        .unwrap()
        .header("traceparent")
        .expect("traceparent reaches the endpoint")
        .to_owned();
    assert!(
        upstream.starts_with(&format!("00-{trace_id}-")),
        "{upstream}"
    );

    let spans = wait_for(
        Duration::from_secs(30),
        "three spans in phoenix",
        || async move {
            let s = spans_of(phoenix, trace_id).await;
            (s.len() >= 3).then_some(s)
        },
    )
    .await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let call = spans
        .iter()
        .find(|s| s.name == "GET api")
        .unwrap_or_else(|| panic!("no call span: {spans:#?}"));
    assert_eq!(call.parent_id.as_deref(), Some(caller_span), "{spans:#?}");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_id.as_deref() == Some(call.span_id.as_str()))
        .collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    // The endpoint's parent is the second attempt.
    let parent = upstream.split('-').nth(2).unwrap();
    assert!(attempts.iter().any(|a| a.span_id == parent), "{spans:#?}");
}
