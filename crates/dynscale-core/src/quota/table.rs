//! `TatTable`: the open-addressing hash table behind one limiter shard, mapping a
//! 64-bit key hash to a 64-bit TAT in 16 bytes per slot.
//!
//! Written by hand rather than using `std`'s `HashMap` for two reasons. Memory: the
//! table is sized to the shard's capacity exactly (at most 80 % full, so 20 bytes per
//! key at capacity), where a power-of-two table lands anywhere between 19 and 39.
//! Churn: keys leave only in bulk (eviction and sweeps) and the table is then rebuilt,
//! so it never holds tombstones; `HashMap::retain` leaves tombstones that, under
//! steady eviction, make the table double in size although the key count is capped.
//!
//! Linear probing from a slot chosen by the key's high bits (multiply-shift, so any
//! table size works); key 0 marks an empty slot.

use std::mem::size_of;

/// The smallest table allocated once a shard holds a key.
const MIN_SLOTS: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The key hash, or `EMPTY`.
    key: u64,
    tat: u64,
}

const EMPTY: u64 = 0;

/// Where a key is, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    Found(usize),
    Vacant(usize),
}

/// Key hash → TAT, holding at most `capacity` keys.
#[derive(Debug)]
pub(super) struct TatTable {
    slots: Box<[Slot]>,
    len: usize,
    /// The most keys the owner will ever insert; fixes the largest table size.
    capacity: usize,
}

/// The key as stored: 0 is the empty marker, so the hash 0 is folded onto 1. Two
/// counters whose hashes are 0 and 1 would share a budget, a 2⁻⁶³ chance.
fn stored(key: u64) -> u64 {
    key.max(1)
}

impl TatTable {
    /// An empty table that allocates nothing until its first key.
    pub(super) fn new(capacity: usize) -> Self {
        TatTable {
            slots: Box::new([]),
            len: 0,
            capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the slots.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
    }

    /// Looks a key up.
    pub(super) fn probe(&self, key: u64) -> Probe {
        let key = stored(key);
        let n = self.slots.len();
        if n == 0 {
            return Probe::Vacant(0);
        }
        let mut i = home(key, n);
        // Terminates: a table is never full (at most 80 % of its slots hold keys).
        loop {
            let slot = self.slots[i];
            if slot.key == key {
                return Probe::Found(i);
            }
            if slot.key == EMPTY {
                return Probe::Vacant(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// The TAT of a key found by [`TatTable::probe`].
    pub(super) fn tat_at(&self, found: usize) -> u64 {
        self.slots[found].tat
    }

    pub(super) fn get(&self, key: u64) -> Option<u64> {
        match self.probe(key) {
            Probe::Found(i) => Some(self.slots[i].tat),
            Probe::Vacant(_) => None,
        }
    }

    /// Overwrites the TAT of a key found by [`TatTable::probe`].
    pub(super) fn set(&mut self, found: usize, tat: u64) {
        self.slots[found].tat = tat;
    }

    /// Inserts a key known to be absent. The caller keeps `len < capacity`.
    pub(super) fn insert_new(&mut self, key: u64, tat: u64) {
        debug_assert!(self.len < self.capacity);
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            let grown = slots_for(self.len + 1, self.capacity).max(self.slots.len() * 2);
            self.rebuild(grown.min(full_slots(self.capacity)), |_, _| true);
        }
        match self.probe(key) {
            Probe::Vacant(i) => {
                self.slots[i] = Slot {
                    key: stored(key),
                    tat,
                };
                self.len += 1;
            }
            Probe::Found(i) => self.slots[i].tat = tat,
        }
    }

    /// Every stored TAT, in no particular order.
    pub(super) fn tats(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().filter(|s| s.key != EMPTY).map(|s| s.tat)
    }

    /// Every stored (key, TAT) pair, in no particular order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, s.tat))
    }

    /// Keeps the (key, TAT) pairs `keep` accepts, in a fresh table of the current size.
    pub(super) fn retain(&mut self, keep: impl FnMut(u64, u64) -> bool) {
        self.rebuild(self.slots.len(), keep);
    }

    /// Keeps the (key, TAT) pairs `keep` accepts, in a table sized for what is left
    /// (so memory is returned after a burst of keys goes idle).
    pub(super) fn retain_and_fit(&mut self, mut keep: impl FnMut(u64, u64) -> bool) {
        let left = self.entries().filter(|&(k, t)| keep(k, t)).count();
        self.rebuild(slots_for(left, self.capacity), keep);
    }

    /// The mean distance of a key from its home slot: the cost of a lookup.
    #[cfg(test)]
    pub(super) fn mean_displacement(&self) -> f64 {
        let n = self.slots.len();
        let total: usize = (0..n)
            .filter(|&i| self.slots[i].key != EMPTY)
            .map(|i| (i + n - home(self.slots[i].key, n)) % n)
            .sum();
        total as f64 / self.len.max(1) as f64
    }

    fn rebuild(&mut self, slots: usize, mut keep: impl FnMut(u64, u64) -> bool) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![Slot::default(); slots].into_boxed_slice(),
        );
        self.len = 0;
        for slot in old.iter().filter(|s| s.key != EMPTY && keep(s.key, s.tat)) {
            match self.probe(slot.key) {
                Probe::Vacant(i) => {
                    self.slots[i] = *slot;
                    self.len += 1;
                }
                // Keys are unique in the old table, so this cannot happen; keeping
                // the later copy would be as right as the first.
                Probe::Found(i) => self.slots[i] = *slot,
            }
        }
    }
}

/// The home slot of a key in a table of `n` slots: `⌊key · n / 2⁶⁴⌋`, which reads
/// the key's high bits (the limiter picks shards by the low ones).
fn home(key: u64, n: usize) -> usize {
    ((u128::from(key) * n as u128) >> 64) as usize
}

/// The table size for a shard at capacity: keys fill at most 80 % of it.
fn full_slots(capacity: usize) -> usize {
    (capacity + capacity.div_ceil(4)).max(capacity + 1)
}

/// The table size to hold `len` keys with room to grow: the smallest of 64, 128, …
/// filled to at most 40 %, or the full size if that is smaller.
fn slots_for(len: usize, capacity: usize) -> usize {
    let full = full_slots(capacity);
    if len == 0 {
        return 0;
    }
    let mut n = MIN_SLOTS;
    while n < full && len * 5 > n * 2 {
        n *= 2;
    }
    n.min(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_like_a_map_through_growth_and_rebuilds() {
        let capacity = 1000;
        let mut table = TatTable::new(capacity);
        let mut model = HashMap::new();
        assert_eq!(table.heap_bytes(), 0);
        for k in 0..capacity as u64 {
            // Spread keys like hashes, plus the awkward ones: 0, 1 and the top.
            let key = match k {
                0 => 0,
                1 => u64::MAX,
                _ => k.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            assert_eq!(table.get(key), None);
            table.insert_new(key, k);
            model.insert(key.max(1), k);
            assert!(
                table.len() * 5 <= table.slots.len() * 4,
                "at most 80 % full"
            );
        }
        assert_eq!(table.len(), capacity);
        assert_eq!(table.heap_bytes(), full_slots(capacity) * 16);
        for (&key, &tat) in &model {
            assert_eq!(table.get(key), Some(tat));
        }
        if let Probe::Found(i) = table.probe(0) {
            table.set(i, 77);
            model.insert(1, 77);
        }
        assert_eq!(table.get(1), Some(77), "0 and 1 are one key");

        table.retain(|_, tat| tat % 2 == 0);
        model.retain(|_, tat| *tat % 2 == 0);
        assert_eq!(table.len(), model.len());
        assert_eq!(
            table.heap_bytes(),
            full_slots(capacity) * 16,
            "retain keeps the size"
        );
        table.retain_and_fit(|_, tat| tat < 40);
        model.retain(|_, tat| *tat < 40);
        assert_eq!(table.len(), model.len());
        assert_eq!(table.heap_bytes(), MIN_SLOTS * 16, "retain_and_fit shrinks");
        for (&key, &tat) in &model {
            assert_eq!(table.get(key), Some(tat));
        }
        let mut tats: Vec<u64> = table.tats().collect();
        tats.sort_unstable();
        let mut want: Vec<u64> = model.values().copied().collect();
        want.sort_unstable();
        assert_eq!(tats, want);
        table.retain_and_fit(|_, _| false);
        assert_eq!((table.len(), table.heap_bytes()), (0, 0));
    }

    #[test]
    fn sizes() {
        assert_eq!(full_slots(1), 2);
        assert_eq!(full_slots(4), 5);
        assert_eq!(full_slots(1000), 1250);
        assert_eq!(slots_for(0, 1000), 0);
        assert_eq!(slots_for(25, 1000), 64);
        assert_eq!(slots_for(26, 1000), 128);
        assert_eq!(slots_for(900, 1000), 1250);
        assert_eq!(slots_for(3, 4), 5);
    }
}
