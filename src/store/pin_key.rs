//! What the affinity tables keep of a session key: 72 bits of a keyed SipHash-1-3 of it
//! ([`PinKey`]), under a random per-table key ([`HashKey`]) that a snapshot saves, so that the
//! table that loads it finds the same sessions. See [`super::table`] for why 72 bits are enough.
//!
//! The hex form is 24 digits, as when 96 bits were kept: the third word is the 8-bit tag, and
//! its other 24 bits (written as zeros) are ignored when read, so snapshots saved with 96-bit
//! keys still find their sessions.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// What the table keeps of a session key: 72 bits of its keyed hash, as 64 bits (words 0 and
/// 1) and an 8-bit tag (word 2, always below 256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PinKey([u32; 3]);

impl PinKey {
    /// The 64 bits a shard stores and places the pin by; never zero (which marks an empty
    /// bucket): the one key of 2^64 whose bits are zero shares the bits of the key `[1, 0]`.
    pub(super) fn stored(self) -> [u32; 2] {
        match [self.0[0], self.0[1]] {
            [0, 0] => [1, 0],
            lo => lo,
        }
    }

    /// The 8 bits that pick the shard (independent of the 64 that place the pin in it).
    pub(super) fn tag(self) -> u8 {
        self.0[2] as u8
    }

    /// The shard, from the tag.
    pub(super) fn shard(self, mask: usize) -> usize {
        usize::from(self.tag()) & mask
    }

    /// The key of a stored pin.
    pub(super) fn from_stored(lo: [u32; 2], tag: u8) -> PinKey {
        PinKey([lo[0], lo[1], u32::from(tag)])
    }

    /// 24 hex digits (the snapshot form).
    pub fn to_hex(self) -> String {
        format!("{:08x}{:08x}{:08x}", self.0[0], self.0[1], self.0[2])
    }

    pub fn from_hex(s: &str) -> Option<PinKey> {
        let word = |i: usize| s.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok());
        (s.len() == 24).then_some(())?;
        Some(PinKey([word(0)?, word(1)?, word(2)? & 0xff]))
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
        PinKey([h.h1 as u32, (h.h1 >> 32) as u32, u32::from(h.h2 as u8)])
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

    #[test]
    fn a_96_bit_hex_key_reads_as_its_72_bits() {
        let k = HashKey(1, 2).pin_key("session");
        let old = format!("{}{:06x}{:02x}", &k.to_hex()[..16], 0xabcdef, k.tag());
        assert_eq!(PinKey::from_hex(&old), Some(k), "the old form's extra 24 bits are ignored");
        assert!(k.to_hex().ends_with(&format!("000000{:02x}", k.tag())));
        assert_eq!(PinKey::from_stored(k.stored(), k.tag()), k);
        assert_eq!(PinKey([0, 0, 7]).stored(), [1, 0], "never the empty mark");
    }
}
