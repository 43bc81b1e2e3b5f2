//! The outcome of a demo run, [`DemoReport`], and its rendering as the
//! summary printed at the end of `switchyard demo`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::Protocol;
use crate::stats::ms;
pub use crate::stats::{KindCounts, Latency, RequestKind, Second};

/// What one backend did during the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    pub name: String,
    pub protocol: Protocol,
    pub address: SocketAddr,
    /// Requests the backend answered (its own count).
    pub served: u64,
    /// Requests the proxy sent to this endpoint (the proxy's count, including
    /// any retries); `None` if the proxy does not list it.
    pub proxied: Option<u64>,
    /// `served` as a percentage of all requests served by backends of the
    /// same protocol (its cluster).
    pub share: f64,
}

/// One scenario event as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// When it was applied, since the scenario started.
    pub at: Duration,
    pub what: String,
}

/// The outcome of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The proxy's `public` listener and admin endpoint.
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Requested load.
    pub target_rate: u32,
    /// How long load actually ran.
    pub load_duration: Duration,
    /// Requests completed (successes and errors).
    pub requests: u64,
    pub errors: u64,
    pub shed: u64,
    pub latency: Latency,
    pub by_kind: Vec<(RequestKind, KindCounts)>,
    pub backends: Vec<BackendReport>,
    pub seconds: Vec<Second>,
    pub timeline: Vec<Applied>,
    /// A few distinct error messages, to tell what went wrong.
    pub error_samples: Vec<String>,
    /// Whether the proxy drained every connection within its grace period.
    pub drained: bool,
}

impl DemoReport {
    /// The system held its promises: no request failed and every backend
    /// served traffic.
    pub fn success(&self) -> bool {
        self.errors == 0 && self.idle_backends().is_empty()
    }

    /// Completed requests per second of load.
    pub fn throughput(&self) -> f64 {
        let secs = self.load_duration.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    fn idle_backends(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.served == 0)
            .map(|b| b.name.as_str())
            .collect()
    }

    /// The summary table printed at the end of `switchyard demo`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored below.
        let _ = writeln!(out, "\nswitchyard demo — summary");
        let _ = writeln!(
            out,
            "  proxy {}   admin http://{}   load {:.1}s at {} req/s target",
            self.proxy,
            self.admin,
            self.load_duration.as_secs_f64(),
            self.target_rate
        );
        let _ = writeln!(
            out,
            "\n  requests {}   errors {}   shed {}   throughput {:.1} req/s",
            self.requests,
            self.errors,
            self.shed,
            self.throughput()
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency  p50 {}   p90 {}   p99 {}   max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        );

        let _ = writeln!(
            out,
            "\n  {:<10} {:>9} {:>7} {:>6}",
            "protocol", "requests", "errors", "shed"
        );
        for (kind, c) in &self.by_kind {
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>7} {:>6}",
                kind.label(),
                c.requests,
                c.errors,
                c.shed
            );
        }

        let _ = writeln!(
            out,
            "\n  {:<14} {:<8} {:<21} {:>8} {:>8} {:>7}",
            "backend", "protocol", "address", "served", "proxied", "share"
        );
        for b in &self.backends {
            let proxied = b.proxied.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  {:<14} {:<8} {:<21} {:>8} {:>8} {:>6.1}%",
                b.name,
                b.protocol.to_string(),
                b.address.to_string(),
                b.served,
                proxied,
                b.share
            );
        }

        if !self.timeline.is_empty() {
            let _ = writeln!(out, "\n  timeline");
            for e in &self.timeline {
                let _ = writeln!(out, "  t={:>5.1}s  {}", e.at.as_secs_f64(), e.what);
            }
        }
        if !self.error_samples.is_empty() {
            let _ = writeln!(out, "\n  sample errors");
            for e in &self.error_samples {
                let _ = writeln!(out, "  - {e}");
            }
        }
        if !self.drained {
            let _ = writeln!(
                out,
                "\n  note: the proxy closed connections still open after its grace period"
            );
        }
        let _ = writeln!(out, "\n{}", self.verdict());
        out
    }

    fn verdict(&self) -> String {
        if self.success() {
            return format!(
                "verdict: OK — {} requests, 0 errors, all {} backends served traffic",
                self.requests,
                self.backends.len()
            );
        }
        let mut problems = Vec::new();
        if self.errors > 0 {
            problems.push(format!(
                "{} of {} requests failed",
                self.errors, self.requests
            ));
        }
        let idle = self.idle_backends();
        if !idle.is_empty() {
            problems.push(format!("no traffic reached {}", idle.join(", ")));
        }
        format!("verdict: FAILED — {}", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(errors: u64, served: [u64; 2]) -> DemoReport {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let backend = |name: &str, port, served| BackendReport {
            name: name.to_owned(),
            protocol: Protocol::Http,
            address: addr(port),
            served,
            proxied: Some(served),
            share: 50.0,
        };
        DemoReport {
            proxy: addr(8080),
            admin: addr(9901),
            target_rate: 100,
            load_duration: Duration::from_secs(2),
            requests: 200,
            errors,
            shed: 0,
            latency: Latency::default(),
            by_kind: vec![(RequestKind::Http1, KindCounts::default())],
            backends: vec![
                backend("api-1", 9001, served[0]),
                backend("api-2", 9002, served[1]),
            ],
            seconds: Vec::new(),
            timeline: Vec::new(),
            error_samples: Vec::new(),
            drained: true,
        }
    }

    #[test]
    fn verdict_names_what_failed() {
        let ok = report(0, [100, 100]);
        assert!(ok.success());
        assert!((ok.throughput() - 100.0).abs() < 1e-9);
        let text = ok.render();
        assert!(text.contains("verdict: OK"), "{text}");
        assert!(
            text.contains("api-2") && text.contains("127.0.0.1:9002"),
            "{text}"
        );

        let bad = report(3, [200, 0]);
        assert!(!bad.success());
        let text = bad.render();
        assert!(
            text.contains("verdict: FAILED — 3 of 200 requests failed; no traffic reached api-2"),
            "{text}"
        );
    }
}
