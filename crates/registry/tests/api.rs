//! Every route of the registry API, good and bad input, on the embedded
//! store over real loopback HTTP.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{TestRegistry, call, call_with, ids, register};
use http::Method;
use switchyard_registry::{
    RegistryServer, StartError, StoreSpec,
    store::{Store, embedded::EmbeddedStore},
};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;

    // Register: 201 with the stored instance, then 200 for an update.
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/api-1",
        Some(r#"{"address":"127.0.0.1:9001","ttl":"30s","weight":3,"zone":"eu-1","metadata":{"version":"1.2"}}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.json);
    assert_eq!(a.json["id"], "api-1");
    assert_eq!(a.json["address"], "127.0.0.1:9001");
    assert_eq!(a.json["weight"], 3);
    assert_eq!(a.json["zone"], "eu-1");
    assert_eq!(a.json["metadata"]["version"], "1.2");
    assert_eq!(a.json["draining"], false);
    assert_eq!(a.json["ttl"], "30s");
    let a = register(r.addr, "api", "api-1", "127.0.0.1:9001", Some("30s")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["weight"], 1, "an update replaces the registration");
    assert_eq!(
        register(r.addr, "api", "api-2", "[::1]:9002", None)
            .await
            .status,
        201
    );
    assert_eq!(
        register(r.addr, "web", "w1", "127.0.0.1:8080", None)
            .await
            .status,
        201
    );

    // Get: instances, the index in the body and the header agree.
    let a = call(r.addr, Method::GET, "/v1/services/api", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["service"], "api");
    let index = a.json["index"].as_u64().unwrap();
    assert_eq!(
        a.headers["x-switchyard-index"].to_str().unwrap(),
        index.to_string()
    );
    assert_eq!(a.json["instances"].as_array().unwrap().len(), 2);
    assert!(
        a.json["instances"][1].get("ttl").is_none(),
        "permanent: no ttl"
    );

    // An unknown service has no instances (watchers can wait for it).
    let a = call(r.addr, Method::GET, "/v1/services/nobody", None).await;
    assert_eq!(
        (
            a.status.as_u16(),
            a.json["instances"].as_array().unwrap().len()
        ),
        (200, 0)
    );

    // List.
    let a = call(r.addr, Method::GET, "/v1/services", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["services"][0]["name"], "api");
    assert_eq!(a.json["services"][0]["instances"], 2);
    assert_eq!(a.json["services"][1]["name"], "web");
    assert!(a.headers.contains_key("x-switchyard-index"));

    // Heartbeat.
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/api-1/heartbeat",
        None,
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.json["id"].as_str()),
        (200, Some("api-1"))
    );
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/api-2/heartbeat",
        None,
    )
    .await;
    assert_eq!(
        a.status, 200,
        "a permanent registration heartbeats as a no-op"
    );

    // Drain, twice (idempotent).
    for _ in 0..2 {
        let a = call(
            r.addr,
            Method::PUT,
            "/v1/services/api/instances/api-1/drain",
            None,
        )
        .await;
        assert_eq!(
            (a.status.as_u16(), a.json["draining"].as_bool()),
            (200, Some(true))
        );
    }
    let a = call(r.addr, Method::GET, "/v1/services", None).await;
    assert_eq!(a.json["services"][0]["draining"], 1);

    // Deregister, then everything about that instance is 404.
    let a = call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/api-1",
        None,
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), &a.json),
        (204, &serde_json::Value::Null)
    );
    for (method, path) in [
        (Method::DELETE, "/v1/services/api/instances/api-1"),
        (Method::PUT, "/v1/services/api/instances/api-1/heartbeat"),
        (Method::PUT, "/v1/services/api/instances/api-1/drain"),
    ] {
        let a = call(r.addr, method.clone(), path, None).await;
        assert_eq!(
            (a.status.as_u16(), a.code()),
            (404, "not_found"),
            "{method} {path}"
        );
        assert!(a.message().contains("api/api-1"), "{}", a.message());
    }
    let (left, new_index) = ids(r.addr, "api").await;
    assert_eq!(left, ["api-2"]);
    assert!(new_index > index);

    // The OpenAPI document is served as JSON and is the one in the repo.
    let a = call(r.addr, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let repo: serde_json::Value = serde_json::from_str(switchyard_registry::OPENAPI).unwrap();
    assert_eq!(a.json, repo);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_says_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    let put = |path: &'static str, body: &'static str| async move {
        call(r.addr, Method::PUT, path, Some(body)).await
    };
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        (
            "/v1/services/bad%2Fname/instances/i1",
            r#"{"address":"127.0.0.1:1"}"#,
            400,
            "invalid_service",
            "bad/name",
        ),
        (
            "/v1/services/-api/instances/i1",
            r#"{"address":"127.0.0.1:1"}"#,
            400,
            "invalid_service",
            "starting with a letter or digit",
        ),
        (
            "/v1/services/api/instances/i%20d",
            r#"{"address":"127.0.0.1:1"}"#,
            400,
            "invalid_id",
            "i d",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"localhost:80"}"#,
            400,
            "invalid_address",
            "expected ip:port",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:0"}"#,
            400,
            "invalid_address",
            "port 0",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"0.0.0.0:80"}"#,
            400,
            "invalid_address",
            "unspecified",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","ttl":"soon"}"#,
            400,
            "invalid_ttl",
            "soon",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","ttl":"100ms"}"#,
            400,
            "invalid_ttl",
            "1s to 24h",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","weight":0}"#,
            400,
            "invalid_weight",
            "1 to 10000",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","weight":-1}"#,
            400,
            "invalid_json",
            "weight",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","zone":"a b"}"#,
            400,
            "invalid_zone",
            "a b",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","metadata":{"":"x"}}"#,
            400,
            "invalid_metadata",
            "key",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"127.0.0.1:80","colour":"red"}"#,
            400,
            "invalid_json",
            "colour",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"ttl":"10s"}"#,
            400,
            "invalid_json",
            "address",
        ),
        (
            "/v1/services/api/instances/i1",
            r#"{"address":"#,
            400,
            "invalid_json",
            "JSON",
        ),
    ];
    for (path, body, status, code, says) in cases {
        let a = put(path, body).await;
        assert_eq!(
            (a.status.as_u16(), a.code()),
            (*status, *code),
            "{path} {body}: {:?}",
            a.json
        );
        assert!(
            a.message().contains(says),
            "{path} {body}: message {:?} should mention {says:?}",
            a.message()
        );
    }

    // Not JSON at all: 415 without the content type.
    let a = call_with(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/i1",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.code()),
        (415, "unsupported_media_type")
    );

    // Oversize bodies are refused before parsing.
    let big = format!(
        r#"{{"address":"127.0.0.1:80","metadata":{{"k":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let a = call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/i1",
        Some(&big),
    )
    .await;
    assert_eq!((a.status.as_u16(), a.code()), (413, "payload_too_large"));

    // Queries.
    for (q, says) in [
        ("index=abc", "index"),
        ("index=1&wait=forever", "forever"),
        ("index=1&wait=11m", "at most"),
        ("stale=1", "stale"),
    ] {
        let a = call(r.addr, Method::GET, &format!("/v1/services/api?{q}"), None).await;
        assert_eq!((a.status.as_u16(), a.code()), (400, "invalid_query"), "{q}");
        assert!(a.message().contains(says), "{q}: {}", a.message());
    }
    let a = call(r.addr, Method::GET, "/v1/services/a%2Fb", None).await;
    assert_eq!((a.status.as_u16(), a.code()), (400, "invalid_service"));

    // Unknown routes and methods answer JSON too.
    let a = call(r.addr, Method::GET, "/v2/services", None).await;
    assert_eq!((a.status.as_u16(), a.code()), (404, "no_route"));
    let a = call(r.addr, Method::POST, "/v1/services/api", Some("{}")).await;
    assert_eq!((a.status.as_u16(), a.code()), (405, "method_not_allowed"));

    // Nothing of the above was stored.
    assert_eq!(ids(r.addr, "api").await.0, Vec::<String>::new());
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let r = TestRegistry::with_store(store, any_port(), Some("s3cret")).await;
    let body = Some(r#"{"address":"127.0.0.1:9001"}"#);
    let path = "/v1/services/api/instances/i1";

    let a = call(r.addr, Method::PUT, path, body).await;
    assert_eq!((a.status.as_u16(), a.code()), (401, "unauthorized"));
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let a = call_with(
        r.addr,
        Method::PUT,
        path,
        body,
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(a.status, 401);
    let a = call_with(r.addr, Method::DELETE, path, None, &[]).await;
    assert_eq!(a.status, 401, "deletes are writes");
    let a = call_with(
        r.addr,
        Method::PUT,
        path,
        body,
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(a.status, 201);
    // Reads stay open.
    assert_eq!(ids(r.addr, "api").await.0, ["i1"]);
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let err = RegistryServer::bind(switchyard_registry::ServerOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        store: StoreSpec::Embedded(dir.path().to_path_buf()),
        token: None,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::TokenRequired { .. }), "{err}");
    assert!(err.to_string().contains("--token-file"));
    // With a token it starts.
    let ok = RegistryServer::bind(switchyard_registry::ServerOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        store: StoreSpec::Embedded(dir.path().to_path_buf()),
        token: Some("t".into()),
    })
    .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let doc: serde_json::Value = serde_json::from_str(switchyard_registry::OPENAPI).unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut routed: Vec<(String, String)> = switchyard_registry::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routed.sort();
    assert_eq!(documented, routed, "openapi.json and ROUTES disagree");

    // Every documented operation is served: none answers no_route or 405,
    // and each answer's status is one the document lists for it.
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    for (method, path) in &routed {
        let concrete = path.replace("{service}", "api").replace("{id}", "i1");
        let body =
            (method == "PUT" && !concrete.ends_with("heartbeat") && !concrete.ends_with("drain"))
                .then_some(r#"{"address":"127.0.0.1:9001"}"#);
        let a = call(r.addr, method.parse().unwrap(), &concrete, body).await;
        assert!(
            !matches!(a.code(), "no_route" | "method_not_allowed"),
            "{method} {concrete}"
        );
        let listed = &doc["paths"][path.as_str()][method.to_lowercase()]["responses"];
        assert!(
            listed.get(a.status.as_str()).is_some(),
            "{method} {path} answered {} which the document does not list",
            a.status
        );
    }
}

#[tokio::test]
async fn blocking_query_waits_for_a_change_of_its_service_only() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    register(r.addr, "api", "a1", "127.0.0.1:9001", None).await;
    let (_, index) = ids(r.addr, "api").await;

    let addr = r.addr;
    let watch = tokio::spawn(async move {
        call(
            addr,
            Method::GET,
            &format!("/v1/services/api?index={index}&wait=30s"),
            None,
        )
        .await
    });
    // A change of another service does not answer the watch.
    register(r.addr, "web", "w1", "127.0.0.1:8080", None).await;
    let early = tokio::time::timeout(Duration::from_millis(300), async {
        while !watch.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        early.is_err(),
        "the watch answered without a change of its service"
    );

    register(r.addr, "api", "a2", "127.0.0.1:9002", None).await;
    let a = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch answers")
        .unwrap();
    assert_eq!(a.status, 200);
    let next = a.json["index"].as_u64().unwrap();
    assert!(next > index);
    assert_eq!(a.json["instances"].as_array().unwrap().len(), 2);

    // Without a change the watch answers the same set after `wait`.
    let a = call(
        r.addr,
        Method::GET,
        &format!("/v1/services/api?index={next}&wait=200ms"),
        None,
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.json["index"].as_u64()),
        (200, Some(next))
    );

    // An index from the future (the store was replaced) answers at once.
    let a = tokio::time::timeout(
        Duration::from_secs(2),
        call(
            r.addr,
            Method::GET,
            "/v1/services/api?index=999999&wait=60s",
            None,
        ),
    )
    .await
    .expect("answers at once");
    assert_eq!(a.json["index"].as_u64(), Some(next));
}

#[tokio::test]
async fn delta_answers_carry_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    for i in 1..=50 {
        register(
            r.addr,
            "api",
            &format!("a{i}"),
            &format!("127.0.0.1:{}", 9000 + i),
            None,
        )
        .await;
    }
    let a = call(r.addr, Method::GET, "/v1/services/api", None).await;
    let index = a.json["index"].as_u64().unwrap();
    assert_eq!(a.json["instances"].as_array().unwrap().len(), 50);

    let watch = |since: u64| {
        let addr = r.addr;
        tokio::spawn(async move {
            call(
                addr,
                Method::GET,
                &format!("/v1/services/api?index={since}&wait=30s&delta=true"),
                None,
            )
            .await
        })
    };
    // One instance changes, one goes, one comes: three entries, not 50.
    let w = watch(index);
    tokio::time::sleep(Duration::from_millis(100)).await;
    call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/a7",
        Some(r#"{"address":"127.0.0.1:9007","weight":9}"#),
    )
    .await;
    let a = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json["since"].as_u64(), Some(index));
    let first = a.json["index"].as_u64().unwrap();
    assert!(first > index);
    assert_eq!(a.json["changed"].as_array().unwrap().len(), 1, "{}", a.json);
    assert_eq!(a.json["changed"][0]["id"], "a7");
    assert_eq!(a.json["changed"][0]["weight"], 9);
    assert_eq!(a.json["removed"].as_array().unwrap().len(), 0);
    assert!(a.json.get("instances").is_none());

    let w = watch(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        call(
            r.addr,
            Method::DELETE,
            "/v1/services/api/instances/a3",
            None
        )
        .await
        .status,
        204
    );
    let a = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.json["since"].as_u64(), Some(first));
    assert_eq!(a.json["removed"], serde_json::json!(["a3"]));
    assert_eq!(a.json["changed"].as_array().unwrap().len(), 0);
    assert!(a.json["index"].as_u64().unwrap() > first);

    // An index no answer was given at (the first registration's): the
    // registry cannot know that list, so it answers the whole one.
    let a = call(
        r.addr,
        Method::GET,
        "/v1/services/api?index=1&wait=100ms&delta=true",
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.json.get("since").is_none(), "{}", a.json);
    assert_eq!(a.json["instances"].as_array().unwrap().len(), 49);
    // A bad value is refused like any other bad query.
    let a = call(
        r.addr,
        Method::GET,
        "/v1/services/api?index=1&delta=maybe",
        None,
    )
    .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn shutdown_answers_blocking_queries_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    let (_, index) = ids(r.addr, "api").await;
    let addr = r.addr;
    let mut watch = tokio::spawn(async move {
        call(
            addr,
            Method::GET,
            &format!("/v1/services/api?index={index}&wait=60s"),
            None,
        )
        .await
    });
    // The query is held (it has not answered) ...
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut watch)
            .await
            .is_err()
    );
    // ... until the server shuts down.
    let stopped = tokio::time::timeout(Duration::from_secs(5), r.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for the blocking query");
    assert_eq!(watch.await.unwrap().status, 200);
}

#[tokio::test]
async fn watchers_share_one_instance_list_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::embedded(dir.path(), any_port()).await;
    register(r.addr, "api", "a1", "127.0.0.1:9001", None).await;
    let store = r.store.clone();
    let a = store.service("api").await.unwrap();
    let b = store.service("api").await.unwrap();
    // Read twice without a change: one list, not two copies.
    assert!(Arc::ptr_eq(&a.instances, &b.instances));
    // Every kind of change gives a new list with the change in it.
    register(r.addr, "api", "a2", "127.0.0.1:9002", None).await;
    let c = store.service("api").await.unwrap();
    assert!(!Arc::ptr_eq(&a.instances, &c.instances));
    assert_eq!(c.instances.len(), 2);
    call(
        r.addr,
        Method::PUT,
        "/v1/services/api/instances/a2/drain",
        None,
    )
    .await;
    let d = store.service("api").await.unwrap();
    assert!(d.instances.iter().any(|i| i.id == "a2" && i.draining));
    call(
        r.addr,
        Method::DELETE,
        "/v1/services/api/instances/a1",
        None,
    )
    .await;
    let e = store.service("api").await.unwrap();
    assert_eq!(e.instances.len(), 1);
}
