//! Cross-reference errors (unknown clusters, duplicate names, overlapping
//! addresses) and a file with many errors reported at once.

mod common;

use std::time::Duration;

use common::{WEB, errors, single, tcp};
use switchyard_config::*;

#[test]
fn unknown_cluster_lists_the_defined_ones() {
    let (line, column, path, kind) = single(&format!(
        "{WEB}  [[listeners.routes]]\n  cluster = \"apii\"\n"
    ));
    assert_eq!((line, column), (5, 13));
    assert_eq!(path, "listeners[0].routes[0].cluster");
    assert_eq!(
        kind,
        ErrorKind::UnknownCluster {
            name: "apii".into(),
            defined: vec!["api".into(), "redis".into()]
        }
    );
}

#[test]
fn unknown_cluster_in_split_and_tcp_listener() {
    let errors = errors(
        r#"[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
routes = [{ split = [{ cluster = "api", weight = 1 }, { cluster = "nope", weight = 1 }] }]
[[listeners]]
name = "db"
listen = "127.0.0.1:5432"
protocol = "tcp"
cluster = "pg"
"#,
    );
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (4, 67, "listeners[0].routes[0].split[1].cluster"),
            (9, 11, "listeners[1].cluster")
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| matches!(e.kind, ErrorKind::UnknownCluster { .. }))
    );
}

#[test]
fn duplicate_names() {
    let errors = errors(
        r#"[[listeners]]
name = "db"
listen = "127.0.0.1:1"
protocol = "tcp"
cluster = "api"
[[listeners]]
name = "db"
listen = "127.0.0.1:2"
protocol = "tcp"
cluster = "api"
[[clusters]]
name = "redis"
discovery = { static = ["127.0.0.1:1", "127.0.0.1:1"] }
"#,
    );
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.kind.clone()))
        .collect();
    let dup = |what, name: &str, first_line| ErrorKind::DuplicateName {
        what,
        name: name.into(),
        first_line,
    };
    assert_eq!(
        found,
        [
            (7, 8, dup("listener", "db", 2)),
            (13, 40, dup("endpoint", "127.0.0.1:1", 13)),
            // The appended clusters define "redis" again on line 19.
            (19, 8, dup("cluster", "redis", 12)),
        ]
    );
}

#[test]
fn overlapping_listen_addresses() {
    let source = [
        tcp("a", "127.0.0.1:7000", "tcp"),
        tcp("b", "127.0.0.1:7000", "tcp"), // same address: line 8
        tcp("c", "0.0.0.0:7000", "tcp"),   // wildcard over a: line 13
        tcp("d", "127.0.0.1:7000", "udp"), // other transport: fine
        tcp("e", "127.0.0.1:9901", "tcp"), // the default admin address: line 23
        tcp("f", "[::1]:7000", "tcp"),     // other address family: fine
    ]
    .concat();
    let errors = errors(&source);
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str(), e.kind.clone()))
        .collect();
    let addr = |s: &str| s.parse().expect("valid address");
    assert_eq!(
        found,
        [
            (
                8,
                10,
                "listeners[1].listen",
                ErrorKind::DuplicateListen {
                    address: addr("127.0.0.1:7000"),
                    used_by: "listener \"a\"".into(),
                    used_by_address: addr("127.0.0.1:7000")
                }
            ),
            (
                13,
                10,
                "listeners[2].listen",
                ErrorKind::DuplicateListen {
                    address: addr("0.0.0.0:7000"),
                    used_by: "listener \"a\"".into(),
                    used_by_address: addr("127.0.0.1:7000")
                }
            ),
            (
                23,
                10,
                "listeners[4].listen",
                ErrorKind::DuplicateListen {
                    address: addr("127.0.0.1:9901"),
                    used_by: "the admin endpoint".into(),
                    used_by_address: addr("127.0.0.1:9901")
                }
            ),
        ]
    );
}

#[test]
fn listener_on_a_configured_admin_address() {
    let source = format!(
        "[admin]\nlisten = \"0.0.0.0:9000\"\n{}",
        tcp("a", "127.0.0.1:9000", "tcp")
    );
    let (line, _, _, kind) = single(&source);
    assert_eq!(line, 5);
    assert!(matches!(kind, ErrorKind::DuplicateListen { .. }));
}

#[test]
fn five_different_errors_are_all_reported() {
    let errors = errors(
        r#"[runtime]
workers = 0
[[listeners]]
name = "web"
listen = "localhost:80"
  [[listeners.routes]]
  cluster = "apii"
  timeout = 5
  retry = { attempts = 3, atempts = 2 }
"#,
    );
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (2, 11, "runtime.workers"),
            (5, 10, "listeners[0].listen"),
            (7, 13, "listeners[0].routes[0].cluster"),
            (8, 13, "listeners[0].routes[0].timeout"),
            (9, 27, "listeners[0].routes[0].retry.atempts"),
        ]
    );
    assert!(matches!(errors[0].kind, ErrorKind::InvalidValue { .. }));
    assert!(matches!(errors[1].kind, ErrorKind::InvalidValue { .. }));
    assert!(matches!(errors[2].kind, ErrorKind::UnknownCluster { .. }));
    assert!(matches!(errors[3].kind, ErrorKind::WrongType { .. }));
    assert!(matches!(errors[4].kind, ErrorKind::UnknownKey { .. }));
}

#[test]
fn suspicious_routes_are_located_warnings() {
    let text = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

  [[listeners.routes]]
  match = { path_prefix = "/api" }
  cluster = "api"

  [[listeners.routes]]
  match = { path_prefix = "/api/v1", method = "GET" }
  cluster = "api"

  [[listeners.routes]]
  match = { path_prefix = "/helloworld.Greeter/" }
  cluster = "api"

[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:9001"] }
"#;
    let checked = switchyard_config::parse_with_warnings(text, "w.toml").expect("valid");
    let w: Vec<String> = checked.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].starts_with("w.toml:10:")
            && w[0].contains("listeners[0].routes[1]")
            && w[0].contains("\"public/1\" can never match")
            && w[0].contains("\"public/0\""),
        "{}",
        w[0]
    );
    assert!(
        w[1].starts_with("w.toml:14:")
            && w[1].contains("looks like gRPC")
            && w[1].contains("protocol http1"),
        "{}",
        w[1]
    );
    // The same file with an http2 cluster and distinct routes warns of nothing.
    let fixed = text
        .replace("\"/api/v1\", method = \"GET\"", "\"/web\"")
        .replace(
            "discovery = { static = [\"127.0.0.1:9001\"] }",
            "discovery = { static = [\"127.0.0.1:9001\"] }\nprotocol = \"http2\"",
        );
    let checked = switchyard_config::parse_with_warnings(&fixed, "w.toml").expect("valid");
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
}

#[test]
fn h2c_upgrades_are_refused() {
    let text = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\n  [[listeners.routes]]\n  cluster = \"api\"\n  upgrades = [\"websocket\", \"h2c\"]\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let err = switchyard_config::parse(text, "u.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("u.toml:6:") && err.contains("upgrades[1]") && err.contains("h2c"),
        "{err}"
    );
}

#[test]
fn new_stream_and_header_limits_reject_garbage_with_locations() {
    let text = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\nhttp = { max_headers = 0 }\n  [[listeners.routes]]\n  cluster = \"api\"\n  max_stream_duration = \"0s\"\n  upgrades = [\"web socket\"]\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let err = switchyard_config::parse(text, "l.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("l.toml:4:") && lines[0].contains("http.max_headers"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("l.toml:7:") && lines[1].contains("max_stream_duration"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("l.toml:8:") && lines[2].contains("upgrades[0]"),
        "{}",
        lines[2]
    );
}

#[test]
fn stream_timeouts_and_the_client_limit_reject_garbage_with_locations() {
    let text = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\nhttp = { send_timeout = \"0s\", stream_idle_timeout = \"soon\", max_requests_per_client = 0 }\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let err = switchyard_config::parse(text, "s.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, key) in lines.iter().zip([
        "http.send_timeout",
        "http.stream_idle_timeout",
        "http.max_requests_per_client",
    ]) {
        assert!(
            line.starts_with("s.toml:4:") && line.contains(key),
            "{line}"
        );
    }
}

#[test]
fn a_client_limit_that_covers_a_cluster_is_a_warning() {
    let text = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\n  [[listeners.routes]]\n  match = { path_prefix = \"/a\" }\n  cluster = \"small\"\n  [[listeners.routes]]\n  match = { path_prefix = \"/b\" }\n  cluster = \"small\"\n\n[[clusters]]\nname = \"small\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\nlimits = { max_requests = 100 }\n";
    let checked = switchyard_config::parse_with_warnings(text, "c.toml").expect("valid");
    let w: Vec<String> = checked.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "once per cluster: {w:#?}");
    assert!(
        w[0].contains("\"small\" admits 100") && w[0].contains("256 requests in flight"),
        "{}",
        w[0]
    );
    let fixed = text.replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nhttp = { max_requests_per_client = 50 }\n",
    );
    let checked = switchyard_config::parse_with_warnings(&fixed, "c.toml").expect("valid");
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
}

#[test]
fn fault_policies_parse_with_defaults_and_reject_garbage() {
    let base = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\n  [[listeners.routes]]\n  cluster = \"api\"\n  fault = FAULT\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let ok = base.replace(
        "FAULT",
        "{ abort = { ratio = 0.1 }, delay = { ratio = 0.5, duration = \"250ms\" } }",
    );
    let config = switchyard_config::parse(&ok, "f.toml").expect("valid");
    let fault = config.listeners[0].routes[0]
        .fault
        .clone()
        .expect("a policy");
    let abort = fault.abort.expect("an abort");
    assert_eq!(
        (abort.ratio, abort.status, abort.grpc_status),
        (0.1, 503, 14)
    );
    let delay = fault.delay.expect("a delay");
    assert_eq!(
        (delay.ratio, delay.duration),
        (0.5, Duration::from_millis(250))
    );
    let unset = base.replace("  fault = FAULT\n", "");
    let config = switchyard_config::parse(&unset, "f.toml").expect("valid");
    assert_eq!(config.listeners[0].routes[0].fault, None, "off by default");

    let bad = base.replace(
        "FAULT",
        "{ abort = { ratio = 1.5, status = 99 }, delay = { ratio = 0.5 } }",
    );
    let err = switchyard_config::parse(&bad, "f.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.starts_with("f.toml:6:")),
        "{lines:#?}"
    );
    assert!(lines[0].contains("fault.abort.ratio"), "{}", lines[0]);
    assert!(lines[1].contains("fault.abort.status"), "{}", lines[1]);
    assert!(
        lines[2].contains("fault.delay") && lines[2].contains("duration"),
        "{}",
        lines[2]
    );
}

#[test]
fn tls_needs_both_files_and_an_http_or_tcp_listener() {
    let http = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8443\"\ntls = { cert = \"server.pem\" }\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let err = switchyard_config::parse(http, "t.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("t.toml:4:") && lines[0].contains("key"),
        "{}",
        lines[0]
    );
    let ok = http.replace(
        "{ cert = \"server.pem\" }",
        "{ cert = \"server.pem\", key = \"server.key\" }",
    );
    let config = switchyard_config::parse(&ok, "t.toml").expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(
        tls.certificates[0].cert,
        std::path::PathBuf::from("server.pem")
    );
    assert_eq!(
        tls.certificates[0].key,
        std::path::PathBuf::from("server.key")
    );
    assert!(tls.certificates[0].server_names.is_empty());
    let tcp = "[[listeners]]\nname = \"t\"\nlisten = \"127.0.0.1:8443\"\nprotocol = \"tcp\"\ncluster = \"api\"\ntls = { cert = \"a\", key = \"b\" }\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let config = switchyard_config::parse(tcp, "t.toml").expect("tcp listeners terminate TLS too");
    assert!(config.listeners[0].tls.is_some());
    let udp = tcp.replace("\"tcp\"", "\"udp\"");
    let err = switchyard_config::parse(&udp, "t.toml").unwrap_err();
    assert!(err.to_string().contains("DTLS is not supported"), "{err}");
}

#[test]
fn cluster_tls_parses_with_defaults_and_rejects_garbage() {
    let base = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\ntls = TLS\n";
    let config = switchyard_config::parse(&base.replace("TLS", "{}"), "t.toml").expect("valid");
    let tls = config.clusters[0].tls.clone().expect("tls on");
    assert_eq!(
        (tls.ca, tls.server_name.as_str(), tls.cert, tls.key),
        (None, "api", None, None),
        "system roots and the cluster's name by default"
    );
    let unset = base.replace("tls = TLS\n", "");
    let config = switchyard_config::parse(&unset, "t.toml").expect("valid");
    assert_eq!(config.clusters[0].tls, None, "plaintext by default");

    let full = base.replace(
        "TLS",
        "{ ca = \"ca.pem\", server_name = \"api.internal\", cert = \"c.pem\", key = \"c.key\" }",
    );
    let tls = switchyard_config::parse(&full, "t.toml")
        .expect("valid")
        .clusters[0]
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.server_name, "api.internal");
    assert_eq!(tls.ca.unwrap().to_str(), Some("ca.pem"));

    for (tls, expected) in [
        ("{ cert = \"c.pem\" }", "tls.key"),
        ("{ key = \"c.key\" }", "tls.cert"),
        ("{ ca = \"\" }", "tls.ca"),
        ("{ verify = false }", "tls.verify"),
    ] {
        let err = switchyard_config::parse(&base.replace("TLS", tls), "t.toml").unwrap_err();
        let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{tls}: {lines:#?}");
        assert!(
            lines[0].starts_with("t.toml:10:") && lines[0].contains(expected),
            "{tls}: {}",
            lines[0]
        );
    }

    // A udp listener cannot speak TLS to its cluster.
    let udp = "[[listeners]]\nname = \"dns\"\nlisten = \"127.0.0.1:5353\"\nprotocol = \"udp\"\ncluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\ntls = {}\n";
    let err = switchyard_config::parse(udp, "u.toml").unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("u.toml:5:") && lines[0].contains("DTLS is not supported"),
        "{}",
        lines[0]
    );
}

#[test]
fn proxy_protocol_takes_networks_and_addresses() {
    let base = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8080\"\nproxy_protocol = PP\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let ok = base.replace(
        "PP",
        "{ trusted = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"] }",
    );
    let config = switchyard_config::parse(&ok, "p.toml").expect("valid");
    let trusted: Vec<String> = config.listeners[0]
        .proxy_protocol
        .as_ref()
        .expect("on")
        .trusted
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(trusted, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
    let off = base.replace("proxy_protocol = PP\n", "");
    let config = switchyard_config::parse(&off, "p.toml").expect("valid");
    assert_eq!(config.listeners[0].proxy_protocol, None, "off by default");

    for (pp, expected) in [
        ("{ trusted = [\"10.0.0.0/33\"] }", "proxy_protocol.trusted"),
        ("{ trusted = [\"lb.internal\"] }", "proxy_protocol.trusted"),
        ("{}", "trusted"),
    ] {
        let err = switchyard_config::parse(&base.replace("PP", pp), "p.toml").unwrap_err();
        let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{pp}: {lines:#?}");
        assert!(
            lines[0].starts_with("p.toml:4:") && lines[0].contains(expected),
            "{pp}: {}",
            lines[0]
        );
    }
    let udp = "[[listeners]]\nname = \"dns\"\nlisten = \"127.0.0.1:5353\"\nprotocol = \"udp\"\ncluster = \"api\"\nproxy_protocol = { trusted = [\"10.0.0.0/8\"] }\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let err = switchyard_config::parse(udp, "u.toml").unwrap_err();
    assert!(err.iter().any(|e| {
        e.to_string()
            .contains("`proxy_protocol` applies to http and tcp listeners")
    }));
}

#[test]
fn listener_certificates_by_sni_parse_and_reject_garbage() {
    let base = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8443\"\ntls = TLS\n  [[listeners.routes]]\n  cluster = \"api\"\n\n[[clusters]]\nname = \"api\"\ndiscovery = { static = [\"127.0.0.1:9001\"] }\n";
    let ok = base.replace(
        "TLS",
        "{ certificates = [{ cert = \"d.pem\", key = \"d.key\" }, { server_names = [\"API.example\", \"*.internal.example\"], cert = \"a.pem\", key = \"a.key\" }] }",
    );
    let config = switchyard_config::parse(&ok, "s.toml").expect("valid");
    let certs = &config.listeners[0].tls.as_ref().unwrap().certificates;
    assert_eq!(certs.len(), 2);
    assert!(certs[0].server_names.is_empty());
    assert_eq!(certs[1].server_names, ["api.example", "*.internal.example"]);
    for (tls, expected) in [
        (
            "{ cert = \"c.pem\", key = \"c.key\", certificates = [{ cert = \"a\", key = \"b\" }] }",
            "not both",
        ),
        ("{ certificates = [] }", "at least one certificate"),
        (
            "{ certificates = [{ server_names = [\"bad name\"], cert = \"a\", key = \"b\" }] }",
            "tls.certificates[0].server_names[0]",
        ),
        (
            "{ certificates = [{ cert = \"a\" }] }",
            "tls.certificates[0].key",
        ),
    ] {
        let err = switchyard_config::parse(&base.replace("TLS", tls), "s.toml").unwrap_err();
        let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{tls}: {lines:#?}");
        assert!(
            lines[0].starts_with("s.toml:4:") && lines[0].contains(expected),
            "{tls}: {}",
            lines[0]
        );
    }
}

#[test]
fn client_certificates_and_route_identities_are_checked_together() {
    let listener = |tls: &str, route_extra: &str| {
        format!(
            "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:8443\"\ntls = {tls}\n  [[listeners.routes]]\n  name = \"admin\"\n  cluster = \"api\"\n{route_extra}\n[[clusters]]\nname = \"api\"\ndiscovery = {{ static = [\"127.0.0.1:9001\"] }}\n"
        )
    };
    let ok = listener(
        "{ cert = \"s.pem\", key = \"s.key\", client_ca = \"clients.pem\", identity_header = \"X-Client-Identity\" }",
        "  identities = [\"spiffe://example.org/web\"]\n",
    );
    let config = switchyard_config::parse(&ok, "m.toml").expect("valid");
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.identity_header.as_deref(), Some("x-client-identity"));
    assert_eq!(
        config.listeners[0].routes[0].identities,
        ["spiffe://example.org/web"]
    );
    for (text, expected) in [
        (
            listener(
                "{ cert = \"s.pem\", key = \"s.key\" }",
                "  identities = [\"web\"]\n",
            ),
            "route admin lists `identities`, which need `tls.client_ca`",
        ),
        (
            listener(
                "{ cert = \"s.pem\", key = \"s.key\", identity_header = \"x-id\" }",
                "",
            ),
            "`identity_header` needs `client_ca`",
        ),
        (
            listener(
                "{ cert = \"s.pem\", key = \"s.key\", client_ca = \"c.pem\", identity_header = \"bad header\" }",
                "",
            ),
            "tls.identity_header",
        ),
    ] {
        let err = switchyard_config::parse(&text, "m.toml").unwrap_err();
        let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains(expected), "{}", lines[0]);
    }
}
