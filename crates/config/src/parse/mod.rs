//! TOML document → [`Config`]: the top level, `[admin]`, `[runtime]`, `[log]`
//! and `[[listeners]]`. Routes and clusters live in their own files.
//!
//! Every function here reads what it can, records an error for what it
//! cannot and substitutes the default, so that parsing always runs to the end
//! of the file. The resulting `Config` is only returned when no error was
//! recorded, so the placeholders never escape.

mod cluster;
mod route;

use std::time::Duration;

use toml::Spanned;
use toml::de::DeTable;

use crate::model::{
    AdminConfig, Config, HttpServerConfig, ListenerConfig, ListenerProtocol, ListenerTls,
    LogConfig, LogFormat, OtlpProtocol, ProxyProtocol, RuntimeConfig, TlsCertificate,
    TracingConfig,
};
use crate::reader::{Ctx, Field, Table};
use crate::validate::{Listen, Refs, Site};

const ROOT_KEYS: &[&str] = &[
    "admin",
    "runtime",
    "log",
    "tracing",
    "listeners",
    "clusters",
];
const TRACING_KEYS: &[&str] = &[
    "otlp_endpoint",
    "protocol",
    "service_name",
    "sample_ratio",
    "queue_size",
    "batch_size",
];
const ADMIN_KEYS: &[&str] = &[
    "listen",
    "token_file",
    "max_connections",
    "header_read_timeout",
    "idle_timeout",
];
const RUNTIME_KEYS: &[&str] = &["workers", "shutdown_grace"];
const LOG_KEYS: &[&str] = &["level", "format", "access_log"];
const LISTENER_KEYS: &[&str] = &[
    "name",
    "listen",
    "protocol",
    "routes",
    "cluster",
    "http",
    "tls",
    "proxy_protocol",
    "tcp_idle_timeout",
    "udp_session_timeout",
];
const TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "certificates",
    "client_ca",
    "identity_header",
];
const CERTIFICATE_KEYS: &[&str] = &["server_names", "cert", "key"];
const PROXY_PROTOCOL_KEYS: &[&str] = &["trusted"];
const HTTP_KEYS: &[&str] = &[
    "max_header_bytes",
    "max_headers",
    "header_read_timeout",
    "idle_timeout",
    "max_connection_age",
    "max_concurrent_streams",
    "max_connections",
    "send_timeout",
    "stream_idle_timeout",
    "max_requests_per_client",
];

/// Reads the whole document; names, references and addresses go to `refs`
/// for the cross-reference checks.
pub(crate) fn document(ctx: &mut Ctx<'_>, root: &Spanned<DeTable<'_>>, refs: &mut Refs) -> Config {
    let root = Table::root(ctx, root, ROOT_KEYS);
    let mut config = Config::default();
    if let Some(admin) = root.get("admin").and_then(|f| f.table(ctx, ADMIN_KEYS)) {
        config.admin = admin_config(ctx, &admin);
    }
    if let Some(runtime) = root.get("runtime").and_then(|f| f.table(ctx, RUNTIME_KEYS)) {
        config.runtime = runtime_config(ctx, &runtime);
    }
    if let Some(log) = root.get("log").and_then(|f| f.table(ctx, LOG_KEYS)) {
        config.log = log_config(ctx, &log);
    }
    if let Some(tracing) = root.get("tracing").and_then(|f| f.table(ctx, TRACING_KEYS)) {
        config.tracing = tracing_config(ctx, &tracing);
    }
    if let Some(items) = root.get("listeners").and_then(|f| f.array(ctx)) {
        config.listeners = items
            .iter()
            .filter_map(|item| listener(ctx, item, refs))
            .collect();
    }
    if let Some(items) = root.get("clusters").and_then(|f| f.array(ctx)) {
        config.clusters = items
            .iter()
            .filter_map(|item| cluster::cluster(ctx, item, refs))
            .collect();
    }
    config
}

fn admin_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> AdminConfig {
    let mut admin = AdminConfig::default();
    if let Some(listen) = t.opt(ctx, "listen", Field::socket_addr) {
        admin.listen = listen;
    }
    admin.token_file = t
        .opt(ctx, "token_file", Field::non_empty_str)
        .map(std::path::PathBuf::from);
    if let Some(n) = t.opt(ctx, "max_connections", |f, c| f.usize_min(c, 1)) {
        admin.max_connections = n;
    }
    if let Some(d) = t.opt(ctx, "header_read_timeout", Field::positive_duration) {
        admin.header_read_timeout = d;
    }
    if let Some(d) = t.opt(ctx, "idle_timeout", Field::positive_duration) {
        admin.idle_timeout = d;
    }
    admin
}

fn runtime_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> RuntimeConfig {
    let defaults = RuntimeConfig::default();
    RuntimeConfig {
        workers: t
            .opt(ctx, "workers", |f, c| f.usize_min(c, 1))
            .or(defaults.workers),
        shutdown_grace: t
            .opt(ctx, "shutdown_grace", Field::duration)
            .unwrap_or(defaults.shutdown_grace),
    }
}

fn log_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> LogConfig {
    let defaults = LogConfig::default();
    let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
    LogConfig {
        level: t
            .opt(ctx, "level", Field::non_empty_str)
            .map_or(defaults.level, str::to_owned),
        format: t
            .opt(ctx, "format", |f, c| f.choice(c, &formats))
            .or(defaults.format),
        access_log: t
            .opt(ctx, "access_log", Field::bool)
            .unwrap_or(defaults.access_log),
    }
}

fn tracing_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> Option<TracingConfig> {
    let defaults = TracingConfig::default();
    let protocols = [("grpc", OtlpProtocol::Grpc), ("http", OtlpProtocol::Http)];
    let endpoint = t.required(ctx, "otlp_endpoint").and_then(|f| {
        let url = f.non_empty_str(ctx)?;
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url.to_owned())
        } else {
            f.invalid(ctx, "an http:// or https:// URL of an OTLP collector")
        }
    });
    // Every key is read before giving up, so all errors are reported.
    let config = TracingConfig {
        otlp_endpoint: String::new(),
        protocol: t
            .opt(ctx, "protocol", |f, c| f.choice(c, &protocols))
            .unwrap_or(defaults.protocol),
        service_name: t
            .opt(ctx, "service_name", Field::non_empty_str)
            .map_or(defaults.service_name, str::to_owned),
        sample_ratio: t
            .opt(ctx, "sample_ratio", |f, c| f.float_in(c, 0.0, 1.0))
            .unwrap_or(defaults.sample_ratio),
        queue_size: t
            .opt(ctx, "queue_size", |f, c| f.usize_min(c, 1))
            .unwrap_or(defaults.queue_size),
        batch_size: t
            .opt(ctx, "batch_size", |f, c| f.usize_min(c, 1))
            .unwrap_or(defaults.batch_size),
    };
    Some(TracingConfig {
        otlp_endpoint: endpoint?,
        ..config
    })
}

/// Listener and cluster names end up in metric labels and URLs, so they are
/// restricted to characters that need no escaping there.
pub(crate) fn name(field: &Field<'_, '_>, ctx: &mut Ctx<'_>) -> Option<String> {
    let s = field.str(ctx)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if s.is_empty() || !s.chars().all(valid) {
        return field.invalid(ctx, "a name made of letters, digits, '_', '.' and '-'");
    }
    Some(s.to_owned())
}

fn listener(ctx: &mut Ctx<'_>, field: &Field<'_, '_>, refs: &mut Refs) -> Option<ListenerConfig> {
    let t = field.table(ctx, LISTENER_KEYS)?;
    let name_field = t.required(ctx, "name");
    let name = name_field.as_ref().and_then(|f| name(f, ctx));
    if let (Some(name), Some(f)) = (&name, &name_field) {
        refs.listener_names.push((name.clone(), Site::of(f)));
    }
    let listen_field = t.required(ctx, "listen");
    let listen = listen_field.as_ref().and_then(|f| f.socket_addr(ctx));
    let protocols = [
        ("http", ListenerProtocol::Http),
        ("tcp", ListenerProtocol::Tcp),
        ("udp", ListenerProtocol::Udp),
    ];
    // `None` when the protocol is invalid: protocol-specific checks are then
    // skipped rather than piling guesses on top of the reported error.
    let protocol = match t.get("protocol") {
        Some(f) => f.choice(ctx, &protocols),
        None => Some(ListenerProtocol::Http),
    };
    let label = name.clone().unwrap_or_else(|| t.path.clone());
    if let (Some(address), Some(protocol), Some(f)) = (listen, protocol, &listen_field) {
        refs.listens.push(Listen {
            address,
            udp: protocol == ListenerProtocol::Udp,
            owner: label.clone(),
            site: Site::of(f),
        });
    }

    let is = |p: ListenerProtocol| protocol == Some(p);
    let is_http = is(ListenerProtocol::Http);
    let kind = protocol.map_or("", protocol_name);
    let mut routes = Vec::new();
    match t.get("routes") {
        Some(f) if protocol.is_some() && !is_http => f.conflict(
            ctx,
            format!(
                "routes are for http listeners; a {kind} listener sends everything to `cluster`"
            ),
        ),
        Some(f) => {
            if let Some(items) = f.array(ctx) {
                if items.is_empty() && is_http {
                    f.invalid::<()>(ctx, "at least one route");
                }
                routes = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        refs.routes.push((label.to_owned(), i, Site::of(item)));
                        route::route(ctx, item, &format!("{label}/{i}"), refs)
                    })
                    .collect();
            }
        }
        None if is_http => t.missing(ctx, "routes"),
        None => {}
    }

    let cluster = match t.get("cluster") {
        Some(f) if is_http => {
            f.conflict(
                ctx,
                "an http listener routes with `routes`; `cluster` is for tcp and udp listeners",
            );
            None
        }
        Some(f) => {
            let cluster = f.str(ctx).map(str::to_owned);
            if let Some(cluster) = &cluster {
                refs.cluster_refs.push((cluster.clone(), Site::of(&f)));
                if is(ListenerProtocol::Udp) {
                    refs.udp_clusters.push((cluster.clone(), Site::of(&f)));
                }
            }
            cluster
        }
        None if protocol.is_some() && !is_http => {
            t.missing(ctx, "cluster");
            None
        }
        None => None,
    };

    let mut http = HttpServerConfig::default();
    if let Some(f) = t.get("http") {
        if protocol.is_some() && !is_http {
            f.conflict(
                ctx,
                format!("`http` settings do not apply to a {kind} listener"),
            );
        } else if let Some(table) = f.table(ctx, HTTP_KEYS) {
            http = http_config(ctx, &table);
        }
    }

    let tls = match t.get("tls") {
        Some(f) if is(ListenerProtocol::Udp) => {
            f.conflict(
                ctx,
                "`tls` applies to http and tcp listeners; DTLS is not supported",
            );
            None
        }
        Some(f) => f
            .table(ctx, TLS_KEYS)
            .and_then(|table| listener_tls(ctx, &table)),
        None => None,
    };

    let proxy_protocol = match t.get("proxy_protocol") {
        Some(f) if is(ListenerProtocol::Udp) => {
            f.conflict(ctx, "`proxy_protocol` applies to http and tcp listeners");
            None
        }
        Some(f) => f.table(ctx, PROXY_PROTOCOL_KEYS).and_then(|table| {
            let trusted = table.required(ctx, "trusted")?.array_of(ctx, |item, ctx| {
                let text = item.non_empty_str(ctx)?;
                text.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| {
                        text.parse::<std::net::IpAddr>()
                            .ok()
                            .map(ipnet::IpNet::from)
                    })
                    .or_else(|| item.invalid(ctx, "a network (10.0.0.0/8) or an IP address"))
            })?;
            Some(ProxyProtocol { trusted })
        }),
        None => None,
    };

    let only_for = |ctx: &mut Ctx<'_>, key: &str, wanted: ListenerProtocol, default: Duration| {
        let f = t.get(key)?;
        if protocol.is_some() && !is(wanted) {
            let wanted = protocol_name(wanted);
            f.conflict(ctx, format!("`{key}` only applies to {wanted} listeners"));
            return Some(default);
        }
        f.positive_duration(ctx)
    };
    let tcp_idle_timeout =
        only_for(ctx, "tcp_idle_timeout", ListenerProtocol::Tcp, TCP_IDLE).unwrap_or(TCP_IDLE);
    let udp_session_timeout = only_for(
        ctx,
        "udp_session_timeout",
        ListenerProtocol::Udp,
        UDP_SESSION,
    )
    .unwrap_or(UDP_SESSION);

    if tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
        if let (Some(f), Some(r)) = (
            t.get("routes"),
            routes.iter().find(|r| !r.identities.is_empty()),
        ) {
            f.conflict(
                ctx,
                format!(
                    "route {} lists `identities`, which need `tls.client_ca` on its listener",
                    r.name
                ),
            );
        }
    }

    Some(ListenerConfig {
        name: name.unwrap_or_default(),
        listen: listen.unwrap_or_else(|| AdminConfig::default().listen),
        protocol: protocol.unwrap_or(ListenerProtocol::Http),
        routes,
        cluster,
        http,
        tls,
        proxy_protocol,
        tcp_idle_timeout,
        udp_session_timeout,
    })
}

/// `tls = { cert, key }` or `tls = { certificates = [...] }`.
fn listener_tls(ctx: &mut Ctx<'_>, table: &Table<'_, '_>) -> Option<ListenerTls> {
    let certificate = |ctx: &mut Ctx<'_>, t: &Table<'_, '_>, server_names: Vec<String>| {
        let file = |ctx: &mut Ctx<'_>, key: &'static str| {
            t.required(ctx, key)
                .and_then(|f| f.non_empty_str(ctx).map(std::path::PathBuf::from))
        };
        let cert = file(ctx, "cert");
        let key = file(ctx, "key");
        Some(TlsCertificate {
            server_names,
            cert: cert?,
            key: key?,
        })
    };
    let client_ca = table.opt(ctx, "client_ca", |f, c| {
        f.non_empty_str(c).map(std::path::PathBuf::from)
    });
    let identity_header = table.opt(ctx, "identity_header", |f, c| {
        let name = f.non_empty_str(c)?;
        http_header_name(name)
            .then(|| name.to_ascii_lowercase())
            .or_else(|| f.invalid(c, "an HTTP header name"))
    });
    if let (Some(f), None) = (table.get("identity_header"), &client_ca) {
        f.conflict(
            ctx,
            "`identity_header` needs `client_ca`: without client certificates there is no identity",
        );
    }
    let Some(list) = table.get("certificates") else {
        return Some(ListenerTls {
            certificates: vec![certificate(ctx, table, Vec::new())?],
            client_ca,
            identity_header,
        });
    };
    if table.has("cert") || table.has("key") {
        list.conflict(
            ctx,
            "give either `cert` and `key` or `certificates`, not both",
        );
        return None;
    }
    let entries = list.array(ctx)?;
    if entries.is_empty() {
        return list.invalid(ctx, "at least one certificate");
    }
    let mut certificates = Vec::with_capacity(entries.len());
    for entry in &entries {
        let Some(t) = entry.table(ctx, CERTIFICATE_KEYS) else {
            continue;
        };
        let names = t
            .opt(ctx, "server_names", |f, c| {
                f.array_of(c, |name, c| {
                    let text = name.non_empty_str(c)?;
                    valid_server_name(text)
                        .then(|| text.to_ascii_lowercase())
                        .or_else(|| name.invalid(c, "a DNS name, or `*.` and a DNS name"))
                })
            })
            .unwrap_or_default();
        if let Some(c) = certificate(ctx, &t, names) {
            certificates.push(c);
        }
    }
    (certificates.len() == entries.len()).then_some(ListenerTls {
        certificates,
        client_ca,
        identity_header,
    })
}

/// An HTTP field name (RFC 9110 token characters).
fn http_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A DNS name (letters, digits, `-`, dots between labels), optionally
/// behind `*.`.
fn valid_server_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Default of `tcp_idle_timeout`; the reason is on the model field.
pub(crate) const TCP_IDLE: Duration = Duration::from_secs(3600);
/// Default of `udp_session_timeout`; the reason is on the model field.
pub(crate) const UDP_SESSION: Duration = Duration::from_secs(60);

fn protocol_name(protocol: ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Udp => "udp",
    }
}

fn http_config(ctx: &mut Ctx<'_>, t: &Table<'_, '_>) -> HttpServerConfig {
    let d = HttpServerConfig::default();
    HttpServerConfig {
        max_header_bytes: t
            .opt(ctx, "max_header_bytes", |f, c| f.usize_min(c, 1))
            .unwrap_or(d.max_header_bytes),
        max_headers: t
            .opt(ctx, "max_headers", |f, c| f.usize_min(c, 1))
            .unwrap_or(d.max_headers),
        header_read_timeout: t
            .opt(ctx, "header_read_timeout", Field::positive_duration)
            .unwrap_or(d.header_read_timeout),
        idle_timeout: t
            .opt(ctx, "idle_timeout", Field::positive_duration)
            .unwrap_or(d.idle_timeout),
        max_connection_age: t
            .opt(ctx, "max_connection_age", Field::positive_duration)
            .or(d.max_connection_age),
        max_concurrent_streams: t
            .opt(ctx, "max_concurrent_streams", |f, c| {
                f.u32_in(c, 1, u32::MAX)
            })
            .unwrap_or(d.max_concurrent_streams),
        max_connections: t
            .opt(ctx, "max_connections", |f, c| f.usize_min(c, 1))
            .unwrap_or(d.max_connections),
        send_timeout: t
            .opt(ctx, "send_timeout", Field::positive_duration)
            .unwrap_or(d.send_timeout),
        stream_idle_timeout: t
            .opt(ctx, "stream_idle_timeout", Field::positive_duration)
            .unwrap_or(d.stream_idle_timeout),
        max_requests_per_client: t
            .opt(ctx, "max_requests_per_client", |f, c| {
                f.u32_in(c, 1, u32::MAX)
            })
            .unwrap_or(d.max_requests_per_client),
    }
}
