//! The library client balances over real backends.

use http_body_util::BodyExt;
use switchyard::{Body, Client, ErrorKind};
use switchyard_test_support::{Backend, BackendConfig, RefusedAddr};

#[tokio::test]
async fn client_balances_and_classifies_errors() {
    let a = Backend::start(BackendConfig::new("a")).await;
    let b = Backend::start(BackendConfig::new("b")).await;
    let config = switchyard::config::parse(
        &format!(
            "[[clusters]]\nname = \"api\"\nbalance = \"round-robin\"\ndiscovery = {{ static = [\"{}\", \"{}\"] }}\n",
            a.addr(),
            b.addr()
        ),
        "client.toml",
    )
    .unwrap();
    let client = Client::new(&config.clusters[0]);
    for _ in 0..10 {
        let req = http::Request::get("/x").body(Body::empty()).unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!((a.requests(), b.requests()), (5, 5));
    assert_eq!(a.last_request().unwrap().header("host"), Some("api"));

    let refused = RefusedAddr::new();
    let dead = refused.addr();
    client.update(&[switchyard::stack::cluster::EndpointSpec {
        addr: dead,
        weight: 1,
        draining: false,
    }]);
    let req = http::Request::get("/x").body(Body::empty()).unwrap();
    let err = client.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);
    assert_eq!(err.endpoint(), Some(dead));
}
