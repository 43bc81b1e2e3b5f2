//! Smooth weighted round-robin (nginx), precomputed into a schedule.
//!
//! nginx runs the algorithm per request under a lock; running it once per
//! update into a flat schedule turns each pick into one `fetch_add` and an
//! index, with the same smooth interleaving (weights 5,1,1 give
//! `a a b a c a a`, never five `a`s in a row).

use crate::weighted::gcd;

/// Longest schedule built; larger weight sums are scaled down to fit.
pub(crate) const MAX_SCHEDULE: u64 = 1 << 16;
/// Bound on `schedule length × endpoints`, the cost of building it.
const MAX_BUILD_STEPS: u64 = 1 << 26;

/// Builds the schedule as positions into `weights` (which must be >= 1).
pub(crate) fn schedule(weights: &[u64]) -> Vec<u32> {
    let n = weights.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let mut weights = normalise(weights);
    let total: u64 = weights.iter().sum();
    // Many endpoints make each step O(n); keep the build cost bounded. Past
    // ~8k endpoints this degrades to plain round-robin (every weight 1).
    let cap = (MAX_BUILD_STEPS / n).clamp(n, MAX_SCHEDULE.max(n));
    if total > cap {
        let scaled: Vec<u64> = weights
            .iter()
            .map(|&w| {
                let w = u128::from(w) * u128::from(cap) / u128::from(total);
                u64::try_from(w).unwrap_or(u64::MAX).max(1)
            })
            .collect();
        weights = normalise(&scaled);
    }
    nginx(&weights)
}

fn normalise(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter().map(|&w| w / g).collect()
}

/// Each step every endpoint gains its weight, the largest current value is
/// chosen (lowest index on ties) and pays back the total.
fn nginx(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i128; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        let mut best_value = i128::MIN;
        for (i, (c, &w)) in current.iter_mut().zip(weights).enumerate() {
            *c += i128::from(w);
            if *c > best_value {
                (best, best_value) = (i, *c);
            }
        }
        current[best] -= i128::from(total);
        out.push(u32::try_from(best).unwrap_or(u32::MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_smooth_sequence() {
        assert_eq!(schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(schedule(&[1, 1, 1]), [0, 1, 2]);
    }

    #[test]
    fn weights_are_normalised_by_gcd() {
        assert_eq!(schedule(&[200, 400, 600]).len(), 6);
    }

    #[test]
    fn huge_sums_are_scaled_down_but_keep_proportions() {
        let s = schedule(&[1_000_000, 3_000_000, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3, "{}", s.len());
        let count = |i| s.iter().filter(|&&x| x == i).count() as f64;
        assert!((count(1) / count(0) - 3.0).abs() < 0.01);
        assert!(count(2) >= 1.0, "a tiny weight still appears");
    }

    #[test]
    fn counts_match_weights_exactly() {
        let s = schedule(&[3, 7, 2]);
        for (i, w) in [3, 7, 2].into_iter().enumerate() {
            assert_eq!(s.iter().filter(|&&x| x as usize == i).count(), w);
        }
    }
}
