//! The demo's proxy configuration, as TOML a user would write, with every
//! resilience feature the chaos script exercises turned on.
//!
//! The numbers are sized for the demo: loopback backends answering in
//! 1–5 ms, faults lasting a few seconds (see `chaos.rs`), and a run of about
//! 12 s in which ejections, probes and recoveries must all be visible.

use std::net::SocketAddr;

use crate::LISTENER;

/// The proxy configuration: both clusters discovered through the registry
/// at `registry` (a base URL), the admin API on `admin`.
pub(crate) fn proxy_config(registry: &str, admin: SocketAddr) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[runtime]
# Load has stopped when the demo shuts down; a short grace keeps exit quick.
shutdown_grace = "3s"

[[listeners]]
name = "{LISTENER}"
listen = "127.0.0.1:0"
protocol = "http"

  [[listeners.routes]]
  name = "inventory-grpc"
  match = {{ path_prefix = "/switchyard.demo.v1.Inventory/" }}
  cluster = "inventory"
  timeout = "2s"
  # gRPC calls are POSTs, which are only retried when the request provably
  # never reached a backend. Inventory/GetItem is a read, safe to repeat, so
  # the route opts in (`non_idempotent`): UNAVAILABLE answers and connections
  # reset by a crashing backend are retried too. A route with writes must not.
  retry = {{ attempts = 3, per_try_timeout = "500ms", non_idempotent = true, on = ["connect-failure", "refused-stream", "reset", "unavailable"] }}

  [[listeners.routes]]
  name = "api"
  match = {{ path_prefix = "/api/" }}
  cluster = "api"
  timeout = "2s"
  # The per-try timeout is twice the slow backend's latency (+250 ms): slow
  # answers are the hedge's job (below), and still worth having when the
  # hedge budget is spent; the timeout only cuts attempts that hang. Tighter
  # than the host's worst scheduling delay, it would fail healthy attempts on
  # a busy machine, and retries cannot help when every endpoint is as slow.
  # Three attempts of 500 ms plus backoff fit the 2 s route timeout.
  retry = {{ attempts = 3, per_try_timeout = "500ms", on = ["connect-failure", "refused-stream", "reset", "gateway-error", "5xx"] }}
  # A fixed delay rather than a percentile: healthy answers take ~5 ms, so
  # a GET still waiting after 50 ms has met a stalled backend, and the hedge
  # count in the summary measures exactly that. (A p95 delay would also hedge
  # 5% of healthy traffic, blurring the chaos in the figures.)
  hedge = {{ delay = "50ms", max_extra_load = 0.1 }}
  # Fault injection, the chaos the proxy makes itself: {delay_percent}% of requests
  # are held {delay_ms} ms before they go upstream, as a slow dependency would hold
  # them. The delay counts against the route timeout like upstream time; the
  # summary checks the injected count against the ratio.
  fault = {{ delay = {{ ratio = {delay_ratio}, duration = "{delay_ms}ms" }} }}

[[clusters]]
name = "api"
# Backends register themselves; the proxy follows the registry with a
# blocking-query watch, so instances added, drained or removed mid-run are
# routed to (or not) within milliseconds.
discovery = {{ registry = {{ url = "{registry}", service = "api" }} }}
balance = "p2c-peak-ewma"
protocol = "http1"
{resilience}
health = {{ http = "/healthz", interval = "500ms", timeout = "250ms", healthy = 2, unhealthy = 2 }}

[[clusters]]
name = "inventory"
discovery = {{ registry = {{ url = "{registry}", service = "inventory" }} }}
balance = "p2c-peak-ewma"
protocol = "http2"
{resilience}
# `grpc.health.v1` on the whole server ("").
health = {{ grpc = "", interval = "500ms", timeout = "250ms", healthy = 2, unhealthy = 2 }}
"#,
        delay_ratio = FAULT_DELAY_RATIO,
        delay_percent = FAULT_DELAY_RATIO * 100.0,
        delay_ms = FAULT_DELAY.as_millis(),
        resilience = CLUSTER_RESILIENCE
            .trim()
            .replace("{consecutive_failures}", &CONSECUTIVE_FAILURES.to_string()),
    )
}

/// The route whose requests the proxy delays on purpose, the share it
/// delays and by how much.
pub(crate) const FAULT_ROUTE: &str = "api";
pub(crate) const FAULT_DELAY_RATIO: f64 = 0.02;
pub(crate) const FAULT_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Failures in a row that eject an endpoint; the only ejection rule of the
/// demo's clusters, so the demo's own ejection lines can name it.
pub(crate) const CONSECUTIVE_FAILURES: u32 = 3;

/// Settings both clusters share.
const CLUSTER_RESILIENCE: &str = r#"
# Loopback connects take microseconds; a refused one fails at once anyway.
connect_timeout = "250ms"
# The defaults, spelled out: retries may add 20% over the last 10 s of
# requests, plus 10 per second, so a brown-out cannot become a retry storm.
retry_budget = { ratio = 0.2, min_per_second = 10, ttl = "10s" }
# Eject within the demo: a dead or erroring instance fails 3 requests in a row
# within milliseconds under load. Ejections last 2 s, doubling up to 4 s, so a
# backend that has recovered is probed again before the run ends. 50% is the
# default cap: with the chaos script's one fault at a time it never binds.
outlier = { consecutive_failures = {consecutive_failures}, base_ejection = "2s", max_ejection = "4s", max_ejection_percent = 50 }
# Health checks run every 500 ms and need 2 results in a row to change their
# mind: a killed backend is marked down within ~1 s, before its first ejection
# (2 s) ends, so no probe is wasted on it; a restarted one is back within ~1 s.
"#;
