//! The `switchyard` command.
//!
//! Exit codes scripts can rely on: 0 success; 1 the command failed (invalid
//! configuration, a port in use, a demo whose system did not hold its
//! promises); 2 invalid command-line usage.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use switchyard_config::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Service-to-service networking: proxy, registry and demo"
)]
struct Cli {
    /// Log format; default: human-readable on a terminal, JSON otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log level or filter directive (e.g. "info", "switchyard=debug");
    /// RUST_LOG overrides it.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy with a TOML configuration.
    Proxy {
        /// Path to the configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also reload when the configuration file changes (checked every
        /// second), besides SIGHUP and `POST /reload`.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration and report every error with its location.
    Check {
        /// Path to the configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the service registry (HTTP+JSON API with blocking-query watches).
    Registry {
        /// Address to listen on; anything beyond loopback needs --token-file.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: std::net::SocketAddr,
        /// Where registrations live: embedded:DIR (durable, one process) or
        /// etcd:URL,URL,... (any number of registry processes).
        #[arg(long, default_value = "embedded:switchyard-registry")]
        store: switchyard_registry::StoreSpec,
        /// File holding the bearer token that writes must present.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Connections served at once; at the limit new clients wait in the
        /// kernel backlog. Every watching proxy holds one per service.
        #[arg(
            long,
            default_value_t = switchyard_registry::server::MAX_CONNECTIONS,
            value_parser = parse_connections
        )]
        max_connections: usize,
        /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
        /// --tls-key. Rotated files serve new handshakes within 5 s.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// With --tls-cert: require client certificates that chain to this
        /// CA bundle (mutual TLS).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Bring up a whole local system (backends, proxy, load) and report.
    ///
    /// The proxy's own log lines are kept to errors while the demo runs (the
    /// live display tells ejections and restorations with instance names);
    /// --log-level or RUST_LOG brings them back.
    Demo {
        /// How long the load runs, e.g. "12s", "1m"; at least 5s, the time
        /// the chaos script needs for each fault to be noticed and recovered
        /// from [default: 12s]. With --backends-only: how long the backends
        /// serve, any length [default: until Ctrl-C or SIGTERM].
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Target requests per second across all load; at least 1.
        #[arg(
            long,
            default_value_t = 400,
            value_parser = parse_rate,
            conflicts_with = "backends_only"
        )]
        rate: u32,
        /// Do not print a live line per second.
        #[arg(long, conflicts_with = "backends_only")]
        quiet: bool,
        /// Run only the HTTP backends examples/proxy.toml routes to (api-1 on
        /// 127.0.0.1:9001, api-2 on 127.0.0.1:9002) until Ctrl-C or SIGTERM,
        /// for `switchyard proxy --config examples/proxy.toml` in another
        /// terminal.
        #[arg(long)]
        backends_only: bool,
    },
}

/// The demo's default run.
const DEMO_DURATION: Duration = Duration::from_secs(12);

// The --duration help above spells the chaos script's minimum out.
const _: () = assert!(
    switchyard_demo::chaos::MIN_DURATION.as_secs() == 5,
    "update the minimum in the help of `demo --duration`"
);

/// The demo's log filter unless --log-level or RUST_LOG says otherwise: the
/// proxy's WARN and INFO lines (endpoints named by address) would break up
/// the live display, which tells the same changes with instance names.
/// Errors still show, and the demo's own warnings.
const DEMO_LOG_FILTER: &str = "error,switchyard_demo=warn";

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard_config::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<u32, String> {
    let rate: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of requests per second"))?;
    if rate == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(rate)
}

fn parse_connections(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of connections"))?;
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

/// A usage error found after parsing: printed like clap's own (with the
/// subcommand's usage) and exits 2.
fn usage_error(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let command = cli
        .find_subcommand_mut(subcommand)
        .expect("usage errors name an existing subcommand");
    command
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

/// An error and its causes, each once: an error whose message already
/// includes its source's ("cannot bind ...: Address in use") is not followed
/// by the source again, as `{:#}` would.
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let format = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    match cli.command {
        Command::Check { config } => Ok(check(&config)),
        Command::Proxy { config, watch } => {
            let checked = match switchyard_config::load_with_warnings(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "switchyard: {} configuration error(s); not starting",
                        errors.errors.len()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            };
            let cfg = checked.config;
            let level = cli.log_level.unwrap_or_else(|| cfg.log.level.clone());
            let _log = switchyard_telemetry::logging::init(&level, format.or(cfg.log.format))?;
            for w in &checked.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            for w in switchyard_proxy::certificate_warnings(&cfg) {
                tracing::warn!(warning = %w, "certificate expires soon");
            }
            switchyard_serve::fd::check_at_start(&proxy_fd_budget(&cfg));
            let runtime = runtime(cfg.runtime.workers)?;
            let drained = runtime.block_on(async {
                let (shutdown, hangups) = shutdown_signal();
                let proxy = switchyard_proxy::Proxy::bind(cfg)
                    .await?
                    .with_loader(reload_loader(config.clone()));
                tokio::spawn(hangups.reload(proxy.reloader()));
                if watch {
                    tokio::spawn(watch_file(config.clone(), proxy.reloader()));
                }
                anyhow::Ok(proxy.run(shutdown).await)
            })?;
            if !drained {
                tracing::warn!("exited with connections still open after the grace period");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry {
            listen,
            store,
            token_file,
            max_connections,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let level = cli.log_level.unwrap_or_else(|| "info".to_owned());
            let _log = switchyard_telemetry::logging::init(&level, format)?;
            let token = match token_file {
                Some(path) => Some(read_token(&path)?),
                None => None,
            };
            let mut budget = switchyard_serve::fd::Budget::new();
            budget.add("registry connections", max_connections);
            switchyard_serve::fd::check_at_start(&budget);
            let runtime = runtime(None)?;
            runtime.block_on(async {
                let server =
                    switchyard_registry::RegistryServer::bind(switchyard_registry::ServerOptions {
                        listen,
                        store,
                        token,
                    })
                    .await?
                    .max_connections(max_connections);
                let server = match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => server.tls(&switchyard_config::ListenerTls {
                        certificates: vec![switchyard_config::TlsCertificate {
                            server_names: Vec::new(),
                            cert,
                            key,
                        }],
                        client_ca: tls_client_ca,
                        identity_header: None,
                    })?,
                    _ => server,
                };
                let (shutdown, hangups) = shutdown_signal();
                tokio::spawn(hangups.ignore("the registry"));
                server.run(shutdown).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            backends_only: true,
            ..
        } => {
            let level = cli.log_level.unwrap_or_else(|| "warn".to_owned());
            let _log =
                switchyard_telemetry::logging::init(&level, format.or(Some(LogFormat::Text)))?;
            let runtime = runtime(None)?;
            // The signal handlers need the runtime: made inside it.
            runtime.block_on(async {
                let (shutdown, hangups) = shutdown_signal();
                tokio::spawn(hangups.ignore("the demo backends"));
                switchyard_demo::backends_only::run(duration, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            rate,
            quiet,
            backends_only: false,
        } => {
            let duration = duration.unwrap_or(DEMO_DURATION);
            let min = switchyard_demo::chaos::MIN_DURATION;
            if duration < min {
                usage_error(
                    "demo",
                    format!(
                        "--duration must be at least {}s, the time the chaos script needs for each fault \
                         to be noticed and recovered from (got {:.1}s)",
                        min.as_secs(),
                        duration.as_secs_f64()
                    ),
                );
            }
            let level = cli.log_level.unwrap_or_else(|| DEMO_LOG_FILTER.to_owned());
            let _log =
                switchyard_telemetry::logging::init(&level, format.or(Some(LogFormat::Text)))?;
            let runtime = runtime(None)?;
            let report = runtime.block_on(switchyard_demo::run(switchyard_demo::DemoOptions {
                duration,
                rate,
                live: !quiet,
                ..Default::default()
            }))?;
            println!("{}", report.render());
            Ok(if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The descriptors the proxy's connection limits may use: each HTTP
/// listener's `max_connections`, the admin's, and each cluster's upstream
/// `limits.max_connections`. TCP listeners have no connection limit and
/// UDP sessions are bounded by their timeout; the reserve covers the rest.
fn proxy_fd_budget(cfg: &switchyard_config::Config) -> switchyard_serve::fd::Budget {
    use switchyard_config::ListenerProtocol;
    let mut budget = switchyard_serve::fd::Budget::new();
    for l in &cfg.listeners {
        if l.protocol == ListenerProtocol::Http {
            budget.add(format!("listener {}", l.name), l.http.max_connections);
        }
    }
    budget.add("admin", cfg.admin.max_connections);
    for c in &cfg.clusters {
        budget.add(format!("cluster {}", c.name), c.limits.max_connections);
    }
    budget
}

/// The token is the file's content without surrounding whitespace (so a
/// trailing newline from `echo` does not become part of it).
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token.to_owned())
}

/// Validates a configuration as `proxy` would before starting: the file,
/// then what the proxy checks at start (admin token, discovery settings).
/// Warnings are printed but do not fail the check.
fn check(path: &std::path::Path) -> ExitCode {
    match switchyard_config::load_with_warnings(path) {
        Ok(checked) => {
            for w in &checked.warnings {
                eprintln!("warning: {w}");
            }
            let cfg = &checked.config;
            let refused = match runtime(Some(1)) {
                Ok(rt) => {
                    let _entered = rt.enter();
                    switchyard_proxy::preflight(cfg)
                }
                Err(e) => {
                    eprintln!("switchyard: {}", error_chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            let expiring = switchyard_proxy::certificate_warnings(cfg);
            for w in &expiring {
                eprintln!("warning: {w}");
            }
            let count = refused.len();
            for e in refused {
                eprintln!(
                    "{}: {}",
                    path.display(),
                    error_chain(&anyhow::Error::new(e))
                );
            }
            if count > 0 {
                eprintln!("{}: {count} error(s)", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} listener(s), {} cluster(s), {} warning(s))",
                path.display(),
                cfg.listeners.len(),
                cfg.clusters.len(),
                checked.warnings.len() + expiring.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
            ExitCode::FAILURE
        }
    }
}

/// One worker runs a current-thread runtime (no cross-thread scheduling cost,
/// the cheapest setup for a sidecar pinned to one core); more use the
/// work-stealing runtime.
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // By default one worker per core the process may run on (its CPU
    // affinity and cgroup quota, as `available_parallelism` reads them). With
    // one core there is nothing to steal work from: the current-thread
    // runtime serves the same load without the work-stealing scheduler's
    // cross-thread wake-ups (see BENCHMARKS.md, "Runtime").
    let workers = workers_for(workers, std::thread::available_parallelism().ok());
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .thread_name("switchyard")
        .build()
        .context("cannot start the runtime")
}

/// The worker threads to run: those configured, else one (the
/// current-thread runtime) when one core is available, else `None`: the
/// work-stealing runtime with one worker per available core.
fn workers_for(
    configured: Option<usize>,
    available: Option<std::num::NonZeroUsize>,
) -> Option<usize> {
    configured.or_else(|| available.filter(|n| n.get() == 1).map(|_| 1))
}

/// How a reload reads the configuration file: parsed and validated like
/// at start; errors come back located, warnings are logged.
fn reload_loader(path: PathBuf) -> switchyard_proxy::Loader {
    std::sync::Arc::new(move || match switchyard_config::load_with_warnings(&path) {
        Ok(checked) => {
            for w in &checked.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            Ok(checked.config)
        }
        Err(errors) => Err(errors.errors.iter().map(ToString::to_string).collect()),
    })
}

/// What tells a file changed: its modification time, size and inode (an
/// editor or a config manager often replaces the file rather than writing
/// it in place).
fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// `--watch`: reloads when the configuration file changes. A change is
/// applied once the file has stayed the same for a moment, so a file being
/// written is not read half-way; a file that does not validate is refused
/// like any reload (and logged), and the next change tries again.
async fn watch_file(path: PathBuf, reloader: switchyard_proxy::Reloader) {
    const EVERY: Duration = Duration::from_secs(1);
    let mut applied = file_stamp(&path);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let seen = file_stamp(&path);
        if seen == applied || seen.is_none() {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if file_stamp(&path) != seen {
            continue; // still being written
        }
        tracing::info!(file = %path.display(), "configuration file changed: reloading");
        applied = seen;
        if reloader.reload().await.is_none() {
            return;
        }
    }
}

/// SIGHUP, caught so that it never kills the process (its default action):
/// operators and tools send it expecting a reload, and a process that dies
/// on it drops every request in flight.
struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            return s.recv().await.is_some();
        }
        std::future::pending::<bool>().await
    }

    /// The proxy: each SIGHUP reloads the configuration file (the proxy
    /// logs what changed, or why it kept the running configuration).
    async fn reload(mut self, reloader: switchyard_proxy::Reloader) {
        while self.next().await {
            tracing::info!("SIGHUP received: reloading the configuration");
            if reloader.reload().await.is_none() {
                return;
            }
        }
    }

    /// Commands without a configuration file log it and carry on.
    async fn ignore(mut self, what: &'static str) {
        while self.next().await {
            tracing::warn!("SIGHUP received: {what} has no configuration to reload; carrying on");
        }
    }
}

/// Resolves on SIGTERM or SIGINT, and catches SIGHUP ([`Hangups`]). The
/// handlers are installed when this is called, not when the future is first
/// polled, so call it before binding.
fn shutdown_signal() -> (impl std::future::Future<Output = ()>, Hangups) {
    #[cfg(unix)]
    let (term, hangups) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            Hangups(signal(SignalKind::hangup()).ok()),
        )
    };
    #[cfg(not(unix))]
    let hangups = Hangups();
    let shutdown = async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term => tracing::info!("SIGTERM received"),
        }
    };
    (shutdown, hangups)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::workers_for;

    #[test]
    fn one_available_core_runs_the_current_thread_runtime_by_default() {
        let cores = |n| NonZeroUsize::new(n);
        assert_eq!(workers_for(None, cores(1)), Some(1));
        // More cores: the work-stealing runtime sizes itself.
        assert_eq!(workers_for(None, cores(2)), None);
        assert_eq!(workers_for(None, None), None);
        // What is configured wins.
        assert_eq!(workers_for(Some(4), cores(1)), Some(4));
        assert_eq!(workers_for(Some(1), cores(8)), Some(1));
    }
}
