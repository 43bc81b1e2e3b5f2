//! The deadline headers (`switchyard_policy::deadline`): `grpc-timeout` and
//! Switchyard's `x-switchyard-timeout-ms`, parsed from what a caller sent and
//! written for the next hop.
//!
//! Checks, for any header value:
//! - neither parser panics;
//! - a parsed `grpc-timeout` formats to at most 9 bytes (8 digits and a
//!   unit, the spec's limit) that parse back to at least the same time
//!   (rounding up never cuts a caller's deadline) and less than one unit of
//!   the chosen precision more;
//! - a parsed `x-switchyard-timeout-ms` formats back to the same text's
//!   value (whole milliseconds, never rounded up);
//! - 12 raw bytes also make an arbitrary `Duration`: `format_grpc_timeout`
//!   never panics and rounds up for every duration it can represent, and
//!   `timeout_ms` never rounds up.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard_policy::deadline::{
    format_grpc_timeout, format_timeout_ms, parse_grpc_timeout, parse_timeout_ms, timeout_ms,
};

/// The largest `grpc-timeout`: 99,999,999 hours.
const GRPC_MAX: Duration = Duration::from_secs(99_999_999 * 3600);

fn unit_of(text: &str) -> Duration {
    match text.as_bytes().last() {
        Some(b'n') => Duration::from_nanos(1),
        Some(b'u') => Duration::from_micros(1),
        Some(b'm') => Duration::from_millis(1),
        Some(b'S') => Duration::from_secs(1),
        Some(b'M') => Duration::from_secs(60),
        Some(b'H') => Duration::from_secs(3600),
        _ => panic!("format_grpc_timeout wrote {text:?}, which has no unit"),
    }
}

fn check_grpc(d: Duration) {
    let text = format_grpc_timeout(d);
    assert!(text.len() <= 9, "{d:?} formats as {text:?}: too long");
    let back = parse_grpc_timeout(text.as_bytes())
        .unwrap_or_else(|| panic!("{d:?} formats as {text:?}, which does not parse"));
    if d <= GRPC_MAX {
        assert!(back >= d, "{d:?} → {text:?} → {back:?}: rounded down");
        assert!(
            back - d < unit_of(&text),
            "{d:?} → {text:?} → {back:?}: off by a unit"
        );
    } else {
        assert_eq!(back, GRPC_MAX, "{d:?} beyond the largest grpc-timeout");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_grpc_timeout(data) {
        assert!(d <= GRPC_MAX);
        check_grpc(d);
    }
    if let Some(d) = parse_timeout_ms(data) {
        let text = format_timeout_ms(d);
        assert_eq!(
            parse_timeout_ms(text.as_bytes()),
            Some(d),
            "{d:?} → {text:?}"
        );
        assert_eq!(u128::from(timeout_ms(d)), d.as_millis());
    }
    if data.len() >= 12 {
        let secs = u64::from_le_bytes(data[..8].try_into().unwrap());
        let nanos = u32::from_le_bytes(data[8..12].try_into().unwrap()) % 1_000_000_000;
        let d = Duration::new(secs, nanos);
        check_grpc(d);
        let ms = timeout_ms(d);
        assert!(
            Duration::from_millis(ms) <= d,
            "timeout_ms rounds {d:?} up to {ms}ms"
        );
        assert!(d - Duration::from_millis(ms) < Duration::from_millis(1) || ms == u64::MAX);
    }
});
