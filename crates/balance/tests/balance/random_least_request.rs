use switchyard_balance::{Pick, Strategy, Target};

use crate::common::{balancer, counts, endpoints};

fn assert_shares(counts: &[usize], weights: &[u32], tolerance: f64) {
    let total: usize = counts.iter().sum();
    let weight_sum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let expected = total as f64 * f64::from(w) / f64::from(weight_sum);
        let error = (c as f64 - expected).abs() / expected;
        assert!(
            error < tolerance,
            "endpoint {i}: {counts:?} vs weights {weights:?}"
        );
    }
}

#[test]
fn random_follows_weights() {
    fastrand::seed(1);
    let weights = [1, 2, 3, 4];
    let b = balancer(Strategy::Random, &endpoints(&weights));
    assert_shares(&counts(&b, 4, 100_000, &[]), &weights, 0.05);
}

#[test]
fn least_request_with_idle_endpoints_follows_weights() {
    fastrand::seed(2);
    let weights = [1, 3, 2];
    let b = balancer(Strategy::LeastRequest, &endpoints(&weights));
    assert_shares(&counts(&b, 3, 60_000, &[]), &weights, 0.05);
}

#[test]
fn least_request_shuns_busy_endpoint() {
    fastrand::seed(3);
    let eps = endpoints(&[1, 1, 1, 1]);
    let b = balancer(Strategy::LeastRequest, &eps);
    let _busy: Vec<_> = (0..10).map(|_| eps[0].load().start()).collect();
    let c = counts(&b, 4, 10_000, &[]);
    assert!(c[0] < 1_000, "{c:?}");
    assert!(c[1..].iter().all(|&x| x > 2_500), "{c:?}");
}

#[test]
fn least_request_divides_in_flight_by_weight() {
    fastrand::seed(4);
    let eps = endpoints(&[1, 4]);
    let b = balancer(Strategy::LeastRequest, &eps);
    // 2 in flight on each: 2/1 vs 2/4, so the heavy endpoint is less loaded.
    let _guards: Vec<_> = (0..2)
        .flat_map(|_| [eps[0].load().start(), eps[1].load().start()])
        .collect();
    let c = counts(&b, 2, 1_000, &[]);
    assert_eq!(c, [0, 1_000]);
}

#[test]
fn least_request_spreads_a_closed_loop_evenly() {
    // Requests that stay in flight until the next few picks: P2C should
    // keep the queues, and so the pick counts, balanced.
    fastrand::seed(5);
    let eps = endpoints(&[1, 1, 1, 1, 1]);
    let b = balancer(Strategy::LeastRequest, &eps);
    let mut window = std::collections::VecDeque::new();
    let mut c = [0usize; 5];
    for _ in 0..10_000 {
        let ep = b.pick(&Pick::new()).unwrap();
        c[*ep.ext()] += 1;
        window.push_back(ep.load().start());
        if window.len() > 12 {
            window.pop_front();
        }
    }
    assert!(c.iter().all(|&x| (1_800..2_200).contains(&x)), "{c:?}");
}
