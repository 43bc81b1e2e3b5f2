//! Trace-context propagation: W3C Trace Context (`traceparent`,
//! `tracestate`) and B3 (single `b3` header and the multi-header
//! `X-B3-*` form), parsed and written by hand because they are a few
//! fixed-format headers on the hot path.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which format the caller used, so the request goes on in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// A remote parent extracted from request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    pub trace_id: u128,
    pub span_id: u64,
    /// `None` when the caller deferred the decision (B3 without a flag).
    pub sampled: Option<bool>,
    pub tracestate: Option<HeaderValue>,
    pub format: Format,
}

fn hex_u128(s: &str) -> Option<u128> {
    match s.len() {
        32 => u128::from_str_radix(s, 16).ok(),
        // B3 allows 64-bit trace ids.
        16 => u64::from_str_radix(s, 16).ok().map(u128::from),
        _ => None,
    }
    .filter(|v| *v != 0)
}

fn hex_u64(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|v| *v != 0)
}

/// Extracts a parent context: W3C first, then B3 single, then B3 multi.
pub fn extract(h: &HeaderMap) -> Option<Extracted> {
    if let Some(tp) = h.get(&TRACEPARENT).and_then(|v| v.to_str().ok()) {
        if let Some(e) = parse_traceparent(tp) {
            return Some(Extracted {
                tracestate: h.get(&TRACESTATE).cloned(),
                ..e
            });
        }
    }
    if let Some(b3) = h.get(&B3).and_then(|v| v.to_str().ok()) {
        if let Some(e) = parse_b3_single(b3) {
            return Some(e);
        }
    }
    let trace_id = hex_u128(h.get(&B3_TRACE_ID)?.to_str().ok()?)?;
    let span_id = hex_u64(h.get(&B3_SPAN_ID)?.to_str().ok()?)?;
    let debug = h.get(&B3_FLAGS).is_some_and(|v| v == "1");
    let sampled = match h.get(&B3_SAMPLED).map(HeaderValue::as_bytes) {
        _ if debug => Some(true),
        Some(b"1") | Some(b"true") => Some(true),
        Some(b"0") | Some(b"false") => Some(false),
        _ => None,
    };
    Some(Extracted {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
        format: Format::B3Multi,
    })
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; later versions
/// are read by the version-00 rules, as the spec requires.
pub fn parse_traceparent(s: &str) -> Option<Extracted> {
    let mut parts = s.trim().split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Extracted {
        trace_id: hex_u128(trace)?,
        span_id: hex_u64(span)?,
        sampled: Some(flags & 1 == 1),
        tracestate: None,
        format: Format::W3c,
    })
}

/// `{TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}`, the last two
/// optional; a lone sampling state ("0", "1", "d") carries no parent.
fn parse_b3_single(s: &str) -> Option<Extracted> {
    let mut parts = s.trim().split('-');
    let trace_id = hex_u128(parts.next()?)?;
    let span_id = hex_u64(parts.next()?)?;
    let sampled = match parts.next() {
        Some("1") | Some("d") => Some(true),
        Some("0") => Some(false),
        None => None,
        Some(_) => return None,
    };
    Some(Extracted {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
        format: Format::B3Single,
    })
}

/// Writes the context of `span_id` (a child of `parent_span_id`) for the
/// next hop, in W3C form always and in the caller's B3 form when it used
/// one, so that B3-only services downstream stay connected.
pub fn inject(
    h: &mut HeaderMap,
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    sampled: bool,
    tracestate: Option<&HeaderValue>,
    format: Format,
) {
    let flag = u8::from(sampled);
    let tp = format!("00-{trace_id:032x}-{span_id:016x}-{flag:02x}");
    // Hex digits and dashes are always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&tp) {
        h.insert(TRACEPARENT.clone(), v);
    }
    match tracestate {
        Some(ts) => {
            h.insert(TRACESTATE.clone(), ts.clone());
        }
        None => {
            h.remove(&TRACESTATE);
        }
    }
    match format {
        Format::W3c => {}
        Format::B3Single => {
            let v = format!("{trace_id:032x}-{span_id:016x}-{flag}-{parent_span_id:016x}");
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(B3.clone(), v);
            }
        }
        Format::B3Multi => {
            let pairs = [
                (&B3_TRACE_ID, format!("{trace_id:032x}")),
                (&B3_SPAN_ID, format!("{span_id:016x}")),
                (&B3_PARENT_SPAN_ID, format!("{parent_span_id:016x}")),
                (&B3_SAMPLED, flag.to_string()),
            ];
            for (name, value) in pairs {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name.clone(), v);
                }
            }
            h.remove(&B3_FLAGS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c_round_trip() {
        let e =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(e.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(e.span_id, 0x00f067aa0ba902b7);
        assert_eq!(e.sampled, Some(true));
        let mut h = HeaderMap::new();
        inject(&mut h, e.trace_id, 7, e.span_id, false, None, Format::W3c);
        assert_eq!(
            h[&TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000007-00"
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A future version with extra fields is read by version-00 rules.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn b3_single_and_multi() {
        let mut h = HeaderMap::new();
        h.insert(
            &B3,
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
                .parse()
                .unwrap(),
        );
        let e = extract(&h).unwrap();
        assert_eq!(e.format, Format::B3Single);
        assert_eq!(e.span_id, 0xe457b5a2e4d86bd1);
        assert_eq!(e.sampled, Some(true));

        let mut h = HeaderMap::new();
        h.insert(&B3_TRACE_ID, "463ac35c9f6413ad".parse().unwrap());
        h.insert(&B3_SPAN_ID, "a2fb4a1d1a96d312".parse().unwrap());
        h.insert(&B3_SAMPLED, "0".parse().unwrap());
        let e = extract(&h).unwrap();
        assert_eq!(e.format, Format::B3Multi);
        assert_eq!(e.trace_id, 0x463ac35c9f6413ad);
        assert_eq!(e.sampled, Some(false));
        let mut out = HeaderMap::new();
        inject(&mut out, e.trace_id, 9, e.span_id, false, None, e.format);
        assert_eq!(out[&B3_TRACE_ID], "0000000000000000463ac35c9f6413ad");
        assert_eq!(out[&B3_PARENT_SPAN_ID], "a2fb4a1d1a96d312");
        assert_eq!(out[&B3_SAMPLED], "0");
        assert!(out.contains_key(&TRACEPARENT));
    }

    #[test]
    fn w3c_wins_and_tracestate_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        h.insert(&TRACESTATE, "vendor=abc".parse().unwrap());
        h.insert(&B3, "1".parse().unwrap());
        let e = extract(&h).unwrap();
        assert_eq!(e.format, Format::W3c);
        assert_eq!(e.sampled, Some(false));
        assert_eq!(e.tracestate.unwrap(), "vendor=abc");
    }
}
