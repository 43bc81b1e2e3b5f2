//! Deadlines shared along a chain of hops.
//!
//! gRPC carries the caller's remaining time in `grpc-timeout`; plain HTTP
//! gets Switchyard's `x-switchyard-timeout-ms` (remaining milliseconds, an
//! integer). Every hop takes the smaller of its own route timeout and what
//! it received, and sends the remainder of that upstream on each attempt, so
//! the whole chain works against the first caller's deadline instead of
//! re-deriving a fresh timeout per hop.

use std::time::Duration;

use tokio::time::Instant;

/// The HTTP header carrying the remaining time in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-switchyard-timeout-ms";
/// The gRPC header carrying the remaining time.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// A point in time by which a request must be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left; zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn expired(self) -> bool {
        self.remaining().is_zero()
    }

    /// The earlier of two deadlines.
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        if other.0 < self.0 { other } else { self }
    }
}

/// Parses a `grpc-timeout` value: up to eight digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), per the gRPC over HTTP/2 spec.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` value with the finest unit that fits in eight
/// digits. Rounds up: the error is below one unit of that precision, and the
/// hop that owns the deadline enforces it exactly anyway.
pub fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (scale, unit) in units {
        let v = nanos.div_ceil(scale);
        if v <= MAX {
            return format!("{v}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Parses `x-switchyard-timeout-ms`.
pub fn parse_timeout_ms(v: &[u8]) -> Option<Duration> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// The value of `x-switchyard-timeout-ms`: whole milliseconds, rounded down
/// so the upstream never believes it has more time than the caller gave.
pub fn timeout_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// [`timeout_ms`] as text.
pub fn format_timeout_ms(d: Duration) -> String {
    timeout_ms(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout(b"0m"), Some(Duration::ZERO));
        assert_eq!(parse_grpc_timeout(b"123456789m"), None);
        assert_eq!(parse_grpc_timeout(b"10x"), None);
        assert_eq!(parse_grpc_timeout(b"m"), None);
        assert_eq!(parse_grpc_timeout(b""), None);
        assert_eq!(parse_grpc_timeout(b"-1S"), None);
    }

    #[test]
    fn grpc_timeouts_format_and_round_trip() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 30),
        ] {
            let s = format_grpc_timeout(d);
            let back = parse_grpc_timeout(s.as_bytes()).unwrap();
            assert!(back >= d, "{d:?} → {s} → {back:?}");
            assert!(s.len() <= 9, "{s}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)),
            "31536000S"
        );
    }

    #[test]
    fn http_timeouts() {
        assert_eq!(parse_timeout_ms(b"1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout_ms(b"1.5"), None);
        assert_eq!(parse_timeout_ms(b""), None);
        assert_eq!(format_timeout_ms(Duration::from_micros(1999)), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_shrink_and_expire() {
        let d = Deadline::after(Duration::from_secs(2));
        let e = Deadline::after(Duration::from_secs(1));
        assert_eq!(d.min(e), e);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(e.expired());
        assert_eq!(d.remaining(), Duration::from_millis(500));
    }
}
