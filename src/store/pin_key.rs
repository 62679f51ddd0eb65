//! What the affinity tables keep of a session key: 96 bits of a keyed SipHash-1-3 of it
//! ([`PinKey`]), under a random per-table key ([`HashKey`]) that a snapshot saves, so that the
//! table that loads it finds the same sessions. See [`super::table`] for why 96 bits are enough.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// What the table keeps of a session key: 96 bits of its keyed hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PinKey([u32; 3]);

impl PinKey {
    /// The hash hashbrown places the pin by (words 0 and 1).
    pub(super) fn placement(self) -> u64 {
        (u64::from(self.0[1]) << 32) | u64::from(self.0[0])
    }

    /// The shard, from word 2, which hashbrown does not see: shards and buckets stay independent.
    pub(super) fn shard(self, mask: usize) -> usize {
        self.0[2] as usize & mask
    }

    /// 24 hex digits (the snapshot form).
    pub fn to_hex(self) -> String {
        format!("{:08x}{:08x}{:08x}", self.0[0], self.0[1], self.0[2])
    }

    pub fn from_hex(s: &str) -> Option<PinKey> {
        let word = |i: usize| s.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok());
        (s.len() == 24).then_some(())?;
        Some(PinKey([word(0)?, word(1)?, word(2)?]))
    }
}

impl std::fmt::Display for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The SipHash key of a table: whoever hashes with it finds the same pins (a snapshot saves it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct HashKey(u64, u64);

impl HashKey {
    pub fn random() -> HashKey {
        HashKey(rand::random(), rand::random())
    }

    /// 32 hex digits (the snapshot form).
    pub fn to_hex(self) -> String {
        format!("{:016x}{:016x}", self.0, self.1)
    }

    pub fn from_hex(s: &str) -> Option<HashKey> {
        let half = |i: usize| s.get(i * 16..i * 16 + 16).and_then(|w| u64::from_str_radix(w, 16).ok());
        (s.len() == 32).then_some(())?;
        Some(HashKey(half(0)?, half(1)?))
    }

    pub(super) fn pin_key(self, key: &str) -> PinKey {
        let mut h = SipHasher13::new_with_keys(self.0, self.1);
        h.write(key.as_bytes());
        let h = h.finish128();
        PinKey([h.h1 as u32, (h.h1 >> 32) as u32, h.h2 as u32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_hash_keys_survive_hex() {
        let h = HashKey::random();
        assert_eq!(HashKey::from_hex(&h.to_hex()), Some(h));
        let k = h.pin_key("session");
        assert_eq!(PinKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(PinKey::from_hex("xyz"), None);
        assert_eq!(HashKey(1, 2).pin_key("a"), HashKey(1, 2).pin_key("a"), "deterministic");
        assert_ne!(HashKey(1, 2).pin_key("a"), HashKey(1, 3).pin_key("a"), "keyed");
    }
}
