//! The retry budget on the hot path: every original request deposits, every
//! retry asks to withdraw, so `deposit` is paid per request and `withdraw`
//! per failure.
//!
//! `cargo bench -p switchyard-policy --bench budget`
//!
//! Note: the dev-dependency on tokio enables `test-util`, whose
//! `Instant::now` first looks for a paused clock; the numbers here include
//! that check, which release builds of the proxy do not pay.

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_policy::Budget;

const TTL: Duration = Duration::from_secs(10);

fn budget(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");

    let b = Budget::new(0.2, 10, TTL);
    group.bench_function("deposit", |bench| bench.iter(|| black_box(&b).deposit()));

    // Plenty of deposits: withdrawals succeed (the sums over ten slots are
    // computed on every call).
    let rich = Budget::new(0.2, 10, TTL);
    for _ in 0..10_000_000 {
        rich.deposit();
    }
    group.bench_function("withdraw_granted", |bench| {
        bench.iter(|| black_box(black_box(&rich).withdraw()))
    });

    // No floor, no deposits: every withdrawal is refused (a retry storm
    // being stopped).
    let empty = Budget::new(0.2, 0, TTL);
    group.bench_function("withdraw_refused", |bench| {
        bench.iter(|| black_box(black_box(&empty).withdraw()))
    });

    group.bench_function("remaining", |bench| {
        bench.iter(|| black_box(black_box(&rich).remaining()))
    });

    // One deposit per request while another core deposits too: the cost of
    // the shared cache line under contention.
    let shared = Arc::new(Budget::new(0.2, 10, TTL));
    group.bench_function("deposit_contended_2_threads", |bench| {
        bench.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let other = {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        shared.deposit();
                    }
                })
            };
            let start = Instant::now();
            for _ in 0..iters {
                black_box(&*shared).deposit();
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            other.join().unwrap();
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, budget);
criterion_main!(benches);
