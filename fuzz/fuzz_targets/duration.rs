//! Human-readable durations (`switchyard_config::parse_duration` and
//! `format_duration`): the syntax of every duration in the configuration, of
//! command-line flags, and of the registry's `ttl` and `?wait=`.
//!
//! Never panics; whatever it accepts formats to a canonical text that parses
//! back to the same duration, and that text is a fixed point of formatting.
//! Eight raw bytes also make an arbitrary `Duration` to format and read
//! back, so the formatter is checked beyond what the parser produces.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard_config::{format_duration, parse_duration};

fn check(d: Duration) {
    let text = format_duration(d);
    assert_eq!(parse_duration(&text), Ok(d), "{d:?} formats as {text:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = parse_duration(s) {
            check(d);
            let text = format_duration(d);
            assert_eq!(format_duration(parse_duration(&text).unwrap()), text);
        }
    }
    if data.len() >= 12 {
        let secs = u64::from_le_bytes(data[..8].try_into().unwrap());
        let nanos = u32::from_le_bytes(data[8..12].try_into().unwrap()) % 1_000_000_000;
        check(Duration::new(secs, nanos));
    }
});
