use switchyard_balance::{Balancer, BalancerConfig, Pick, Strategy, Target};

use crate::common::{Ep, addr, balancer, counts, endpoints};

fn with_threshold(
    strategy: Strategy,
    threshold: f64,
    weights: &[u32],
) -> (Vec<std::sync::Arc<Ep>>, Balancer<Ep>) {
    let eps = endpoints(weights);
    let b = Balancer::new(BalancerConfig {
        panic_threshold: threshold,
        ..BalancerConfig::with_strategy(strategy)
    });
    b.update(eps.clone());
    (eps, b)
}

#[test]
fn empty_set_picks_none() {
    for strategy in Strategy::ALL {
        let b: Balancer<Ep> = Balancer::new(BalancerConfig::with_strategy(strategy));
        assert!(b.pick(&Pick::new().with_hash(1)).is_none(), "{strategy}");
        b.update(endpoints(&[1, 1]));
        assert!(b.pick(&Pick::new()).is_some(), "{strategy}");
        b.update(Vec::new());
        assert!(b.pick(&Pick::new().with_hash(1)).is_none(), "{strategy}");
        assert!(b.is_empty());
    }
}

#[test]
fn unavailable_endpoints_are_never_picked() {
    for strategy in Strategy::ALL {
        let eps = endpoints(&[1, 2, 3, 1, 2]);
        let b = balancer(strategy, &eps);
        eps[1].set_available(false);
        eps[4].set_available(false);
        let c = counts(&b, 5, 5_000, &[]);
        assert_eq!((c[1], c[4]), (0, 0), "{strategy}: {c:?}");
        assert!([0, 2, 3].iter().all(|&i| c[i] > 0), "{strategy}: {c:?}");
    }
}

#[test]
fn panic_mode_picks_among_all_endpoints() {
    for strategy in Strategy::ALL {
        let eps = endpoints(&[1, 1, 1, 1]);
        let b = balancer(strategy, &eps);
        // 1 of 4 available is below the default 0.5 threshold.
        for ep in &eps[1..] {
            ep.set_available(false);
        }
        let c = counts(&b, 4, 8_000, &[]);
        assert!(c[1..].iter().all(|&x| x > 1_000), "{strategy}: {c:?}");

        // 2 of 4 is not below it: back to available endpoints only.
        eps[1].set_available(true);
        let c = counts(&b, 4, 4_000, &[]);
        assert_eq!((c[2], c[3]), (0, 0), "{strategy}: {c:?}");
    }
}

#[test]
fn zero_threshold_disables_panic_until_nothing_is_available() {
    for strategy in Strategy::ALL {
        let (eps, b) = with_threshold(strategy, 0.0, &[1, 1, 1, 1]);
        for ep in &eps[1..] {
            ep.set_available(false);
        }
        assert_eq!(counts(&b, 4, 2_000, &[]), [2_000, 0, 0, 0], "{strategy}");
        eps[0].set_available(false);
        // Nothing available: a pick still answers rather than failing.
        let c = counts(&b, 4, 2_000, &[]);
        assert!(
            c.iter().filter(|&&x| x > 0).count() > 1,
            "{strategy}: {c:?}"
        );
    }
}

#[test]
fn full_threshold_panics_on_any_unavailability() {
    let (eps, b) = with_threshold(Strategy::RoundRobin, 1.0, &[1, 1, 1, 1]);
    eps[0].set_available(false);
    assert_eq!(counts(&b, 4, 4_000, &[]), [1_000; 4]);
}

#[test]
fn avoid_is_honoured_when_an_alternative_exists() {
    for strategy in Strategy::ALL {
        let eps = endpoints(&[5, 1, 1]);
        let b = balancer(strategy, &eps);
        let c = counts(&b, 3, 3_000, &[addr(0)]);
        assert_eq!(c[0], 0, "{strategy}: {c:?}");
        assert!(c[1] > 0 && c[2] > 0, "{strategy}: {c:?}");

        let c = counts(&b, 3, 1_000, &[addr(0), addr(2)]);
        assert_eq!(c, [0, 1_000, 0], "{strategy}");
    }
}

#[test]
fn avoid_is_ignored_when_no_alternative_exists() {
    for strategy in Strategy::ALL {
        let eps = endpoints(&[1, 1, 1]);
        let b = balancer(strategy, &eps);
        let all = [addr(0), addr(1), addr(2)];
        let c = counts(&b, 3, 3_000, &all);
        assert_eq!(c.iter().sum::<usize>(), 3_000, "{strategy}");

        // The only available endpoint is avoided and the others are down
        // (not in panic at threshold 0.3): the retry goes back to it, since
        // avoidance never overrides availability.
        let (eps, b) = with_threshold(strategy, 0.3, &[1, 1, 1]);
        eps[0].set_available(false);
        eps[2].set_available(false);
        let c = counts(&b, 3, 1_000, &[addr(1)]);
        assert_eq!(c, [0, 1_000, 0], "{strategy}");
    }
}

#[test]
fn zero_weight_endpoints_are_picked_only_when_all_are_zero() {
    for strategy in Strategy::ALL {
        let b = balancer(strategy, &endpoints(&[0, 1, 0, 2]));
        let c = counts(&b, 4, 3_000, &[]);
        assert_eq!((c[0], c[2]), (0, 0), "{strategy}: {c:?}");

        let b = balancer(strategy, &endpoints(&[0, 0, 0]));
        let c = counts(&b, 3, 3_000, &[]);
        assert!(c.iter().all(|&x| x > 500), "{strategy}: {c:?}");
    }
}

#[test]
fn endpoints_are_sorted_and_deduplicated() {
    let mut eps = endpoints(&[1, 1, 1]);
    eps.reverse();
    let duplicate = eps[0].clone();
    eps.push(duplicate);
    let b = balancer(Strategy::RoundRobin, &eps);
    let listed: Vec<_> = b.endpoints().iter().map(|e| e.addr()).collect();
    assert_eq!(listed, [addr(0), addr(1), addr(2)]);
}
