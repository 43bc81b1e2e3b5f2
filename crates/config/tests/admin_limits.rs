//! `[admin]` connection limit and timeouts: defaults, values, and located
//! errors for bad ones.

mod common;

use std::time::Duration;

use common::single;
use switchyard_config::*;

#[test]
fn admin_limits_default_and_parse() {
    let d = parse("", "t.toml").expect("empty config").admin;
    assert_eq!(d.max_connections, 256);
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.idle_timeout, Duration::from_secs(60));
    let a = parse(
        "[admin]\nmax_connections = 20\nheader_read_timeout = \"300ms\"\nidle_timeout = \"2m\"\n",
        "t.toml",
    )
    .expect("valid")
    .admin;
    assert_eq!(a.max_connections, 20);
    assert_eq!(a.header_read_timeout, Duration::from_millis(300));
    assert_eq!(a.idle_timeout, Duration::from_secs(120));
}

#[test]
fn bad_admin_limits_are_located() {
    let cases = [
        ("max_connections = 0", 19, "admin.max_connections"),
        ("max_connections = \"many\"", 19, "admin.max_connections"),
        (
            "header_read_timeout = \"0s\"",
            23,
            "admin.header_read_timeout",
        ),
        ("header_read_timeout = 10", 23, "admin.header_read_timeout"),
        ("idle_timeout = \"soon\"", 16, "admin.idle_timeout"),
    ];
    for (line, column, path) in cases {
        let (l, c, p, kind) = single(&format!("[admin]\n{line}\n"));
        assert_eq!((l, c, p.as_str()), (2, column, path), "{line}: {kind:?}");
    }
}

#[test]
fn admin_limits_are_shown_by_the_config_endpoint() {
    let config = parse("[admin]\nidle_timeout = \"90s\"\n", "t.toml").expect("valid");
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(json["admin"]["max_connections"], 256);
    assert_eq!(json["admin"]["header_read_timeout"], "10s");
    assert_eq!(json["admin"]["idle_timeout"], "90s");
}
