//! docs/metrics.md is the contract: every metric family it lists must be
//! exported by a proxy whose configuration exercises it. The test reads the
//! tables of the document (so a family added there is checked at once),
//! runs a proxy with an HTTP listener, a TCP listener, a cluster fed by a
//! real registry, one fed by a registry that is down, health checks and
//! tracing to a collector that is not there, sends traffic, scrapes
//! `/metrics` and names every documented family that has no series.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{TestProxy, cluster};
use http::Method;
use switchyard_discovery::Backoff;
use switchyard_proxy::DiscoveryOptions;
use switchyard_registry::{RegistryServer, store::embedded::EmbeddedStore};
use switchyard_test_support::{Backend, BackendConfig, client, free_addr, free_port};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(10);

/// A documented family: its name and type as the tables give them.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
}

/// Every `switchyard_*` row of every table in docs/metrics.md.
fn documented() -> Vec<Documented> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | labels | meaning |" splits into an empty cell,
        // four cells and an empty cell.
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(name) = cells[1]
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|n| n.starts_with("switchyard_"))
        else {
            continue;
        };
        out.push(Documented {
            name: name.to_owned(),
            kind: cells[2].to_owned(),
        });
    }
    assert!(
        out.len() >= 20,
        "found only {} families in {}: did the table format change?\n{out:?}",
        out.len(),
        path.display()
    );
    out
}

/// The exposition's `# TYPE` of each family and the names of its samples.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.push(line[..end].to_owned());
            }
        }
        Self { types, samples }
    }

    fn has_sample(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s == name)
    }

    /// What is wrong with one documented family, if anything.
    fn check(&self, d: &Documented) -> Option<String> {
        let name = d.name.as_str();
        match d.kind.as_str() {
            "counter" => {
                // Counters are exposed with their `_total` suffix, whether
                // the document writes it or not.
                let exposed = if name.ends_with("_total") {
                    name.to_owned()
                } else {
                    format!("{name}_total")
                };
                if !self.has_sample(&exposed) {
                    return Some(format!("{name} (counter): no `{exposed}` series"));
                }
                self.check_type(name, &exposed, "counter")
            }
            "gauge" => {
                if !self.has_sample(name) {
                    return Some(format!("{name} (gauge): no series"));
                }
                self.check_type(name, name, "gauge")
            }
            "histogram" => {
                let missing: Vec<String> = ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|suffix| format!("{name}{suffix}"))
                    .filter(|s| !self.has_sample(s))
                    .collect();
                if !missing.is_empty() {
                    return Some(format!(
                        "{name} (histogram): no {} series",
                        missing.join(", ")
                    ));
                }
                self.check_type(name, name, "histogram")
            }
            other => Some(format!("{name}: unknown type `{other}` in the document")),
        }
    }

    fn check_type(&self, documented: &str, exposed: &str, kind: &str) -> Option<String> {
        match self.types.get(exposed) {
            Some(k) if k == kind => None,
            Some(k) => Some(format!(
                "{documented}: documented as a {kind}, exported as a {k}"
            )),
            None => Some(format!("{documented}: no `# TYPE {exposed}` line")),
        }
    }
}

/// An embedded registry with one instance of `api` registered.
async fn registry_with(dir: &Path, instance: SocketAddr) -> SocketAddr {
    let addr = free_addr();
    let store = Arc::new(EmbeddedStore::open(dir).await.unwrap());
    let server = RegistryServer::bind_with_store(addr, store, None)
        .await
        .unwrap();
    tokio::spawn(server.run(std::future::pending::<()>()));
    let mut req = client::request(
        Method::PUT,
        "/v1/services/api/instances/a",
        Bytes::from(format!(r#"{{"address":"{instance}"}}"#)),
    );
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    let status = client::send_http1(addr, req).await.unwrap().status();
    assert!(status == 200 || status == 201, "register: {status}");
    addr
}

async fn scrape(admin: SocketAddr) -> String {
    let r = client::get(admin, "/metrics").await;
    assert_eq!(r.status(), 200);
    String::from_utf8(r.body().to_vec()).expect("utf-8")
}

/// The value of the one series of `name` for `cluster`.
fn cluster_value(text: &str, name: &str, cluster: &str) -> Option<f64> {
    let prefix = format!("{name}{{cluster=\"{cluster}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_family_is_exported() {
    let docs = documented();

    let api = Backend::start(BackendConfig::new("api-1")).await;
    let web = Backend::start(BackendConfig::new("web-1")).await;
    let echo = switchyard_test_support::tcp_echo(b"").await;
    let grpc_backend = switchyard_test_support::GrpcBackend::start("grpc-1").await;
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(dir.path(), api.addr()).await;
    // Nothing listens there: every read of this source fails.
    let refused = switchyard_test_support::RefusedAddr::new();
    let dead_registry = refused.addr();
    let collector = free_port();
    let toml = format!(
        r#"[tracing]
otlp_endpoint = "http://127.0.0.1:{collector}/v1/traces"
protocol = "http"
sample_ratio = 1.0

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

  [[listeners.routes]]
  name = "api"
  match = {{ path_prefix = "/api" }}
  cluster = "api"
  retry = {{ attempts = 2, on = ["5xx"] }}

  [[listeners.routes]]
  name = "grpc"
  match = {{ path_prefix = "/switchyard.test.v1.Echo/" }}
  cluster = "grpc"

  [[listeners.routes]]
  name = "web"
  cluster = "web"

  [[listeners.routes]]
  name = "gone"
  match = {{ path_prefix = "/gone" }}
  cluster = "gone"
  # Never drawn (ratio 0): the route only needs a fault policy for its
  # series to exist.
  fault = {{ delay = {{ ratio = 0.0, duration = "1s" }} }}

[[listeners]]
name = "raw"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "echo"

[[clusters]]
name = "api"
discovery = {{ registry = {{ url = "http://{registry}", service = "api" }} }}

[[clusters]]
name = "gone"
discovery = {{ registry = {{ url = "http://{dead_registry}", service = "api" }} }}

{}{}"#,
        cluster(
            "web",
            &[web.addr()],
            "health = { http = \"/healthz\", interval = \"100ms\", timeout = \"80ms\" }\n\
             outlier = { consecutive_failures = 5 }"
        ),
        cluster("echo", &[echo], "")
            + &cluster("grpc", &[grpc_backend.addr()], "protocol = \"http2\""),
    );
    let p = TestProxy::start_with(
        &toml,
        DiscoveryOptions {
            backoff: Backoff {
                base: Duration::from_millis(20),
                max: Duration::from_millis(100),
            },
            // The dead registry never answers; do not wait for it.
            initial_wait: Duration::from_millis(500),
        },
    )
    .await;
    let public = p.listener("public");

    // One failed answer from `api`, which its route retries: decision
    // series exist from a cluster's first decision.
    api.set_mode(switchyard_test_support::Mode::Status(503));
    let _ = client::get(public, "/api/retried").await;
    api.set_mode(switchyard_test_support::Mode::Ok);
    for path in ["/api/a", "/api/b", "/static", "/", "/gone"] {
        let _ = client::get(public, path).await;
    }
    // One gRPC call, for the per-status gRPC family.
    switchyard_test_support::grpc::client(public)
        .await
        .unary(switchyard_test_support::grpc::EchoRequest::default())
        .await
        .expect("gRPC call through the proxy");
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.listener("raw")).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }

    // Health checks and discovery retries run in the background; give them
    // time to record, then report everything still missing at once.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (text, problems) = loop {
        let text = scrape(p.admin).await;
        let s = Scrape::parse(&text);
        let problems: Vec<String> = docs.iter().filter_map(|d| s.check(d)).collect();
        let discovery_counted = cluster_value(&text, "switchyard_discovery_errors_total", "gone")
            .is_some_and(|v| v >= 1.0)
            && cluster_value(&text, "switchyard_discovery_updates_total", "api")
                .is_some_and(|v| v >= 1.0);
        if (problems.is_empty() && discovery_counted) || tokio::time::Instant::now() >= deadline {
            break (text, problems);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        problems.is_empty(),
        "{} of {} families documented in docs/metrics.md are not exported:\n  {}\n\n--- /metrics ---\n{text}",
        problems.len(),
        docs.len(),
        problems.join("\n  "),
    );
    // The other direction: a family exported with series but missing from
    // the document is as much a gap for an operator. (Families without
    // series are not in the exposition at all, so only what this
    // configuration exercises is checked.)
    let exported = Scrape::parse(&text);
    let undocumented: Vec<&str> = exported
        .types
        .keys()
        .map(String::as_str)
        .filter(|name| {
            !docs
                .iter()
                .any(|d| d.name == *name || format!("{}_total", d.name) == *name)
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "families exported but missing from docs/metrics.md: {undocumented:?}"
    );

    // Discovery counts what happened: the live registry delivered, the dead
    // one failed, and only the live one has an age.
    let value = |name: &str, cluster: &str| {
        cluster_value(&text, name, cluster)
            .unwrap_or_else(|| panic!("no {name}{{cluster=\"{cluster}\"}} in\n{text}"))
    };
    assert!(value("switchyard_discovery_updates_total", "api") >= 1.0);
    assert_eq!(value("switchyard_discovery_errors_total", "api"), 0.0);
    assert!(value("switchyard_discovery_errors_total", "gone") >= 1.0);
    assert_eq!(value("switchyard_discovery_updates_total", "gone"), 0.0);
    let age = value("switchyard_discovery_last_update_age_seconds", "api");
    assert!((0.0..60.0).contains(&age), "age {age}");
    assert!(
        cluster_value(
            &text,
            "switchyard_discovery_last_update_age_seconds",
            "gone"
        )
        .is_none(),
        "a source that never delivered has no age:\n{text}"
    );
    // Static clusters have no discovery task and export none of these.
    assert!(cluster_value(&text, "switchyard_discovery_updates_total", "web").is_none());
}
