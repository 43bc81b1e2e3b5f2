//! Pick latency per strategy over 16 endpoints, and table rebuild cost.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_balance::{Balancer, BalancerConfig, Endpoint, Pick, Strategy, hash_key};

fn endpoints(n: u32) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8080));
            Arc::new(Endpoint::new(addr, 1 + i % 3, ()))
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_16");
    let keys: Vec<u64> = (0..1024u32).map(|i| hash_key(&i.to_le_bytes())).collect();
    for strategy in Strategy::ALL {
        let balancer = Balancer::new(BalancerConfig::with_strategy(strategy));
        balancer.update(endpoints(16));
        let mut i = 0usize;
        group.bench_function(strategy.as_str(), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                let ctx = Pick::new().with_hash(keys[i]);
                black_box(balancer.pick(black_box(&ctx)))
            })
        });
    }
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_100");
    group.sample_size(20);
    let set = endpoints(100);
    for strategy in [Strategy::RoundRobin, Strategy::RingHash, Strategy::Maglev] {
        let balancer = Balancer::new(BalancerConfig::with_strategy(strategy));
        group.bench_function(strategy.as_str(), |b| {
            b.iter(|| balancer.update(black_box(set.clone())))
        });
    }
    group.finish();
}

criterion_group!(benches, pick, update);
criterion_main!(benches);
