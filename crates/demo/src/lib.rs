//! `switchyard demo`: a whole local system in one process — HTTP and gRPC
//! backends, the Switchyard proxy in front of them, and a load generator —
//! run through a chaos script, with live figures and a final report.
//!
//! Everything listens on loopback ephemeral ports; nothing leaves the host.
//! (`switchyard demo --backends-only`, [`backends_only`], is the exception:
//! it runs HTTP backends on the fixed ports `examples/proxy.toml` routes to.)
//! The proxy is configured from TOML text parsed by `switchyard_config`, the
//! same path a user's file takes, so the demo exercises what users run.
//!
//! # Layout
//! - `lib.rs`: [`DemoOptions`], [`DemoError`] and [`run`], which wires the
//!   parts together and owns the lifecycle (start, play, drain, stop).
//! - [`backend`]: the demo backends (`api-N` over HTTP, `inventory-N` over
//!   gRPC) and their [`BackendHandle`]s: stop, start, latency, error rate.
//! - `config.rs`: the proxy configuration, with retries, hedging, outlier
//!   ejection and health checks on, and both clusters discovered through
//!   the registry.
//! - `registry.rs`: the embedded Switchyard registry the backends register
//!   in, and their registrations (heartbeats, drain, deregister).
//! - [`chaos`]: the default timeline — kill, stall and brown-out backends
//!   one after the other, then bring them back; scale the HTTP service out
//!   by one instance and back in with a drain.
//! - [`scenario`]: timelines of [`Action`]s and how each is applied.
//! - `load.rs`: the open-loop, bounded load generator and the per-second
//!   live line.
//! - `stats.rs`: the recorder request tasks write into: counts, latency
//!   histograms, per-second windows.
//! - [`resilience`]: the proxy's decisions and endpoint states, read from
//!   its clusters' snapshots.
//! - [`events`]: endpoint ejections, restorations and health changes as
//!   they happen, named by instance, for the live display and the summary.
//! - [`backends_only`]: `switchyard demo --backends-only`, the backends of
//!   `examples/proxy.toml` without the rest of the demo.
//! - [`report`]: [`DemoReport`], its verdict and its rendering as the final
//!   summary.
//! - `proto/switchyard/demo/v1/inventory.proto`: the gRPC service, compiled
//!   by `build.rs` without a system `protoc`.

pub mod backend;
pub mod backends_only;
pub mod chaos;
mod config;
pub mod events;
mod load;
mod registry;
pub mod report;
pub mod resilience;
pub mod scenario;
mod stats;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use switchyard_proxy::{Proxy, StartError};

pub use backend::{BackendHandle, Fleet, Protocol};
pub use events::{EndpointChange, ProxyEvent};
pub use report::{BackendReport, DemoReport, InjectedFaults, Scaling};
pub use resilience::{ClusterResilience, Decisions, EndpointResilience};
pub use scenario::{Action, Scenario};

use registry::Registry;
use resilience::ProxyView;
use scenario::Stage;
use stats::{Recorder, RequestKind};

/// Generated messages, client and server (from `proto/switchyard/demo/v1/inventory.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("switchyard.demo.v1");
}

/// The proxy listener all load goes through.
const LISTENER: &str = "public";

/// The proxy's clusters: `api` (HTTP backends) and `inventory` (gRPC).
const CLUSTERS: [&str; 2] = ["api", "inventory"];

/// The cluster serving backends of `protocol`.
pub fn cluster_of(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => CLUSTERS[0],
        Protocol::Grpc => CLUSTERS[1],
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long load runs. Default 12s (the CLI's default too): a dozen live
    /// lines, and room for each fault of the chaos script to be noticed,
    /// routed around and recovered from; the script scales with it.
    pub duration: Duration,
    /// Target requests per second across all load. Default 400: visible
    /// balancing within a second, light enough for a laptop or CI runner.
    pub rate: u32,
    /// HTTP backends (`api-N`). Default 3: the fewest where P2C's choice of
    /// two among several means something.
    pub http_backends: usize,
    /// gRPC backends (`inventory-N`). Default 2.
    pub grpc_backends: usize,
    /// Print a progress line per second. Default true.
    pub live: bool,
    /// The proxy's admin endpoint. Default `None`: 127.0.0.1 on a free port.
    pub admin: Option<SocketAddr>,
    /// Play the chaos script ([`chaos::scenario`]). Default true; false runs
    /// steady load only.
    pub chaos: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(12),
            rate: 400,
            http_backends: 3,
            grpc_backends: 2,
            live: true,
            admin: None,
            chaos: true,
        }
    }
}

/// Why the demo could not run (as opposed to running and finding problems,
/// which the [`DemoReport`] tells).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid demo options: {0}")]
    Options(String),
    #[error("cannot start backend {name} on {addr}: {source}")]
    Backend {
        name: String,
        /// Port 0: an ephemeral port.
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot find a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("the demo's proxy configuration is invalid (a bug in the demo):\n{0}")]
    Config(switchyard_config::Errors),
    #[error("cannot start the proxy: {0}")]
    Proxy(#[from] StartError),
    #[error("the proxy has no listener named {0:?} (a bug in the demo)")]
    NoListener(&'static str),
    #[error("the proxy has no cluster named {0:?} (a bug in the demo)")]
    NoCluster(&'static str),
    #[error("cannot set up the gRPC client: {0}")]
    Client(tonic::transport::Error),
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("registry: {0}")]
    Registry(String),
}

/// Runs the demo: load for `opts.duration`, with the chaos script unless
/// `opts.chaos` is false.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    let scenario = if opts.chaos {
        chaos::scenario(opts.duration, opts.http_backends, opts.grpc_backends)?
    } else {
        Scenario::steady(opts.duration)
    };
    run_scenario(opts, &scenario).await
}

/// Runs the demo with an explicit timeline; `opts.duration` is ignored (the
/// scenario's events say when load starts and stops).
pub async fn run_scenario(opts: DemoOptions, scenario: &Scenario) -> Result<DemoReport, DemoError> {
    if opts.rate == 0 || opts.http_backends == 0 || opts.grpc_backends == 0 {
        return Err(DemoError::Options(
            "rate, http_backends and grpc_backends must all be at least 1".to_owned(),
        ));
    }
    let fleet = Fleet::start(opts.http_backends, opts.grpc_backends)?;
    let registry = Registry::start().await?;
    let started = async {
        // Registered before the proxy starts, so its first discovery answer
        // already lists every backend.
        for backend in fleet.handles() {
            registry.register(&backend).await?;
        }
        let proxy = bind_proxy(&registry, opts.admin).await?;
        let public = proxy
            .listener_addr(LISTENER)
            .ok_or(DemoError::NoListener(LISTENER))?;
        // The same series `/metrics` exports as
        // switchyard_faults_injected_total{route="api",kind="delay"}.
        let faults = proxy
            .cluster(CLUSTERS[0])
            .ok_or(DemoError::NoCluster(CLUSTERS[0]))?
            .metrics()
            .route_faults(LISTENER, config::FAULT_ROUTE);
        Ok::<_, DemoError>((proxy, public, faults))
    };
    let (proxy, public, fault_counters) = match started.await {
        Ok(started) => started,
        Err(err) => {
            fleet.shutdown().await;
            registry.shutdown().await;
            return Err(err);
        }
    };
    let admin = proxy.admin_addr();
    let view = ProxyView::new(
        CLUSTERS
            .iter()
            .filter_map(|name| proxy.cluster(name))
            .collect(),
    );
    if opts.live {
        say(&format!(
            "switchyard demo: {} HTTP backends, {} gRPC backends behind the proxy on {public}",
            opts.http_backends, opts.grpc_backends
        ));
        say(&format!(
            "  dashboard: http://{admin}{}   (live while the demo runs)",
            switchyard_admin::DASHBOARD_PATH
        ));
        say(&format!(
            "  admin: http://{admin}/clusters  http://{admin}/metrics  http://{admin}/events"
        ));
        say(&format!(
            "  registry: http://{}/v1/services   (embedded store; backends register themselves)",
            registry.addr()
        ));
    }

    let recorder = Arc::new(Recorder::new());
    let mut stage = Stage::new(
        &fleet,
        &registry,
        public,
        recorder.clone(),
        view.clone(),
        opts.rate,
        opts.live,
    );
    let clock = stage.clock();
    let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
    // The proxy serves in this task, joined with the scenario, so that it is
    // always shut down and drained whatever the scenario's outcome.
    let serve = proxy.run(async {
        // A dropped sender also means stop.
        let _ = proxy_stopped.await;
    });
    let play = async {
        let (stop_following, following) = tokio::sync::watch::channel(false);
        let follow = events::follow(
            view.clone(),
            |addr| name_at(&fleet, addr),
            clock,
            config::CONSECUTIVE_FAILURES,
            opts.live,
            following,
        );
        let scenario_run = async {
            let played = scenario::play(scenario, &mut stage).await;
            stop_following.send_replace(true);
            played
        };
        let (played, events) = tokio::join!(scenario_run, follow);
        // Taken before shutdown, which stops health checks: the decisions
        // and endpoint states as the load saw them.
        let resilience = view.snapshot(|addr| name_at(&fleet, addr));
        let delayed = fault_counters.delay.get();
        let _ = stop_proxy.send(());
        played.map(|timeline| (timeline, events, resilience, delayed))
    };
    let (drained, played) = tokio::join!(serve, play);
    let load_duration = stage.load_duration;
    let scaling = std::mem::take(&mut stage.scaling);
    let (timeline, events, resilience, delayed) = match played {
        Ok(played) => played,
        Err(err) => {
            fleet.shutdown().await;
            registry.shutdown().await;
            return Err(err);
        }
    };
    // Counted after the proxy drained, so late answers are included.
    let backends = backend_reports(&fleet, &resilience);
    let registry_addr = registry.addr();
    fleet.shutdown().await;
    registry.shutdown().await;

    let by_kind = recorder.kinds();
    // The fault route serves the HTTP requests; gRPC has its own.
    let http_requests = by_kind
        .iter()
        .filter(|(kind, _)| *kind != RequestKind::Grpc)
        .map(|(_, c)| c.requests)
        .sum();
    Ok(DemoReport {
        proxy: public,
        admin,
        target_rate: opts.rate,
        load_duration,
        requests: by_kind.iter().map(|(_, c)| c.requests).sum(),
        errors: by_kind.iter().map(|(_, c)| c.errors).sum(),
        shed: by_kind.iter().map(|(_, c)| c.shed).sum(),
        latency: recorder.latency(),
        host_lag: recorder.host_lag(),
        by_kind,
        backends,
        seconds: recorder.seconds(),
        timeline,
        events,
        resilience,
        registry: registry_addr,
        scaling,
        error_samples: recorder.error_samples(),
        drained,
        faults: InjectedFaults {
            route: config::FAULT_ROUTE.to_owned(),
            ratio: config::FAULT_DELAY_RATIO,
            delay: config::FAULT_DELAY,
            delayed,
            requests: http_requests,
        },
    })
}

/// The name of the demo backend at `addr`, if one is there.
fn name_at(fleet: &Fleet, addr: SocketAddr) -> Option<String> {
    fleet
        .handles()
        .into_iter()
        .find(|h| h.addr() == addr)
        .map(|h| h.name().to_owned())
}

/// Prints a live line. Unlike `println!`, a closed stdout (`switchyard demo
/// | head`) does not panic: the demo still runs to its verdict and exit code.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Binds the proxy. With no admin address given, a free port is picked and
/// written into the config; if another process takes it in between, picks
/// again (twice at most).
async fn bind_proxy(registry: &Registry, admin: Option<SocketAddr>) -> Result<Proxy, DemoError> {
    // An admin on port 0 would collide with the listener's port 0 in config
    // validation, so port 0 there also means "pick one".
    let fixed = admin.filter(|a| a.port() != 0);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let admin = match fixed {
            Some(addr) => addr,
            None => free_port(admin.map_or(Ipv4Addr::LOCALHOST.into(), |a| a.ip()))?,
        };
        let toml = config::proxy_config(registry.url(), admin);
        let config = switchyard_config::parse(&toml, "demo.toml").map_err(DemoError::Config)?;
        match Proxy::bind(config).await {
            Err(StartError::BindAdmin { .. }) if fixed.is_none() && attempts < 3 => continue,
            bound => return Ok(bound?),
        }
    }
}

/// A port that was free a moment ago on `ip`.
fn free_port(ip: std::net::IpAddr) -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind((ip, 0)).map_err(DemoError::Port)?;
    listener.local_addr().map_err(DemoError::Port)
}

fn backend_reports(fleet: &Fleet, clusters: &[ClusterResilience]) -> Vec<BackendReport> {
    let handles = fleet.handles();
    let total = |protocol| {
        handles
            .iter()
            .filter(|h| h.protocol() == protocol)
            .map(BackendHandle::served)
            .sum::<u64>()
    };
    handles
        .iter()
        .map(|h| {
            let served = h.served();
            let of = total(h.protocol());
            BackendReport {
                name: h.name().to_owned(),
                protocol: h.protocol(),
                cluster: cluster_of(h.protocol()).to_owned(),
                address: h.addr(),
                served,
                failed: h.failed(),
                served_since_restart: h.served_since_restart(),
                proxied: clusters
                    .iter()
                    .flat_map(|c| &c.endpoints)
                    .find(|e| e.address == h.addr())
                    .map(|e| e.requests),
                share: if of == 0 {
                    0.0
                } else {
                    served as f64 * 100.0 / of as f64
                },
            }
        })
        .collect()
}
