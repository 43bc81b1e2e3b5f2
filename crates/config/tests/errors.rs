//! Each error kind found while reading values, located at the offending
//! value (line and column are 1-based; columns count characters).

mod common;

use common::{WEB, errors, single, tcp};
use switchyard_config::*;

#[test]
fn unknown_key_in_nested_inline_table() {
    let (line, column, path, kind) = single(&format!(
        "{WEB}  [[listeners.routes]]\n  cluster = \"api\"\n  retry = {{ attempts = 3, atempts = 2 }}\n"
    ));
    assert_eq!((line, column), (6, 27));
    assert_eq!(path, "listeners[0].routes[0].retry.atempts");
    assert_eq!(
        kind,
        ErrorKind::UnknownKey {
            key: "atempts".into(),
            expected: vec![
                "attempts",
                "per_try_timeout",
                "on",
                "status_codes",
                "backoff",
                "non_idempotent",
                "max_replay_bytes",
                "retry_retried"
            ]
        }
    );
}

#[test]
fn unknown_top_level_key_and_section() {
    let errors = errors("[admn]\nlisten = \"127.0.0.1:1\"\n[log]\nlevle = \"debug\"\n");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        (errors[0].line, errors[0].column, errors[0].path.as_str()),
        (1, 2, "admn")
    );
    assert_eq!(
        (errors[1].line, errors[1].column, errors[1].path.as_str()),
        (4, 1, "log.levle")
    );
    let ErrorKind::UnknownKey { expected, .. } = &errors[0].kind else {
        panic!("{errors:#?}")
    };
    assert_eq!(
        expected,
        &[
            "admin",
            "runtime",
            "log",
            "tracing",
            "listeners",
            "clusters"
        ]
    );
}

#[test]
fn missing_key_points_at_the_table() {
    let (line, column, path, kind) =
        single("[[listeners]]\nlisten = \"127.0.0.1:8080\"\nroutes = [{ cluster = \"api\" }]\n");
    assert_eq!((line, column), (1, 1));
    assert_eq!(path, "listeners[0].name");
    assert_eq!(kind, ErrorKind::MissingKey("name"));

    // Inline tables are located at their opening brace.
    let (line, column, path, kind) = single(&format!("{WEB}routes = [{{ timeout = \"1s\" }}]\n"));
    assert_eq!(
        (line, column, path.as_str()),
        (4, 11, "listeners[0].routes[0].cluster")
    );
    assert_eq!(kind, ErrorKind::MissingKey("cluster"));
}

#[test]
fn http_listener_needs_routes_and_tcp_a_cluster() {
    let errors = errors(
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listeners]]\nname = \"b\"\nlisten = \"127.0.0.1:2\"\nprotocol = \"tcp\"\n",
    );
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.path.as_str(), e.kind.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "listeners[0].routes", ErrorKind::MissingKey("routes")),
            (4, "listeners[1].cluster", ErrorKind::MissingKey("cluster")),
        ]
    );
}

#[test]
fn wrong_types() {
    let (line, column, path, kind) = single(&format!(
        "{WEB}  [[listeners.routes]]\n  cluster = \"api\"\n  timeout = 3\n"
    ));
    assert_eq!(
        (line, column, path.as_str()),
        (6, 13, "listeners[0].routes[0].timeout")
    );
    assert!(
        matches!(
            kind,
            ErrorKind::WrongType {
                found: "integer",
                ..
            }
        ),
        "{kind:?}"
    );

    let (line, column, _, kind) = single("[runtime]\nworkers = \"4\"\n");
    assert_eq!((line, column), (2, 11));
    assert_eq!(
        kind,
        ErrorKind::WrongType {
            expected: "an integer",
            found: "string"
        }
    );

    let (_, _, path, kind) = single("listeners = 3\n");
    assert_eq!(path, "listeners");
    assert_eq!(
        kind,
        ErrorKind::WrongType {
            expected: "an array",
            found: "integer"
        }
    );
}

#[test]
fn bad_duration_string_says_what_is_expected() {
    let (line, column, path, kind) = single("[runtime]\nshutdown_grace = \"5 parsecs\"\n");
    assert_eq!(
        (line, column, path.as_str()),
        (2, 18, "runtime.shutdown_grace")
    );
    let ErrorKind::InvalidValue { expected, found } = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(found, "\"5 parsecs\"");
    assert!(expected.contains("\"250ms\""), "{expected}");

    for bad in ["\"10\"", "\"-1s\"", "\"\""] {
        let (_, _, _, kind) = single(&format!("[runtime]\nshutdown_grace = {bad}\n"));
        assert!(
            matches!(kind, ErrorKind::InvalidValue { .. }),
            "{bad}: {kind:?}"
        );
    }
}

#[test]
fn invalid_socket_addresses() {
    for bad in ["127.0.0.1", "localhost:80", "127.0.0.1:99999"] {
        let (line, column, path, kind) = single(&format!("[admin]\nlisten = \"{bad}\"\n"));
        assert_eq!((line, column, path.as_str()), (2, 10, "admin.listen"));
        let ErrorKind::InvalidValue { expected, found } = kind else {
            panic!("{kind:?}")
        };
        assert!(
            expected.starts_with("ip:port, e.g. 127.0.0.1:8080"),
            "{expected}"
        );
        assert_eq!(found, format!("\"{bad}\""));
    }
}

#[test]
fn admin_token_file_must_be_a_non_empty_string() {
    for bad in ["\"\"", "42"] {
        let (line, _, path, kind) = single(&format!("[admin]\ntoken_file = {bad}\n"));
        assert_eq!((line, path.as_str()), (2, "admin.token_file"), "{bad}");
        assert!(
            matches!(
                kind,
                ErrorKind::InvalidValue { .. } | ErrorKind::WrongType { .. }
            ),
            "{bad}: {kind:?}"
        );
    }
}

#[test]
fn invalid_values_in_ranges_and_choices() {
    let cases = [
        ("[runtime]\nworkers = 0\n", "runtime.workers"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        (
            &format!("{WEB}[[listeners.routes]]\ncluster = \"api\"\nretry = {{ attempts = 11 }}\n"),
            "listeners[0].routes[0].retry.attempts",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nretry = {{ on = [\"reset\", \"oops\"] }}\n"
            ),
            "listeners[0].routes[0].retry.on[1]",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nretry = {{ status_codes = [600] }}\n"
            ),
            "listeners[0].routes[0].retry.status_codes[0]",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nhedge = {{ percentile = 100.0 }}\n"
            ),
            "listeners[0].routes[0].hedge.percentile",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nmatch = {{ path_prefix = \"api\" }}\n"
            ),
            "listeners[0].routes[0].match.path_prefix",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nmatch = {{ method = \"GE T\" }}\n"
            ),
            "listeners[0].routes[0].match.method",
        ),
        (
            &format!(
                "{WEB}[[listeners.routes]]\ncluster = \"api\"\nmatch = {{ headers = {{ \"x y\" = \"1\" }} }}\n"
            ),
            "listeners[0].routes[0].match.headers.x y",
        ),
        (
            &format!("{WEB}[[listeners.routes]]\nsplit = [{{ cluster = \"api\", weight = 0 }}]\n"),
            "listeners[0].routes[0].split",
        ),
        (
            "[[listeners]]\nname = \"a b\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"tcp\"\ncluster = \"api\"\n",
            "listeners[0].name",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [] }\n",
            "clusters[0].discovery.static",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { registry = { url = \"127.0.0.1:7400\", service = \"x\" } }\n",
            "clusters[0].discovery.registry.url",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { dns = { srv = \"api.example\" } }\n",
            "clusters[0].discovery.dns.srv",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { dns = { name = \"a.example:80\", servers = [] } }\n",
            "clusters[0].discovery.dns.servers",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { dns = { name = \"a.example:80\", servers = [\"10.0.0.1\"] } }\n",
            "clusters[0].discovery.dns.servers[0]",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { dns = { name = \"a.example:80\", timeout = \"0s\" } }\n",
            "clusters[0].discovery.dns.timeout",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { etcd = { endpoints = [\"http://e:2379\"], prefix = \"x/\" } }\n",
            "clusters[0].discovery.etcd.prefix",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [{ address = \"127.0.0.1:1\", weight = 0 }] }\n",
            "clusters[0].discovery.static[0].weight",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nbalance = \"fastest\"\n",
            "clusters[0].balance",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nretry_budget = { ratio = 1.5 }\n",
            "clusters[0].retry_budget.ratio",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nlimits = { max_pending = 0 }\n",
            "clusters[0].limits.max_pending",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\noutlier = { failure_rate = 0.0 }\n",
            "clusters[0].outlier.failure_rate",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\noutlier = { max_ejection_percent = 101 }\n",
            "clusters[0].outlier.max_ejection_percent",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nhealth = { http = \"healthz\" }\n",
            "clusters[0].health.http",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nhealth = { tcp = false }\n",
            "clusters[0].health.tcp",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"] }\nhealth = { tcp = true, unhealthy = 0 }\n",
            "clusters[0].health.unhealthy",
        ),
    ];
    for (source, expected_path) in cases {
        let (_, _, path, kind) = single(source);
        assert_eq!(path, expected_path, "{source}");
        assert!(
            matches!(kind, ErrorKind::InvalidValue { .. }),
            "{source}: {kind:?}"
        );
    }
}

#[test]
fn conflicts() {
    let route = |extra: &str| format!("{WEB}[[listeners.routes]]\n{extra}\n");
    let cluster = |extra: &str| {
        format!(
            "[[clusters]]\nname = \"x\"\ndiscovery = {{ static = [\"127.0.0.1:1\"] }}\n{extra}\n"
        )
    };
    let cases = [
        (route("cluster = \"api\"\nsplit = [{ cluster = \"api\", weight = 1 }]"), 6, 1, "listeners[0].routes[0].split"),
        (route("cluster = \"api\"\nmatch = { path = \"/a\", path_prefix = \"/b\" }"), 6, 24, "listeners[0].routes[0].match.path_prefix"),
        (route("cluster = \"api\"\ntimeout = \"1s\"\nretry = { per_try_timeout = \"2s\" }"), 7, 11, "listeners[0].routes[0].retry.per_try_timeout"),
        (route("cluster = \"api\"\nretry = { backoff = { base = \"1s\" } }"), 6, 23, "listeners[0].routes[0].retry.backoff.base"),
        (route("cluster = \"api\"\nhedge = { delay = \"1s\", percentile = 90.0 }"), 6, 25, "listeners[0].routes[0].hedge.percentile"),
        (format!("{WEB}cluster = \"api\"\nroutes = [{{ cluster = \"api\" }}]\n"), 4, 1, "listeners[0].cluster"),
        (format!("{}routes = [{{ cluster = \"api\" }}]\n", tcp("t", "127.0.0.1:1", "tcp")), 6, 1, "listeners[0].routes"),
        (format!("{}tcp_idle_timeout = \"1s\"\n", tcp("t", "127.0.0.1:1", "udp")), 6, 1, "listeners[0].tcp_idle_timeout"),
        (format!("{}http = {{ idle_timeout = \"1s\" }}\n", tcp("t", "127.0.0.1:1", "tcp")), 6, 1, "listeners[0].http"),
        (cluster("balance = \"ring-hash\""), 4, 1, "clusters[0].balance"),
        (cluster("hash = \"source-ip\""), 4, 1, "clusters[0].hash"),
        (cluster("health = { http = \"/h\", tcp = true }"), 4, 25, "clusters[0].health.tcp"),
        (cluster("health = { tcp = true, timeout = \"2s\" }"), 4, 24, "clusters[0].health.timeout"),
        (cluster("health = { grpc = \"\", expected_statuses = [200] }"), 4, 23, "clusters[0].health.expected_statuses"),
        (cluster("outlier = { base_ejection = \"10m\" }"), 4, 13, "clusters[0].outlier.base_ejection"),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { static = [\"127.0.0.1:1\"], dns = { name = \"a:1\" } }\n".to_owned(),
            3, 41, "clusters[0].discovery.dns",
        ),
        (
            "[[clusters]]\nname = \"x\"\ndiscovery = { dns = { name = \"a.example:80\", min_ttl = \"10s\", max_ttl = \"5s\" } }\n".to_owned(),
            3, 46, "clusters[0].discovery.dns.min_ttl",
        ),
    ];
    for (source, line, column, path) in cases {
        let found = single(&source);
        assert!(
            matches!(found.3, ErrorKind::Conflict(_)),
            "{source}: {found:?}"
        );
        assert_eq!(
            (found.0, found.1, found.2.as_str()),
            (line, column, path),
            "{source}"
        );
    }
}

#[test]
fn syntax_error_is_located() {
    let unquoted = errors("[admin]\nlisten = 127.0.0.1:9901\n");
    let first = &unquoted[0];
    assert!(matches!(first.kind, ErrorKind::Syntax(_)), "{first:?}");
    assert_eq!(first.line, 2);
    assert!(first.path.is_empty());

    let duplicate = errors("[admin]\nlisten = \"a\"\nlisten = \"b\"\n");
    assert_eq!((duplicate[0].line, duplicate[0].column), (3, 1));
}

#[test]
fn columns_count_characters_not_bytes() {
    let (line, column, _, _) = single("[log] # café ☕\nlevel = \"\" # ünïcode\n");
    assert_eq!((line, column), (2, 9));
    let (_, column, _, _) = single("[log]\n\"ünï\" = 1\n");
    assert_eq!(column, 1);
    let (_, column, _, _) = single("log = { level = \"é\", access_log = 1 }\n");
    assert_eq!(column, 35);
}
