//! The configuration reader: TOML text → `switchyard_config::parse_with_warnings`.
//!
//! Never panics on any text, and a configuration it accepts keeps the
//! promises the rest of Switchyard builds on:
//! - every error and warning renders (`switchyard check` prints them);
//! - the configuration serializes (the admin endpoint's `/config`);
//! - every route names defined clusters and a split has a positive total
//!   weight (`Route::cluster` draws from `0..total`);
//! - every route match compiles into the proxy's `Matcher` with nothing
//!   dropped (`Matcher::new` silently skips methods and headers `http`
//!   rejects, trusting validation to have refused them);
//! - every duration the model holds formats and parses back to itself;
//! - `switchyard_proxy::preflight` (the discovery and admin-token checks
//!   `switchyard check` and the proxy's start run on a parsed
//!   configuration) never panics on it. Configurations naming an admin
//!   token file are not preflighted: that check reads the file.

#![no_main]

use std::{collections::HashSet, sync::OnceLock, time::Duration};

use http::{HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use switchyard_config::{
    Destination, Discovery, DnsLookup, format_duration, parse_duration, parse_with_warnings,
};
use switchyard_stack::route::{Matcher, request_host};
use tokio::runtime::Runtime;

/// The etcd client that preflight builds spawns its balancer on the
/// runtime; one worker thread runs (and ends) those tasks.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn round_trips(d: Duration, what: &str) {
    let text = format_duration(d);
    assert_eq!(
        parse_duration(&text),
        Ok(d),
        "{what}: {d:?} formats as {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = match parse_with_warnings(text, "fuzz.toml") {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result without errors");
            let _ = errors.to_string();
            return;
        }
    };
    for w in &checked.warnings {
        let _ = w.to_string();
    }
    let config = checked.config;
    serde_json::to_string(&config).expect("a valid configuration serializes");

    let clusters: HashSet<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        clusters.len(),
        config.clusters.len(),
        "duplicate cluster names"
    );
    let probe = http::Request::builder()
        .uri("http://fuzz.example/x")
        .body(())
        .unwrap();
    for listener in &config.listeners {
        round_trips(listener.tcp_idle_timeout, "tcp_idle_timeout");
        round_trips(listener.udp_session_timeout, "udp_session_timeout");
        if let Some(c) = &listener.cluster {
            assert!(
                clusters.contains(c.as_str()),
                "listener cluster {c:?} undefined"
            );
        }
        for route in &listener.routes {
            round_trips(route.timeout, "route timeout");
            if let Some(d) = route.max_stream_duration {
                round_trips(d, "max_stream_duration");
            }
            match &route.destination {
                Destination::Cluster(c) => {
                    assert!(
                        clusters.contains(c.as_str()),
                        "route cluster {c:?} undefined"
                    );
                }
                Destination::Split(split) => {
                    let total: u64 = split.iter().map(|w| u64::from(w.weight)).sum();
                    assert!(total > 0, "split of route {} has no weight", route.name);
                    for w in split {
                        assert!(
                            clusters.contains(w.cluster.as_str()),
                            "split cluster undefined"
                        );
                    }
                }
            }
            let m = &route.matcher;
            for method in &m.methods {
                assert!(
                    Method::from_bytes(method.as_bytes()).is_ok(),
                    "accepted method {method:?} is not an HTTP method"
                );
            }
            for (name, value) in &m.headers {
                assert!(
                    HeaderName::from_bytes(name.as_bytes()).is_ok(),
                    "accepted header name {name:?} is not a header name"
                );
                assert!(
                    HeaderValue::from_str(value).is_ok(),
                    "accepted header value {value:?} is not a header value"
                );
            }
            let matcher = Matcher::new(m);
            let _ = matcher.matches(&probe, request_host(&probe));
        }
    }
    for cluster in &config.clusters {
        round_trips(cluster.connect_timeout, "connect_timeout");
        round_trips(cluster.idle_timeout, "idle_timeout");
        match &cluster.discovery {
            Discovery::Static(eps) => assert!(!eps.is_empty(), "empty static endpoint list"),
            Discovery::Dns(dns) => {
                assert!(dns.min_ttl <= dns.max_ttl, "min_ttl above max_ttl");
                round_trips(dns.min_ttl, "dns min_ttl");
                round_trips(dns.max_ttl, "dns max_ttl");
                round_trips(dns.timeout, "dns timeout");
                if let DnsLookup::Name(name) = &dns.lookup {
                    assert!(
                        name.rsplit_once(':').is_some(),
                        "dns name {name:?} without a port"
                    );
                }
            }
            Discovery::Registry { url, service, ca } => {
                assert!(url.starts_with("http://") || url.starts_with("https://"));
                assert!(!service.is_empty());
                // A CA is only ever accepted for TLS.
                assert!(ca.is_none() || url.starts_with("https://"), "ca with {url}");
            }
            Discovery::Etcd {
                endpoints,
                prefix,
                ca,
            } => {
                assert!(
                    !endpoints.is_empty() && !prefix.is_empty(),
                    "empty etcd discovery"
                );
                assert!(
                    ca.is_none() || endpoints.iter().all(|e| e.starts_with("https://")),
                    "ca with {endpoints:?}"
                );
            }
        }
    }
    if config.admin.token_file.is_none() {
        let _entered = runtime().enter();
        for e in switchyard_proxy::preflight(&config) {
            let _ = e.to_string();
        }
    }
});
