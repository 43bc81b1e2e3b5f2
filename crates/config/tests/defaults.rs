//! Every default documented in `model.rs` is what the parser fills in.

use std::time::Duration;

use switchyard_config::*;

fn parse_ok(source: &str) -> Config {
    parse(source, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

const CLUSTER: &str = r#"
[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:9001"] }
"#;

#[test]
fn empty_file_is_all_defaults() {
    let config = parse_ok("");
    assert_eq!(config, Config::default());
    assert_eq!(config.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.runtime.workers, None);
    assert_eq!(config.runtime.shutdown_grace, Duration::from_secs(20));
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, None);
    assert!(!config.log.access_log);
}

#[test]
fn admin_only_is_valid() {
    let config = parse_ok("[admin]\nlisten = \"0.0.0.0:9000\"\n");
    assert_eq!(config.admin.listen, "0.0.0.0:9000".parse().unwrap());
    assert!(config.listeners.is_empty());
}

#[test]
fn admin_token_file_is_optional() {
    assert_eq!(parse_ok("").admin.token_file, None);
    let config = parse_ok("[admin]\ntoken_file = \"/run/secrets/admin\"\n");
    assert_eq!(
        config.admin.token_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/admin"))
    );
}

#[test]
fn top_level_sections_read_every_key() {
    let config = parse_ok(
        r#"
[runtime]
workers = 1
shutdown_grace = "5s"
[log]
level = "debug,hyper=warn"
format = "json"
access_log = true
"#,
    );
    assert_eq!(config.runtime.workers, Some(1));
    assert_eq!(config.runtime.shutdown_grace, Duration::from_secs(5));
    assert_eq!(config.log.level, "debug,hyper=warn");
    assert_eq!(config.log.format, Some(LogFormat::Json));
    assert!(config.log.access_log);
}

#[test]
fn listener_route_and_cluster_defaults() {
    let source = format!(
        r#"
[[listeners]]
name = "web"
listen = "[::1]:8080"
  [[listeners.routes]]
  cluster = "api"
{CLUSTER}"#
    );
    let config = parse_ok(&source);
    let listener = &config.listeners[0];
    assert_eq!(listener.listen, "[::1]:8080".parse().unwrap());
    assert_eq!(listener.protocol, ListenerProtocol::Http);
    assert_eq!(listener.http, HttpServerConfig::default());
    assert_eq!(listener.http.max_header_bytes, 64 * 1024);
    assert_eq!(listener.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(listener.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(listener.http.max_connection_age, None);
    assert_eq!(listener.http.max_concurrent_streams, 100);
    assert_eq!(listener.http.max_connections, 10_000);
    assert_eq!(listener.http.send_timeout, Duration::from_secs(30));
    assert_eq!(listener.http.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(listener.http.max_requests_per_client, 256);
    assert_eq!(listener.tcp_idle_timeout, Duration::from_secs(3600));
    assert_eq!(listener.udp_session_timeout, Duration::from_secs(60));

    let route = &listener.routes[0];
    assert_eq!(route.name, "web/0");
    assert_eq!(route.matcher, RouteMatch::default());
    assert_eq!(route.timeout, Duration::from_secs(15));
    assert_eq!(route.retry, None);
    assert_eq!(route.hedge, None);

    let cluster = &config.clusters[0];
    assert_eq!(cluster.balance, BalanceStrategy::P2cPeakEwma);
    assert_eq!(cluster.hash, None);
    assert_eq!(cluster.protocol, UpstreamProtocol::Http1);
    assert_eq!(cluster.connect_timeout, Duration::from_secs(1));
    assert_eq!(cluster.idle_timeout, Duration::from_secs(4));
    assert_eq!(cluster.max_idle_per_endpoint, 1024);
    assert_eq!(
        cluster.retry_budget,
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10)
        }
    );
    assert_eq!(
        cluster.limits,
        Limits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 256
        }
    );
    assert_eq!(cluster.outlier, None);
    assert_eq!(cluster.health, None);
}

#[test]
fn empty_policy_tables_get_documented_defaults() {
    let source = r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
  [[listeners.routes]]
  match = {}
  cluster = "api"
  retry = {}
  hedge = { delay = "50ms" }
[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:9001"] }
outlier = {}
health = { tcp = true }
"#;
    let config = parse_ok(source);
    let route = &config.listeners[0].routes[0];
    assert_eq!(
        route.retry.as_deref(),
        Some(&RetryPolicy {
            attempts: 3,
            per_try_timeout: None,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::Unavailable
            ],
            status_codes: vec![],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            non_idempotent: false,
            max_replay_bytes: 65536,
            retry_retried: false,
        })
    );
    assert_eq!(
        route.hedge.as_deref(),
        Some(&HedgePolicy {
            delay: HedgeDelay::Fixed(Duration::from_millis(50)),
            max_attempts: 2,
            max_extra_load: 0.1,
        })
    );
    let cluster = &config.clusters[0];
    assert_eq!(
        cluster.outlier,
        Some(OutlierPolicy {
            consecutive_failures: 5,
            failure_rate: None,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        })
    );
    assert_eq!(
        cluster.health,
        Some(HealthCheck {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            healthy: 2,
            unhealthy: 3,
        })
    );
}

#[test]
fn every_optional_key_is_read() {
    let config = parse_ok(
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
http = { max_header_bytes = 8192, header_read_timeout = "5s", idle_timeout = "30s", max_connection_age = "10m", max_concurrent_streams = 250, max_connections = 500 }
  [[listeners.routes]]
  name = "canary"
  match = { host = "*.Example.com", path = "/v1/items", method = ["get", "HEAD"], headers = { "X-Env" = "canary" } }
  split = [{ cluster = "a", weight = 90 }, { cluster = "b", weight = 10 }]
  retry = { attempts = 2, on = ["gateway-error", "cancelled"], status_codes = [429], backoff = { base = "10ms", max = "1s" }, non_idempotent = true, max_replay_bytes = 0, retry_retried = true }
  hedge = { percentile = 95, max_attempts = 3, max_extra_load = 0.5 }
[[listeners]]
name = "dns"
listen = "127.0.0.1:8053"
protocol = "udp"
cluster = "b"
udp_session_timeout = "30s"
[[listeners]]
name = "db"
listen = "127.0.0.1:8080"
protocol = "udp"
cluster = "b"
[[clusters]]
name = "a"
discovery = { static = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }] }
balance = "ring-hash"
hash = { header = "X-User" }
protocol = "http2"
connect_timeout = "250ms"
idle_timeout = "2s"
max_idle_per_endpoint = 0
limits = { max_retries = 7 }
outlier = { failure_rate = 0.5, window = "30s", max_ejection = "1m" }
health = { http = "/ready", expected_statuses = [200, 204], interval = "5s", timeout = "1s", healthy = 1, unhealthy = 1 }
[[clusters]]
name = "b"
discovery = { dns = { name = "b.example.internal:53" } }
balance = "maglev"
hash = "source-ip"
health = { grpc = "" }
"#,
    );
    let web = &config.listeners[0];
    assert_eq!(web.http.max_header_bytes, 8192);
    assert_eq!(web.http.max_connection_age, Some(Duration::from_secs(600)));
    assert_eq!(web.http.max_concurrent_streams, 250);
    let route = &web.routes[0];
    assert_eq!(route.name, "canary");
    assert_eq!(route.matcher.host.as_deref(), Some("*.example.com"));
    assert_eq!(
        route.matcher.path,
        Some(PathMatch::Exact("/v1/items".into()))
    );
    assert_eq!(route.matcher.methods, ["GET", "HEAD"]);
    assert_eq!(
        route.matcher.headers.get("x-env").map(String::as_str),
        Some("canary")
    );
    assert_eq!(
        route.destination,
        Destination::Split(vec![
            WeightedCluster {
                cluster: "a".into(),
                weight: 90
            },
            WeightedCluster {
                cluster: "b".into(),
                weight: 10
            },
        ])
    );
    let retry = route.retry.as_ref().expect("retry is set");
    assert_eq!(retry.on, [RetryOn::GatewayError, RetryOn::Cancelled]);
    assert_eq!(retry.status_codes, [429]);
    assert_eq!(retry.backoff_max, Duration::from_secs(1));
    assert!(retry.non_idempotent && retry.retry_retried);
    assert_eq!(retry.max_replay_bytes, 0);
    let hedge = route.hedge.as_ref().expect("hedge is set");
    assert_eq!(hedge.delay, HedgeDelay::Percentile(95.0));
    assert_eq!((hedge.max_attempts, hedge.max_extra_load), (3, 0.5));

    // A UDP listener may share a port number with a TCP one.
    assert_eq!(config.listeners[2].protocol, ListenerProtocol::Udp);
    assert_eq!(
        config.listeners[1].udp_session_timeout,
        Duration::from_secs(30)
    );

    let a = &config.clusters[0];
    assert_eq!(a.hash, Some(HashOn::Header("x-user".into())));
    assert_eq!(a.protocol, UpstreamProtocol::Http2);
    assert_eq!(a.max_idle_per_endpoint, 0);
    assert_eq!(a.limits.max_retries, 7);
    assert_eq!(a.limits.max_connections, 1024);
    let Discovery::Static(endpoints) = &a.discovery else {
        panic!("static discovery expected")
    };
    assert_eq!(endpoints[1].weight, 3);
    let outlier = a.outlier.as_ref().expect("outlier is set");
    assert_eq!(outlier.failure_rate, Some(0.5));
    assert_eq!(outlier.max_ejection, Duration::from_secs(60));
    let health = a.health.as_ref().expect("health is set");
    assert_eq!(
        health.kind,
        HealthCheckKind::Http {
            path: "/ready".into(),
            expected_statuses: vec![200, 204]
        }
    );
    let b = &config.clusters[1];
    assert_eq!(
        b.discovery,
        Discovery::Dns(DnsDiscovery::new(DnsLookup::Name(
            "b.example.internal:53".into()
        )))
    );
    assert_eq!(b.hash, Some(HashOn::SourceIp));
    assert_eq!(
        b.health.as_ref().map(|h| &h.kind),
        Some(&HealthCheckKind::Grpc {
            service: String::new()
        })
    );
}

#[test]
fn single_method_string_is_accepted() {
    let source = format!(
        "[[listeners]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\n[[listeners.routes]]\nmatch = {{ method = \"post\" }}\ncluster = \"api\"\n{CLUSTER}"
    );
    assert_eq!(
        parse_ok(&source).listeners[0].routes[0].matcher.methods,
        ["POST"]
    );
}

#[test]
fn tracing_section_defaults_and_errors() {
    let cfg = switchyard_config::parse(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\n",
        "t.toml",
    )
    .unwrap();
    let t = cfg.tracing.expect("tracing configured");
    assert_eq!(t.protocol, switchyard_config::OtlpProtocol::Grpc);
    assert_eq!(t.sample_ratio, 0.1);
    assert_eq!(t.queue_size, 4096);
    assert_eq!(t.service_name, "switchyard");
    assert!(
        switchyard_config::parse("", "t.toml")
            .unwrap()
            .tracing
            .is_none()
    );
    let errs = switchyard_config::parse(
        "[tracing]\notlp_endpoint = \"127.0.0.1:4317\"\nsample_ratio = 2.0\nprotocol = \"udp\"\n",
        "t.toml",
    )
    .unwrap_err();
    assert_eq!(errs.errors.len(), 3, "{errs}");
    let missing =
        switchyard_config::parse("[tracing]\nsample_ratio = 0.5\n", "t.toml").unwrap_err();
    assert!(
        missing
            .errors
            .iter()
            .any(|e| e.path.contains("otlp_endpoint")),
        "{missing}"
    );
}

#[test]
fn dns_discovery_takes_servers_and_ttl_bounds() {
    let config = parse_ok(
        "[[clusters]]\nname = \"a\"\ndiscovery = { dns = { srv = \"_http._tcp.api.internal\", servers = [\"127.0.0.1:5353\", \"[::1]:53\"], min_ttl = \"250ms\", max_ttl = \"30s\", timeout = \"1s\" } }\n",
    );
    let Discovery::Dns(dns) = &config.clusters[0].discovery else {
        panic!("not dns: {:?}", config.clusters[0].discovery);
    };
    assert_eq!(dns.lookup, DnsLookup::Srv("_http._tcp.api.internal".into()));
    assert_eq!(
        dns.servers,
        vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(
        (dns.min_ttl, dns.max_ttl, dns.timeout),
        (
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(1)
        )
    );
}
