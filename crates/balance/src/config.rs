//! Balancer strategy and tuning knobs, with validation for config loaders.

use std::fmt;
use std::str::FromStr;

/// Largest accepted `ring_min_size`; Envoy's ring-hash maximum.
pub const MAX_RING_SIZE: usize = 1 << 23;
/// Default Maglev table size (prime), as in the Maglev paper and Envoy.
pub const DEFAULT_MAGLEV_TABLE_SIZE: usize = 65_537;
/// Largest accepted Maglev table size (prime); Envoy's maximum.
pub const MAX_MAGLEV_TABLE_SIZE: usize = 5_000_011;

/// How a [`Balancer`](crate::Balancer) chooses an endpoint.
///
/// Serialised (and parsed by `FromStr`) in snake case: `round_robin`,
/// `random`, `least_request`, `peak_ewma`, `ring_hash`, `maglev`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round-robin (nginx).
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two choices by `in_flight / weight`.
    LeastRequest,
    /// Power of two choices by peak-EWMA cost / weight.
    #[default]
    PeakEwma,
    /// Consistent hashing on a ring of virtual nodes (ketama).
    RingHash,
    /// Consistent hashing with a Maglev lookup table.
    Maglev,
}

impl Strategy {
    pub const ALL: [Strategy; 6] = [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastRequest,
        Strategy::PeakEwma,
        Strategy::RingHash,
        Strategy::Maglev,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastRequest => "least_request",
            Strategy::PeakEwma => "peak_ewma",
            Strategy::RingHash => "ring_hash",
            Strategy::Maglev => "maglev",
        }
    }

    /// Whether [`Pick::hash`](crate::Pick::hash) selects the endpoint.
    pub const fn uses_hash(self) -> bool {
        matches!(self, Strategy::RingHash | Strategy::Maglev)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| ConfigError::UnknownStrategy(s.to_owned()))
    }
}

/// Configuration of one [`Balancer`](crate::Balancer).
#[derive(Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    pub strategy: Strategy,
    /// Floor on the hash ring size (default 1024). The ring is built with
    /// two to four times this many virtual nodes; see the `ring` module.
    pub ring_min_size: usize,
    /// In `0.0..=1.0` (default 0.5). When the available fraction of
    /// endpoints falls below it, availability is ignored and every endpoint
    /// can be picked (Envoy's panic mode), spreading load instead of
    /// crushing the few endpoints still passing health checks.
    pub panic_threshold: f64,
    /// Maglev lookup table size; must be prime (default 65537). Keep it well
    /// above 100 × the endpoint count for even spreading.
    pub maglev_table_size: usize,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            ring_min_size: 1024,
            panic_threshold: 0.5,
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        }
    }
}

impl BalancerConfig {
    pub fn with_strategy(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Checks every field; config loaders should call this to reject bad
    /// input, since [`Balancer::new`](crate::Balancer::new) silently repairs it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.panic_threshold) {
            return Err(ConfigError::PanicThreshold(self.panic_threshold));
        }
        if !(1..=MAX_RING_SIZE).contains(&self.ring_min_size) {
            return Err(ConfigError::RingMinSize(self.ring_min_size));
        }
        let m = self.maglev_table_size;
        if !(2..=MAX_MAGLEV_TABLE_SIZE).contains(&m) || !is_prime(m) {
            return Err(ConfigError::MaglevTableSize(m));
        }
        Ok(())
    }

    /// The nearest valid configuration: thresholds clamped (NaN becomes the
    /// default), sizes clamped, the Maglev size rounded up to a prime.
    pub fn sanitized(&self) -> Self {
        let panic_threshold = if self.panic_threshold.is_nan() {
            Self::default().panic_threshold
        } else {
            self.panic_threshold.clamp(0.0, 1.0)
        };
        let m = self.maglev_table_size.clamp(2, MAX_MAGLEV_TABLE_SIZE);
        Self {
            strategy: self.strategy,
            ring_min_size: self.ring_min_size.clamp(1, MAX_RING_SIZE),
            panic_threshold,
            maglev_table_size: next_prime(m),
        }
    }
}

/// Invalid balancer configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown load-balancing strategy {0:?}")]
    UnknownStrategy(String),
    #[error("panic_threshold must be within 0.0..=1.0, got {0}")]
    PanicThreshold(f64),
    #[error("ring_min_size must be within 1..={MAX_RING_SIZE}, got {0}")]
    RingMinSize(usize),
    #[error("maglev_table_size must be a prime no larger than {MAX_MAGLEV_TABLE_SIZE}, got {0}")]
    MaglevTableSize(usize),
}

pub(crate) fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!(matches!(
            "wrr".parse::<Strategy>(),
            Err(ConfigError::UnknownStrategy(_))
        ));
        assert_eq!(Strategy::default(), Strategy::PeakEwma);
    }

    #[test]
    fn validation_rejects_and_sanitizing_repairs() {
        assert_eq!(BalancerConfig::default().validate(), Ok(()));
        let bad = BalancerConfig {
            panic_threshold: 1.5,
            ..BalancerConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::PanicThreshold(1.5)));
        assert_eq!(bad.sanitized().panic_threshold, 1.0);

        let bad = BalancerConfig {
            maglev_table_size: 65_536,
            ..BalancerConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::MaglevTableSize(65_536)));
        assert_eq!(bad.sanitized().maglev_table_size, 65_537);
        assert_eq!(bad.sanitized().validate(), Ok(()));

        let bad = BalancerConfig {
            ring_min_size: 0,
            panic_threshold: f64::NAN,
            ..BalancerConfig::default()
        };
        assert!(bad.validate().is_err());
        let fixed = bad.sanitized();
        assert_eq!((fixed.ring_min_size, fixed.panic_threshold), (1, 0.5));
    }

    #[test]
    fn primes() {
        let small: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(DEFAULT_MAGLEV_TABLE_SIZE));
        assert!(is_prime(MAX_MAGLEV_TABLE_SIZE));
    }
}
