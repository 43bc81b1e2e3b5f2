//! An example distributed application built with the Switchyard library.
//!
//! A request crosses three hops, each a set of stateless instances
//! registered in the Switchyard registry and found through it:
//!
//! ```text
//! load ──HTTP──▶ gateway (axum) ──gRPC──▶ catalog (tonic) ──gRPC──▶ pricing (tonic)
//! ```
//!
//! Every instance serves with [`switchyard::Server`] (health, registration,
//! deadline enforcement, a concurrency limit, a graceful drain) and calls
//! the next hop with a [`switchyard::Client`] (registry discovery, P2C,
//! retries, the caller's deadline carried on). The gateway gives each
//! request a deadline ([`gateway::BUDGET`]); catalog and pricing get what
//! is left of it with no code of their own, and pricing reports what
//! reached it.
//!
//! [`scenario::run`] starts the registry and the instances in one process,
//! sends a bounded load, kills a catalog instance, drains a pricing
//! instance and scales the gateway out, and counts what failed.

pub mod catalog;
pub mod gateway;
pub mod instance;
pub mod pricing;
pub mod scenario;

/// Generated messages, clients and servers (from `proto/shop/v1/shop.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("shop.v1");
}

use std::time::Duration;

use switchyard::config::{ClusterConfig, RetryPolicy};

/// A cluster of the instances of `service` found in the registry at
/// `registry`: HTTP/2 (gRPC, and h2c for the gateway), P2C peak-EWMA.
pub fn cluster(registry: &str, service: &str) -> anyhow::Result<ClusterConfig> {
    let toml = format!(
        "[[clusters]]\nname = \"{service}\"\nprotocol = \"http2\"\n\
         discovery = {{ registry = {{ url = \"{registry}\", service = \"{service}\" }} }}\n"
    );
    let mut config = switchyard::config::parse(&toml, &format!("{service}.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config.clusters.remove(0))
}

/// The retry policy of every hop: the default conditions (connect
/// failures, refused streams, resets, UNAVAILABLE), three attempts, and
/// `non_idempotent`, because gRPC calls are POSTs while these are reads:
/// a call cut off by a crashed instance is safe to send again.
pub fn retry() -> RetryPolicy {
    RetryPolicy {
        non_idempotent: true,
        ..RetryPolicy::default()
    }
}

/// How long a client waits for its first endpoint set from the registry.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// A library client for `service`, following the registry, that has seen
/// its first endpoint set.
pub async fn client(registry: &str, service: &str) -> anyhow::Result<switchyard::Client> {
    let config = cluster(registry, service)?;
    let client = switchyard::Client::builder(&config)
        .timeout(Duration::from_secs(2))
        .retry(retry())
        .build()?;
    if !client.discovered(DISCOVERY_WAIT).await {
        anyhow::bail!(
            "no answer from the registry at {registry} for {service} within {DISCOVERY_WAIT:?}"
        );
    }
    Ok(client)
}
