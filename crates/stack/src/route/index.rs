//! Which routes can match a request, found by its host instead of by
//! trying every route: an edge listener with thousands of virtual hosts
//! pays a hash lookup per request, not a scan.
//!
//! Routes are keyed by their host condition: exact names in one map,
//! `*.suffix` wildcards by their suffix in another, routes without a host
//! condition in a list of their own. A request's candidates are the routes
//! under its host, under each suffix of its host that starts at a dot, and
//! the host-less ones — each list in configuration order. The first route
//! that matches is the first match of the list whose first match comes
//! earliest, so "first match wins" holds exactly as with a scan
//! (`tests::the_index_agrees_with_a_scan`).

use std::{borrow::Cow, collections::HashMap};

use super::matcher::{HostKey, Matcher};

/// Route positions by host condition, each list ascending.
#[derive(Debug, Default)]
pub(super) struct HostIndex {
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// By suffix with its leading dot (`*.example.com` → `.example.com`).
    suffix: HashMap<Box<str>, Box<[u32]>>,
    /// Routes that match any host: no host condition, or a wildcard the
    /// index cannot key by a dot (only built in code; configuration
    /// allows `*.` wildcards only). Always tried.
    any: Box<[u32]>,
}

impl HostIndex {
    pub(super) fn new<'a>(matchers: impl IntoIterator<Item = &'a Matcher>) -> Self {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut suffix: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut any = Vec::new();
        for (i, m) in matchers.into_iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 4 billion routes");
            match m.host_key() {
                HostKey::Exact(h) => exact.entry(h.into()).or_default().push(i),
                HostKey::Suffix(s) if s.starts_with('.') => {
                    suffix.entry(s.into()).or_default().push(i);
                }
                HostKey::Suffix(_) | HostKey::Any => any.push(i),
            }
        }
        let boxed = |m: HashMap<Box<str>, Vec<u32>>| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect()
        };
        Self {
            exact: boxed(exact),
            suffix: boxed(suffix),
            any: any.into_boxed_slice(),
        }
    }

    /// The position of the first route for which `matches` holds among
    /// those that can match `host` (the request's, without port).
    pub(super) fn first(
        &self,
        host: Option<&str>,
        matches: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best = None;
        first_in(&self.any, &mut best, &matches);
        // The first route matched (a listener's catch-all, often its only
        // route): nothing can come before it.
        if best == Some(0) {
            return Some(0);
        }
        let Some(host) = host else {
            return best.map(|i| i as usize);
        };
        // Route hosts are lowercase; most request hosts are too.
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if let Some(list) = self.exact.get(&*host) {
            first_in(list, &mut best, &matches);
        }
        if !self.suffix.is_empty() {
            // `*.example.com` needs at least one character before the
            // suffix, so a dot at position 0 starts no candidate.
            for (at, b) in host.bytes().enumerate().skip(1) {
                if b == b'.' {
                    if let Some(list) = self.suffix.get(&host[at..]) {
                        first_in(list, &mut best, &matches);
                    }
                }
            }
        }
        best.map(|i| i as usize)
    }
}

/// Lowers `best` to the first position in `list` that matches, looking
/// only at positions below the current best.
fn first_in(list: &[u32], best: &mut Option<u32>, matches: &impl Fn(usize) -> bool) {
    for &i in list {
        if best.is_some_and(|b| i >= b) {
            return;
        }
        if matches(i as usize) {
            *best = Some(i);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::{Request, header::HOST};
    use switchyard_config::{PathMatch, RouteMatch};

    use super::*;
    use crate::route::matcher::request_host;

    const HOSTS: [&str; 7] = [
        "api.example.com",
        "*.example.com",
        "*.b.example.com",
        "a.b.example.com",
        "example.com",
        "*.com",
        "other.org",
    ];
    const PATHS: [&str; 4] = ["/", "/api", "/api/v1", "/static"];

    fn random_match(rng: &mut fastrand::Rng) -> RouteMatch {
        let mut m = RouteMatch::default();
        if rng.u8(..4) > 0 {
            m.host = Some(HOSTS[rng.usize(..HOSTS.len())].to_owned());
        }
        match rng.u8(..3) {
            0 => {}
            1 => {
                m.path = Some(PathMatch::Prefix(
                    PATHS[rng.usize(..PATHS.len())].to_owned(),
                ))
            }
            _ => m.path = Some(PathMatch::Exact(PATHS[rng.usize(..PATHS.len())].to_owned())),
        }
        if rng.u8(..4) == 0 {
            m.methods = vec!["POST".to_owned()];
        }
        if rng.u8(..6) == 0 {
            m.headers = BTreeMap::from([("x-env".to_owned(), "canary".to_owned())]);
        }
        m
    }

    fn random_request(rng: &mut fastrand::Rng) -> Request<()> {
        let hosts = [
            "api.example.com",
            "API.Example.com:8080",
            "a.b.example.com",
            "x.b.example.com",
            "b.example.com",
            "example.com",
            "z.com",
            "other.org",
            "unknown.net",
            ".example.com",
        ];
        let paths = ["/", "/api", "/api/v1/users", "/static/app.js", "/other"];
        let mut b = Request::builder()
            .method(if rng.bool() { "GET" } else { "POST" })
            .uri(paths[rng.usize(..paths.len())])
            .header(HOST, hosts[rng.usize(..hosts.len())]);
        if rng.bool() {
            b = b.header("x-env", "canary");
        }
        b.body(()).unwrap()
    }

    /// A property test over generated route tables and requests: the index
    /// picks the route a scan in configuration order picks, every time.
    #[test]
    fn the_index_agrees_with_a_scan() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let (mut matched, mut past_the_first) = (0, 0);
        for _ in 0..2_000 {
            let matchers: Vec<Matcher> = (0..rng.usize(0..24))
                .map(|_| Matcher::new(&random_match(&mut rng)))
                .collect();
            let index = HostIndex::new(&matchers);
            for _ in 0..20 {
                let req = random_request(&mut rng);
                let host = request_host(&req);
                let scan = matchers.iter().position(|m| m.matches(&req, host));
                let indexed = index.first(host, |i| matchers[i].matches(&req, host));
                assert_eq!(indexed, scan, "{req:?} against {matchers:#?}");
                matched += usize::from(scan.is_some());
                past_the_first += usize::from(scan.is_some_and(|i| i > 0));
            }
        }
        // The generated cases are not trivial: most requests find a route,
        // many of them past the first.
        assert!(
            matched > 20_000 && past_the_first > 10_000,
            "{matched} {past_the_first}"
        );
    }

    #[test]
    fn a_request_without_a_host_meets_host_less_routes_only() {
        let matchers = [
            Matcher::new(&RouteMatch {
                host: Some("api.example.com".to_owned()),
                ..RouteMatch::default()
            }),
            Matcher::new(&RouteMatch::default()),
        ];
        let index = HostIndex::new(&matchers);
        let req = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(
            index.first(None, |i| matchers[i].matches(&req, None)),
            Some(1)
        );
    }
}
