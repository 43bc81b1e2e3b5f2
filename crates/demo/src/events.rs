//! What the proxy did to each endpoint while the demo ran — ejected,
//! restored, marked unhealthy or healthy — told with the demo's instance
//! names (`api-2`), not addresses.
//!
//! The proxy logs these transitions too, naming endpoints by address; the
//! demo keeps those logs quiet by default (see `switchyard demo --help`) and
//! prints these lines instead, in step with its live display. They are read
//! from the clusters' snapshots every `POLL`: every ejection, health check
//! verdict and restoration lasts far longer than that (ejections at least
//! 2 s, health verdicts need two checks 500 ms apart), and a short-lived
//! state missed between two polls still shows in the endpoint's ejection
//! count.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::resilience::ProxyView;

/// How often the endpoint states are read.
const POLL: Duration = Duration::from_millis(100);

/// A change of one endpoint's state in the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointChange {
    /// Outlier detection took it out of rotation after this many failures
    /// in a row (the demo's clusters eject on consecutive failures only).
    Ejected { consecutive_failures: u32 },
    /// Its ejection ran out, the probe request failed: ejected again, for
    /// longer.
    EjectedAgain,
    /// A probe request succeeded: back in rotation.
    Restored,
    /// Active health checks failed: out of rotation.
    Unhealthy,
    /// Active health checks pass again.
    Healthy,
}

impl fmt::Display for EndpointChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointChange::Ejected {
                consecutive_failures,
            } => write!(
                f,
                "ejected after {consecutive_failures} consecutive failures"
            ),
            EndpointChange::EjectedAgain => f.write_str("probe failed, ejected again"),
            EndpointChange::Restored => f.write_str("probe succeeded, restored"),
            EndpointChange::Unhealthy => f.write_str("health checks failing, marked unhealthy"),
            EndpointChange::Healthy => f.write_str("health checks passing, healthy again"),
        }
    }
}

/// One endpoint change, when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    /// When the demo saw it, since the scenario started.
    pub at: Duration,
    pub cluster: String,
    /// The demo backend at `address`, if any.
    pub backend: Option<String>,
    pub address: SocketAddr,
    pub change: EndpointChange,
}

impl ProxyEvent {
    /// The endpoint as a reader knows it: the instance name, or the address
    /// of an endpoint the demo did not start.
    pub fn endpoint(&self) -> String {
        self.backend
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }

    /// What happened, in words: `proxy: api-2 ejected after 3 consecutive
    /// failures`.
    pub fn describe(&self) -> String {
        format!("proxy: {} {}", self.endpoint(), self.change)
    }

    /// The live line, aligned with the per-second lines.
    pub fn line(&self) -> String {
        format!(
            "  t={:>5.1}s  !! {}",
            self.at.as_secs_f64(),
            self.describe()
        )
    }
}

/// What the previous poll saw of an endpoint.
#[derive(Debug, Clone, Copy)]
struct Seen {
    state: &'static str,
    ejections: u64,
}

/// The change between two observations of an endpoint, if one is worth
/// telling. Draining, and appearing or leaving through discovery, are told
/// by the scenario's own lines.
fn change(before: Seen, now: Seen, consecutive_failures: u32) -> Option<EndpointChange> {
    let out = |state: &str| matches!(state, "ejected" | "probation");
    if now.ejections > before.ejections {
        return Some(if out(before.state) {
            EndpointChange::EjectedAgain
        } else {
            EndpointChange::Ejected {
                consecutive_failures,
            }
        });
    }
    match (before.state, now.state) {
        (before, now) if before == now => None,
        (_, "unhealthy") => Some(EndpointChange::Unhealthy),
        ("unhealthy", now) if now != "draining" => Some(EndpointChange::Healthy),
        (before, "active") if out(before) => Some(EndpointChange::Restored),
        _ => None,
    }
}

/// Watches the proxy's endpoints until `stop` turns true, printing a line
/// per change when `live`, and returns the changes. `name_of` names the demo
/// backend at an address; `clock` is the scenario's start; the clusters
/// eject after `consecutive_failures` failures in a row.
pub(crate) async fn follow(
    view: ProxyView,
    name_of: impl Fn(SocketAddr) -> Option<String>,
    clock: Instant,
    consecutive_failures: u32,
    live: bool,
    mut stop: watch::Receiver<bool>,
) -> Vec<ProxyEvent> {
    let mut seen: HashMap<(String, SocketAddr), Seen> = HashMap::new();
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let stopping = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => true,
            _ = tick.tick() => false,
        };
        for (cluster, endpoint) in view.endpoints() {
            let now = Seen {
                state: endpoint.state,
                ejections: endpoint.ejections,
            };
            let key = (cluster, endpoint.address);
            let Some(before) = seen.insert(key.clone(), now) else {
                continue;
            };
            if let Some(change) = change(before, now, consecutive_failures) {
                let (cluster, address) = key;
                let event = ProxyEvent {
                    at: clock.elapsed(),
                    cluster,
                    backend: name_of(address),
                    address,
                    change,
                };
                if live {
                    crate::say(&event.line());
                }
                events.push(event);
            }
        }
        if stopping {
            return events;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &'static str, ejections: u64) -> Seen {
        Seen { state, ejections }
    }

    #[test]
    fn transitions_are_told_in_words() {
        let c = |b, n| change(b, n, 3).map(|c| c.to_string());
        assert_eq!(
            c(seen("active", 0), seen("ejected", 1)).as_deref(),
            Some("ejected after 3 consecutive failures")
        );
        // A probe that failed between two polls still shows in the count.
        assert_eq!(
            c(seen("ejected", 1), seen("ejected", 2)).as_deref(),
            Some("probe failed, ejected again")
        );
        assert_eq!(
            c(seen("probation", 1), seen("active", 1)).as_deref(),
            Some("probe succeeded, restored")
        );
        assert_eq!(
            c(seen("ejected", 1), seen("active", 1)).as_deref(),
            Some("probe succeeded, restored")
        );
        assert_eq!(
            c(seen("active", 0), seen("unhealthy", 0)).as_deref(),
            Some("health checks failing, marked unhealthy")
        );
        assert_eq!(
            c(seen("unhealthy", 0), seen("active", 0)).as_deref(),
            Some("health checks passing, healthy again")
        );
        for (b, n) in [
            (seen("active", 0), seen("active", 0)),
            (seen("unhealthy", 0), seen("unhealthy", 0)),
            (seen("ejected", 1), seen("ejected", 1)),
            (seen("probation", 1), seen("probation", 1)),
            (seen("ejected", 1), seen("probation", 1)),
            (seen("active", 0), seen("draining", 0)),
            (seen("unhealthy", 0), seen("draining", 0)),
        ] {
            assert_eq!(c(b, n), None, "{} -> {}", b.state, n.state);
        }
    }
}
