//! Request matching on host, path, method and headers.

use http::{HeaderName, HeaderValue, Method, Request, header::HOST};
use switchyard_config::{PathMatch, RouteMatch};

/// A compiled [`RouteMatch`]: all present conditions must hold.
#[derive(Debug, Default)]
pub struct Matcher {
    host: Option<HostMatch>,
    path: Option<PathMatch>,
    methods: Box<[Method]>,
    headers: Box<[(HeaderName, HeaderValue)]>,
}

#[derive(Debug)]
enum HostMatch {
    /// Lowercase host name.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// What a matcher requires of the host, for the route index.
#[derive(Debug)]
pub(super) enum HostKey<'a> {
    Any,
    /// A lowercase host name.
    Exact(&'a str),
    /// A lowercase suffix (`.example.com` for `*.example.com`).
    Suffix(&'a str),
}

impl Matcher {
    pub(super) fn host_key(&self) -> HostKey<'_> {
        match &self.host {
            None => HostKey::Any,
            Some(HostMatch::Exact(h)) => HostKey::Exact(h),
            Some(HostMatch::Suffix(s)) => HostKey::Suffix(s),
        }
    }

    /// Compiles a validated match. Invalid methods or header names cannot
    /// occur here: configuration validation rejected them.
    pub fn new(m: &RouteMatch) -> Self {
        let host = m.host.as_ref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            }
        });
        let methods = m
            .methods
            .iter()
            .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
            .collect();
        let headers = m
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Self {
            host,
            path: m.path.clone(),
            methods,
            headers,
        }
    }

    pub fn matches<B>(&self, req: &Request<B>, host: Option<&str>) -> bool {
        if let Some(want) = &self.host {
            let Some(host) = host else { return false };
            let ok = match want {
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
                HostMatch::Suffix(s) => {
                    host.len() > s.len()
                        && host.as_bytes()[host.len() - s.len()..]
                            .eq_ignore_ascii_case(s.as_bytes())
                }
            };
            if !ok {
                return false;
            }
        }
        if let Some(path) = &self.path {
            let p = req.uri().path();
            let ok = match path {
                PathMatch::Exact(e) => p == e,
                PathMatch::Prefix(pre) => p.starts_with(pre.as_str()),
            };
            if !ok {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, value)| req.headers().get_all(name).iter().any(|v| v == value))
    }
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form
/// HTTP/1.1) or else the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(h) = req.uri().host() {
        return Some(h);
    }
    let raw = req.headers().get(HOST)?.to_str().ok()?;
    Some(strip_port(raw))
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080" → "::1"
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn req(method: &str, uri: &str, host: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, host)
            .header("x-env", "canary")
            .body(())
            .unwrap()
    }

    fn matcher(f: impl FnOnce(&mut RouteMatch)) -> Matcher {
        let mut m = RouteMatch::default();
        f(&mut m);
        Matcher::new(&m)
    }

    fn check(m: &Matcher, r: &Request<()>) -> bool {
        m.matches(r, request_host(r))
    }

    #[test]
    fn empty_match_matches_everything() {
        assert!(check(&Matcher::default(), &req("GET", "/x", "a")));
    }

    #[test]
    fn host_exact_and_wildcard_ignore_case_and_port() {
        let exact = matcher(|m| m.host = Some("api.example.com".into()));
        assert!(check(&exact, &req("GET", "/", "API.example.com:8080")));
        assert!(!check(&exact, &req("GET", "/", "web.example.com")));
        let wild = matcher(|m| m.host = Some("*.example.com".into()));
        assert!(check(&wild, &req("GET", "/", "a.b.Example.com")));
        assert!(!check(&wild, &req("GET", "/", "example.com")));
        assert!(!check(&wild, &req("GET", "/", "badexample.com")));
    }

    #[test]
    fn path_exact_and_prefix() {
        let exact = matcher(|m| m.path = Some(PathMatch::Exact("/healthz".into())));
        assert!(check(&exact, &req("GET", "/healthz", "a")));
        assert!(!check(&exact, &req("GET", "/healthz/x", "a")));
        let prefix = matcher(|m| m.path = Some(PathMatch::Prefix("/api/".into())));
        assert!(check(&prefix, &req("GET", "/api/v1?q=1", "a")));
        assert!(!check(&prefix, &req("GET", "/apix", "a")));
    }

    #[test]
    fn methods_and_headers() {
        let m = matcher(|m| {
            m.methods = vec!["POST".into(), "PUT".into()];
            m.headers = BTreeMap::from([("x-env".to_owned(), "canary".to_owned())]);
        });
        assert!(check(&m, &req("PUT", "/", "a")));
        assert!(!check(&m, &req("GET", "/", "a")));
        let wrong = matcher(|m| {
            m.headers = BTreeMap::from([("x-env".to_owned(), "prod".to_owned())]);
        });
        assert!(!check(&wrong, &req("GET", "/", "a")));
    }

    #[test]
    fn strips_ports_and_ipv6() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
