//! Live reconfiguration: SIGHUP and `POST /reload` read the configuration
//! again and apply it without a restart.
//!
//! A reload is all or nothing. The new configuration must parse and
//! validate; then everything that can fail is staged (TLS files, discovery
//! settings, new sockets bound; see `parts.rs`) while the running generation
//! serves on. Only then does it swap in: listeners that keep their name,
//! address and protocol keep their socket and open connections; new
//! connections, and new requests on open HTTP connections, use the new
//! routes and clusters; requests and streams in flight finish on the
//! generation they started with. Clusters whose settings are unchanged are
//! kept whole (endpoint load, latency estimates, ejections, connections); a
//! changed cluster that still connects the same way takes over its
//! endpoints with their state. Removed listeners stop accepting and drain
//! like at shutdown. A refused reload changes nothing and says why.
//!
//! Settings that live for the process — the `[admin]` listener,
//! `runtime.workers` and the log level and format — need a restart; a
//! reload that changes them is refused rather than half applied.

use std::sync::Arc;

use switchyard_admin::{ReloadChanges, ReloadOutcome};
use switchyard_config::Config;
use switchyard_telemetry::trace::Tracer;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::{Proxy, certificate_warnings, parts};

/// Reads and validates the configuration for a reload, or returns its
/// errors, each located (file, line, column) where the configuration says.
/// Runs on a blocking thread.
pub type Loader = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// Settings a running process cannot change, named by what differs.
fn needs_restart(running: &Config, new: &Config) -> Vec<String> {
    let mut differ = Vec::new();
    if running.admin != new.admin {
        differ.push("[admin]");
    }
    if running.runtime.workers != new.runtime.workers {
        differ.push("runtime.workers");
    }
    if running.log.level != new.log.level {
        differ.push("log.level");
    }
    if running.log.format != new.log.format {
        differ.push("log.format");
    }
    differ
        .into_iter()
        .map(|what| format!("{what} changed: it takes a restart to apply; nothing was reloaded"))
        .collect()
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

impl Proxy {
    /// Applies the configuration the loader reads now, or refuses it and
    /// keeps serving the running one. Counted and logged either way.
    pub(crate) async fn reload(&mut self, retired: &mut JoinSet<bool>) -> ReloadOutcome {
        match self.try_reload(retired).await {
            Ok(changes) => {
                info!(
                    generation = self.generation,
                    listeners_added = ?changes.listeners_added,
                    listeners_removed = ?changes.listeners_removed,
                    listeners_updated = ?changes.listeners_updated,
                    clusters_added = ?changes.clusters_added,
                    clusters_removed = ?changes.clusters_removed,
                    clusters_updated = ?changes.clusters_updated,
                    "configuration reloaded"
                );
                self.metrics.config().reloaded(self.generation);
                ReloadOutcome {
                    applied: true,
                    generation: self.generation,
                    errors: Vec::new(),
                    changes,
                }
            }
            Err(errors) => {
                for e in &errors {
                    warn!(error = %e, generation = self.generation, "configuration reload refused; the running configuration keeps serving");
                }
                self.metrics.config().refused();
                ReloadOutcome::refused(self.generation, errors)
            }
        }
    }

    async fn try_reload(
        &mut self,
        retired: &mut JoinSet<bool>,
    ) -> Result<ReloadChanges, Vec<String>> {
        let Some(loader) = self.loader.clone() else {
            return Err(vec![
                "this proxy was not started from a configuration file; there is nothing to reload"
                    .to_owned(),
            ]);
        };
        let config = match tokio::task::spawn_blocking(move || loader()).await {
            Ok(loaded) => loaded?,
            Err(e) => return Err(vec![format!("reading the configuration failed: {e}")]),
        };
        let refused = needs_restart(&self.config, &config);
        if !refused.is_empty() {
            return Err(refused);
        }
        // The admin token rule is unchanged with `[admin]`; certificates
        // close to their end are worth a warning on every load.
        for w in certificate_warnings(&config) {
            warn!(warning = %w, "certificate expires soon");
        }
        let tracer = if config.tracing == self.config.tracing {
            self.tracer.clone()
        } else {
            match &config.tracing {
                Some(t) => Some(
                    Tracer::start(t, Some(self.metrics.spans())).map_err(|e| vec![chain(&e)])?,
                ),
                None => None,
            }
        };
        let config = Arc::new(config);
        let staged = parts::stage(
            &config,
            &self.clusters,
            &self.listeners,
            &self.metrics,
            &self.discovery_options,
            tracer.clone(),
        )
        .await
        .map_err(|e| vec![chain(&e)])?;
        let changes = staged.changes.clone();
        staged.commit(
            &mut self.clusters,
            &mut self.listeners,
            config.runtime.shutdown_grace,
            &self.metrics,
            retired,
        );
        self.config = config;
        self.tracer = tracer;
        self.generation += 1;
        self.publish();
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_wide_settings_need_a_restart() {
        let running = Config::default();
        assert!(needs_restart(&running, &running.clone()).is_empty());
        let mut new = running.clone();
        new.admin.listen = "127.0.0.1:9999".parse().unwrap();
        new.runtime.workers = Some(3);
        new.log.level = "debug".to_owned();
        let refused = needs_restart(&running, &new);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].starts_with("[admin] changed"), "{refused:?}");
        assert!(
            refused[1].starts_with("runtime.workers changed"),
            "{refused:?}"
        );
        assert!(refused[2].starts_with("log.level changed"), "{refused:?}");
        // What a reload applies does not need one.
        let mut new = running.clone();
        new.log.access_log = !running.log.access_log;
        new.runtime.shutdown_grace *= 2;
        assert!(needs_restart(&running, &new).is_empty());
    }
}
