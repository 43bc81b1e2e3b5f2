//! `[[clusters]]`: discovery, balancing and the resilience policies.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::model::{
    BalanceStrategy, ClusterConfig, Discovery, DnsDiscovery, DnsLookup, HashOn, HealthCheck,
    HealthCheckKind, Limits, OutlierPolicy, ProxyProtocolVersion, RetryBudget, StaticEndpoint,
    UpstreamProtocol, UpstreamTls,
};
use crate::reader::{Ctx, Field, Table};
use crate::validate::{Refs, Site, unique_names};

const CLUSTER_KEYS: &[&str] = &[
    "name",
    "discovery",
    "balance",
    "hash",
    "protocol",
    "connect_timeout",
    "idle_timeout",
    "max_idle_per_endpoint",
    "retry_budget",
    "limits",
    "outlier",
    "health",
    "panic_threshold",
    "tls",
    "proxy_protocol",
];
const TLS_KEYS: &[&str] = &["ca", "server_name", "cert", "key"];
const DISCOVERY_KEYS: &[&str] = &["static", "registry", "dns", "etcd"];
const ENDPOINT_KEYS: &[&str] = &["address", "weight"];
const REGISTRY_KEYS: &[&str] = &["url", "service", "ca"];
const DNS_KEYS: &[&str] = &["name", "srv", "servers", "min_ttl", "max_ttl", "timeout"];
const DNS_LOOKUP_KEYS: &[&str] = &["name", "srv"];
const ETCD_KEYS: &[&str] = &["endpoints", "prefix", "ca"];
const HASH_KEYS: &[&str] = &["header"];
const BUDGET_KEYS: &[&str] = &["ratio", "min_per_second", "ttl"];
const LIMIT_KEYS: &[&str] = &[
    "max_connections",
    "max_pending",
    "max_requests",
    "max_retries",
];
const OUTLIER_KEYS: &[&str] = &[
    "consecutive_failures",
    "failure_rate",
    "window",
    "base_ejection",
    "max_ejection",
    "max_ejection_percent",
];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "grpc",
    "tcp",
    "expected_statuses",
    "interval",
    "timeout",
    "healthy",
    "unhealthy",
];

const BALANCE: &[(&str, BalanceStrategy)] = &[
    ("round-robin", BalanceStrategy::RoundRobin),
    ("least-request", BalanceStrategy::LeastRequest),
    ("random", BalanceStrategy::Random),
    ("ring-hash", BalanceStrategy::RingHash),
    ("maglev", BalanceStrategy::Maglev),
    ("p2c-peak-ewma", BalanceStrategy::P2cPeakEwma),
];
const PROTOCOLS: &[(&str, UpstreamProtocol)] = &[
    ("http1", UpstreamProtocol::Http1),
    ("http2", UpstreamProtocol::Http2),
];

pub(super) fn cluster(
    ctx: &mut Ctx<'_>,
    field: &Field<'_, '_>,
    refs: &mut Refs,
) -> Option<ClusterConfig> {
    let t = field.table(ctx, CLUSTER_KEYS)?;
    let name_field = t.required(ctx, "name");
    let name = name_field.as_ref().and_then(|f| super::name(f, ctx));
    if let (Some(name), Some(f)) = (&name, &name_field) {
        refs.cluster_names.push((name.clone(), Site::of(f)));
    }
    let discovery = t
        .required(ctx, "discovery")
        .and_then(|f| f.table(ctx, DISCOVERY_KEYS))
        .and_then(|d| discovery(ctx, &d));
    let balance_field = t.get("balance");
    let balance = match &balance_field {
        Some(f) => f.choice(ctx, BALANCE),
        None => Some(BalanceStrategy::P2cPeakEwma),
    };
    let hash = t.opt(ctx, "hash", hash_on);
    let hashing = matches!(
        balance,
        Some(BalanceStrategy::RingHash | BalanceStrategy::Maglev)
    );
    match (&balance_field, t.get("hash")) {
        (Some(b), None) if hashing => {
            b.conflict(
                ctx,
                "ring-hash and maglev need `hash` (e.g. hash = \"source-ip\")",
            );
        }
        (_, Some(h)) if balance.is_some() && !hashing => {
            h.conflict(
                ctx,
                "`hash` only applies to balance = \"ring-hash\" or \"maglev\"",
            );
        }
        _ => {}
    }
    let budget = t.opt(ctx, "retry_budget", |f, c| f.table(c, BUDGET_KEYS));
    let limits = t.opt(ctx, "limits", |f, c| f.table(c, LIMIT_KEYS));
    let outlier = t.opt(ctx, "outlier", |f, c| f.table(c, OUTLIER_KEYS));
    let health = t.opt(ctx, "health", |f, c| f.table(c, HEALTH_KEYS));
    let tls = t
        .opt(ctx, "tls", |f, c| f.table(c, TLS_KEYS))
        .and_then(|table| upstream_tls(ctx, &table, name.as_deref().unwrap_or_default()));
    if let (Some(_), Some(name)) = (&tls, &name) {
        refs.tls_clusters.push(name.clone());
    }
    let proxy_protocol = t.opt(ctx, "proxy_protocol", |f, c| {
        f.choice(
            c,
            &[
                ("v1", ProxyProtocolVersion::V1),
                ("v2", ProxyProtocolVersion::V2),
            ],
        )
    });
    if let (Some(_), Some(name)) = (&proxy_protocol, &name) {
        refs.proxy_protocol_clusters.push(name.clone());
    }
    Some(ClusterConfig {
        name: name.unwrap_or_default(),
        discovery: discovery.unwrap_or(Discovery::Static(Vec::new())),
        balance: balance.unwrap_or(BalanceStrategy::P2cPeakEwma),
        hash,
        protocol: t
            .opt(ctx, "protocol", |f, c| f.choice(c, PROTOCOLS))
            .unwrap_or(UpstreamProtocol::Http1),
        connect_timeout: t
            .opt(ctx, "connect_timeout", Field::positive_duration)
            .unwrap_or(Duration::from_secs(1)),
        idle_timeout: t
            .opt(ctx, "idle_timeout", Field::positive_duration)
            .unwrap_or(Duration::from_secs(4)),
        max_idle_per_endpoint: t
            .opt(ctx, "max_idle_per_endpoint", |f, c| f.usize_min(c, 0))
            .unwrap_or(1024),
        retry_budget: budget.map_or_else(RetryBudget::default, |b| retry_budget(ctx, &b)),
        limits: limits.map_or_else(Limits::default, |l| limits_config(ctx, &l)),
        outlier: outlier.map(|o| outlier_policy(ctx, &o)),
        health: health.and_then(|h| health_check(ctx, &h)),
        panic_threshold: t
            .opt(ctx, "panic_threshold", |f, c| f.float_in(c, 0.0, 1.0))
            .unwrap_or(0.5),
        tls,
        proxy_protocol,
    })
}

fn upstream_tls(ctx: &mut Ctx<'_>, t: &Table<'_, '_>, cluster: &str) -> Option<UpstreamTls> {
    let file = |ctx: &mut Ctx<'_>, key: &str| {
        t.opt(ctx, key, |f, c| {
            f.non_empty_str(c).map(std::path::PathBuf::from)
        })
    };
    let ca = file(ctx, "ca");
    let cert = file(ctx, "cert");
    let key = file(ctx, "key");
    let server_name = t
        .opt(ctx, "server_name", |f, c| {
            f.non_empty_str(c).map(str::to_owned)
        })
        .unwrap_or_else(|| cluster.to_owned());
    // A client certificate needs both halves.
    match (&cert, &key) {
        (Some(_), None) => t.missing(ctx, "key"),
        (None, Some(_)) => t.missing(ctx, "cert"),
        _ => {}
    }
    Some(UpstreamTls {
        ca,
        server_name,
        cert,
        key,
    })
}

/// Reports every key after the first of a set of alternatives and returns
/// the first present one, or reports the missing choice.
fn one_of<'a, 'i>(
    ctx: &mut Ctx<'_>,
    t: &Table<'a, 'i>,
    choices: &[&'static str],
    missing: &'static str,
) -> Option<(&'static str, Field<'a, 'i>)> {
    let mut present = choices
        .iter()
        .filter_map(|key| t.get(key).map(|field| (*key, field)));
    let Some(first) = present.next() else {
        t.missing(ctx, missing);
        return None;
    };
    for (key, field) in present {
        field.conflict(
            ctx,
            format!("`{key}` and `{}` are mutually exclusive; give one", first.0),
        );
    }
    Some(first)
}

fn discovery(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> Option<Discovery> {
    let (key, f) = one_of(ctx, t, DISCOVERY_KEYS, "static")?;
    match key {
        "static" => static_endpoints(ctx, &f).map(Discovery::Static),
        "registry" => {
            let r = f.table(ctx, REGISTRY_KEYS)?;
            let url = r.required(ctx, "url").and_then(|f| http_url(&f, ctx));
            let service = r
                .required(ctx, "service")
                .and_then(|f| f.non_empty_str(ctx));
            let ca = r.opt(ctx, "ca", |f, c| {
                if url.as_deref().is_some_and(|u| u.starts_with("http://")) {
                    return f.invalid(c, "no `ca` with an http:// url (a CA is for https://)");
                }
                f.non_empty_str(c).map(std::path::PathBuf::from)
            });
            Some(Discovery::Registry {
                url: url?,
                service: service?.to_owned(),
                ca,
            })
        }
        "dns" => {
            let d = f.table(ctx, DNS_KEYS)?;
            dns(ctx, &d).map(Discovery::Dns)
        }
        _ => {
            let e = f.table(ctx, ETCD_KEYS)?;
            let endpoints = e.required(ctx, "endpoints").and_then(|f| {
                let urls = f.array_of(ctx, http_url)?;
                if urls.is_empty() {
                    return f.invalid(ctx, "at least one etcd URL");
                }
                Some(urls)
            });
            let prefix = e.required(ctx, "prefix").and_then(|f| {
                let s = f.str(ctx)?;
                if !s.starts_with('/') {
                    return f.invalid(ctx, "a key prefix starting with \"/\"");
                }
                Some(s.to_owned())
            });
            let ca = e.opt(ctx, "ca", |f, c| {
                let plain = endpoints
                    .as_ref()
                    .is_some_and(|urls| urls.iter().any(|u| u.starts_with("http://")));
                if plain {
                    return f.invalid(c, "no `ca` with http:// endpoints (a CA is for https://)");
                }
                f.non_empty_str(c).map(std::path::PathBuf::from)
            });
            Some(Discovery::Etcd {
                endpoints: endpoints?,
                prefix: prefix?,
                ca,
            })
        }
    }
}

/// `{ name | srv, servers, min_ttl, max_ttl, timeout }`.
fn dns(ctx: &mut Ctx<'_>, d: &Table<'_, '_>) -> Option<DnsDiscovery> {
    let lookup = match one_of(ctx, d, DNS_LOOKUP_KEYS, "name")? {
        ("name", f) => dns_name(&f, ctx).map(DnsLookup::Name),
        (_, f) => srv_name(&f, ctx).map(DnsLookup::Srv),
    };
    let servers = d.opt(ctx, "servers", |f, ctx| {
        if f.array(ctx)?.is_empty() {
            // An empty list would read as "the system's", which a user who
            // wrote the key did not mean.
            return f.invalid(
                ctx,
                "at least one name server \"ip:port\" (or leave `servers` out for the system's)",
            );
        }
        f.array_of(ctx, Field::socket_addr)
    });
    let min_ttl = d.opt(ctx, "min_ttl", Field::positive_duration);
    let max_ttl = d.opt(ctx, "max_ttl", Field::positive_duration);
    let timeout = d.opt(ctx, "timeout", Field::positive_duration);
    let mut dns = DnsDiscovery::new(lookup?);
    dns.servers = servers.unwrap_or_default();
    dns.min_ttl = min_ttl.unwrap_or(DnsDiscovery::DEFAULT_MIN_TTL);
    dns.max_ttl = max_ttl.unwrap_or(DnsDiscovery::DEFAULT_MAX_TTL);
    dns.timeout = timeout.unwrap_or(DnsDiscovery::DEFAULT_TIMEOUT);
    if !not_above(ctx, d, ("min_ttl", dns.min_ttl), ("max_ttl", dns.max_ttl)) {
        return None;
    }
    Some(dns)
}

/// Whether the duration under key `low` is at most the one under `high`;
/// when not, reports the conflict at whichever of the two was written (the
/// lower first). Either may be a default.
fn not_above(
    ctx: &mut Ctx<'_>,
    t: &Table<'_, '_>,
    low: (&str, Duration),
    high: (&str, Duration),
) -> bool {
    if low.1 <= high.1 {
        return true;
    }
    if let Some(f) = t.get(low.0).or_else(|| t.get(high.0)) {
        f.conflict(
            ctx,
            format!(
                "{} ({}) exceeds {} ({})",
                low.0,
                crate::format_duration(low.1),
                high.0,
                crate::format_duration(high.1)
            ),
        );
    }
    false
}

/// `["ip:port", { address = "ip:port", weight = 2 }]`, non-empty, no address
/// twice (a duplicate would silently double that endpoint's share).
fn static_endpoints(ctx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Option<Vec<StaticEndpoint>> {
    let items = f.array(ctx)?;
    if items.is_empty() {
        return f.invalid(ctx, "at least one endpoint \"ip:port\"");
    }
    let mut endpoints = Vec::new();
    let mut seen = Vec::new();
    for item in &items {
        let (endpoint, site) = if item.value.is_table() {
            let Some(t) = item.table(ctx, ENDPOINT_KEYS) else {
                continue;
            };
            let Some(address_field) = t.required(ctx, "address") else {
                continue;
            };
            let address = address_field.socket_addr(ctx);
            let weight = t
                .opt(ctx, "weight", |f, c| f.u32_in(c, 1, u32::MAX))
                .unwrap_or(1);
            (address.map(|a| (a, weight)), Site::of(&address_field))
        } else {
            let address = if item.value.is_str() {
                item.socket_addr(ctx)
            } else {
                ctx.report(
                    &item.span,
                    &item.path,
                    ErrorKind::WrongType {
                        expected: "\"ip:port\" or { address, weight }",
                        found: item.value.type_str(),
                    },
                );
                None
            };
            (address.map(|a| (a, 1)), Site::of(item))
        };
        if let Some((address, weight)) = endpoint {
            seen.push((address.to_string(), site));
            endpoints.push(StaticEndpoint { address, weight });
        }
    }
    unique_names(ctx, "endpoint", &seen);
    Some(endpoints)
}

fn http_url(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    if rest.is_none_or(str::is_empty) {
        return f.invalid(ctx, "a URL starting with http:// or https://");
    }
    Some(s.to_owned())
}

fn is_dns_name(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// `host:port`, resolved to A/AAAA records by discovery.
fn dns_name(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    let valid = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| is_dns_name(host) && port.parse::<u16>().is_ok());
    if !valid {
        return f.invalid(ctx, "host:port, e.g. \"api.example.internal:8080\"");
    }
    Some(s.to_owned())
}

/// `_service._proto.name`: the port comes from the SRV records.
fn srv_name(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    let mut labels = s.splitn(3, '.');
    let service = labels.next().unwrap_or("");
    let proto = labels.next().unwrap_or("");
    let name = labels.next().unwrap_or("");
    let valid = service.len() > 1
        && service.starts_with('_')
        && matches!(proto, "_tcp" | "_udp")
        && is_dns_name(name);
    if !valid {
        return f.invalid(
            ctx,
            "an SRV name such as \"_http._tcp.api.example.internal\"",
        );
    }
    Some(s.to_owned())
}

/// `hash = "source-ip"` or `hash = { header = "x-user" }`.
fn hash_on(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<HashOn> {
    if f.value.is_table() {
        let t = f.table(ctx, HASH_KEYS)?;
        let header = t.required(ctx, "header")?;
        let name = header.str(ctx)?;
        if !super::route::is_token(name) {
            return header.invalid(ctx, "a header name such as \"x-user-id\"");
        }
        return Some(HashOn::Header(name.to_ascii_lowercase()));
    }
    if f.value.is_str() {
        return f.choice(ctx, &[("source-ip", HashOn::SourceIp)]);
    }
    ctx.report(
        &f.span,
        &f.path,
        ErrorKind::WrongType {
            expected: "\"source-ip\" or { header = \"name\" }",
            found: f.value.type_str(),
        },
    );
    None
}

fn retry_budget(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> RetryBudget {
    let d = RetryBudget::default();
    RetryBudget {
        ratio: t
            .opt(ctx, "ratio", |f, c| f.float_in(c, 0.0, 1.0))
            .unwrap_or(d.ratio),
        min_per_second: t
            .opt(ctx, "min_per_second", |f, c| f.u32_in(c, 0, u32::MAX))
            .unwrap_or(d.min_per_second),
        ttl: t.opt(ctx, "ttl", Field::positive_duration).unwrap_or(d.ttl),
    }
}

fn limits_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> Limits {
    let d = Limits::default();
    let mut read =
        |key: &str, default: usize| t.opt(ctx, key, |f, c| f.usize_min(c, 1)).unwrap_or(default);
    Limits {
        max_connections: read("max_connections", d.max_connections),
        max_pending: read("max_pending", d.max_pending),
        max_requests: read("max_requests", d.max_requests),
        max_retries: read("max_retries", d.max_retries),
    }
}

fn outlier_policy(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> OutlierPolicy {
    let d = OutlierPolicy::default();
    let failure_rate = t.opt(ctx, "failure_rate", |f, c| {
        let rate = f.float(c)?;
        if rate > 0.0 && rate <= 1.0 {
            Some(rate)
        } else {
            f.invalid(c, "a failure ratio above 0 and at most 1, e.g. 0.5")
        }
    });
    let policy = OutlierPolicy {
        consecutive_failures: t
            .opt(ctx, "consecutive_failures", |f, c| f.u32_in(c, 1, u32::MAX))
            .unwrap_or(d.consecutive_failures),
        failure_rate,
        window: t
            .opt(ctx, "window", Field::positive_duration)
            .unwrap_or(d.window),
        base_ejection: t
            .opt(ctx, "base_ejection", Field::positive_duration)
            .unwrap_or(d.base_ejection),
        max_ejection: t
            .opt(ctx, "max_ejection", Field::positive_duration)
            .unwrap_or(d.max_ejection),
        max_ejection_percent: t
            .opt(ctx, "max_ejection_percent", |f, c| f.u32_in(c, 0, 100))
            .unwrap_or(d.max_ejection_percent),
    };
    not_above(
        ctx,
        t,
        ("base_ejection", policy.base_ejection),
        ("max_ejection", policy.max_ejection),
    );
    policy
}

fn health_check(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> Option<HealthCheck> {
    let kind = one_of(ctx, t, &["http", "grpc", "tcp"], "http").and_then(|(key, f)| match key {
        "http" => {
            let path = f.str(ctx)?;
            if !path.starts_with('/') {
                return f.invalid(ctx, "a path starting with \"/\", e.g. \"/healthz\"");
            }
            let expected_statuses = t
                .opt(ctx, "expected_statuses", |f, c| {
                    f.array_of(c, |i, c| i.u16_in(c, 100, 599))
                })
                .unwrap_or_default();
            Some(HealthCheckKind::Http {
                path: path.to_owned(),
                expected_statuses,
            })
        }
        "grpc" => f.str(ctx).map(|service| HealthCheckKind::Grpc {
            service: service.to_owned(),
        }),
        _ => match f.bool(ctx)? {
            true => Some(HealthCheckKind::Tcp),
            false => f.invalid(ctx, "true (omit `health` to disable checks)"),
        },
    });
    if let Some(f) = t.get("expected_statuses") {
        if !t.has("http") {
            f.conflict(
                ctx,
                "`expected_statuses` only applies to `http` health checks",
            );
        }
    }
    let interval = t
        .opt(ctx, "interval", Field::positive_duration)
        .unwrap_or(Duration::from_secs(2));
    let timeout = t
        .opt(ctx, "timeout", Field::positive_duration)
        .unwrap_or(Duration::from_millis(500));
    if timeout >= interval {
        if let Some(f) = t.get("timeout").or_else(|| t.get("interval")) {
            f.conflict(
                ctx,
                format!(
                    "health check timeout ({}) must be shorter than its interval ({})",
                    crate::format_duration(timeout),
                    crate::format_duration(interval)
                ),
            );
        }
    }
    let count = |ctx: &mut Ctx<'_>, key: &str, default: u32| {
        t.opt(ctx, key, |f, c| f.u32_in(c, 1, u32::MAX))
            .unwrap_or(default)
    };
    let healthy = count(ctx, "healthy", 2);
    let unhealthy = count(ctx, "unhealthy", 3);
    Some(HealthCheck {
        kind: kind?,
        interval,
        timeout,
        healthy,
        unhealthy,
    })
}
