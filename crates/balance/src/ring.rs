//! Ketama-style consistent hash ring with weighted virtual nodes.
//!
//! Node positions depend only on `(addr, replica)`, and the replica count per
//! unit of weight is a power of two chosen from the total weight. Removing or
//! adding an endpoint therefore usually leaves every other endpoint's nodes
//! exactly where they were, so only the changed endpoint's keys move (the
//! count changes only when the total weight crosses a power-of-two
//! boundary relative to `ring_min_size`).
//!
//! With more endpoints than about four times `ring_min_size`, each gets one
//! node; weights then stop mattering, so raise `ring_min_size` for such sets.

use std::net::SocketAddr;

use crate::hash::hash_addr;

#[derive(Debug)]
pub(crate) struct Ring {
    /// Node positions, ascending; searched on every pick, so kept apart from
    /// `owners` to keep the binary search on dense cache lines.
    hashes: Vec<u64>,
    /// Endpoint index owning the node at the same position.
    owners: Vec<u32>,
}

impl Ring {
    /// `nodes` yields `(endpoint index, addr, weight >= 1)`.
    pub(crate) fn build(nodes: &[(u32, SocketAddr, u64)], min_size: usize) -> Self {
        let per_weight = replicas_per_weight(nodes.iter().map(|n| n.2).sum(), min_size);
        let mut ring: Vec<(u64, u32)> = Vec::new();
        for &(index, addr, weight) in nodes {
            let replicas = replicas(weight, per_weight);
            ring.extend((0..replicas).map(|r| (hash_addr(addr, r), index)));
        }
        // Owner breaks hash ties so the ring does not depend on input order.
        ring.sort_unstable();
        let (hashes, owners) = ring.into_iter().unzip();
        Self { hashes, owners }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The first node at or clockwise after `key`: `(position, owner)`.
    pub(crate) fn lookup(&self, key: u64) -> (usize, u32) {
        let pos = self.hashes.partition_point(|&h| h < key);
        let pos = if pos == self.hashes.len() { 0 } else { pos };
        (pos, self.owners[pos])
    }

    /// The owner `steps` nodes clockwise from `pos`.
    pub(crate) fn owner_after(&self, pos: usize, steps: usize) -> u32 {
        self.owners[(pos + steps) % self.owners.len()]
    }
}

/// Smallest power of two `k` (possibly fractional) with
/// `total_weight * k >= 2 * min_size`: the ring has between two and about
/// four times `min_size` nodes, and `k` is stable while the set changes a
/// little.
///
/// Why twice the minimum: an endpoint's share of a ketama ring deviates by
/// about `1/sqrt(replicas)`, and with exactly 1024 nodes for 10 endpoints
/// the worst of them is routinely 25% off its fair share.
fn replicas_per_weight(total_weight: u64, min_size: usize) -> f64 {
    let total = total_weight.max(1) as f64;
    let target = 2.0 * min_size.max(1) as f64;
    let mut k = 1.0f64;
    while total * k < target {
        k *= 2.0;
    }
    while total * k / 2.0 >= target {
        k /= 2.0;
    }
    k
}

fn replicas(weight: u64, per_weight: f64) -> u32 {
    // Every endpoint keeps at least one node, so a tiny weight next to huge
    // ones is over- rather than under-served.
    ((weight as f64 * per_weight).round() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))
    }

    #[test]
    fn size_is_between_twice_and_four_times_min() {
        for n in [1u32, 3, 7, 10, 100, 1000, 5000] {
            let nodes: Vec<_> = (0..n).map(|i| (i, addr(i), 1)).collect();
            let ring = Ring::build(&nodes, 1024);
            assert!(ring.len() >= 2048, "n={n} len={}", ring.len());
            assert!(ring.len() < 4096 + n as usize, "n={n} len={}", ring.len());
        }
    }

    #[test]
    fn replica_count_is_stable_when_one_endpoint_leaves() {
        assert_eq!(replicas_per_weight(10, 1024), replicas_per_weight(9, 1024));
        assert_eq!(replicas_per_weight(10, 1024), 256.0);
        assert_eq!(replicas_per_weight(4096, 1024), 0.5);
    }

    #[test]
    fn lookup_wraps_around() {
        let ring = Ring::build(&[(0, addr(0), 1), (1, addr(1), 1)], 8);
        let last = *ring.hashes.last().unwrap();
        assert_eq!(ring.lookup(last).0, ring.len() - 1);
        assert_eq!(ring.lookup(last.wrapping_add(1)).0, 0);
        assert_eq!(ring.lookup(0).0, 0);
    }
}
