use switchyard_balance::{Pick, Strategy};

use crate::common::{balancer, counts, endpoints};

fn sequence(weights: &[u32], picks: usize) -> Vec<usize> {
    let b = balancer(Strategy::RoundRobin, &endpoints(weights));
    (0..picks)
        .map(|_| *b.pick(&Pick::new()).unwrap().ext())
        .collect()
}

/// The balancer starts at a random point of its cycle; the picks must be
/// the expected cycle from some offset.
fn assert_cycle(seen: &[usize], cycle: &[usize]) {
    let matches = |r: usize| {
        seen.iter()
            .enumerate()
            .all(|(k, &s)| s == cycle[(r + k) % cycle.len()])
    };
    assert!(
        (0..cycle.len()).any(matches),
        "{seen:?} is not a rotation of {cycle:?}"
    );
}

#[test]
fn weights_1_2_3_give_exact_counts() {
    let b = balancer(Strategy::RoundRobin, &endpoints(&[1, 2, 3]));
    assert_eq!(counts(&b, 3, 6000, &[]), [1000, 2000, 3000]);
}

#[test]
fn weights_5_1_1_follow_nginx_smooth_sequence() {
    // a a b a c a a, repeated: never all five a's back to back.
    assert_cycle(&sequence(&[5, 1, 1], 21), &[0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn weights_1_2_3_interleave() {
    let seen = sequence(&[1, 2, 3], 60);
    assert_cycle(&seen, &[2, 1, 0, 2, 1, 2]);
    // Only the cycle boundary repeats an endpoint, and only once.
    assert!(
        seen.windows(3).all(|w| w[0] != w[1] || w[1] != w[2]),
        "{seen:?}"
    );
}

#[test]
fn large_weights_are_reduced_by_gcd() {
    // 100:300 is 1:3, so four picks already show the exact proportions.
    let seen = sequence(&[100, 300], 400);
    for chunk in seen.chunks(4) {
        assert_eq!(chunk.iter().filter(|&&i| i == 0).count(), 1, "{chunk:?}");
    }
}

#[test]
fn equal_weights_rotate() {
    let seen = sequence(&[1, 1, 1, 1], 8);
    assert_cycle(&seen, &[0, 1, 2, 3]);
}

#[test]
fn unavailable_turns_are_skipped_keeping_exact_proportions() {
    let eps = endpoints(&[1, 2, 3, 1, 2]);
    let b = balancer(Strategy::RoundRobin, &eps);
    eps[1].set_available(false);
    eps[4].set_available(false);
    // The remaining weights 1:3:1, exactly, as if the set had been rebuilt.
    assert_eq!(counts(&b, 5, 5_000, &[]), [1_000, 0, 3_000, 1_000, 0]);
}
