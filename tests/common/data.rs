//! Test data: deterministic bytes, hashes, tallies and files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Seed of the deterministic `/big` payload.
pub const BIG_SEED: u64 = 0x0057_17C4;

/// `n` deterministic pseudo-random bytes (xorshift64*); the same (n, seed) gives the same bytes.
pub fn pattern_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    let mut x = seed | 1;
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The bytes `/big?bytes=n` answers with.
pub fn big_bytes(n: usize) -> Vec<u8> {
    pattern_bytes(n, BIG_SEED)
}

pub fn sha256_hex(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// How many times each value occurs.
pub fn counts<I: IntoIterator<Item = String>>(items: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// Writes a file into `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write file");
    p
}
