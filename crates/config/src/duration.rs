//! Human-readable durations: `"250ms"`, `"2s"`, `"1.5s"`, `"1m30s"`.
//!
//! The same syntax is used in configuration files and on the command line, so
//! it lives here as two plain functions. A unit is mandatory: a bare `"10"`
//! is ambiguous (seconds? milliseconds?) and is exactly the kind of mistake a
//! configuration checker exists to catch.

use std::time::Duration;

/// Units from the largest down; `format_duration` picks the first that
/// divides the duration exactly.
const UNITS: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The syntax, repeated in every error so that the user can fix the value
/// without looking it up.
pub(crate) const DURATION_SYNTAX: &str =
    "a duration such as \"250ms\", \"2s\", \"1.5s\" or \"1m30s\" (units: h, m, s, ms, us, ns)";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; expected {DURATION_SYNTAX}")]
    Empty,
    #[error("negative duration {0:?}; durations cannot be negative")]
    Negative(String),
    #[error("missing unit in {0:?}; expected {DURATION_SYNTAX}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in {input:?}; expected {DURATION_SYNTAX}")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {0:?}; expected {DURATION_SYNTAX}")]
    Invalid(String),
    #[error("duration {0:?} is more precise than a nanosecond")]
    TooPrecise(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"1.5s"`, `"100us"` (also `µs`)
/// and sums of them such as `"1m30s"`.
///
/// Rejects the empty string, signs, spaces, a missing unit (`"10"`), unknown
/// units and values below a nanosecond or above `Duration::MAX`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let invalid = || DurationError::Invalid(s.to_owned());
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_owned()));
        }
        let scale = unit_scale(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: s.to_owned(),
            unit: unit.to_owned(),
        })?;
        total = total
            .checked_add(scale_number(s, number, scale)?)
            .ok_or_else(|| DurationError::Overflow(s.to_owned()))?;
        rest = after;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow(s.to_owned()))?;
    // The remainder of a division by 10^9 always fits in a u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn unit_scale(unit: &str) -> Option<u128> {
    match unit {
        "µs" | "μs" => Some(1_000),
        _ => UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale),
    }
}

/// `number` (digits with at most one dot) times `scale` nanoseconds, exactly:
/// decimal arithmetic rather than `f64` so that `"0.1s"` is 100ms, not
/// 99.999999ms.
fn scale_number(input: &str, number: &str, scale: u128) -> Result<u128, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let overflow = || DurationError::Overflow(input.to_owned());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid());
    }
    let whole: u128 = whole.parse().map_err(|_| overflow())?;
    let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
    let mut place = scale;
    for digit in fraction.bytes() {
        let value = u128::from(digit - b'0');
        if place % 10 != 0 {
            if value != 0 {
                return Err(DurationError::TooPrecise(input.to_owned()));
            }
            continue;
        }
        place /= 10;
        nanos = nanos.checked_add(value * place).ok_or_else(overflow)?;
    }
    Ok(nanos)
}

/// The inverse of [`parse_duration`]: the largest unit that represents the
/// duration exactly as an integer (`"250ms"`, `"2s"`, `"90s"`, `"1500ms"`).
/// The result always parses back to the same `Duration`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, scale) in UNITS {
        if nanos % scale == 0 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    // Unreachable: the last unit has scale 1 and divides everything.
    format!("{nanos}ns")
}

/// Serializes a duration in the configuration's own text form ("250ms"), so
/// that `/config` shows what an operator would write.
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub(crate) fn serialize_opt<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_forms() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("1m30s", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5parsecs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        for bad in ["s", ".5s", "1.s", "1..5s", "+1s", " 1s", "1s "] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("1.5ns"),
            Err(DurationError::TooPrecise(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_shortest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn round_trips() {
        for nanos in [1, 999, 1_000, 1_500_000, 2_000_000_000, 90_000_000_000] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(
            parse_duration(&format_duration(Duration::MAX)),
            Ok(Duration::MAX)
        );
    }
}
