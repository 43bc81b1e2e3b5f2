//! A scenario: a timeline of events applied while the demo runs.
//!
//! Times count from the moment the proxy is up. The runner sleeps until each
//! event's time, applies it to the `Stage` (the backends and the load) and
//! records what it did, so the report can show the timeline next to the
//! per-second figures. The default timeline, faults included, is in
//! [`crate::chaos`].
//!
//! Adding an event kind is two steps: a variant of [`Action`] and its arm in `Stage::apply`; if it acts
//! on one backend, also name it in [`Action::backend`] so the report can tell
//! which cluster it touched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::DemoError;
use crate::backend::{BackendHandle, DEFAULT_LATENCY, Fleet, Protocol};
use crate::load::{LoadConfig, LoadRun, MIX};
use crate::registry::Registry;
use crate::report::{Applied, Scaling};
use crate::resilience::ProxyView;
use crate::stats::Recorder;

/// How long a scaling step waits for the proxy to act on a registry change
/// (a new instance's first request, a drained one's last) before reporting
/// that it did not. Propagation takes milliseconds; this is for a host
/// under heavy load.
const SCALE_WAIT: Duration = Duration::from_secs(3);

/// How often a scaling step looks at the proxy and the backends.
const POLL: Duration = Duration::from_millis(2);

/// Something that happens at a point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Start the load generator (at the demo's rate).
    StartLoad,
    /// Stop sending and wait for the requests in flight.
    StopLoad,
    /// Crash a backend: its port is released and open connections drop.
    Kill(String),
    /// Bring a killed backend back on the same address.
    Restart(String),
    /// Add `extra` to every answer of a backend.
    Slow { backend: String, extra: Duration },
    /// Fail `percent`% of a backend's requests: HTTP 503, gRPC UNAVAILABLE.
    Fail { backend: String, percent: u8 },
    /// Normal latency and no injected errors again.
    Heal(String),
    /// Scale out: start a new backend and register it; the proxy finds it
    /// through the registry.
    ScaleOut { backend: String, protocol: Protocol },
    /// Scale in: drain the backend in the registry, wait until the proxy
    /// sends it nothing and its requests in flight are answered, then
    /// deregister and stop it.
    ScaleIn(String),
}

impl Action {
    /// The backend this action targets, if it targets one.
    pub fn backend(&self) -> Option<&str> {
        match self {
            Action::StartLoad | Action::StopLoad => None,
            Action::Kill(name)
            | Action::Restart(name)
            | Action::Heal(name)
            | Action::ScaleIn(name) => Some(name),
            Action::Slow { backend, .. }
            | Action::Fail { backend, .. }
            | Action::ScaleOut { backend, .. } => Some(backend),
        }
    }

    /// Whether this action breaks something the proxy has to cope with.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Action::Kill(_) | Action::Slow { .. } | Action::Fail { .. }
        )
    }
}

/// An action at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub action: Action,
}

/// An ordered timeline of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    events: Vec<Event>,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// Steady load for `duration`, no faults: the first version of the demo.
    pub fn steady(duration: Duration) -> Scenario {
        Scenario::new()
            .at(Duration::ZERO, Action::StartLoad)
            .at(duration, Action::StopLoad)
    }

    /// Adds an event. Events are kept in time order; events at the same time
    /// keep the order they were added in.
    pub fn at(mut self, at: Duration, action: Action) -> Scenario {
        let index = self.events.partition_point(|e| e.at <= at);
        self.events.insert(index, Event { at, action });
        self
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The time of the last event.
    pub fn end(&self) -> Duration {
        self.events.last().map_or(Duration::ZERO, |e| e.at)
    }
}

/// What events act on.
#[derive(Debug)]
pub(crate) struct Stage<'a> {
    pub fleet: &'a Fleet,
    /// Where backends register; the proxy discovers them there.
    pub registry: &'a Registry,
    pub proxy: SocketAddr,
    pub recorder: Arc<Recorder>,
    /// The proxy's clusters, for the live lines' decision counts.
    pub view: ProxyView,
    pub rate: u32,
    pub live: bool,
    /// The load generator, while it runs.
    load: Option<LoadRun>,
    /// How long load ran, summed over start/stop pairs.
    pub load_duration: Duration,
    /// The scenario's last event time: load never runs past it.
    end: Duration,
    /// Scale-out and scale-in steps, as they went.
    pub scaling: Vec<Scaling>,
    clock: Instant,
}

impl<'a> Stage<'a> {
    pub(crate) fn new(
        fleet: &'a Fleet,
        registry: &'a Registry,
        proxy: SocketAddr,
        recorder: Arc<Recorder>,
        view: ProxyView,
        rate: u32,
        live: bool,
    ) -> Stage<'a> {
        Stage {
            fleet,
            registry,
            proxy,
            recorder,
            view,
            rate,
            live,
            load: None,
            load_duration: Duration::ZERO,
            end: Duration::ZERO,
            scaling: Vec::new(),
            clock: Instant::now(),
        }
    }

    /// Scenario time zero: when the stage was set up, just before
    /// [`play`]. The timeline, the live lines and the proxy's endpoint
    /// changes all count from it.
    pub(crate) fn clock(&self) -> Instant {
        self.clock
    }

    /// Applies one action and describes what it did.
    async fn apply(&mut self, action: &Action) -> Result<String, DemoError> {
        match action {
            Action::StartLoad => {
                if self.load.is_some() {
                    return Ok("load already running".to_owned());
                }
                // Bounded by the timeline so the generator stops by itself
                // even if no StopLoad follows.
                let max = self
                    .end
                    .saturating_sub(self.clock.elapsed())
                    .max(Duration::from_secs(1));
                let config = LoadConfig::new(self.rate, max, self.live);
                self.load = Some(LoadRun::start(
                    config,
                    self.proxy,
                    self.recorder.clone(),
                    self.view.clone(),
                    self.clock,
                )?);
                Ok(format!("start load: {} req/s ({MIX})", self.rate))
            }
            Action::StopLoad => match self.load.take() {
                Some(load) => {
                    self.load_duration += load.stop().await;
                    Ok("stop load".to_owned())
                }
                None => Ok("stop load: not running".to_owned()),
            },
            Action::Kill(name) => {
                let backend = self.backend(name)?;
                backend.stop().await;
                // A crashed process stops heartbeating too.
                self.registry.abandon(name).await;
                Ok(format!(
                    "kill {name} (port closed, connections dropped, heartbeats stopped)"
                ))
            }
            Action::Restart(name) => {
                let backend = self.backend(name)?;
                backend.start().await.map_err(|source| DemoError::Backend {
                    name: name.clone(),
                    addr: backend.addr(),
                    source,
                })?;
                self.registry.register(&backend).await?;
                Ok(format!(
                    "restart {name} on {}, registered again",
                    backend.addr()
                ))
            }
            Action::ScaleOut { backend, protocol } => self.scale_out(backend, *protocol).await,
            Action::ScaleIn(name) => self.scale_in(name).await,
            Action::Slow { backend, extra } => {
                let handle = self.backend(backend)?;
                let (min, max) = DEFAULT_LATENCY;
                handle.set_latency(min + *extra, max + *extra);
                Ok(format!("slow {backend} +{}ms", extra.as_millis()))
            }
            Action::Fail { backend, percent } => {
                let handle = self.backend(backend)?;
                handle.set_error_rate(f64::from(*percent) / 100.0);
                let answer = match handle.protocol() {
                    Protocol::Http => "HTTP 503",
                    Protocol::Grpc => "gRPC UNAVAILABLE",
                };
                Ok(format!("errors {backend} {percent}% ({answer})"))
            }
            Action::Heal(name) => {
                let backend = self.backend(name)?;
                let (min, max) = DEFAULT_LATENCY;
                backend.set_latency(min, max);
                backend.set_error_rate(0.0);
                Ok(format!("heal {name} (normal latency, no errors)"))
            }
        }
    }

    /// Starts and registers a new backend, then waits for its first answer.
    async fn scale_out(&mut self, name: &str, protocol: Protocol) -> Result<String, DemoError> {
        let at = self.clock.elapsed();
        let backend = self.fleet.add(name.to_owned(), protocol)?;
        let registered = Instant::now();
        self.registry.register(&backend).await?;
        let first = poll_until(|| backend.served() > 0).await;
        let first_request_after = first.then(|| registered.elapsed());
        self.scaling.push(Scaling::Out {
            backend: name.to_owned(),
            at,
            first_request_after,
        });
        let outcome = match first_request_after {
            Some(d) => format!(
                "first request answered {} ms after registering",
                d.as_millis()
            ),
            None => format!("no request within {} s", SCALE_WAIT.as_secs()),
        };
        Ok(format!(
            "scale out: {name} started on {}, registered; {outcome}",
            backend.addr()
        ))
    }

    /// Drains, waits for the proxy to stop sending and for the requests in
    /// flight, then deregisters and stops the backend.
    async fn scale_in(&mut self, name: &str) -> Result<String, DemoError> {
        let at = self.clock.elapsed();
        let backend = self.backend(name)?;
        let errors_before = self.recorder.errors();
        let started = Instant::now();
        self.registry.drain(name).await?;
        let addr = backend.addr();
        let view = self.view.clone();
        let seen = poll_until(|| view.endpoint(addr).is_none_or(|e| e.state == "draining")).await;
        let draining_seen_after = seen.then(|| started.elapsed());
        let served_at_drain = backend.served();
        // Requests already sent still get their answers.
        poll_until(|| view.endpoint(addr).is_none_or(|e| e.in_flight == 0)).await;
        let in_flight_at_stop = view.endpoint(addr).map_or(0, |e| e.in_flight);
        self.registry.deregister(name).await?;
        backend.stop().await;
        let stopped_after = started.elapsed();
        self.scaling.push(Scaling::In {
            backend: name.to_owned(),
            at,
            draining_seen_after,
            stopped_after,
            in_flight_at_stop,
            served_while_draining: backend.served().saturating_sub(served_at_drain),
            errors_before,
        });
        let seen = match draining_seen_after {
            Some(d) => format!("the proxy stopped sending after {} ms", d.as_millis()),
            None => format!(
                "the proxy did not mark it draining within {} s",
                SCALE_WAIT.as_secs()
            ),
        };
        Ok(format!(
            "scale in: {name} drained ({seen}), {in_flight_at_stop} in flight, deregistered and stopped after {} ms",
            stopped_after.as_millis()
        ))
    }

    /// The backend named `name`, for actions aimed at one backend.
    pub(crate) fn backend(&self, name: &str) -> Result<BackendHandle, DemoError> {
        self.fleet
            .get(name)
            .ok_or_else(|| DemoError::Scenario(format!("no backend named {name:?}")))
    }
}

/// Polls `done` every [`POLL`] for up to [`SCALE_WAIT`]; true once it holds.
async fn poll_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + SCALE_WAIT;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Plays `scenario` on `stage` and returns what happened; event times count
/// from the stage's clock. Load still running after the last event is
/// stopped, so the demo always ends.
pub(crate) async fn play(
    scenario: &Scenario,
    stage: &mut Stage<'_>,
) -> Result<Vec<Applied>, DemoError> {
    stage.end = scenario.end();
    let mut applied = Vec::with_capacity(scenario.events().len());
    for event in scenario.events() {
        let when = tokio::time::Instant::from_std(stage.clock + event.at);
        tokio::time::sleep_until(when).await;
        let at = stage.clock.elapsed();
        let what = stage.apply(&event.action).await?;
        if stage.live {
            crate::say(&format!("  t={:>5.1}s  >> {what}", at.as_secs_f64()));
        }
        applied.push(Applied {
            at,
            what,
            backend: event.action.backend().map(str::to_owned),
            fault: event.action.is_fault(),
        });
    }
    if stage.load.is_some() {
        let at = stage.clock.elapsed();
        let what = stage.apply(&Action::StopLoad).await?;
        applied.push(Applied {
            at,
            what,
            backend: None,
            fault: false,
        });
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_in_time_order_and_ties_keep_insertion_order() {
        let s = |n| Duration::from_secs(n);
        let scenario = Scenario::new()
            .at(s(5), Action::StopLoad)
            .at(s(0), Action::StartLoad)
            .at(s(5), Action::StartLoad)
            .at(s(2), Action::StopLoad);
        let got: Vec<_> = scenario
            .events()
            .iter()
            .map(|e| (e.at, e.action.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (s(0), Action::StartLoad),
                (s(2), Action::StopLoad),
                (s(5), Action::StopLoad),
                (s(5), Action::StartLoad),
            ]
        );
        assert_eq!(scenario.end(), s(5));
        assert_eq!(Scenario::steady(s(12)).end(), s(12));
    }

    #[test]
    fn actions_name_their_backend_and_faults() {
        let kill = Action::Kill("api-2".into());
        assert_eq!(kill.backend(), Some("api-2"));
        assert!(kill.is_fault());
        let heal = Action::Heal("api-2".into());
        assert!(!heal.is_fault());
        assert_eq!(Action::StartLoad.backend(), None);
    }
}
