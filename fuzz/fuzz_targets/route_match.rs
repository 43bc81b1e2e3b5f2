//! Routing of a request head: `headers::one_authority`, `request_host` and
//! the route `Matcher`s, in the order the proxy runs them.
//!
//! The input is a request head in HTTP/1.1 text form (`METHOD TARGET
//! VERSION`, then `Name: value` lines); whatever `http` accepts of it is
//! built into a `Request`, as hyper would hand it to the proxy. Checks:
//! - nothing panics, for any method, target, version and `Host` headers;
//! - after `one_authority` accepts a request there is at most one `Host`,
//!   and an HTTP/1.1 absolute-form target has replaced it;
//! - `request_host` returns a piece of the URI authority or the `Host`
//!   header, never anything else;
//! - each fixed matcher (exact and wildcard hosts, exact and prefix paths,
//!   methods, headers) agrees with a plain restatement of its rules.

#![no_main]

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Method, Request, Version, header::HOST};
use libfuzzer_sys::fuzz_target;
use switchyard_config::{PathMatch, RouteMatch};
use switchyard_stack::{
    proxy::headers::one_authority,
    route::{Matcher, request_host},
};

/// Builds a request from a text head; `None` when `http` refuses a part
/// that hyper would have refused too (method, target), invalid header lines
/// are skipped.
fn request(data: &[u8]) -> Option<Request<()>> {
    let mut lines = data
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let mut parts = first.splitn(3, |b| *b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let target = parts.next().unwrap_or(b"/");
    let version = match parts.next() {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(b"HTTP/2") | Some(b"HTTP/2.0") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(http::Uri::try_from(target).ok()?)
        .version(version)
        .body(())
        .ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(value)) {
            req.headers_mut().append(name, value);
        }
    }
    Some(req)
}

struct Fixed {
    matcher: Matcher,
    spec: RouteMatch,
}

fn fixed() -> Vec<Fixed> {
    let mut specs = Vec::new();
    let mut m = |f: fn(&mut RouteMatch)| {
        let mut spec = RouteMatch::default();
        f(&mut spec);
        specs.push(spec);
    };
    m(|_| {});
    m(|s| s.host = Some("api.example.com".into()));
    m(|s| s.host = Some("*.example.com".into()));
    m(|s| s.host = Some("*.a".into()));
    m(|s| s.path = Some(PathMatch::Exact("/healthz".into())));
    m(|s| s.path = Some(PathMatch::Prefix("/api/".into())));
    m(|s| s.methods = vec!["GET".into(), "POST".into(), "PURGE".into()]);
    m(|s| {
        s.host = Some("*.example.com".into());
        s.path = Some(PathMatch::Prefix("/v1".into()));
        s.methods = vec!["PUT".into()];
        s.headers = BTreeMap::from([
            ("x-env".to_owned(), "canary".to_owned()),
            ("content-type".to_owned(), "application/grpc".to_owned()),
        ]);
    });
    specs
        .into_iter()
        .map(|spec| Fixed {
            matcher: Matcher::new(&spec),
            spec,
        })
        .collect()
}

/// The matcher's rules, restated without its code.
fn expected(spec: &RouteMatch, req: &Request<()>, host: Option<&str>) -> bool {
    let host_ok = match &spec.host {
        None => true,
        Some(want) => host.is_some_and(|h| {
            let h = h.to_ascii_lowercase();
            match want.strip_prefix('*') {
                Some(suffix) => h.len() > suffix.len() && h.ends_with(suffix),
                None => h == *want,
            }
        }),
    };
    let path = req.uri().path();
    let path_ok = match &spec.path {
        None => true,
        Some(PathMatch::Exact(p)) => path == p,
        Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()),
    };
    let method_ok =
        spec.methods.is_empty() || spec.methods.iter().any(|m| m == req.method().as_str());
    let headers_ok = spec.headers.iter().all(|(name, value)| {
        req.headers()
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    });
    host_ok && path_ok && method_ok && headers_ok
}

fn is_piece_of(piece: &str, whole: &str) -> bool {
    let (p, w) = (piece.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + piece.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let Some(mut req) = request(data) else {
        return;
    };
    let _ = request_host(&req);
    if !one_authority(&mut req) {
        return;
    }
    assert!(
        req.headers().get_all(HOST).iter().count() <= 1,
        "two Host headers accepted"
    );
    if req.version() == Version::HTTP_11 {
        if let Some(authority) = req.uri().authority() {
            assert_eq!(
                req.headers().get(HOST).map(HeaderValue::as_bytes),
                Some(authority.as_str().as_bytes()),
                "absolute-form target did not replace Host"
            );
        }
    }
    let host = request_host(&req);
    if let Some(h) = host {
        let from_uri = req
            .uri()
            .authority()
            .is_some_and(|a| is_piece_of(h, a.as_str()));
        let from_header = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| is_piece_of(h, v));
        assert!(
            from_uri || from_header,
            "request_host {h:?} is from neither authority nor Host"
        );
    }
    thread_local! {
        static FIXED: Vec<Fixed> = fixed();
    }
    FIXED.with(|all| {
        for f in all {
            assert_eq!(
                f.matcher.matches(&req, host),
                expected(&f.spec, &req, host),
                "matcher {:?} on {:?} (host {host:?})",
                f.spec,
                req
            );
        }
    });
});
