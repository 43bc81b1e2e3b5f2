//! The `switchyard check` rendering: one `file:line:column: path: message`
//! line per error. This output is a user contract (editors and CI parse the
//! prefix), so it is compared verbatim.

const BROKEN: &str = r#"[admin]
listen = "127.0.0.1"

[log]
format = "xml"

[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

  [[listeners.routes]]
  cluster = "apii"
  timeout = 3
  retry = { attempts = 3, atempts = 2, per_try_timeout = "5 parsecs" }
  hedge = { delay = "10ms", percentile = 95.0 }

[[listeners]]
name = "public"
listen = "0.0.0.0:8080"
protocol = "tcp"
cluster = "redis"

[[clusters]]
name = "redis"
discovery = { static = ["localhost:6379"] }
balance = "ring-hash"

[[clusters]]
name = "api"
discovery = { registry = { url = "127.0.0.1:7400", service = "api" } }
health = { http = "/healthz", interval = "1s", timeout = "1s" }
"#;

const EXPECTED: &str = r#"proxy.toml:2:10: admin.listen: expected ip:port, e.g. 127.0.0.1:8080 or [::1]:8080, found "127.0.0.1"
proxy.toml:5:10: log.format: expected one of text, json, found "xml"
proxy.toml:12:13: listeners[0].routes[0].cluster: unknown cluster "apii"; defined clusters: api, redis
proxy.toml:13:13: listeners[0].routes[0].timeout: expected a duration string such as "2s", found integer
proxy.toml:14:27: listeners[0].routes[0].retry.atempts: unknown key "atempts" (did you mean "attempts"?); expected one of: attempts, per_try_timeout, on, status_codes, backoff, non_idempotent, max_replay_bytes, retry_retried
proxy.toml:14:58: listeners[0].routes[0].retry.per_try_timeout: expected a duration such as "250ms", "2s", "1.5s" or "1m30s" (units: h, m, s, ms, us, ns), found "5 parsecs"
proxy.toml:15:29: listeners[0].routes[0].hedge.percentile: `delay` and `percentile` are mutually exclusive; give one
proxy.toml:18:8: listeners[1].name: duplicate listener "public" (first defined on line 8)
proxy.toml:19:10: listeners[1].listen: address 0.0.0.0:8080 overlaps 127.0.0.1:8080 used by listener "public"
proxy.toml:25:25: clusters[0].discovery.static[0]: expected ip:port, e.g. 127.0.0.1:8080 or [::1]:8080, found "localhost:6379"
proxy.toml:26:1: clusters[0].balance: ring-hash and maglev need `hash` (e.g. hash = "source-ip")
proxy.toml:30:34: clusters[1].discovery.registry.url: expected a URL starting with http:// or https://, found "127.0.0.1:7400"
proxy.toml:31:48: clusters[1].health.timeout: health check timeout (1s) must be shorter than its interval (1s)"#;

#[test]
fn check_output_lists_every_error_in_file_order() {
    let errors = switchyard_config::parse(BROKEN, "proxy.toml").expect_err("the file is broken");
    let rendered = errors.to_string();
    if rendered != EXPECTED {
        panic!("rendered output differs; got:\n{rendered}");
    }
}

#[test]
fn syntax_errors_render_without_a_path() {
    let errors = switchyard_config::parse("[admin\n", "proxy.toml").expect_err("not TOML");
    let rendered = errors.to_string();
    assert!(rendered.starts_with("proxy.toml:1:"), "{rendered}");
    assert!(rendered.contains(": invalid TOML: "), "{rendered}");
}
