//! The documented example (`examples/proxy.toml`) parses to exactly the
//! values it spells out, with defaults everywhere else.

use std::path::Path;
use std::time::Duration;

use switchyard_config::*;

fn example_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/proxy.toml"
    ))
}

fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().expect("test addresses are valid")
}

fn expected() -> Config {
    let public = ListenerConfig {
        name: "public".into(),
        listen: addr("127.0.0.1:8080"),
        protocol: ListenerProtocol::Http,
        routes: vec![RouteConfig {
            name: "public/0".into(),
            matcher: RouteMatch {
                path: Some(PathMatch::Prefix("/".into())),
                ..RouteMatch::default()
            },
            destination: Destination::Cluster("api".into()),
            timeout: Duration::from_secs(3),
            max_stream_duration: None,
            upgrades: vec!["websocket".into()],
            retry: Some(Box::new(RetryPolicy {
                attempts: 3,
                per_try_timeout: Some(Duration::from_millis(500)),
                on: vec![
                    RetryOn::ConnectFailure,
                    RetryOn::Reset,
                    RetryOn::Status5xx,
                    RetryOn::Unavailable,
                ],
                ..RetryPolicy::default()
            })),
            hedge: None,
            fault: None,
            identities: Vec::new(),
        }],
        cluster: None,
        http: HttpServerConfig::default(),
        tls: None,
        proxy_protocol: None,
        tcp_idle_timeout: Duration::from_secs(3600),
        udp_session_timeout: Duration::from_secs(60),
    };
    let cache = ListenerConfig {
        name: "cache".into(),
        listen: addr("127.0.0.1:6380"),
        protocol: ListenerProtocol::Tcp,
        routes: Vec::new(),
        cluster: Some("redis".into()),
        ..public.clone()
    };
    let redis = ClusterConfig {
        name: "redis".into(),
        discovery: Discovery::Static(vec![StaticEndpoint {
            address: addr("127.0.0.1:6379"),
            weight: 1,
        }]),
        balance: BalanceStrategy::LeastRequest,
        hash: None,
        protocol: UpstreamProtocol::Http1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(4),
        max_idle_per_endpoint: 1024,
        retry_budget: RetryBudget::default(),
        limits: Limits::default(),
        outlier: None,
        health: None,
        panic_threshold: 0.5,
        tls: None,
        proxy_protocol: None,
    };
    let api = ClusterConfig {
        name: "api".into(),
        discovery: Discovery::Static(vec![
            StaticEndpoint {
                address: addr("127.0.0.1:9001"),
                weight: 1,
            },
            StaticEndpoint {
                address: addr("127.0.0.1:9002"),
                weight: 1,
            },
        ]),
        balance: BalanceStrategy::P2cPeakEwma,
        retry_budget: RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        },
        outlier: Some(OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection_percent: 50,
            ..OutlierPolicy::default()
        }),
        health: Some(HealthCheck {
            kind: HealthCheckKind::Http {
                path: "/healthz".into(),
                expected_statuses: Vec::new(),
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            healthy: 2,
            unhealthy: 3,
        }),
        ..redis.clone()
    };
    Config {
        admin: AdminConfig {
            listen: addr("127.0.0.1:9901"),
            ..AdminConfig::default()
        },
        runtime: RuntimeConfig::default(),
        log: LogConfig::default(),
        tracing: None,
        listeners: vec![public, cache],
        clusters: vec![redis, api],
    }
}

#[test]
fn example_loads_to_expected_values() {
    let config = load(example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, expected());
}

#[test]
fn commented_alternatives_in_the_example_are_valid() {
    let source = std::fs::read_to_string(example_path()).expect("example exists");
    let alternatives: Vec<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("# discovery = "))
        .collect();
    assert_eq!(alternatives.len(), 3);
    for alternative in alternatives {
        let original = "discovery = { static = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"] }";
        let edited = source.replace(original, &format!("discovery = {alternative}"));
        assert_ne!(edited, source);
        let config = parse(&edited, "proxy.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(!matches!(
            config.clusters[1].discovery,
            Discovery::Static(_)
        ));
    }
}

#[test]
fn unreadable_file_is_one_io_error() {
    let errors = load(Path::new("/nonexistent/proxy.toml")).expect_err("file is missing");
    assert_eq!(errors.len(), 1);
    let error = &errors.errors[0];
    assert!(matches!(error.kind, ErrorKind::Io(_)));
    assert_eq!((error.line, error.column), (0, 0));
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/proxy.toml: cannot read configuration: ")
    );
}

#[test]
fn config_serializes_with_the_file_spelling() {
    // The admin `/config` endpoint renders the model with serde; enum values
    // must read as they are written in the file.
    let json = serde_json::to_value(expected()).expect("the model serializes");
    assert_eq!(json["clusters"][1]["balance"], "p2c-peak-ewma");
    assert_eq!(json["listeners"][1]["protocol"], "tcp");
    assert_eq!(
        json["listeners"][0]["routes"][0]["match"]["path"]["prefix"],
        "/"
    );
    assert_eq!(json["listeners"][0]["routes"][0]["retry"]["on"][2], "5xx");
}

#[test]
fn documentation_shows_the_example_verbatim() {
    let example = std::fs::read_to_string(example_path()).expect("example exists");
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs exist");
    assert!(
        docs.contains(&format!("```toml\n{example}```")),
        "docs/configuration.md must embed examples/proxy.toml unchanged"
    );
}
