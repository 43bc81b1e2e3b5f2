//! Header handling between the downstream and upstream hops (RFC 9110 §7.6).

use std::net::IpAddr;

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE},
};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The h2c upgrade's settings (RFC 7540 §3.2.1): only meaningful on the hop
/// that negotiates the upgrade, which the proxy never lets through.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers a client's `Connection` list may not remove: the proxy routes on
/// `Host` and sets or keeps the others for every upstream request.
fn protected(name: &HeaderName) -> bool {
    name == http::header::HOST
        || name == X_REQUEST_ID
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
}

/// Removes hop-by-hop headers: the fixed set plus every header the
/// `Connection` header names. With `keep_upgrade`, `Connection: upgrade` and
/// `Upgrade` survive so that a protocol upgrade can be tunnelled.
/// `TE: trailers` is kept: gRPC over HTTP/2 requires it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds which hop-by-hop headers are present;
    // most heads carry `Connection` at most, so most removals are skipped.
    let (mut conn, mut ka, mut pc, mut te_enc, mut up, mut te, mut h2s) =
        (false, false, false, false, false, false, false);
    for name in headers.keys() {
        if name == CONNECTION {
            conn = true;
        } else if name == TRANSFER_ENCODING {
            te_enc = true;
        } else if name == UPGRADE {
            up = true;
        } else if name == TE {
            te = true;
        } else if name == KEEP_ALIVE {
            ka = true;
        } else if name == PROXY_CONNECTION {
            pc = true;
        } else if name == HTTP2_SETTINGS {
            h2s = true;
        }
    }
    if conn {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(CONNECTION) {
            let Ok(list) = value.to_str() else { continue };
            for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                // Tokens that are options rather than header names, or that
                // are removed below anyway, need no lookup.
                if token.eq_ignore_ascii_case("keep-alive")
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    if !protected(&name) {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        if keep_upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(CONNECTION);
        }
    }
    if ka {
        headers.remove(&KEEP_ALIVE);
    }
    if pc {
        headers.remove(&PROXY_CONNECTION);
    }
    if h2s {
        headers.remove(&HTTP2_SETTINGS);
    }
    if te_enc {
        headers.remove(TRANSFER_ENCODING);
    }
    if up && !keep_upgrade {
        headers.remove(UPGRADE);
    }
    if te {
        // Only `trailers` may cross a hop (and is the only TE value HTTP/2
        // allows, RFC 9113 §8.2.2), whatever the other lines or list items
        // say: one `TE: trailers` stays when any item asked for it.
        let trailers = headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            });
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(TE);
        }
    }
}

/// Appends the client address to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto` to the scheme the client used.
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str) {
    let mut v4 = [0u8; 15];
    let ip_buf;
    let ip: &[u8] = match client {
        IpAddr::V4(a) => {
            // Dotted quad without the formatting machinery.
            let mut n = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    v4[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    v4[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    v4[n] = b'0' + (o / 10) % 10;
                    n += 1;
                }
                v4[n] = b'0' + o % 10;
                n += 1;
            }
            &v4[..n]
        }
        IpAddr::V6(_) => {
            ip_buf = client.to_string();
            ip_buf.as_bytes()
        }
    };
    // Repeated lines are one list (RFC 9110 §5.3): every earlier hop is
    // kept, in order, before this client.
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter();
    let value = match (prior.next(), prior.next()) {
        (None, _) => HeaderValue::from_bytes(ip),
        (Some(first), None) => {
            let mut v = Vec::with_capacity(first.len() + 2 + ip.len());
            v.extend_from_slice(first.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v)
        }
        (Some(_), Some(_)) => {
            let mut v = Vec::new();
            for line in headers.get_all(&X_FORWARDED_FOR) {
                v.extend_from_slice(line.as_bytes());
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v)
        }
    };
    // An IP address and a previously valid header value joined by ", " are
    // always a valid header value.
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

/// Keeps a caller's `X-Request-Id` or generates one, so that a request can be
/// followed through every hop's logs. Returns the id.
pub fn ensure_request_id(headers: &mut HeaderMap) -> &HeaderValue {
    headers
        .entry(X_REQUEST_ID.clone())
        .or_insert_with(new_request_id)
}

/// A random 128-bit id in UUID v4 text form.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Set the version (4) and variant (10xx) bits of a v4 UUID.
    let bits = (fastrand::u128(..) & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut n = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[n] = b'-';
            n += 1;
        }
        let nibble = (bits >> (124 - 4 * i)) & 0xf;
        out[n] = HEX[nibble as usize];
        n += 1;
    }
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// True when a request asks for a protocol upgrade (e.g. WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Makes the request name one authority, the one it is routed on and
/// forwarded with, or says it cannot (the caller answers 400):
/// - more than one `Host` is ambiguous;
/// - an absolute-form target (HTTP/1.1) wins over `Host`, which is replaced
///   by it (RFC 9112 §3.2.2);
/// - an HTTP/2 `host` that disagrees with `:authority` is ambiguous;
/// - an HTTP/1.1 request without either has no authority at all.
pub fn one_authority<B>(req: &mut http::Request<B>) -> bool {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return false;
    }
    let Some(authority) = req.uri().authority() else {
        return host.is_some() || req.version() != http::Version::HTTP_11;
    };
    match (req.version(), host) {
        (http::Version::HTTP_2, Some(h)) => h
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        (http::Version::HTTP_2, None) => true,
        _ => match HeaderValue::from_str(authority.as_str()) {
            Ok(v) => {
                req.headers_mut().insert(http::header::HOST, v);
                true
            }
            Err(_) => false,
        },
    }
}

/// Whether every protocol the `Upgrade` header asks for is one the route
/// allows (tokens compared case-insensitively, versions ignored:
/// `websocket`, `foo/2`). `h2c` is never allowed: tunnelled, it would carry
/// requests past routing.
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut any = false;
    for value in headers.get_all(UPGRADE) {
        let Ok(list) = value.to_str() else {
            return false;
        };
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let name = token.split('/').next().unwrap_or(token);
            if name.eq_ignore_ascii_case("h2c")
                || !allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
            {
                return false;
            }
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_keeps_only_trailers_across_lines() {
        let mut h = HeaderMap::new();
        h.append(TE, HeaderValue::from_static("trailers"));
        h.append(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all(TE).iter().collect::<Vec<_>>(), vec!["trailers"]);
        let mut h = HeaderMap::new();
        h.append(TE, HeaderValue::from_static("gzip;q=0.5, deflate"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(TE));
    }

    #[test]
    fn forwarded_for_keeps_every_line() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        set_forwarded(&mut h, "203.0.113.9".parse().unwrap(), "http");
        assert_eq!(
            h.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            vec!["192.0.2.1, 198.51.100.2, 203.0.113.9"]
        );
    }

    #[test]
    fn only_allowed_upgrades_and_never_h2c() {
        let ws = vec!["websocket".to_owned()];
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(upgrade_allowed(&h, &ws));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!upgrade_allowed(&h, &ws));
        assert!(!upgrade_allowed(&h, &["h2c".to_owned()]));
        h.insert(UPGRADE, HeaderValue::from_static("websocket, h2c"));
        assert!(!upgrade_allowed(&h, &ws));
        h.insert(UPGRADE, HeaderValue::from_static("foo/2"));
        assert!(!upgrade_allowed(&h, &ws));
        assert!(upgrade_allowed(&h, &["foo".to_owned()]));
    }

    #[test]
    fn connection_cannot_remove_what_the_proxy_routes_on_or_sets() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("host, x-request-id, x-forwarded-for, x-other"),
        );
        h.insert(http::header::HOST, HeaderValue::from_static("a"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("id"));
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
        );
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h[http::header::HOST], "a");
        assert_eq!(h[&X_REQUEST_ID], "id");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert!(!h.contains_key("x-other"));
        assert!(!h.contains_key("http2-settings"));
    }

    #[test]
    fn strips_fixed_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[TE], "trailers");
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn forwarded_for_formats_every_address_like_display() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::7",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut h = HeaderMap::new();
            set_forwarded(&mut h, addr, "https");
            assert_eq!(h[&X_FORWARDED_FOR], addr.to_string().as_str());
            assert_eq!(h[&X_FORWARDED_PROTO], "https");
        }
    }

    #[test]
    fn strips_every_hop_by_hop_header_and_repeated_connection_lists() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("close, X-A"));
        h.append(CONNECTION, HeaderValue::from_static("x-b, upgrade"));
        for name in [
            "x-a",
            "x-b",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        h.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[TE], "trailers");
    }

    #[test]
    fn request_ids_are_kept_or_generated_uuid_v4() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h).clone();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(new_request_id(), id);
        let again = ensure_request_id(&mut h);
        assert_eq!(again, &id);
    }
}
