use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use switchyard_balance::{Balancer, InFlight, Load, ManualClock, Pick, Strategy, Target};

use crate::common::{Ep, balancer, counts, endpoints_with_load};

const MS: Duration = Duration::from_millis(1);

struct Sim {
    clock: ManualClock,
    eps: Vec<Arc<Ep>>,
    balancer: Balancer<Ep>,
}

impl Sim {
    /// A short decay keeps the simulations to seconds of simulated time.
    fn new(weights: &[u32], default_rtt: Duration, decay: Duration) -> Self {
        let clock = ManualClock::new();
        let eps = endpoints_with_load(weights, || {
            Load::with_clock(default_rtt, decay, clock.clock())
        });
        let balancer = balancer(Strategy::PeakEwma, &eps);
        Self {
            clock,
            eps,
            balancer,
        }
    }

    /// A closed loop: one pick per simulated millisecond, each request stays
    /// in flight for the next `depth` picks and then reports `rtt(index)`.
    fn run(&self, picks: usize, depth: usize, rtt: impl Fn(usize) -> Duration) -> Vec<usize> {
        let mut window: VecDeque<(Arc<Ep>, InFlight)> = VecDeque::new();
        let mut counts = vec![0; self.eps.len()];
        for _ in 0..picks {
            self.clock.advance(MS);
            let ep = self.balancer.pick(&Pick::new()).unwrap();
            counts[*ep.ext()] += 1;
            let guard = ep.load().start();
            window.push_back((ep, guard));
            if window.len() > depth {
                let (ep, guard) = window.pop_front().unwrap();
                ep.load().observe(rtt(*ep.ext()));
                drop(guard);
            }
        }
        counts
    }
}

#[test]
fn slow_endpoint_is_shed_then_recovers_after_decay() {
    fastrand::seed(10);
    let sim = Sim::new(&[1, 1, 1], 30 * MS, Duration::from_secs(1));
    // Ten simulated seconds at 1000 picks/s, endpoint 0 answering in 100ms.
    let c = sim.run(10_000, 6, |i| if i == 0 { 100 * MS } else { MS });
    assert!(c[0] < 500, "slow endpoint got {c:?}");
    // Its estimate decays toward zero while it is shunned, so it is probed
    // again now and then (and pushed back up by each 100ms answer).
    assert!(c[0] > 0, "slow endpoint was never re-probed: {c:?}");

    // It recovers; once its old peak has decayed it is tried, measured at
    // 1ms, and gets its share back.
    sim.clock.advance(Duration::from_secs(5));
    let c = sim.run(6_000, 6, |_| MS);
    assert!(c[0] > 1_200, "recovered endpoint got {c:?}");
    let ewma = sim.eps[0].load().ewma();
    assert!(ewma < 2 * MS, "estimate {ewma:?} should be back near 1ms");
}

#[test]
fn peaks_keep_an_endpoint_shed_within_the_decay_window() {
    fastrand::seed(11);
    let sim = Sim::new(&[1, 1, 1], MS, Duration::from_secs(10));
    sim.eps[0].load().observe(100 * MS);
    // A tenth of the decay time: 100ms has only decayed to ~90ms.
    let c = sim.run(1_000, 6, |i| if i == 0 { 100 * MS } else { MS });
    assert_eq!(c[0], 0, "{c:?}");
}

#[test]
fn in_flight_raises_cost_at_equal_rtt() {
    fastrand::seed(12);
    let sim = Sim::new(&[1, 1, 1, 1], 10 * MS, Duration::from_secs(10));
    let _busy: Vec<_> = (0..5).map(|_| sim.eps[0].load().start()).collect();
    let c = counts(&sim.balancer, 4, 8_000, &[]);
    assert!(c[0] < 800, "{c:?}");
}

#[test]
fn cost_is_divided_by_weight() {
    fastrand::seed(13);
    let sim = Sim::new(&[1, 4], 10 * MS, Duration::from_secs(10));
    // Twice the in-flight on the weight-4 endpoint is still half the cost
    // per unit of weight.
    let _a: Vec<_> = (0..1).map(|_| sim.eps[0].load().start()).collect();
    let _b: Vec<_> = (0..2).map(|_| sim.eps[1].load().start()).collect();
    let c = counts(&sim.balancer, 2, 1_000, &[]);
    assert_eq!(c, [0, 1_000]);
}
