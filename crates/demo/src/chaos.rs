//! The chaos script of `switchyard demo`: while load runs, one HTTP backend
//! dies and comes back, another turns slow, a third starts failing, and a
//! gRPC backend dies and comes back — each for a while, one after the other.
//! Meanwhile the HTTP service scales out by one instance, which registers
//! and takes traffic, and near the end scales back in with a drain.
//!
//! The faults do not overlap on purpose. With three HTTP backends, two faulty
//! at once would leave one healthy endpoint: below the default panic
//! threshold (half the cluster), where the balancer spreads load over broken
//! endpoints too, and above the default `max_ejection_percent` (50%), so the
//! second culprit could not be ejected. One fault at a time is the story
//! users need to trust first: a single instance misbehaving goes unnoticed.
//!
//! Times are written for a 12 s run (the CLI's default) and scaled to the
//! requested duration, so `--duration 30s` plays the same script slower.

use std::time::Duration;

use crate::DemoError;
use crate::backend::Protocol;
use crate::scenario::{Action, Scenario};

/// The duration the timeline below is written for.
const NOMINAL: Duration = Duration::from_secs(12);

/// Shorter runs would squeeze each fault into less time than the proxy needs
/// to notice and recover (ejections last 2 s, health checks run every
/// 500 ms; see `config.rs`).
pub const MIN_DURATION: Duration = Duration::from_secs(5);

/// Extra latency of the slow backend: five times the HTTP route's hedge
/// delay (50 ms), half its per-try timeout (500 ms), so hedging and the
/// latency-aware balancer, not timeouts, are what route around it.
pub const SLOW_BY: Duration = Duration::from_millis(250);

/// Share of requests the failing backends answer with an error.
pub const ERROR_PERCENT: u8 = 50;

/// The backends the script needs: it acts on `api-1..3` and `inventory-1..2`.
pub const HTTP_BACKENDS: usize = 3;
pub const GRPC_BACKENDS: usize = 2;

/// The chaos scenario for a run of `duration` with the given fleet size.
pub fn scenario(duration: Duration, http: usize, grpc: usize) -> Result<Scenario, DemoError> {
    if duration < MIN_DURATION {
        return Err(DemoError::Options(format!(
            "the chaos script needs a duration of at least {}s (got {:.1}s)",
            MIN_DURATION.as_secs(),
            duration.as_secs_f64()
        )));
    }
    if http < HTTP_BACKENDS || grpc < GRPC_BACKENDS {
        return Err(DemoError::Options(format!(
            "the chaos script needs at least {HTTP_BACKENDS} HTTP and {GRPC_BACKENDS} gRPC backends"
        )));
    }
    let scale = duration.as_secs_f64() / NOMINAL.as_secs_f64();
    let at = |nominal_secs: f64| Duration::from_secs_f64(nominal_secs * scale);
    let name = |s: &str| s.to_owned();
    // The instance added by scaling out, named after the ones started first.
    let added = format!("api-{}", http + 1);
    let scenario = Scenario::new()
        .at(Duration::ZERO, Action::StartLoad)
        // A crash: connect failures and reset connections, retried at once;
        // outlier detection ejects it, health checks mark it down.
        .at(at(1.5), Action::Kill(name("api-2")))
        .at(at(2.0), Action::Kill(name("inventory-2")))
        // Back on the same address: health checks see it, a probe restores it.
        // Scale out while api-2 is down: the new instance registers itself
        // and the proxy routes to it as soon as the registry says so.
        .at(
            at(3.0),
            Action::ScaleOut {
                backend: added.clone(),
                protocol: Protocol::Http,
            },
        )
        .at(at(4.0), Action::Restart(name("api-2")))
        .at(at(4.5), Action::Restart(name("inventory-2")))
        // A stall: hedges and per-try timeouts route around it.
        .at(
            at(5.5),
            Action::Slow {
                backend: name("api-3"),
                extra: SLOW_BY,
            },
        )
        .at(at(7.5), Action::Heal(name("api-3")))
        // A brown-out that health checks miss (`/healthz` and gRPC health
        // still pass): only retries and passive ejection can cope.
        .at(
            at(8.0),
            Action::Fail {
                backend: name("api-1"),
                percent: ERROR_PERCENT,
            },
        )
        .at(
            at(8.0),
            Action::Fail {
                backend: name("inventory-1"),
                percent: ERROR_PERCENT,
            },
        )
        .at(at(10.0), Action::Heal(name("api-1")))
        .at(at(10.0), Action::Heal(name("inventory-1")))
        // Scale back in, under load: drain, let requests in flight finish,
        // deregister, stop. No request may fail.
        .at(at(10.5), Action::ScaleIn(added))
        .at(duration, Action::StopLoad);
    Ok(scenario)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_scales_with_the_duration_and_ends_with_the_load() {
        let s = |n| Duration::from_secs(n);
        let nominal = scenario(s(12), 3, 2).expect("valid");
        let kill = |sc: &Scenario| {
            sc.events()
                .iter()
                .find(|e| e.action == Action::Kill("api-2".into()))
                .map(|e| e.at)
        };
        assert_eq!(kill(&nominal), Some(Duration::from_millis(1500)));
        // The instance added by scaling out is the one scaled back in.
        let scale_in = nominal
            .events()
            .iter()
            .find(|e| matches!(e.action, Action::ScaleIn(_)))
            .expect("a scale-in");
        assert_eq!(scale_in.action.backend(), Some("api-4"));
        assert!(nominal.events().iter().any(|e| e.at < scale_in.at
            && e.action
                == Action::ScaleOut {
                    backend: "api-4".into(),
                    protocol: Protocol::Http
                }));
        let slow = scenario(s(24), 3, 2).expect("valid");
        assert_eq!(kill(&slow), Some(s(3)));
        assert_eq!(slow.end(), s(24));
        assert_eq!(
            slow.events().last().map(|e| e.action.clone()),
            Some(Action::StopLoad)
        );
        // Every fault is undone before the load stops.
        for e in slow.events().iter().filter(|e| e.action.is_fault()) {
            let backend = e.action.backend();
            assert!(
                slow.events().iter().any(|later| later.at > e.at
                    && later.action.backend() == backend
                    && !later.action.is_fault()),
                "{:?} is never undone",
                e.action
            );
        }
    }

    #[test]
    fn too_short_or_too_small_is_refused() {
        let s = |n| Duration::from_secs(n);
        assert!(scenario(s(2), 3, 2).is_err());
        assert!(scenario(s(12), 2, 2).is_err());
        assert!(scenario(s(12), 3, 1).is_err());
    }
}
