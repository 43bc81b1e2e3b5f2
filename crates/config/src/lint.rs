//! Warnings: configurations that are valid but almost certainly not what
//! was meant — a route that an earlier one always wins over, gRPC sent to a
//! cluster that speaks HTTP/1.1. `switchyard check` prints them with their
//! location; the proxy logs them at start.

use crate::error::ErrorKind;
use crate::model::{Config, Destination, PathMatch, RouteMatch, UpstreamProtocol};
use crate::reader::Ctx;
use crate::validate::Refs;

/// Records a warning for each suspicious route in `config`.
pub(crate) fn check(ctx: &mut Ctx<'_>, refs: &Refs, config: &Config) {
    for listener in &config.listeners {
        let mut warned: Vec<&str> = Vec::new();
        for (j, route) in listener.routes.iter().enumerate() {
            let Some(site) = refs
                .routes
                .iter()
                .find(|(l, i, _)| *l == listener.name && *i == j)
                .map(|(_, _, s)| s.clone())
            else {
                continue;
            };
            if let Some(earlier) = listener.routes[..j]
                .iter()
                .find(|e| covers(&e.matcher, &route.matcher))
            {
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
