//! A worker thread's memory of insert cookies that verified, so that a client sending the same
//! cookie again is not hashed again.
//!
//! A pinned client sends its cookie with every request; checking it is an HMAC-SHA256 (two
//! compression rounds), a base64 decode and a payload parse, ~2% of the proxy's CPU per
//! request. A cookie value that verified under one [`super::CookieCodec`] verifies again,
//! byte for byte, under the same codec: the result is a pure function of the two. So each
//! worker keeps the last cookie values that verified, [`SLOTS`] of them in a direct-mapped
//! table, each with the codec's generation (a reload builds a new codec, which matches none
//! of them) and what verifying it gave.
//!
//! What it must not do: trust anything that did not verify (only verified values go in, a
//! tampered or unknown value always misses and is checked in full), or leak a stored value by
//! timing (the lookup compares the whole slot in constant time). A value longer than
//! [`MAX_LEN`] is not kept. The slot is picked from the value's first bytes (base64 of the
//! MAC, uniform for real cookies): a client choosing them can only evict entries, costing a
//! full check, never match one it did not send. It owns no lock, no shared state and nothing
//! of the snapshot.

use super::cookie::Verified;
use std::cell::RefCell;
use subtle::ConstantTimeEq;

/// Entries per worker thread (a power of two).
const SLOTS: usize = 256;

/// The longest cookie value kept (ours are ~90 bytes plus the backend's name).
pub const MAX_LEN: usize = 128;

struct Slot {
    /// The codec's generation; 0: empty.
    generation: u64,
    len: usize,
    value: [u8; MAX_LEN],
    verified: Option<Verified>,
}

const EMPTY: Slot = Slot { generation: 0, len: 0, value: [0; MAX_LEN], verified: None };

thread_local! {
    static TABLE: RefCell<Option<Box<[Slot; SLOTS]>>> = const { RefCell::new(None) };
}

fn index(value: &[u8]) -> usize {
    let mut first = [0u8; 8];
    let n = value.len().min(8);
    first[..n].copy_from_slice(&value[..n]);
    (u64::from_le_bytes(first).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// The bits in which `a` and `b` differ, ORed together: every word is read whatever the
/// others hold (`subtle`'s slice comparison does the same a byte at a time, ~10x the work).
fn differing_bits(a: &[u8; MAX_LEN], b: &[u8; MAX_LEN]) -> u64 {
    let words = |x: &[u8; MAX_LEN]| -> [u64; MAX_LEN / 8] {
        std::array::from_fn(|i| u64::from_ne_bytes(x[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
    };
    let (a, b) = (words(a), words(b));
    a.iter().zip(&b).fold(0, |acc, (x, y)| acc | (x ^ y))
}

/// What `value` verified to under the codec of `generation`, if this thread kept it.
pub fn get(generation: u64, value: &[u8]) -> Option<Verified> {
    if value.len() > MAX_LEN {
        return None;
    }
    TABLE.with_borrow(|table| {
        let slot = &table.as_ref()?[index(value)];
        let mut padded = [0u8; MAX_LEN];
        padded[..value.len()].copy_from_slice(value);
        let same = differing_bits(&slot.value, &padded).ct_eq(&0) & (slot.len as u64).ct_eq(&(value.len() as u64));
        (slot.generation == generation && bool::from(same)).then(|| slot.verified.clone())?
    })
}

/// Keep `value`, which verified to `verified` under the codec of `generation`.
pub fn put(generation: u64, value: &[u8], verified: &Verified) {
    if value.len() > MAX_LEN {
        return;
    }
    TABLE.with_borrow_mut(|table| {
        let table = table.get_or_insert_with(|| Box::new([EMPTY; SLOTS]));
        let slot = &mut table[index(value)];
        slot.generation = generation;
        slot.len = value.len();
        slot.value = [0; MAX_LEN];
        slot.value[..value.len()].copy_from_slice(value);
        slot.verified = Some(verified.clone());
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Route;

    fn verified(id: &str) -> Verified {
        Verified { id: id.into(), route: Some(Route { backend: "app1".into(), created_ms: 1_000 }) }
    }

    #[test]
    fn a_kept_value_is_found_under_its_generation_only() {
        put(7, b"abcdefgh-value", &verified("one"));
        assert_eq!(get(7, b"abcdefgh-value"), Some(verified("one")));
        assert_eq!(get(8, b"abcdefgh-value"), None, "another codec (a reload) matches nothing");
    }

    #[test]
    fn a_value_differing_anywhere_or_in_length_misses() {
        put(3, b"same-start-and-more", &verified("two"));
        assert_eq!(get(3, b"same-start-and-mord"), None, "last byte");
        assert_eq!(get(3, b"same-start-and-mor"), None, "a prefix");
        assert_eq!(get(3, b"same-start-and-more\0"), None, "a NUL-padded longer value");
        assert_eq!(get(3, b"same-start-and-more"), Some(verified("two")));
    }

    #[test]
    fn differing_bits_sees_a_difference_in_any_byte() {
        let a = [7u8; MAX_LEN];
        assert_eq!(differing_bits(&a, &a), 0);
        for i in 0..MAX_LEN {
            let mut b = a;
            b[i] ^= 0x80;
            assert_ne!(differing_bits(&a, &b), 0, "byte {i}");
        }
    }

    #[test]
    fn values_longer_than_the_limit_are_not_kept() {
        let long = vec![b'x'; MAX_LEN + 1];
        put(4, &long, &verified("three"));
        assert_eq!(get(4, &long), None);
    }

    #[test]
    fn a_value_in_the_same_slot_replaces_the_earlier_one() {
        // Same first 8 bytes: same slot.
        put(5, b"01234567-a", &verified("a"));
        put(5, b"01234567-b", &verified("b"));
        assert_eq!(get(5, b"01234567-a"), None);
        assert_eq!(get(5, b"01234567-b"), Some(verified("b")));
    }
}
