//! One shard's pins: an open-addressing array of slots (16 bytes plus the value: 20 for the
//! memory store, 24 for the Redis cache) with linear probing, no control bytes and no
//! power-of-two sizes, so that it stays between 70% and 87.5% full (23 to 29 bytes a
//! memory-store pin).
//!
//! - A slot keeps 64 bits of the pin's key (`lo`, never zero: zero marks an empty slot) and
//!   finds its home bucket by a multiply-shift of them (any capacity works).
//! - The key's remaining 8 bits (its tag) pick the shard; a table of 256 shards knows them from
//!   the shard, smaller tables (under about 132k `max_entries`) keep them in a byte array
//!   beside the slots (`tags`), so every table tells keys apart by the same 72 bits.
//! - Past 87.5% full the array grows by a quarter (to 70% full), never beyond what the shard's
//!   share of `max_entries` needs; the full sweep shrinks it after a large drop.
//! - A removal shifts the rest of its run back into the hole (backward-shift deletion): no
//!   tombstones, so lookups never walk past dead slots.

use super::PinKey;

/// What a shard keeps of a [`PinKey`]: the 64 bits it stores and the 8 that pick the shard.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Key {
    lo: [u32; 2],
    tag: u8,
}

impl Key {
    pub fn of(k: PinKey) -> Key {
        Key { lo: k.stored(), tag: k.tag() }
    }
}

/// One pin: 64 bits of its key, the value, and two ticks (20 bytes with a `u32` value);
/// 4-byte aligned for values up to that.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot<V> {
    lo: [u32; 2],
    pub value: V,
    /// Tick of the last lookup (idle expiry and LRU eviction).
    pub used: u32,
    /// Tick of creation, possibly before the table was made (wrapping), for a loaded pin.
    pub created: u32,
}

const _: () = assert!(std::mem::size_of::<Slot<u32>>() == 20);
const _: () = assert!(std::mem::size_of::<Slot<[u16; 4]>>() == 24);

const EMPTY: [u32; 2] = [0, 0];

impl<V: Default> Slot<V> {
    pub fn new(value: V, used: u32, created: u32) -> Slot<V> {
        Slot { lo: EMPTY, value, used, created }
    }
}

/// Most pins a capacity of `n` buckets takes: 7/8 of it, and always one bucket free, so that
/// every probe ends at an empty slot.
fn max_len(buckets: usize) -> usize {
    (buckets / 8 * 7 + buckets % 8 * 7 / 8).min(buckets.saturating_sub(1))
}

/// The fewest buckets that hold `n` pins.
fn buckets_for(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    if n > usize::MAX / 2 {
        return usize::MAX;
    }
    let mut b = n + n / 7;
    while max_len(b) < n {
        b += 1;
    }
    b
}

pub(super) struct Slots<V> {
    slots: Box<[Slot<V>]>,
    /// Each slot's tag, when the shard does not imply it (else empty).
    tags: Box<[u8]>,
    tagged: bool,
    len: usize,
}

impl<V: Copy + Default> Slots<V> {
    /// An empty shard; `tagged` if the shard does not imply its keys' tags.
    pub fn new(tagged: bool) -> Slots<V> {
        Slots { slots: Box::new([]), tags: Box::new([]), tagged, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn num_buckets(&self) -> usize {
        self.slots.len()
    }

    /// Buckets allocated, bytes (slots and tags).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots) + self.tags.len()
    }

    fn home(&self, lo: [u32; 2]) -> usize {
        let k = u64::from(lo[0]) | u64::from(lo[1]) << 32;
        ((u128::from(k) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// The bucket of `key`, if pinned.
    pub fn find(&self, key: Key) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        // The run from the key's home to the array end, then on from the start (there is an
        // empty bucket on the way): slices, so that the probe loop has no bounds checks.
        let home = self.home(key.lo);
        let (head, tail) = self.slots.split_at(home);
        let run = tail.iter().zip(home..).chain(head.iter().zip(0..));
        for (s, i) in run {
            if s.lo == key.lo && (!self.tagged || self.tags[i] == key.tag) {
                return Some(i);
            }
            if s.lo == EMPTY {
                return None;
            }
        }
        None
    }

    /// The pin in bucket `i`, if any.
    pub fn get(&self, i: usize) -> Option<&Slot<V>> {
        self.slots.get(i).filter(|s| s.lo != EMPTY)
    }

    /// The pin in bucket `i`, which must hold one.
    pub fn at(&mut self, i: usize) -> &mut Slot<V> {
        debug_assert!(self.slots[i].lo != EMPTY);
        &mut self.slots[i]
    }

    /// The key of the pin in bucket `i` (`shard`: the tag this shard implies, if it does).
    pub fn key_at(&self, i: usize, shard: u8) -> PinKey {
        let tag = if self.tagged { self.tags[i] } else { shard };
        PinKey::from_stored(self.slots[i].lo, tag)
    }

    /// Every pin with its bucket.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Slot<V>)> {
        self.slots.iter().enumerate().filter(|(_, s)| s.lo != EMPTY)
    }

    /// Pin `key` (which must not be pinned yet) as `slot`, growing if full but never beyond
    /// what `limit` pins need.
    pub fn insert(&mut self, key: Key, mut slot: Slot<V>, limit: usize) {
        if self.len + 1 > max_len(self.slots.len()) {
            let grown = self.slots.len() + (self.slots.len() / 4).max(4);
            self.resize(grown.min(buckets_for(limit)).max(buckets_for(self.len + 1)));
        }
        slot.lo = key.lo;
        self.place(slot, key.tag);
        self.len += 1;
    }

    /// Put `slot` into the first empty bucket from its home (there is one).
    fn place(&mut self, slot: Slot<V>, tag: u8) {
        let mut i = self.home(slot.lo);
        while self.slots[i].lo != EMPTY {
            i = self.next(i);
        }
        self.slots[i] = slot;
        if self.tagged {
            self.tags[i] = tag;
        }
    }

    /// Take the pin out of bucket `i` (which must hold one), shifting the rest of its run back
    /// so that no later pin is cut off from its home.
    pub fn remove(&mut self, mut hole: usize) -> Slot<V> {
        let removed = self.slots[hole];
        debug_assert!(removed.lo != EMPTY);
        let mut j = hole;
        loop {
            j = self.next(j);
            let lo = self.slots[j].lo;
            if lo == EMPTY {
                break;
            }
            // The pin at j may fill the hole unless its home lies cyclically in (hole, j].
            let h = self.home(lo);
            let stays = if hole <= j { hole < h && h <= j } else { hole < h || h <= j };
            if !stays {
                self.slots[hole] = self.slots[j];
                if self.tagged {
                    self.tags[hole] = self.tags[j];
                }
                hole = j;
            }
        }
        self.slots[hole].lo = EMPTY;
        self.len -= 1;
        removed
    }

    /// Keep only the pins `keep` accepts (it sees each pin once).
    pub fn retain(&mut self, mut keep: impl FnMut(&Slot<V>) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            // A removal may shift a pin from further on into bucket i: look at it again.
            // Pins only move back along their run, so none is skipped; a pin from the run's
            // wrapped start may be seen twice, which `keep` answers the same way.
            if self.slots[i].lo != EMPTY && !keep(&self.slots[i]) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Give memory back: room for `n` pins (at least the ones there are).
    pub fn shrink_to(&mut self, n: usize) {
        let buckets = buckets_for(n.max(self.len));
        if buckets < self.slots.len() {
            self.resize(buckets);
        }
    }

    fn resize(&mut self, buckets: usize) {
        let empty = Slot { lo: EMPTY, value: V::default(), used: 0, created: 0 };
        let slots = std::mem::replace(&mut self.slots, vec![empty; buckets].into_boxed_slice());
        let tags = std::mem::replace(&mut self.tags, vec![0; if self.tagged { buckets } else { 0 }].into());
        for (i, s) in slots.iter().enumerate().filter(|(_, s)| s.lo != EMPTY) {
            self.place(*s, tags.get(i).copied().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lo: u64, tag: u8) -> Key {
        Key { lo: [lo as u32, (lo >> 32) as u32], tag }
    }

    /// A key whose home is bucket `b` of `n` (for a table of `n` buckets).
    fn homed(b: usize, n: usize, salt: u64) -> Key {
        let lo = (((b as u128) << 64) / n as u128) as u64 + 1 + salt;
        let k = key(lo, 0);
        let probe: Slots<u32> =
            Slots { slots: vec![Slot::new(0, 0, 0); n].into(), tags: Box::new([]), tagged: false, len: 0 };
        assert_eq!(probe.home(k.lo), b, "salt {salt} moved the key's home");
        k
    }

    fn filled(n: usize, tagged: bool) -> (Slots<u32>, Vec<Key>) {
        let mut s = Slots::new(tagged);
        let keys: Vec<Key> = (1..=n as u64).map(|i| key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i as u8)).collect();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(s.find(k), None);
            s.insert(k, Slot::new(i as u32, 0, 0), usize::MAX);
        }
        (s, keys)
    }

    fn check_all_found(s: &Slots<u32>, keys: &[Key]) {
        for (i, &k) in keys.iter().enumerate() {
            let at = s.find(k).unwrap_or_else(|| panic!("pin {i} lost"));
            assert_eq!(s.get(at).map(|s| s.value), Some(i as u32));
        }
    }

    #[test]
    fn growth_keeps_every_pin_and_stays_between_70_and_87_percent_full() {
        let (s, keys) = filled(100_000, false);
        check_all_found(&s, &keys);
        assert_eq!(s.len(), 100_000);
        let fill = s.len() as f64 / s.num_buckets() as f64;
        assert!((0.69..=0.875).contains(&fill), "{fill}");
        assert_eq!(s.bytes(), s.num_buckets() * 20, "no control bytes when untagged");
    }

    #[test]
    fn growth_stops_at_what_the_limit_needs() {
        let mut s: Slots<u32> = Slots::new(false);
        for i in 1..=1000u64 {
            s.insert(key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0), Slot::new(0, 0, 0), 1000);
        }
        assert_eq!(s.num_buckets(), buckets_for(1000));
        assert!(max_len(s.num_buckets()) >= 1000 && s.num_buckets() <= 1144, "{}", s.num_buckets());
    }

    #[test]
    fn backward_shift_deletion_keeps_later_pins_findable() {
        let (mut s, keys) = filled(5000, false);
        // Remove every third pin: each removal shifts runs back.
        for k in keys.iter().step_by(3) {
            let at = s.find(*k).expect("pinned");
            s.remove(at);
        }
        for (i, &k) in keys.iter().enumerate() {
            let found = s.find(k).map(|at| s.get(at).unwrap().value);
            assert_eq!(found, (i % 3 != 0).then_some(i as u32), "pin {i}");
        }
        assert_eq!(s.len(), 5000 - 1667);
    }

    #[test]
    fn wrap_around_at_the_array_end() {
        let n = 16;
        let mut s: Slots<u32> = Slots::new(false);
        s.resize(n);
        // Four pins homed at the last bucket: three wrap to buckets 0..2.
        let keys: Vec<Key> = (0..4).map(|i| homed(n - 1, n, i)).collect();
        keys.iter().enumerate().for_each(|(i, &k)| s.insert(k, Slot::new(i as u32, 0, 0), usize::MAX));
        assert_eq!(s.num_buckets(), n);
        assert_eq!(keys.iter().map(|&k| s.find(k).unwrap()).collect::<Vec<_>>(), [15, 0, 1, 2]);
        // A pin homed at 0 goes after the wrapped ones.
        let zero = homed(0, n, 0);
        s.insert(zero, Slot::new(9, 0, 0), usize::MAX);
        assert_eq!(s.find(zero), Some(3));
        // Removing the one at the end pulls the wrapped run back across it.
        s.remove(15);
        assert_eq!(keys[1..].iter().map(|&k| s.find(k).unwrap()).collect::<Vec<_>>(), [15, 0, 1]);
        assert_eq!(s.find(zero), Some(2), "shifted back towards its home");
        assert_eq!(s.find(keys[0]), None);
        // Removing the wrapped pin at bucket 0 shifts the rest of the run back within the start.
        s.remove(0);
        assert_eq!(
            (s.find(keys[1]), s.find(keys[2]), s.find(keys[3]), s.find(zero)),
            (Some(15), None, Some(0), Some(1))
        );
    }

    #[test]
    fn a_pin_at_its_home_does_not_move_into_an_earlier_hole() {
        let n = 16;
        let mut s: Slots<u32> = Slots::new(false);
        s.resize(n);
        let (a, b) = (homed(4, n, 0), homed(5, n, 0));
        s.insert(a, Slot::new(1, 0, 0), usize::MAX);
        s.insert(b, Slot::new(2, 0, 0), usize::MAX);
        s.remove(4);
        assert_eq!(s.find(b), Some(5));
    }

    #[test]
    fn tags_tell_apart_keys_that_share_their_64_bits() {
        let mut s: Slots<u32> = Slots::new(true);
        s.insert(key(42, 1), Slot::new(1, 0, 0), usize::MAX);
        s.insert(key(42, 2), Slot::new(2, 0, 0), usize::MAX);
        assert_eq!(s.find(key(42, 3)), None);
        let at = s.find(key(42, 2)).unwrap();
        assert_eq!((s.get(at).unwrap().value, s.key_at(at, 0).tag()), (2, 2));
        s.remove(s.find(key(42, 1)).unwrap());
        assert_eq!(s.find(key(42, 2)).map(|at| s.get(at).unwrap().value), Some(2), "tag moved with its slot");
        let (t, keys) = filled(3000, true);
        check_all_found(&t, &keys);
    }

    #[test]
    fn retain_sees_every_pin_and_shrink_gives_memory_back() {
        let (mut s, keys) = filled(10_000, false);
        let mut seen = std::collections::HashSet::new();
        s.retain(|slot| {
            seen.insert(slot.value);
            slot.value % 10 == 0
        });
        assert_eq!(seen.len(), 10_000);
        assert_eq!(s.len(), 1000);
        s.shrink_to(2000);
        assert!(s.num_buckets() <= buckets_for(2000));
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(s.find(k).is_some(), i % 10 == 0, "pin {i}");
        }
        s.retain(|_| false);
        s.shrink_to(0);
        assert_eq!((s.len(), s.num_buckets()), (0, 0));
        assert_eq!(s.find(keys[0]), None);
    }

    #[test]
    fn capacities() {
        assert_eq!((max_len(0), max_len(1), max_len(2), max_len(8), max_len(16)), (0, 0, 1, 7, 14));
        for n in 0..2000 {
            let b = buckets_for(n);
            assert!(max_len(b) >= n && (b == 0 || max_len(b - 1) < n), "{n}");
        }
    }
}
