//! Helpers shared by the error tests.

#![allow(dead_code)] // Each test file uses a different subset.

use switchyard_config::*;

/// Two clusters appended after the text under test, so that line numbers in
/// the tests only depend on the text written in each test.
const CLUSTERS: &str = r#"
[[clusters]]
name = "api"
discovery = { static = ["127.0.0.1:9001"] }
[[clusters]]
name = "redis"
discovery = { static = ["127.0.0.1:6379"] }
"#;

pub fn errors(source: &str) -> Vec<ConfigError> {
    let source = format!("{source}{CLUSTERS}");
    match parse(&source, "t.toml") {
        Ok(config) => panic!("expected errors, parsed {config:#?}"),
        Err(errors) => errors.errors,
    }
}

/// The single error of `source`, as (line, column, path, kind).
pub fn single(source: &str) -> (usize, usize, String, ErrorKind) {
    let mut errors = errors(source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.remove(0);
    (e.line, e.column, e.path, e.kind)
}

/// A valid HTTP listener header on lines 1-3; routes start on line 4.
pub const WEB: &str = "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n";

/// A tcp (or udp) listener sending to cluster "api"; five lines.
pub fn tcp(name: &str, listen: &str, protocol: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\nlisten = \"{listen}\"\nprotocol = \"{protocol}\"\ncluster = \"api\"\n"
    )
}
