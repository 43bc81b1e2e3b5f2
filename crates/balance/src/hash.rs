//! Stable 64-bit hashing for request keys and endpoint placement.
//!
//! Consistent hashing only works across proxy instances (and across
//! restarts) if every instance computes the same hash for the same key, so
//! this hash is defined here, byte for byte, instead of coming from `std`
//! (whose `DefaultHasher` is explicitly allowed to change between releases)
//! or from a dependency that could change its output in a minor version.
//!
//! The construction is wyhash-style: 16-byte blocks folded with a 64x64->128
//! "multiply and fold" (`mum`), then a splitmix64 finaliser so that even the
//! weak cases of `mum` (one operand zero) still avalanche. All reads are
//! explicitly little-endian, so the result is the same on every platform.
//! It is not a keyed/DoS-resistant hash: a client that controls its key can
//! only choose which endpoint it lands on, which it could do anyway.

use std::net::{IpAddr, SocketAddr};

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// Hashes a request key (for example a header value) for [`Pick::hash`].
///
/// The output is stable: it never changes between Switchyard versions,
/// processes or platforms, so every proxy instance maps a key to the same
/// endpoint.
///
/// [`Pick::hash`]: crate::Pick::hash
pub fn hash_key(bytes: &[u8]) -> u64 {
    hash_with_seed(bytes, 0)
}

pub(crate) fn hash_with_seed(bytes: &[u8], seed: u64) -> u64 {
    let mut state = seed ^ mum(seed ^ P0, P1);
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        state = mum(read_le(&block[..8]) ^ P1, read_le(&block[8..]) ^ state);
    }
    let tail = blocks.remainder();
    let split = tail.len().min(8);
    let (lo, hi) = tail.split_at(split);
    state = mum(read_le(lo) ^ P2, read_le(hi) ^ state);
    // The length goes in last so that zero padding of the tail cannot make
    // "a" and "a\0" collide.
    mix64(mum(state ^ P3, bytes.len() as u64 ^ P1))
}

/// splitmix64's finaliser: a cheap bijection with full avalanche.
///
/// Also applied to caller-provided key hashes before ring/table lookup, so a
/// caller passing poorly distributed values (sequential ids) still spreads.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of an endpoint's identity plus a small index (ring replica, Maglev
/// seed), built on the stack so updates allocate only their output tables.
pub(crate) fn hash_addr(addr: SocketAddr, index: u32) -> u64 {
    let mut buf = [0u8; 1 + 16 + 2 + 4];
    let mut len = 1;
    match addr.ip() {
        IpAddr::V4(ip) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&ip.octets());
            len += 4;
        }
        IpAddr::V6(ip) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&ip.octets());
            len += 16;
        }
    }
    buf[len..len + 2].copy_from_slice(&addr.port().to_le_bytes());
    len += 2;
    buf[len..len + 4].copy_from_slice(&index.to_le_bytes());
    len += 4;
    hash_key(&buf[..len])
}

fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Reads up to 8 bytes as a little-endian integer, zero-padding short input.
fn read_le(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // Changing these values breaks key affinity across a rolling
        // upgrade; only do it deliberately.
        let pinned = [
            hash_key(b""),
            hash_key(b"a"),
            hash_key(b"user-42"),
            hash_key(b"0123456789abcdef0123456789abcdef!"),
        ];
        assert_eq!(pinned, PINNED);
    }

    const PINNED: [u64; 4] = [
        8_277_013_436_405_046_883,
        2_437_530_378_533_267_876,
        4_322_583_738_187_290_898,
        1_958_802_082_857_670_623,
    ];

    #[test]
    fn distinguishes_padding_and_length() {
        assert_ne!(hash_key(b"a"), hash_key(b"a\0"));
        assert_ne!(hash_key(b""), hash_key(b"\0"));
        assert_ne!(
            hash_key(&[0u8; 16]),
            hash_key(&[0u8; 17]),
            "block boundary must still mix length"
        );
    }

    #[test]
    fn buckets_are_uniform() {
        const BUCKETS: usize = 64;
        const KEYS: usize = 64_000;
        let mut counts = [0usize; BUCKETS];
        for i in 0..KEYS {
            let h = hash_key(format!("session-{i}").as_bytes());
            counts[(h % BUCKETS as u64) as usize] += 1;
        }
        let mean = (KEYS / BUCKETS) as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2) / mean)
            .sum();
        // 63 degrees of freedom: p(chi2 > 110) is about 0.0002.
        assert!(chi2 < 110.0, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn single_bit_flips_avalanche() {
        let mut total = 0u32;
        let mut samples = 0u32;
        for i in 0..200u32 {
            let key = format!("k{i:08}-payload-that-spans-blocks");
            let base = hash_key(key.as_bytes());
            let mut bytes = key.into_bytes();
            for bit in 0..bytes.len() * 8 {
                bytes[bit / 8] ^= 1 << (bit % 8);
                total += (hash_key(&bytes) ^ base).count_ones();
                samples += 1;
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
        }
        let mean = f64::from(total) / f64::from(samples);
        assert!((31.0..33.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn addr_hash_separates_family_port_and_index() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        let port: SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert_ne!(hash_addr(v4, 0), hash_addr(v6, 0));
        assert_ne!(hash_addr(v4, 0), hash_addr(port, 0));
        assert_ne!(hash_addr(v4, 0), hash_addr(v4, 1));
        assert_eq!(hash_addr(v4, 7), hash_addr(v4, 7));
    }
}
