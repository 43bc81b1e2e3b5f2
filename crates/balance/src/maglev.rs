//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as in
//! Envoy.
//!
//! Each endpoint walks its own permutation of the table slots, derived from
//! its address alone, and endpoints take turns claiming their next free
//! slot. A lookup is one modulo and one load. Weights are honoured by letting
//! an endpoint of weight `w` take a turn only in `w / max_weight` of the
//! rounds, which keeps the slot shares proportional to weight.

use std::net::SocketAddr;

use crate::hash::{hash_addr, mix64};

const EMPTY: u32 = u32::MAX;
/// Seeds separating an endpoint's `offset` and `skip` hashes.
const OFFSET_SEED: u32 = 0x6d61_676c;
const SKIP_SEED: u32 = 0x736b_6970;

#[derive(Debug)]
pub(crate) struct Maglev {
    /// Endpoint index per slot; the length is a prime.
    table: Vec<u32>,
}

struct Builder {
    index: u32,
    weight: u64,
    /// Rounds are skipped until `round * weight >= target`.
    target: u64,
    next: u64,
    skip: u64,
}

/// The next slot of a permutation: `(next + skip) % m` for `next, skip <
/// m`, without the division. A table fills in about `m ln m` probes
/// (720,000 for the default size), so a 64-bit division each was most of
/// the time of a rebuild.
fn step(next: u64, skip: u64, m: u64) -> u64 {
    let n = next + skip;
    if n >= m { n - m } else { n }
}

impl Maglev {
    /// `nodes` yields `(endpoint index, addr, weight >= 1)`; `size` is prime.
    pub(crate) fn build(nodes: &[(u32, SocketAddr, u64)], size: usize) -> Self {
        let m = size as u64;
        let mut table = vec![EMPTY; size];
        if nodes.is_empty() {
            return Self { table };
        }
        let mut builders: Vec<Builder> = nodes
            .iter()
            .map(|&(index, addr, weight)| Builder {
                index,
                weight,
                target: 0,
                next: hash_addr(addr, OFFSET_SEED) % m,
                // Any skip in 1..m generates every slot because m is prime.
                skip: hash_addr(addr, SKIP_SEED) % (m - 1) + 1,
            })
            .collect();
        let max_weight = nodes.iter().map(|n| n.2).max().unwrap_or(1);
        let mut filled = 0;
        let mut round = 1u64;
        'fill: loop {
            for b in &mut builders {
                if round.saturating_mul(b.weight) < b.target {
                    continue;
                }
                b.target += max_weight;
                // Terminates: the permutation covers every slot and at least
                // one is still empty.
                while table[b.next as usize] != EMPTY {
                    b.next = step(b.next, b.skip, m);
                }
                table[b.next as usize] = b.index;
                b.next = step(b.next, b.skip, m);
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
            round += 1;
        }
        Self { table }
    }

    /// Slot for a (pre-mixed) key hash.
    pub(crate) fn slot(&self, key: u64) -> usize {
        (key % self.table.len() as u64) as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn owner(&self, slot: usize) -> u32 {
        self.table[slot % self.table.len()]
    }

    /// The key for the `attempt`-th deterministic rehash when the first
    /// choice cannot be used: spreads a failed endpoint's keys over the
    /// others instead of piling them onto its table neighbour.
    pub(crate) fn rehash(key: u64, attempt: u64) -> u64 {
        mix64(key ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, 1, 0, i as u8], 443))
    }

    fn shares(m: &Maglev, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &owner in &m.table {
            counts[owner as usize] += 1;
        }
        counts
    }

    #[test]
    fn every_slot_is_filled_evenly() {
        let nodes: Vec<_> = (0..7).map(|i| (i, addr(i), 1)).collect();
        let m = Maglev::build(&nodes, 65_537);
        let counts = shares(&m, 7);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn weights_are_honoured() {
        let nodes = [(0, addr(0), 1), (1, addr(1), 3), (2, addr(2), 2)];
        let m = Maglev::build(&nodes, 65_537);
        let counts = shares(&m, 3);
        let unit = 65_537.0 / 6.0;
        for (i, w) in [1.0, 3.0, 2.0].into_iter().enumerate() {
            let ratio = counts[i] as f64 / (unit * w);
            assert!((0.99..1.01).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn single_endpoint_owns_everything() {
        let m = Maglev::build(&[(4, addr(4), 9)], 13);
        assert!(m.table.iter().all(|&o| o == 4));
    }
}
