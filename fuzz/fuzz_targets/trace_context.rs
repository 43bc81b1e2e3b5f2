//! Trace-context propagation (`switchyard_telemetry::trace::propagation`):
//! W3C `traceparent`/`tracestate`, B3 single (`b3`) and multi (`X-B3-*`).
//!
//! The input is `Name: value` lines (any of the headers above, repeated or
//! not). Checks:
//! - `extract` and `parse_traceparent` never panic;
//! - an extracted context has non-zero ids and keeps `tracestate` only in
//!   the W3C format;
//! - what `inject` writes for the next hop (a child span, in the caller's
//!   format) `extract` reads back: the same trace id, the child's span id,
//!   the sampling decision and `tracestate`, in the same format — also
//!   over headers the caller sent, so stale ones cannot win.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_telemetry::trace::propagation::{
    B3, B3_FLAGS, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, Format, TRACEPARENT,
    TRACESTATE, extract, inject, parse_traceparent,
};

fn parse(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers
}

/// A child of the extracted span, as the proxy's attempt span is.
fn child_span(parent: u64) -> u64 {
    parent.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15 | 1
}

fuzz_target!(|data: &[u8]| {
    let headers = parse(data);
    for v in headers.get_all(&TRACEPARENT) {
        if let Ok(s) = v.to_str() {
            if let Some(e) = parse_traceparent(s) {
                assert!(e.trace_id != 0 && e.span_id != 0);
            }
        }
    }
    let Some(parent) = extract(&headers) else {
        // A new trace: the proxy starts one and injects it in W3C form.
        let mut out = headers.clone();
        inject(
            &mut out,
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            7,
            0,
            true,
            None,
            Format::W3c,
        );
        let back = extract(&out).expect("an injected W3C context reads back");
        assert_eq!(
            (back.trace_id, back.span_id, back.sampled),
            (0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 7, Some(true))
        );
        return;
    };
    assert!(
        parent.trace_id != 0 && parent.span_id != 0,
        "zero id extracted"
    );
    if parent.format != Format::W3c {
        assert!(parent.tracestate.is_none(), "tracestate outside W3C");
    }
    let span = child_span(parent.span_id);
    for sampled in [false, true] {
        // Over the caller's own headers, as the proxy forwards them.
        let mut out = headers.clone();
        inject(
            &mut out,
            parent.trace_id,
            span,
            parent.span_id,
            sampled,
            parent.tracestate.as_ref(),
            parent.format,
        );
        let back = extract(&out).expect("an injected context reads back");
        assert_eq!(back.trace_id, parent.trace_id, "trace id changed");
        assert_eq!(back.span_id, span, "span id not the child's");
        assert_eq!(back.sampled, Some(sampled), "sampling decision lost");
        assert_eq!(back.tracestate, parent.tracestate, "tracestate changed");
        assert_eq!(
            back.format,
            Format::W3c,
            "W3C is always written and read first"
        );
        // The caller's B3 form, written too, reads back on its own.
        match parent.format {
            Format::W3c => {}
            Format::B3Single => {
                let mut only = HeaderMap::new();
                only.insert(&B3, out.get(&B3).expect("b3 written").clone());
                let b3 = extract(&only).expect("an injected b3 reads back");
                assert_eq!(
                    (b3.trace_id, b3.span_id, b3.sampled),
                    (parent.trace_id, span, Some(sampled))
                );
                assert_eq!(b3.format, Format::B3Single);
            }
            Format::B3Multi => {
                let mut only = HeaderMap::new();
                for name in [
                    &B3_TRACE_ID,
                    &B3_SPAN_ID,
                    &B3_PARENT_SPAN_ID,
                    &B3_SAMPLED,
                    &B3_FLAGS,
                ] {
                    for v in out.get_all(name) {
                        only.append(name, v.clone());
                    }
                }
                let b3 = extract(&only).expect("injected X-B3-* read back");
                assert_eq!(
                    (b3.trace_id, b3.span_id, b3.sampled),
                    (parent.trace_id, span, Some(sampled))
                );
                assert_eq!(b3.format, Format::B3Multi);
                assert_eq!(out.get_all(&B3_TRACE_ID).iter().count(), 1);
            }
        }
    }
    let _ = TRACESTATE;
});
