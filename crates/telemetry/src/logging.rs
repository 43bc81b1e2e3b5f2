//! Process logging through `tracing`.

use std::io::IsTerminal;

use switchyard_config::LogFormat;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
/// Without an explicit format, a terminal gets human-readable lines and
/// anything else (a file, a collector) gets JSON, which machines parse.
///
/// Returns an error when a subscriber is already installed or `level` is not
/// a valid filter directive.
pub fn init(level: &str, format: Option<LogFormat>) -> Result<(), LogInitError> {
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
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| LogInitError::Install(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}
