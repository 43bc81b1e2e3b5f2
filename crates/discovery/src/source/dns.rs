//! DNS discovery: A/AAAA records of `name:port`, or SRV records whose
//! targets, ports and weights make the endpoint set.
//!
//! The answer is re-resolved when its TTL runs out (the smallest TTL among
//! the records used), clamped to `[min_ttl, max_ttl]`: a TTL of 0 would
//! otherwise turn into a query loop, and a TTL of a day would hide a
//! change for a day. The resolver's own cache is off, so each refresh asks
//! the server; this schedule is the cache.
//!
//! SRV (RFC 2782): only the records of the lowest priority are used (the
//! others are backups); each record's weight becomes the weight of every
//! address of its target, with weight 0 treated as 1 (the balancers need a
//! positive weight; RFC 2782 gives weight 0 "a very small chance").
//!
//! An answer without records (NXDOMAIN, an empty SRV set) is a failure,
//! not an empty set: a DNS mistake must not empty a cluster.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};

use crate::{Discovered, Source, SourceError};

/// What to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsQuery {
    /// A and AAAA records of `host`, every address on `port`.
    Name { host: String, port: u16 },
    /// SRV records of this name.
    Srv(String),
}

impl DnsQuery {
    /// Parses `host:port` (the config's `dns = { name = ... }`).
    pub fn name(s: &str) -> Result<Self, SourceError> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| SourceError::Invalid(format!("{s:?} is not host:port")))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| SourceError::Invalid(format!("{s:?} has no valid port")))?;
        if host.is_empty() {
            return Err(SourceError::Invalid(format!("{s:?} has no host")));
        }
        Ok(Self::Name {
            host: host.to_owned(),
            port,
        })
    }
}

/// How the DNS source resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsOptions {
    /// Name servers to ask (UDP, then TCP for truncated answers); `None`
    /// reads the system's resolver configuration (`/etc/resolv.conf`).
    pub servers: Option<Vec<SocketAddr>>,
    /// Default 1s: the fastest re-resolution, whatever the TTL says.
    pub min_ttl: Duration,
    /// Default 60s: the slowest re-resolution, so a long TTL cannot hide a
    /// change for long.
    pub max_ttl: Duration,
    /// Default 2s: per query attempt.
    pub timeout: Duration,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            servers: None,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A DNS discovery source.
#[derive(Debug)]
pub struct DnsSource {
    resolver: TokioResolver,
    query: DnsQuery,
    opts: DnsOptions,
    /// When the last answer expires; `None` before the first answer.
    refresh_at: Option<tokio::time::Instant>,
}

impl DnsSource {
    pub fn new(query: DnsQuery, opts: DnsOptions) -> Result<Self, SourceError> {
        if opts.min_ttl > opts.max_ttl {
            return Err(SourceError::Invalid(format!(
                "min_ttl {:?} is above max_ttl {:?}",
                opts.min_ttl, opts.max_ttl
            )));
        }
        let (config, mut ropts) = match &opts.servers {
            Some(servers) => {
                let mut group = Vec::with_capacity(servers.len() * 2);
                for addr in servers {
                    group.push(NameServerConfig::new(*addr, Protocol::Udp));
                    group.push(NameServerConfig::new(*addr, Protocol::Tcp));
                }
                (
                    ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group)),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                SourceError::Invalid(format!("cannot read the system DNS configuration: {e}"))
            })?,
        };
        ropts.cache_size = 0;
        ropts.timeout = opts.timeout;
        ropts.attempts = 2;
        // Names are looked up as given: a search-domain walk would turn a
        // typo into a slow series of NXDOMAINs.
        ropts.ndots = 0;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = ropts;
        Ok(Self {
            resolver: builder.build(),
            query,
            opts,
            refresh_at: None,
        })
    }

    fn clamp(&self, valid_until: Instant) -> Duration {
        valid_until
            .saturating_duration_since(Instant::now())
            .clamp(self.opts.min_ttl, self.opts.max_ttl)
    }

    async fn resolve_host(&self, host: &str) -> Result<(Vec<IpAddr>, Instant), SourceError> {
        let lookup = self
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|source| SourceError::Dns {
                name: host.to_owned(),
                source,
            })?;
        Ok((lookup.iter().collect(), lookup.valid_until()))
    }

    async fn resolve(&self) -> Result<(Vec<Discovered>, Duration), SourceError> {
        match &self.query {
            DnsQuery::Name { host, port } => {
                let (ips, valid_until) = self.resolve_host(host).await?;
                if ips.is_empty() {
                    return Err(SourceError::NoRecords(host.clone()));
                }
                let eps = ips
                    .into_iter()
                    .map(|ip| Discovered::new(SocketAddr::new(ip, *port)))
                    .collect();
                Ok((eps, self.clamp(valid_until)))
            }
            DnsQuery::Srv(name) => {
                let srv = self
                    .resolver
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|source| SourceError::Dns {
                        name: name.clone(),
                        source,
                    })?;
                let mut valid_until = srv.as_lookup().valid_until();
                let Some(best) = srv.iter().map(|r| r.priority()).min() else {
                    return Err(SourceError::NoRecords(name.clone()));
                };
                let mut eps = Vec::new();
                for record in srv.iter().filter(|r| r.priority() == best) {
                    let target = record.target().to_ascii();
                    let (ips, until) = self.resolve_host(&target).await?;
                    valid_until = valid_until.min(until);
                    for ip in ips {
                        eps.push(
                            Discovered::new(SocketAddr::new(ip, record.port()))
                                .weight(u32::from(record.weight())),
                        );
                    }
                }
                if eps.is_empty() {
                    return Err(SourceError::NoRecords(name.clone()));
                }
                Ok((eps, self.clamp(valid_until)))
            }
        }
    }
}

impl Source for DnsSource {
    fn describe(&self) -> String {
        match &self.query {
            DnsQuery::Name { host, port } => format!("dns {host}:{port}"),
            DnsQuery::Srv(name) => format!("dns srv {name}"),
        }
    }

    async fn next(&mut self) -> Result<Vec<Discovered>, SourceError> {
        if let Some(at) = self.refresh_at {
            tokio::time::sleep_until(at).await;
        }
        match self.resolve().await {
            Ok((eps, ttl)) => {
                self.refresh_at = Some(tokio::time::Instant::now() + ttl);
                Ok(eps)
            }
            Err(e) => {
                // The driver's backoff paces the retries from here.
                self.refresh_at = None;
                Err(e)
            }
        }
    }
}
