//! Process logging through `tracing`.

use std::io::IsTerminal;

use switchyard_config::LogFormat;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
/// Without an explicit format, a terminal gets human-readable lines and
/// anything else (a file, a collector) gets JSON, which machines parse.
///
/// Lines are written by a background thread through a bounded, lossy queue
/// (`tracing-appender`): a slow terminal or a full pipe drops log lines
/// instead of stalling requests. Keep the returned guard alive until exit;
/// dropping it flushes what is queued.
///
/// Returns an error when a subscriber is already installed or `level` is not
/// a valid filter directive.
pub fn init(level: &str, format: Option<LogFormat>) -> Result<LogGuard, LogInitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| LogInitError::Filter(e.to_string()))?;
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let ansi = std::io::stderr().is_terminal();
    // The default queue holds 128,000 lines and is allocated (and touched)
    // up front: 4 MiB of resident memory for a proxy that logs little.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .finish(std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    result.map_err(|e| LogInitError::Install(e.to_string()))?;
    Ok(LogGuard { _flush: guard })
}

/// Flushes queued log lines when dropped.
#[derive(Debug)]
pub struct LogGuard {
    _flush: tracing_appender::non_blocking::WorkerGuard,
}

#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}
