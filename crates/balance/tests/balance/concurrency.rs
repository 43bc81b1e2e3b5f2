use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use switchyard_balance::{Balancer, InFlight, Load, Pick, Strategy, Target};

use crate::common::{Ep, balancer, endpoints};

#[test]
fn picks_stay_valid_while_sets_are_swapped() {
    for strategy in Strategy::ALL {
        // Set A is endpoints 0..4, set B is 2..7; every pick must come from
        // one of them, never from a torn mixture or an empty state.
        let all = endpoints(&[1, 2, 1, 3, 1, 1, 2]);
        let set_a: Vec<_> = all[..4].to_vec();
        let set_b: Vec<_> = all[2..].to_vec();
        let b = Arc::new(balancer(strategy, &set_a));
        let stop = Arc::new(AtomicBool::new(false));

        let pickers: Vec<_> = (0..2)
            .map(|t| {
                let b = Arc::clone(&b);
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut picks = 0u64;
                    let mut k = t;
                    while !stop.load(Ordering::Relaxed) || picks < 1_000 {
                        k += 1;
                        let ep = b.pick(&Pick::new().with_hash(k)).expect("never empty");
                        assert!(*ep.ext() < 7);
                        let _in_flight = ep.load().start();
                        picks += 1;
                    }
                    picks
                })
            })
            .collect();

        for round in 0..60 {
            let next = if round % 2 == 0 { &set_b } else { &set_a };
            b.update(next.clone());
        }
        stop.store(true, Ordering::Relaxed);
        for picker in pickers {
            assert!(picker.join().unwrap() >= 1_000);
        }
        // Every guard was dropped, on whichever set it was picked from.
        assert!(all.iter().all(|e| e.load().in_flight() == 0), "{strategy}");
    }
}

#[test]
fn load_survives_updates_when_arcs_are_reused() {
    let eps = endpoints(&[1, 1]);
    let b = balancer(Strategy::LeastRequest, &eps);
    let guard = b.pick(&Pick::new()).unwrap().load().start();
    b.update(eps.iter().rev().cloned().collect());
    let total: u32 = b.endpoints().iter().map(|e| e.load().in_flight()).sum();
    assert_eq!(total, 1);
    drop(guard);
    assert_eq!(eps[0].load().in_flight() + eps[1].load().in_flight(), 0);
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<Balancer<Ep>>();
    send_sync::<Load>();
    send::<InFlight>();
}
