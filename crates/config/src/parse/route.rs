//! `[[listeners.routes]]`: match, destination, timeout, retry and hedge.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::model::{
    Destination, FaultAbort, FaultDelay, FaultPolicy, HedgeDelay, HedgePolicy, PathMatch, RetryOn,
    RetryPolicy, RouteConfig, RouteMatch, WeightedCluster,
};
use crate::reader::{Ctx, Field, Table};
use crate::validate::{Refs, Site};

const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "cluster",
    "split",
    "timeout",
    "max_stream_duration",
    "upgrades",
    "retry",
    "hedge",
    "fault",
    "identities",
];
const MATCH_KEYS: &[&str] = &["host", "path", "path_prefix", "method", "headers"];
const SPLIT_KEYS: &[&str] = &["cluster", "weight"];
const RETRY_KEYS: &[&str] = &[
    "attempts",
    "per_try_timeout",
    "on",
    "status_codes",
    "backoff",
    "non_idempotent",
    "max_replay_bytes",
    "retry_retried",
];
const BACKOFF_KEYS: &[&str] = &["base", "max"];
const HEDGE_KEYS: &[&str] = &["delay", "percentile", "max_attempts", "max_extra_load"];
const FAULT_KEYS: &[&str] = &["abort", "delay"];
const ABORT_KEYS: &[&str] = &["ratio", "status", "grpc_status"];
const DELAY_KEYS: &[&str] = &["ratio", "duration"];

pub(crate) const ROUTE_TIMEOUT: Duration = crate::model::DEFAULT_ROUTE_TIMEOUT;

const RETRY_ON: &[(&str, RetryOn)] = &[
    ("connect-failure", RetryOn::ConnectFailure),
    ("refused-stream", RetryOn::RefusedStream),
    ("reset", RetryOn::Reset),
    ("5xx", RetryOn::Status5xx),
    ("gateway-error", RetryOn::GatewayError),
    ("unavailable", RetryOn::Unavailable),
    ("resource-exhausted", RetryOn::ResourceExhausted),
    ("deadline-exceeded", RetryOn::DeadlineExceeded),
    ("cancelled", RetryOn::Cancelled),
];

pub(super) fn route(
    ctx: &mut Ctx<'_>,
    field: &Field<'_, '_>,
    default_name: &str,
    refs: &mut Refs,
) -> Option<RouteConfig> {
    let t = field.table(ctx, ROUTE_KEYS)?;
    let name = t
        .opt(ctx, "name", Field::non_empty_str)
        .map_or_else(|| default_name.to_owned(), str::to_owned);
    let matcher = t
        .opt(ctx, "match", |f, c| f.table(c, MATCH_KEYS))
        .map(|m| route_match(ctx, &m))
        .unwrap_or_default();
    let destination = destination(ctx, &t, refs);
    let timeout = t
        .opt(ctx, "timeout", Field::positive_duration)
        .unwrap_or(ROUTE_TIMEOUT);
    let max_stream_duration = t.opt(ctx, "max_stream_duration", Field::positive_duration);
    let upgrades = t
        .opt(ctx, "upgrades", |f, c| f.array_of(c, upgrade))
        .unwrap_or_else(|| vec!["websocket".to_owned()]);
    let retry = t
        .opt(ctx, "retry", |f, c| f.table(c, RETRY_KEYS))
        .map(|r| retry(ctx, &r, timeout));
    let hedge = t
        .opt(ctx, "hedge", |f, c| f.table(c, HEDGE_KEYS))
        .and_then(|h| hedge(ctx, &h));
    let fault = t
        .opt(ctx, "fault", |f, c| f.table(c, FAULT_KEYS))
        .map(|f| fault(ctx, &f));
    Some(RouteConfig {
        name,
        matcher,
        destination: destination.unwrap_or(Destination::Split(Vec::new())),
        timeout,
        max_stream_duration,
        upgrades,
        retry: retry.map(Box::new),
        hedge: hedge.map(Box::new),
        fault: fault.map(Box::new),
        identities: t
            .opt(ctx, "identities", |f, c| {
                f.array_of(c, |item, c| item.non_empty_str(c).map(str::to_owned))
            })
            .unwrap_or_default(),
    })
}

fn fault(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> FaultPolicy {
    let ratio = |ctx: &mut Ctx<'_>, t: &Table<'_, '_>| {
        t.required(ctx, "ratio")
            .and_then(|f| f.float_in(ctx, 0.0, 1.0))
    };
    let abort = t
        .opt(ctx, "abort", |f, c| f.table(c, ABORT_KEYS))
        .and_then(|a| {
            let ratio = ratio(ctx, &a);
            let status = a
                .opt(ctx, "status", |f, c| f.u32_in(c, 200, 599))
                .map_or(503, |s| s as u16);
            let grpc_status = a
                .opt(ctx, "grpc_status", |f, c| f.u32_in(c, 1, 16))
                .map_or(14, |s| s as u8);
            Some(FaultAbort {
                ratio: ratio?,
                status,
                grpc_status,
            })
        });
    let delay = t
        .opt(ctx, "delay", |f, c| f.table(c, DELAY_KEYS))
        .and_then(|d| {
            let ratio = ratio(ctx, &d);
            let duration = d
                .required(ctx, "duration")
                .and_then(|f| f.positive_duration(ctx));
            Some(FaultDelay {
                ratio: ratio?,
                duration: duration?,
            })
        });
    FaultPolicy { abort, delay }
}

fn route_match(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> RouteMatch {
    let host = t.opt(ctx, "host", host);
    let exact = t.opt(ctx, "path", url_path);
    let prefix = t.opt(ctx, "path_prefix", url_path);
    let path = match (exact, prefix) {
        (Some(_), Some(_)) => {
            if let Some(f) = t.get("path_prefix") {
                f.conflict(ctx, "`path` and `path_prefix` are mutually exclusive");
            }
            None
        }
        (Some(p), None) => Some(PathMatch::Exact(p)),
        (None, Some(p)) => Some(PathMatch::Prefix(p)),
        (None, None) => None,
    };
    let methods = t.opt(ctx, "method", methods).unwrap_or_default();
    let headers = t.opt(ctx, "headers", headers).unwrap_or_default();
    RouteMatch {
        host,
        path,
        methods,
        headers,
    }
}

/// `api.example.com` or `*.example.com`, lowercased since hosts compare
/// case-insensitively.
fn host(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    let name = s.strip_prefix("*.").unwrap_or(s);
    let label_ok = |label: &str| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !name.split('.').all(label_ok) {
        return f.invalid(
            ctx,
            "a host name such as \"api.example.com\" or \"*.example.com\", without a port",
        );
    }
    Some(s.to_ascii_lowercase())
}

fn url_path(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    if !s.starts_with('/') {
        return f.invalid(ctx, "a path starting with \"/\"");
    }
    Some(s.to_owned())
}

/// An HTTP/1.1 upgrade protocol name (`websocket`), lowercased. `h2c` is
/// refused: a tunnelled h2c connection carries requests past routing.
fn upgrade(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = f.str(ctx)?;
    if s.eq_ignore_ascii_case("h2c") {
        return f.invalid(
            ctx,
            "an upgrade protocol other than \"h2c\" (an h2c tunnel would carry requests past routing)",
        );
    }
    if !is_token(s) {
        return f.invalid(ctx, "an upgrade protocol name such as \"websocket\"");
    }
    Some(s.to_ascii_lowercase())
}

/// RFC 9110 `token`: what method and header names are made of.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `"GET"` or `["GET", "HEAD"]`, uppercased: method names are case-sensitive
/// on the wire but nobody means `get` as a different method.
fn methods(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<Vec<String>> {
    let method = |f: &Field<'_, '_>, ctx: &mut Ctx<'_>| {
        let s = f.str(ctx)?;
        if !is_token(s) {
            return f.invalid(ctx, "an HTTP method such as \"GET\"");
        }
        Some(s.to_ascii_uppercase())
    };
    if f.value.is_array() {
        f.array_of(ctx, method)
    } else {
        method(f, ctx).map(|m| vec![m])
    }
}

/// `{ "x-env" = "canary" }`; names are lowercased as HTTP/2 requires.
fn headers(f: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<BTreeMap<String, String>> {
    // Any key is allowed, so none is "unknown".
    let t = f.table_with_any_keys(ctx)?;
    let mut headers = BTreeMap::new();
    for key in t.keys().collect::<Vec<_>>() {
        let Some(value) = t.get(key) else { continue };
        if !is_token(key) {
            ctx.report(
                &value.key_span,
                &value.path,
                ErrorKind::InvalidValue {
                    expected: "a header name (letters, digits and !#$%&'*+-.^_`|~)".to_owned(),
                    found: key.to_owned(),
                },
            );
            continue;
        }
        let Some(text) = value.str(ctx) else { continue };
        if text.chars().any(|c| c.is_control() && c != '\t') {
            value.invalid::<()>(ctx, "a header value without control characters");
            continue;
        }
        headers.insert(key.to_ascii_lowercase(), text.to_owned());
    }
    Some(headers)
}

/// Exactly one of `cluster = "name"` and `split = [...]`.
fn destination(ctx: &mut Ctx<'_>, t: &Table<'_, '_>, refs: &mut Refs) -> Option<Destination> {
    match (t.get("cluster"), t.get("split")) {
        (Some(_), Some(split)) => {
            split.conflict(
                ctx,
                "`cluster` and `split` are mutually exclusive; give one",
            );
            None
        }
        (Some(f), None) => {
            let name = f.str(ctx)?;
            refs.cluster_refs.push((name.to_owned(), Site::of(&f)));
            refs.route_clusters.push((name.to_owned(), Site::of(&f)));
            Some(Destination::Cluster(name.to_owned()))
        }
        (None, Some(f)) => {
            let items = f.array(ctx)?;
            if items.is_empty() {
                return f.invalid(ctx, "at least one { cluster, weight } entry");
            }
            let weighted: Vec<WeightedCluster> = items
                .iter()
                .filter_map(|item| split_entry(ctx, item, refs))
                .collect();
            if weighted.len() == items.len() && weighted.iter().all(|w| w.weight == 0) {
                return f.invalid(ctx, "weights that sum to more than 0");
            }
            Some(Destination::Split(weighted))
        }
        (None, None) => {
            t.missing(ctx, "cluster");
            None
        }
    }
}

fn split_entry(
    ctx: &mut Ctx<'_>,
    field: &Field<'_, '_>,
    refs: &mut Refs,
) -> Option<WeightedCluster> {
    let t = field.table(ctx, SPLIT_KEYS)?;
    let cluster_field = t.required(ctx, "cluster");
    let cluster = cluster_field.as_ref().and_then(|f| f.str(ctx));
    if let (Some(name), Some(f)) = (cluster, &cluster_field) {
        refs.cluster_refs.push((name.to_owned(), Site::of(f)));
        refs.route_clusters.push((name.to_owned(), Site::of(f)));
    }
    let weight = t
        .required(ctx, "weight")
        .and_then(|f| f.u32_in(ctx, 0, u32::MAX));
    Some(WeightedCluster {
        cluster: cluster?.to_owned(),
        weight: weight?,
    })
}

fn retry(ctx: &mut Ctx<'_>, t: &Table<'_, '_>, route_timeout: Duration) -> RetryPolicy {
    let d = RetryPolicy::default();
    let per_try_timeout = t.opt(ctx, "per_try_timeout", Field::positive_duration);
    if let (Some(per_try), Some(f)) = (per_try_timeout, t.get("per_try_timeout")) {
        if per_try > route_timeout {
            f.conflict(
                ctx,
                format!(
                    "per_try_timeout ({}) exceeds the route timeout ({})",
                    crate::format_duration(per_try),
                    crate::format_duration(route_timeout)
                ),
            );
        }
    }
    let (backoff_base, backoff_max) = t
        .opt(ctx, "backoff", |f, c| f.table(c, BACKOFF_KEYS))
        .map_or((d.backoff_base, d.backoff_max), |b| {
            backoff(ctx, &b, d.backoff_base, d.backoff_max)
        });
    RetryPolicy {
        attempts: t
            .opt(ctx, "attempts", |f, c| f.u32_in(c, 1, 10))
            .unwrap_or(d.attempts),
        per_try_timeout,
        on: t
            .opt(ctx, "on", |f, c| {
                f.array_of(c, |i, c| i.choice(c, RETRY_ON))
            })
            .unwrap_or(d.on),
        status_codes: t
            .opt(ctx, "status_codes", |f, c| {
                f.array_of(c, |i, c| i.u16_in(c, 100, 599))
            })
            .unwrap_or(d.status_codes),
        backoff_base,
        backoff_max,
        non_idempotent: t
            .opt(ctx, "non_idempotent", Field::bool)
            .unwrap_or(d.non_idempotent),
        max_replay_bytes: t
            .opt(ctx, "max_replay_bytes", |f, c| f.usize_min(c, 0))
            .unwrap_or(d.max_replay_bytes),
        retry_retried: t
            .opt(ctx, "retry_retried", Field::bool)
            .unwrap_or(d.retry_retried),
    }
}

/// `backoff = { base, max }`; zero is allowed (retry at once) but the base
/// may not exceed the cap, including the default cap.
fn backoff(
    ctx: &mut Ctx<'_>,
    t: &Table<'_, '_>,
    default_base: Duration,
    default_max: Duration,
) -> (Duration, Duration) {
    let base = t.opt(ctx, "base", Field::duration);
    let max = t.opt(ctx, "max", Field::duration);
    let (base, max) = (base.unwrap_or(default_base), max.unwrap_or(default_max));
    if base > max {
        if let Some(f) = t.get("base").or_else(|| t.get("max")) {
            f.conflict(
                ctx,
                format!(
                    "backoff base ({}) exceeds backoff max ({})",
                    crate::format_duration(base),
                    crate::format_duration(max)
                ),
            );
        }
    }
    (base, max)
}

fn hedge(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> Option<HedgePolicy> {
    let delay = match (t.get("delay"), t.get("percentile")) {
        (Some(_), Some(p)) => {
            p.conflict(
                ctx,
                "`delay` and `percentile` are mutually exclusive; give one",
            );
            None
        }
        (Some(f), None) => f.positive_duration(ctx).map(HedgeDelay::Fixed),
        (None, Some(f)) => f.float(ctx).and_then(|p| {
            if p > 0.0 && p < 100.0 {
                Some(HedgeDelay::Percentile(p))
            } else {
                f.invalid(ctx, "a percentile above 0 and below 100, e.g. 95.0")
            }
        }),
        (None, None) => {
            t.missing(ctx, "delay");
            None
        }
    };
    let max_attempts = t
        .opt(ctx, "max_attempts", |f, c| f.u32_in(c, 2, 5))
        .unwrap_or(2);
    let max_extra_load = t
        .opt(ctx, "max_extra_load", |f, c| f.float_in(c, 0.0, 1.0))
        .unwrap_or(0.1);
    Some(HedgePolicy {
        delay: delay?,
        max_attempts,
        max_extra_load,
    })
}
