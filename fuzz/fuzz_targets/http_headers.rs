//! The proxy's own header handling between hops
//! (`switchyard_stack::proxy::headers`): `Connection` token lists, upgrade
//! detection and the route's upgrade allow-list, hop-by-hop stripping and
//! `X-Forwarded-For`. (HTTP/1.1 and HTTP/2 framing itself is hyper's.)
//!
//! The input is a list of `Name: value` lines, then optionally a line
//! `@ip` giving the client address. Checks, for any header set:
//! - nothing panics;
//! - an upgrade a route allows has an `Upgrade` header, and `h2c` is never
//!   allowed;
//! - after `strip_hop_by_hop` no hop-by-hop header is left (`Connection`
//!   only as `upgrade` when the upgrade is kept), no header a `Connection`
//!   list named is left unless it is one the proxy routes on or sets, and
//!   those (`Host`, `X-Request-Id`, `X-Forwarded-*`) and every other
//!   end-to-end header are untouched;
//! - `TE` is left at most once, as exactly `trailers`: an HTTP/2 upstream
//!   resets a stream with any other `TE` field (h2 checks each value, case
//!   sensitively, on receipt), while hyper's and h2's client checks read the
//!   first value only, so any other value that crossed would fail the
//!   request there;
//! - `set_forwarded` appends the client's address, exactly as `Display`
//!   writes it, to every prior hop (all `X-Forwarded-For` lines, in order:
//!   RFC 9110 §5.3) and sets `X-Forwarded-Proto`.

#![no_main]

use std::net::IpAddr;

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE},
};
use libfuzzer_sys::fuzz_target;
use switchyard_stack::proxy::headers::{
    X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID, is_upgrade, set_forwarded, strip_hop_by_hop,
    upgrade_allowed,
};

const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "http2-settings",
    "transfer-encoding",
];

fn parse(data: &[u8]) -> (HeaderMap, Option<IpAddr>) {
    let mut headers = HeaderMap::new();
    let mut client = None;
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(ip) = line.strip_prefix(b"@") {
            client = std::str::from_utf8(ip).ok().and_then(|s| s.parse().ok());
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    (headers, client)
}

fn protected(name: &HeaderName) -> bool {
    name == HOST || name == X_REQUEST_ID || name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO
}

/// Header names a `Connection` list names (the tokens that are names).
fn named_by_connection(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

fn values(h: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    h.get_all(name).iter().cloned().collect()
}

fn check_stripped(before: &HeaderMap, keep_upgrade: bool) {
    let mut after = before.clone();
    strip_hop_by_hop(&mut after, keep_upgrade);
    for name in HOP_BY_HOP {
        assert!(!after.contains_key(name), "{name} survived stripping");
    }
    let te: Vec<_> = after.get_all(TE).iter().collect();
    assert!(
        te.is_empty() || te == ["trailers"],
        "TE {te:?} left after stripping; an HTTP/2 upstream resets the stream"
    );
    let had_connection = before.contains_key(CONNECTION);
    match after
        .get_all(CONNECTION)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        [one] if keep_upgrade && had_connection && *one == "upgrade" => {}
        other => panic!("Connection {other:?} survived (keep_upgrade {keep_upgrade})"),
    }
    if !keep_upgrade {
        assert!(
            !after.contains_key(UPGRADE),
            "Upgrade survived without keep_upgrade"
        );
    }
    for name in named_by_connection(before) {
        if protected(&name) {
            continue;
        }
        let kept_as_upgrade = keep_upgrade && (name == CONNECTION || name == UPGRADE);
        let option = ["keep-alive", "close", "upgrade"].contains(&name.as_str());
        if !kept_as_upgrade && !option {
            assert!(
                !after.contains_key(&name),
                "{name} named by Connection survived"
            );
        }
    }
    for name in [&HOST, &X_REQUEST_ID, &X_FORWARDED_FOR, &X_FORWARDED_PROTO] {
        assert_eq!(
            values(before, name),
            values(&after, name),
            "{name} was changed"
        );
    }
    // Headers the proxy does not treat as hop-by-hop and no list named stay.
    let named = named_by_connection(before);
    for name in before.keys() {
        let hop = HOP_BY_HOP.contains(&name.as_str())
            || name == CONNECTION
            || name == UPGRADE
            || name == TE
            || name == TRANSFER_ENCODING;
        if !hop && !named.contains(name) {
            assert_eq!(
                values(before, name),
                values(&after, name),
                "{name} was changed"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (headers, client) = parse(data);
    let _ = is_upgrade(&headers);
    for allowed in [
        &[][..],
        &["websocket".to_owned()][..],
        &["websocket".to_owned(), "h2c".to_owned(), "foo".to_owned()][..],
    ] {
        let ok = upgrade_allowed(&headers, allowed);
        if ok {
            assert!(
                headers.contains_key(UPGRADE),
                "allowed an upgrade without Upgrade"
            );
            for v in headers.get_all(UPGRADE) {
                let v = v.to_str().unwrap();
                for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let name = token.split('/').next().unwrap();
                    assert!(!name.eq_ignore_ascii_case("h2c"), "h2c allowed");
                }
            }
        }
    }
    check_stripped(&headers, false);
    check_stripped(&headers, true);
    if let Some(ip) = client {
        let mut h = headers.clone();
        // Every prior hop, from every field line (RFC 9110 §5.3: repeated
        // lines are one comma-separated list).
        let mut parts: Vec<Vec<u8>> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        set_forwarded(&mut h, ip, "http");
        let xff = h.get(&X_FORWARDED_FOR).expect("X-Forwarded-For set");
        parts.push(ip.to_string().into_bytes());
        let expected = parts.join(&b", "[..]);
        assert_eq!(
            xff.as_bytes(),
            expected.as_slice(),
            "X-Forwarded-For for {ip}"
        );
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }
});
