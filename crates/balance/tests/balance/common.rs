use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_balance::{Balancer, BalancerConfig, Endpoint, Load, Pick, Strategy, hash_key};

/// Test endpoints carry their logical index as caller data.
pub type Ep = Endpoint<usize>;

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8080))
}

pub fn endpoints(weights: &[u32]) -> Vec<Arc<Ep>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Arc::new(Endpoint::new(addr(i), w, i)))
        .collect()
}

pub fn endpoints_with_load(weights: &[u32], load: impl Fn() -> Load) -> Vec<Arc<Ep>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Arc::new(Endpoint::with_load(addr(i), w, load(), i)))
        .collect()
}

pub fn balancer(strategy: Strategy, eps: &[Arc<Ep>]) -> Balancer<Ep> {
    let b = Balancer::new(BalancerConfig::with_strategy(strategy));
    b.update(eps.to_vec());
    b
}

/// Counts picks per logical index; keyed strategies get a fresh key each pick.
pub fn counts(b: &Balancer<Ep>, n: usize, picks: usize, avoid: &[SocketAddr]) -> Vec<usize> {
    let mut counts = vec![0; n];
    for k in 0..picks {
        let ctx = Pick::new().with_hash(key(k)).avoiding(avoid);
        counts[*b.pick(&ctx).expect("non-empty set").ext()] += 1;
    }
    counts
}

pub fn key(k: usize) -> u64 {
    hash_key(format!("request-{k}").as_bytes())
}

/// Owner (logical index) of each of `keys` keys.
pub fn owners(b: &Balancer<Ep>, keys: usize) -> Vec<usize> {
    (0..keys)
        .map(|k| *b.pick(&Pick::new().with_hash(key(k))).unwrap().ext())
        .collect()
}
