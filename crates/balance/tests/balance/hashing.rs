use std::collections::HashSet;
use std::sync::Arc;

use switchyard_balance::{Pick, Strategy, Target};

use crate::common::{Ep, balancer, counts, endpoints, owners};

const KEYS: usize = 100_000;
const HASHED: [Strategy; 2] = [Strategy::RingHash, Strategy::Maglev];

fn moved(before: &[usize], after: &[usize]) -> Vec<usize> {
    (0..before.len())
        .filter(|&k| before[k] != after[k])
        .collect()
}

#[test]
fn same_key_same_endpoint_across_calls_and_rebuilds() {
    for strategy in HASHED {
        let eps = endpoints(&[1; 8]);
        let b = balancer(strategy, &eps);
        let first = owners(&b, 5_000);
        assert_eq!(
            first,
            owners(&b, 5_000),
            "{strategy}: repeat lookups differ"
        );

        // Fresh Arcs for the same addresses, in a different order: the
        // tables must not depend on discovery order or object identity.
        let mut rebuilt = endpoints(&[1; 8]);
        rebuilt.reverse();
        b.update(rebuilt);
        assert_eq!(first, owners(&b, 5_000), "{strategy}: rebuild moved keys");
    }
}

#[test]
fn ring_hash_removal_moves_only_the_removed_endpoints_keys() {
    let n = 10;
    let eps = endpoints(&[1; 10]);
    let b = balancer(Strategy::RingHash, &eps);
    let before = owners(&b, KEYS);
    b.update(eps.iter().filter(|e| *e.ext() != 3).cloned().collect());
    let after = owners(&b, KEYS);
    let moved = moved(&before, &after);
    let fraction = moved.len() as f64 / KEYS as f64;
    let n = n as f64;
    assert!((0.5 / n..1.6 / n).contains(&fraction), "moved {fraction}");
    assert!(
        moved.iter().all(|&k| before[k] == 3),
        "a surviving endpoint's key moved"
    );
}

#[test]
fn maglev_removal_remaps_about_one_nth() {
    let n = 10;
    let eps = endpoints(&[1; 10]);
    let b = balancer(Strategy::Maglev, &eps);
    let before = owners(&b, KEYS);
    b.update(eps.iter().filter(|e| *e.ext() != 3).cloned().collect());
    let after = owners(&b, KEYS);
    let moved = moved(&before, &after);
    let fraction = moved.len() as f64 / KEYS as f64;
    let n = n as f64;
    assert!((0.5 / n..2.0 / n).contains(&fraction), "moved {fraction}");
    let survivors = before.iter().filter(|&&o| o != 3).count();
    let collateral = moved.iter().filter(|&&k| before[k] != 3).count();
    assert!(
        (collateral as f64) < 0.03 * survivors as f64,
        "{collateral} of {survivors} keys on surviving endpoints moved"
    );
}

#[test]
fn adding_an_endpoint_takes_keys_only_for_itself() {
    for strategy in HASHED {
        let eps = endpoints(&[1; 10]);
        let b = balancer(strategy, &eps[..9]);
        let before = owners(&b, KEYS);
        b.update(eps.clone());
        let after = owners(&b, KEYS);
        let moved = moved(&before, &after);
        let to_new = moved.iter().filter(|&&k| after[k] == 9).count();
        let fraction = moved.len() as f64 / KEYS as f64;
        assert!(
            (0.05..0.2).contains(&fraction),
            "{strategy}: moved {fraction}"
        );
        assert!(
            to_new as f64 > 0.9 * moved.len() as f64,
            "{strategy}: {to_new}/{}",
            moved.len()
        );
    }
}

#[test]
fn equal_endpoints_get_within_20_percent_of_mean() {
    for strategy in HASHED {
        let b = balancer(strategy, &endpoints(&[1; 10]));
        let c = counts(&b, 10, KEYS, &[]);
        let mean = KEYS as f64 / 10.0;
        for &x in &c {
            assert!((x as f64 - mean).abs() < 0.2 * mean, "{strategy}: {c:?}");
        }
    }
}

#[test]
fn weights_are_honoured() {
    for strategy in HASHED {
        let weights = [1, 2, 1, 1, 1, 1, 1, 1];
        let b = balancer(strategy, &endpoints(&weights));
        let c = counts(&b, weights.len(), KEYS, &[]);
        let light: f64 = c
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 1)
            .map(|(_, &x)| x as f64)
            .sum::<f64>()
            / 7.0;
        let ratio = c[1] as f64 / light;
        assert!(
            (1.6..2.4).contains(&ratio),
            "{strategy}: ratio {ratio}, {c:?}"
        );
    }
}

#[test]
fn unavailable_endpoints_keys_spread_deterministically_and_return() {
    for strategy in HASHED {
        let eps = endpoints(&[1; 10]);
        let b = balancer(strategy, &eps);
        let before = owners(&b, 20_000);
        eps[4].set_available(false);
        let during = owners(&b, 20_000);
        assert_eq!(
            during,
            owners(&b, 20_000),
            "{strategy}: fallback not deterministic"
        );
        let mut heirs = HashSet::new();
        for k in 0..before.len() {
            if before[k] == 4 {
                assert_ne!(during[k], 4);
                heirs.insert(during[k]);
            } else {
                assert_eq!(before[k], during[k], "{strategy}: unaffected key moved");
            }
        }
        assert!(heirs.len() >= 5, "{strategy}: keys piled onto {heirs:?}");
        eps[4].set_available(true);
        assert_eq!(
            before,
            owners(&b, 20_000),
            "{strategy}: keys did not return"
        );
    }
}

#[test]
fn retry_with_avoid_moves_to_a_stable_alternative() {
    for strategy in HASHED {
        let eps = endpoints(&[1; 5]);
        let b = balancer(strategy, &eps);
        for k in 0..200u64 {
            let first = b.pick(&Pick::new().with_hash(k)).unwrap();
            let avoid = [first.addr()];
            let ctx = Pick::new().with_hash(k).avoiding(&avoid);
            let retry = b.pick(&ctx).unwrap();
            assert_ne!(retry.ext(), first.ext(), "{strategy}");
            assert!(Arc::ptr_eq(&retry, &b.pick(&ctx).unwrap()), "{strategy}");
        }
    }
}

#[test]
fn no_key_falls_back_to_weighted_random() {
    fastrand::seed(20);
    for strategy in HASHED {
        let eps: Vec<Arc<Ep>> = endpoints(&[1, 3]);
        let b = balancer(strategy, &eps);
        let mut c = [0usize; 2];
        for _ in 0..20_000 {
            c[*b.pick(&Pick::new()).unwrap().ext()] += 1;
        }
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((2.7..3.3).contains(&ratio), "{strategy}: {c:?}");
    }
}
