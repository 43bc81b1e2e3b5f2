//! The eligible endpoint set and weighted random sampling over it.
//!
//! Random, the two P2C strategies, and the hash strategies' no-key fallback
//! all draw from here, so the prefix sums are built once per update.

/// Endpoints that may be picked, with cumulative weights for sampling.
///
/// An endpoint of weight 0 is not eligible unless every weight is 0, in
/// which case all are eligible with weight 1 ("no weights configured").
#[derive(Debug)]
pub(crate) struct WeightTable {
    /// Indices into the endpoint slice, ascending.
    eligible: Vec<u32>,
    /// Normalised weight of each eligible endpoint.
    weights: Vec<u64>,
    /// Normalised weight by endpoint index (0 when not eligible), for O(1)
    /// lookups in P2C comparisons.
    by_index: Vec<u64>,
    /// `cumulative[i]` = sum of `weights[..=i]`.
    cumulative: Vec<u64>,
    /// All weights equal: sample with one `%` instead of a binary search.
    uniform: bool,
}

impl WeightTable {
    pub(crate) fn new(raw: &[u32]) -> Self {
        let all_zero = raw.iter().all(|&w| w == 0);
        let (eligible, weights): (Vec<u32>, Vec<u64>) = raw
            .iter()
            .enumerate()
            .filter(|&(_, &w)| all_zero || w > 0)
            .map(|(i, &w)| {
                // Endpoint sets are nowhere near 2^32 entries.
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                (i, u64::from(w.max(1)))
            })
            .unzip();
        let g = weights.iter().copied().fold(0, gcd);
        let weights: Vec<u64> = weights.iter().map(|&w| w / g.max(1)).collect();
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let mut by_index = vec![0; raw.len()];
        for (&i, &w) in eligible.iter().zip(&weights) {
            by_index[i as usize] = w;
        }
        Self {
            eligible,
            weights,
            by_index,
            cumulative,
            uniform,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.eligible.len()
    }

    pub(crate) fn eligible(&self) -> &[u32] {
        &self.eligible
    }

    /// Weights aligned with [`Self::eligible`], divided by their gcd.
    pub(crate) fn weights(&self) -> &[u64] {
        &self.weights
    }

    /// The weight of endpoint `index` as used for P2C comparisons.
    pub(crate) fn weight_of(&self, index: u32) -> u64 {
        self.by_index.get(index as usize).copied().unwrap_or(0)
    }

    /// Position of endpoint `index` in the eligible list (or where it would
    /// be), the starting point for deterministic linear scans.
    pub(crate) fn position(&self, index: u32) -> usize {
        self.eligible
            .binary_search(&index)
            .unwrap_or_else(|slot| slot)
    }

    /// One weighted random draw. Callers ensure the table is non-empty.
    pub(crate) fn sample(&self) -> u32 {
        let n = self.eligible.len();
        if self.uniform {
            return self.eligible[fastrand::usize(..n)];
        }
        let total = self.cumulative[n - 1];
        let r = fastrand::u64(..total);
        self.eligible[self.cumulative.partition_point(|&c| c <= r)]
    }

    /// Weighted draw from every eligible endpoint except `not`, exact and
    /// without rejection (a dominant weight would make rejection loop).
    /// `None` when there is no other endpoint.
    pub(crate) fn sample_other(&self, not: u32) -> Option<u32> {
        let n = self.eligible.len();
        if n < 2 {
            return None;
        }
        let Ok(slot) = self.eligible.binary_search(&not) else {
            return Some(self.sample());
        };
        if self.uniform {
            let k = fastrand::usize(..n - 1);
            return Some(self.eligible[if k >= slot { k + 1 } else { k }]);
        }
        // Draw over the total minus `not`'s share, then step over its range.
        let w = self.weights[slot];
        let start = self.cumulative[slot] - w;
        let mut r = fastrand::u64(..self.cumulative[n - 1] - w);
        if r >= start {
            r += w;
        }
        Some(self.eligible[self.cumulative.partition_point(|&c| c <= r)])
    }

    /// Up to `tries` weighted draws; the first accepted by `filter`.
    pub(crate) fn sample_where(
        &self,
        tries: usize,
        mut filter: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        (0..tries).map(|_| self.sample()).find(|&i| filter(i))
    }
}

pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weights_are_ineligible_unless_all_zero() {
        let t = WeightTable::new(&[0, 4, 0, 6]);
        assert_eq!(t.eligible(), [1, 3]);
        assert_eq!(t.weights(), [2, 3]);
        assert_eq!(t.weight_of(0), 0);
        assert_eq!(t.weight_of(3), 3);

        let t = WeightTable::new(&[0, 0, 0]);
        assert_eq!(t.eligible(), [0, 1, 2]);
        assert!(t.uniform);
    }

    #[test]
    fn samples_follow_weights() {
        fastrand::seed(7);
        let t = WeightTable::new(&[1, 0, 3]);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[t.sample() as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.7..3.3).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn sample_other_is_distinct_and_weighted() {
        fastrand::seed(11);
        let t = WeightTable::new(&[1000, 1, 2]);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[t.sample_other(0).unwrap() as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[1]);
        assert!((1.8..2.2).contains(&ratio), "{counts:?}");
        let t = WeightTable::new(&[3, 3, 3]);
        assert!((0..1000).all(|_| t.sample_other(1) != Some(1)));
        assert_eq!(WeightTable::new(&[5]).sample_other(0), None);
    }

    #[test]
    fn gcd_basics() {
        assert_eq!(gcd(0, 5), 5);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 1), 1);
    }
}
