//! A scenario: a timeline of events applied while the demo runs.
//!
//! Times count from the moment the proxy is up. The runner sleeps until each
//! event's time, applies it to the [`Stage`] (the backends and the load) and
//! records what it did, so the report can show the timeline next to the
//! per-second figures. The default timeline, faults included, is in
//! [`crate::chaos`].
//!
//! Adding an event kind (e.g. registering a new backend to scale out) is two
//! steps: a variant of [`Action`] and its arm in [`Stage::apply`]; if it acts
//! on one backend, also name it in [`Action::backend`] so the report can tell
//! which cluster it touched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::DemoError;
use crate::backend::{BackendHandle, DEFAULT_LATENCY, Fleet, Protocol};
use crate::load::{LoadConfig, LoadRun, MIX};
use crate::report::Applied;
use crate::resilience::ProxyView;
use crate::stats::Recorder;

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
}

impl Action {
    /// The backend this action targets, if it targets one.
    pub fn backend(&self) -> Option<&str> {
        match self {
            Action::StartLoad | Action::StopLoad => None,
            Action::Kill(name) | Action::Restart(name) | Action::Heal(name) => Some(name),
            Action::Slow { backend, .. } | Action::Fail { backend, .. } => Some(backend),
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
    clock: Instant,
}

impl<'a> Stage<'a> {
    pub(crate) fn new(
        fleet: &'a Fleet,
        proxy: SocketAddr,
        recorder: Arc<Recorder>,
        view: ProxyView,
        rate: u32,
        live: bool,
    ) -> Stage<'a> {
        Stage {
            fleet,
            proxy,
            recorder,
            view,
            rate,
            live,
            load: None,
            load_duration: Duration::ZERO,
            end: Duration::ZERO,
            clock: Instant::now(),
        }
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
                Ok(format!("kill {name} (port closed, connections dropped)"))
            }
            Action::Restart(name) => {
                let backend = self.backend(name)?;
                backend.start().await.map_err(|source| DemoError::Backend {
                    name: name.clone(),
                    source,
                })?;
                Ok(format!("restart {name} on {}", backend.addr()))
            }
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

    /// The backend named `name`, for actions aimed at one backend.
    pub(crate) fn backend(&self, name: &str) -> Result<BackendHandle, DemoError> {
        self.fleet
            .get(name)
            .ok_or_else(|| DemoError::Scenario(format!("no backend named {name:?}")))
    }
}

/// Plays `scenario` on `stage` and returns what happened. Load still running
/// after the last event is stopped, so the demo always ends.
pub(crate) async fn play(
    scenario: &Scenario,
    stage: &mut Stage<'_>,
) -> Result<Vec<Applied>, DemoError> {
    stage.clock = Instant::now();
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
