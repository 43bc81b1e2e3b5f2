//! Warnings: configurations that are valid but almost certainly not what
//! was meant — a route that an earlier one always wins over, gRPC sent to a
//! cluster that speaks HTTP/1.1. `switchyard check` prints them with their
//! location; the proxy logs them at start.

use std::collections::HashMap;

use crate::error::ErrorKind;
use crate::model::{Config, Destination, PathMatch, RouteMatch, UpstreamProtocol};
use crate::reader::Ctx;
use crate::validate::Refs;

/// Records a warning for each suspicious route in `config`.
pub(crate) fn check(ctx: &mut Ctx<'_>, refs: &Refs, config: &Config) {
    // Looked up once per route: a scan per route would make checking an
    // edge listener's 100,000 virtual hosts quadratic.
    let sites: HashMap<(&str, usize), _> = refs
        .routes
        .iter()
        .map(|(l, i, s)| ((l.as_str(), *i), s))
        .collect();
    for listener in &config.listeners {
        let mut warned: Vec<&str> = Vec::new();
        let mut earlier = Earlier::default();
        for (j, route) in listener.routes.iter().enumerate() {
            let shadowed_by =
                earlier.first_covering(|i| &listener.routes[i].matcher, &route.matcher);
            earlier.add(j, &route.matcher);
            let Some(site) = sites
                .get(&(listener.name.as_str(), j))
                .map(|s| (*s).clone())
            else {
                continue;
            };
            if let Some(earlier) = shadowed_by.map(|i| &listener.routes[i]) {
                ctx.warn(
                    &site.span,
                    &site.path,
                    ErrorKind::ShadowedRoute {
                        route: route.name.clone(),
                        by: earlier.name.clone(),
                    },
                );
            }
            let clusters: Vec<&str> = match &route.destination {
                Destination::Cluster(c) => vec![c.as_str()],
                Destination::Split(s) => s.iter().map(|w| w.cluster.as_str()).collect(),
            };
            // A client-address limit that does not stay below a cluster's
            // request limit lets one client take all of the cluster.
            let per_client = listener.http.max_requests_per_client;
            for cluster in config
                .clusters
                .iter()
                .filter(|c| clusters.contains(&c.name.as_str()))
            {
                let max_requests = cluster.limits.max_requests;
                if usize::try_from(per_client).unwrap_or(usize::MAX) >= max_requests
                    && !warned.contains(&cluster.name.as_str())
                {
                    warned.push(&cluster.name);
                    ctx.warn(
                        &site.span,
                        &site.path,
                        ErrorKind::ClientTakesCluster {
                            listener: listener.name.clone(),
                            cluster: cluster.name.clone(),
                            per_client,
                            max_requests,
                        },
                    );
                }
            }
            if let Some(why) = grpc_sign(&route.matcher) {
                for name in clusters {
                    let http1 = config
                        .clusters
                        .iter()
                        .any(|c| c.name == name && c.protocol == UpstreamProtocol::Http1);
                    if http1 {
                        ctx.warn(
                            &site.span,
                            &site.path,
                            ErrorKind::GrpcToHttp1 {
                                route: route.name.clone(),
                                cluster: name.to_owned(),
                                why,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// The routes before the one being checked, by host, so that finding one
/// that shadows it looks only at those that could: routes without a host
/// condition, routes with the same host, and wildcards whose suffix ends
/// its host. Each list is in configuration order; the first covering route
/// is the one a scan would find (`tests::the_host_index_finds_what_a_scan_finds`).
#[derive(Debug, Default)]
struct Earlier {
    any_host: Vec<usize>,
    /// Lowercase host as written, wildcards included (`*.a.com` covers
    /// `*.a.com`).
    by_host: HashMap<String, Vec<usize>>,
    /// Wildcards by their suffix (`*.a.com` → `.a.com`).
    by_suffix: HashMap<String, Vec<usize>>,
}

impl Earlier {
    fn add(&mut self, i: usize, m: &RouteMatch) {
        let Some(host) = &m.host else {
            self.any_host.push(i);
            return;
        };
        let host = host.to_ascii_lowercase();
        if let Some(suffix) = host.strip_prefix('*') {
            self.by_suffix.entry(suffix.to_owned()).or_default().push(i);
        }
        self.by_host.entry(host).or_default().push(i);
    }

    /// The first earlier route that covers `later` (`matcher(i)` is route
    /// `i`'s match).
    fn first_covering<'m>(
        &self,
        matcher: impl Fn(usize) -> &'m RouteMatch,
        later: &RouteMatch,
    ) -> Option<usize> {
        let mut best = None;
        let mut check = |list: &[usize]| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    return;
                }
                if covers(matcher(i), later) {
                    best = Some(i);
                    return;
                }
            }
        };
        check(&self.any_host);
        if let Some(host) = &later.host {
            let host = host.to_ascii_lowercase();
            if let Some(list) = self.by_host.get(&host) {
                check(list);
            }
            // A wildcard covers names (and narrower wildcards) longer than
            // its suffix: every suffix of the name that starts at a dot
            // after its first character.
            let name = host.strip_prefix('*').unwrap_or(&host);
            for (at, b) in name.bytes().enumerate().skip(1) {
                if b == b'.' {
                    if let Some(list) = self.by_suffix.get(&name[at..]) {
                        check(list);
                    }
                }
            }
        }
        best
    }
}

/// Whether every request `later` matches is matched by `earlier` too, so
/// that `later` can never be chosen (first match wins). Conservative: `true`
/// only when that follows from the conditions alone.
pub(crate) fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => {
            e.eq_ignore_ascii_case(l)
                || e.strip_prefix('*').is_some_and(|suffix| {
                    let l = l.strip_prefix('*').unwrap_or(l);
                    l.len() > suffix.len()
                        && l.to_ascii_lowercase()
                            .ends_with(&suffix.to_ascii_lowercase())
                })
        }
    };
    let path = match (&earlier.path, &later.path) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(PathMatch::Prefix(e)), Some(PathMatch::Prefix(l) | PathMatch::Exact(l))) => {
            l.starts_with(e.as_str())
        }
        (Some(PathMatch::Exact(e)), Some(PathMatch::Exact(l))) => e == l,
        (Some(PathMatch::Exact(_)), Some(PathMatch::Prefix(_))) => false,
    };
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let headers = earlier
        .headers
        .iter()
        .all(|(k, v)| later.headers.get(k) == Some(v));
    host && path && methods && headers
}

/// Why a route looks like it carries gRPC, if it does: a gRPC content type
/// in its header match, or a path of the form `/package.Service/`.
fn grpc_sign(m: &RouteMatch) -> Option<&'static str> {
    if m.headers
        .get("content-type")
        .is_some_and(|v| v.starts_with("application/grpc"))
    {
        return Some("it matches content-type application/grpc");
    }
    let path = match &m.path {
        Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) => p,
        None => return None,
    };
    let service = path.strip_prefix('/')?.split('/').next()?;
    let looks_like_service = path.len() > service.len() + 1
        && service.contains('.')
        && !service.starts_with('.')
        && !service.ends_with('.')
        && service
            .rsplit('.')
            .next()
            .is_some_and(|s| s.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    looks_like_service.then_some("its path names a gRPC service (/package.Service/)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: Option<&str>, path: Option<PathMatch>, methods: &[&str]) -> RouteMatch {
        RouteMatch {
            host: host.map(str::to_owned),
            path,
            methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            ..RouteMatch::default()
        }
    }

    #[test]
    fn coverage() {
        let all = RouteMatch::default();
        let api = m(None, Some(PathMatch::Prefix("/api".into())), &[]);
        let api_v1 = m(None, Some(PathMatch::Prefix("/api/v1".into())), &["GET"]);
        assert!(covers(&all, &api));
        assert!(covers(&api, &api_v1));
        assert!(!covers(&api_v1, &api));
        let wild = m(Some("*.example.com"), None, &[]);
        assert!(covers(&wild, &m(Some("a.example.com"), None, &[])));
        assert!(covers(&wild, &m(Some("*.b.example.com"), None, &[])));
        assert!(!covers(&wild, &m(Some("example.com"), None, &[])));
        assert!(!covers(&m(None, None, &["GET"]), &all));
        let mut with_header = RouteMatch::default();
        with_header.headers.insert("x-canary".into(), "1".into());
        assert!(!covers(&with_header, &all));
        assert!(covers(&all, &with_header));
    }

    /// Generated route tables: for every route, the index finds the first
    /// earlier route that covers it, as a scan does.
    #[test]
    fn the_host_index_finds_what_a_scan_finds() {
        let hosts = [
            None,
            Some("a.com"),
            Some("*.com"),
            Some("*.a.com"),
            Some("b.a.com"),
            Some("*.b.a.com"),
            Some("A.com"),
        ];
        let paths = [
            None,
            Some(PathMatch::Prefix("/".into())),
            Some(PathMatch::Prefix("/x".into())),
            Some(PathMatch::Exact("/x".into())),
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let mut shadowed = 0;
        for _ in 0..500 {
            let routes: Vec<RouteMatch> = (0..next(20))
                .map(|_| {
                    let methods: &[&str] = if next(3) == 0 { &["GET"] } else { &[] };
                    m(
                        hosts[next(hosts.len())],
                        paths[next(paths.len())].clone(),
                        methods,
                    )
                })
                .collect();
            let mut earlier = Earlier::default();
            for (j, r) in routes.iter().enumerate() {
                let scan = routes[..j].iter().position(|e| covers(e, r));
                let indexed = earlier.first_covering(|i| &routes[i], r);
                assert_eq!(indexed, scan, "route {j} of {routes:#?}");
                shadowed += usize::from(scan.is_some());
                earlier.add(j, r);
            }
        }
        assert!(shadowed > 500, "{shadowed}");
    }

    #[test]
    fn grpc_signs() {
        let p = |s: &str| m(None, Some(PathMatch::Prefix(s.into())), &[]);
        assert!(grpc_sign(&p("/helloworld.Greeter/")).is_some());
        assert!(grpc_sign(&p("/switchyard.demo.v1.Inventory/Get")).is_some());
        assert!(grpc_sign(&p("/api/")).is_none());
        assert!(grpc_sign(&p("/index.html")).is_none());
        assert!(grpc_sign(&p("/")).is_none());
    }
}
