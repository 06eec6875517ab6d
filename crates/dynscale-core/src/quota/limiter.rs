//! The keyed quota limiter: GCRA state for many counters, sharded, with bounded memory.
//!
//! Each counter is a [`KeyHash`] (a rule and a key value, hashed) mapped to one `u64`,
//! its theoretical arrival time. Nothing else is kept per key: no text, no timestamps,
//! no rule. A stored TAT is a plain nanosecond instant whatever the rule's rate (see
//! [`super::gcra`]), so idleness and "closest to idle" compare across rules.
//!
//! # Eviction
//!
//! A key whose TAT is at or before `now` decides exactly like a key never seen, so it
//! can be dropped at any moment without changing any decision. Such idle keys are
//! dropped lazily, when a shard is full and a new key arrives, and by [`QuotaLimiter::sweep`].
//!
//! The number of keys is also capped by [`LimiterConfig::max_keys`]. When a full
//! shard holds fewer idle keys than one eviction batch, the keys with the smallest
//! TAT (the closest to becoming idle, so the ones owing the least) make up the
//! difference. That is the **only**
//! case in which the limiter's decisions differ from an unbounded one: a key dropped
//! while still in debt forgets the rest of that debt and may pass early. Each such
//! drop is counted in [`LimiterStats::forced_evictions`]; a non-zero rate of them means
//! `max_keys` is smaller than the live key set and should be raised.
//!
//! Evictions are done in batches (a 32nd of a shard at a time) so that a flood of new
//! keys costs amortised O(1) per key instead of a scan of the shard per key.
//!
//! Threads pass their own `now`, read a little apart. A key dropped as idle at one
//! thread's `now` looks fresh to a thread whose `now` is a few nanoseconds older, which
//! is the same as that thread having asked those few nanoseconds later.
//!
//! Memory is 16 bytes per table slot and tables are at most 80 % full, so a limiter at
//! capacity holds 20 bytes per key (20 MB for a million keys).
//!
//! # Why a mutex on the hot path
//!
//! Hot-path state in dynscale is normally immutable and read lock-free. A quota check
//! is different: it is a read-modify-write of one key that must be atomic, plus an
//! insert or eviction now and then. A lock-free concurrent map with eviction would be
//! far more code for little gain, because the critical section here is a hash-table
//! probe and a few integer operations (tens of nanoseconds), and keys are spread over
//! many shards, each behind its own uncontended-in-practice `Mutex` on its own cache
//! line. This is the accepted exception to "hot-path reads are lock-free".

use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::gcra::{Gcra, Verdict};
use super::key::KeyHash;
use super::table::{Probe, TatTable};
use super::time::Nanos;

/// A shard drops at least `capacity / EVICTION_BATCH` keys when it makes room.
const EVICTION_BATCH: usize = 32;

/// The most shards a limiter splits into; more would only waste memory.
const MAX_SHARDS: usize = 1 << 16;

/// How a [`QuotaLimiter`] is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// The most keys held at once, over all shards. A hard bound: the limiter never
    /// holds more, whatever arrives.
    pub max_keys: usize,
    /// How many independently locked shards to spread keys over. Rounded up to a
    /// power of two, and lowered if `max_keys` is too small to give each a key.
    pub shards: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            max_keys: 1 << 20,
            shards: 64,
        }
    }
}

/// Why a limiter cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error("max_keys must be at least 1, got {max_keys}")]
    NoCapacity { max_keys: usize },
}

/// Counters of a limiter, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Keys held now.
    pub keys: usize,
    /// Idle keys dropped (lazily or by a sweep); these never change a decision.
    pub idle_evictions: u64,
    /// Keys dropped while still in debt because the limiter was full.
    pub forced_evictions: u64,
    /// Estimated heap and inline bytes, as [`QuotaLimiter::memory_bytes`].
    pub memory_bytes: usize,
}

/// One quota a request must pass: the limit, the counter it charges, and the cost.
#[derive(Debug, Clone, Copy)]
pub struct QuotaCharge<'a> {
    pub limit: &'a Gcra,
    pub key: KeyHash,
    pub cost: u64,
}

/// Many GCRA counters behind per-shard locks, with a hard bound on their number.
#[derive(Debug)]
pub struct QuotaLimiter {
    shards: Box<[PaddedShard]>,
    shard_mask: usize,
    shard_capacity: usize,
}

/// A shard on its own cache lines, so that two cores working on neighbouring shards
/// do not bounce one line between them.
#[derive(Debug)]
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

#[derive(Debug)]
struct Shard {
    table: TatTable,
    idle_evictions: u64,
    forced_evictions: u64,
}

impl QuotaLimiter {
    /// An empty limiter sized by `config`.
    pub fn new(config: LimiterConfig) -> Result<Self, LimiterError> {
        if config.max_keys == 0 {
            return Err(LimiterError::NoCapacity {
                max_keys: config.max_keys,
            });
        }
        let mut shards = config.shards.clamp(1, MAX_SHARDS).next_power_of_two();
        while shards > config.max_keys {
            shards /= 2;
        }
        Ok(QuotaLimiter {
            shards: (0..shards)
                .map(|_| {
                    PaddedShard(Mutex::new(Shard {
                        table: TatTable::new(config.max_keys / shards),
                        idle_evictions: 0,
                        forced_evictions: 0,
                    }))
                })
                .collect(),
            shard_mask: shards - 1,
            shard_capacity: config.max_keys / shards,
        })
    }

    /// Charges `cost` cells to `key` under `limit` at `now`.
    pub fn check(&self, limit: &Gcra, key: KeyHash, cost: u64, now: Nanos) -> Verdict {
        let mut shard = self.lock(self.shard_index(key));
        let probe = shard.table.probe(key.0);
        let tat = match probe {
            Probe::Found(i) => Nanos(shard.table.tat_at(i)),
            Probe::Vacant(_) => Nanos::ZERO,
        };
        let (verdict, next) = limit.decide(tat, cost, now);
        if verdict.is_allow() {
            match probe {
                Probe::Found(i) => shard.table.set(i, next.0),
                Probe::Vacant(_) => shard.insert(key, next, now, self.shard_capacity),
            }
        }
        verdict
    }

    /// Charges every quota of one request, all or nothing: if any does not pass,
    /// none is charged. The verdict is then the strictest one: an
    /// [`Verdict::OverBurst`] if some charge can never pass, else a throttle whose
    /// `retry_after` is the longest, the earliest time at which all of them pass.
    pub fn check_all(&self, charges: &[QuotaCharge<'_>], now: Nanos) -> Verdict {
        self.check_all_naming(charges, now).0
    }

    /// [`QuotaLimiter::check_all`], also naming the charge that decided a refusal:
    /// the index in `charges` of the one whose verdict is returned.
    pub fn check_all_naming(
        &self,
        charges: &[QuotaCharge<'_>],
        now: Nanos,
    ) -> (Verdict, Option<usize>) {
        match charges {
            [] => return (Verdict::Allow, None),
            [one] => {
                let verdict = self.check(one.limit, one.key, one.cost, now);
                let culprit = (!verdict.is_allow()).then_some(0);
                return (verdict, culprit);
            }
            _ => {}
        }
        // Lock every shard involved, each once, in ascending order: two multi-key
        // checks then never wait on each other in a cycle.
        let mut indices: Vec<usize> = charges.iter().map(|c| self.shard_index(c.key)).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            indices.iter().map(|&i| self.lock(i)).collect();
        let guard_of = |key: KeyHash| indices.binary_search(&self.shard_index(key)).unwrap_or(0);

        // Decide everything before changing anything. `pending` holds the TATs the
        // allowed charges would leave, so two charges on one key see each other.
        let mut pending: Vec<(KeyHash, Nanos)> = Vec::with_capacity(charges.len());
        let mut worst = Verdict::Allow;
        let mut culprit = None;
        for (i, charge) in charges.iter().enumerate() {
            let tat = pending
                .iter()
                .rev()
                .find(|(k, _)| *k == charge.key)
                .map(|&(_, tat)| tat)
                .unwrap_or_else(|| guards[guard_of(charge.key)].tat(charge.key));
            match charge.limit.decide(tat, charge.cost, now) {
                (Verdict::Allow, next) => pending.push((charge.key, next)),
                (refused @ Verdict::OverBurst { .. }, _) => {
                    if !matches!(worst, Verdict::OverBurst { .. }) {
                        worst = refused;
                        culprit = Some(i);
                    }
                }
                (Verdict::Throttle { retry_after }, _) => match worst {
                    Verdict::Throttle {
                        retry_after: longest,
                    } if longest >= retry_after => {}
                    Verdict::OverBurst { .. } => {}
                    _ => {
                        worst = Verdict::Throttle { retry_after };
                        culprit = Some(i);
                    }
                },
            }
        }
        if worst.is_allow() {
            for (key, tat) in pending {
                guards[guard_of(key)].store(key, tat, now, self.shard_capacity);
            }
        }
        (worst, culprit)
    }

    /// How many cells `key` could spend under `limit` right now, for rate-limit headers.
    pub fn remaining(&self, limit: &Gcra, key: KeyHash, now: Nanos) -> u64 {
        let tat = self.lock(self.shard_index(key)).tat(key);
        limit.remaining(tat, now)
    }

    /// Drops every idle key (TAT at or before `now`) and returns how many were dropped.
    /// This never changes a decision; it only returns memory.
    pub fn sweep(&self, now: Nanos) -> usize {
        let mut dropped = 0;
        for i in 0..self.shards.len() {
            let mut shard = self.lock(i);
            let removed = shard.table.tats().filter(|&tat| tat <= now.0).count();
            if removed > 0 {
                // Rebuilt at the size the survivors need, so memory taken by a burst
                // of keys comes back once they are idle.
                shard.table.retain_and_fit(|_, tat| tat > now.0);
                shard.idle_evictions += removed as u64;
            }
            dropped += removed;
        }
        dropped
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).table.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys this limiter holds: `max_keys` rounded down to a multiple of
    /// the shard count.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    /// The bytes this limiter occupies: the shards and their tables (16 bytes per
    /// slot, tables at most 80 % full, so 20 bytes per key at capacity).
    pub fn memory_bytes(&self) -> usize {
        let tables: usize = (0..self.shards.len())
            .map(|i| self.lock(i).table.heap_bytes())
            .sum();
        size_of::<Self>() + self.shards.len() * size_of::<PaddedShard>() + tables
    }

    /// Keys held, eviction counters and memory, read shard by shard.
    pub fn stats(&self) -> LimiterStats {
        let mut stats = LimiterStats {
            memory_bytes: size_of::<Self>() + self.shards.len() * size_of::<PaddedShard>(),
            ..LimiterStats::default()
        };
        for i in 0..self.shards.len() {
            let shard = self.lock(i);
            stats.keys += shard.table.len();
            stats.idle_evictions += shard.idle_evictions;
            stats.forced_evictions += shard.forced_evictions;
            stats.memory_bytes += shard.table.heap_bytes();
        }
        stats
    }

    /// The shard of a key: its low bits. The table inside a shard places keys by
    /// their high bits, so the two choices stay independent.
    fn shard_index(&self, key: KeyHash) -> usize {
        key.0 as usize & self.shard_mask
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A shard holds plain integers that are consistent after every statement,
        // so a panic elsewhere while it was locked leaves nothing to repair.
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    fn tat(&self, key: KeyHash) -> Nanos {
        Nanos(self.table.get(key.0).unwrap_or(0))
    }

    /// Records a key's new TAT.
    fn store(&mut self, key: KeyHash, tat: Nanos, now: Nanos, capacity: usize) {
        match self.table.probe(key.0) {
            Probe::Found(i) => self.table.set(i, tat.0),
            Probe::Vacant(_) => self.insert(key, tat, now, capacity),
        }
    }

    /// Records the TAT of a key not in the shard, making room first if it is full.
    fn insert(&mut self, key: KeyHash, tat: Nanos, now: Nanos, capacity: usize) {
        if tat <= now {
            // Still idle after the charge (a free action): storing it would change nothing.
            return;
        }
        if self.table.len() >= capacity {
            self.make_room(now, capacity);
        }
        self.table.insert_new(key.0, tat.0);
    }

    /// Brings a full shard down to `capacity − batch` keys: idle keys first, then
    /// the keys closest to idle.
    fn make_room(&mut self, now: Nanos, capacity: usize) {
        let target = capacity - (capacity / EVICTION_BATCH).max(1);
        // Keys still in debt, ordered by TAT, ties broken by the key's bits reversed.
        // Many keys share a TAT (every key charged in the same cell of a slow rule
        // does), and the table places keys by their high bits: breaking ties by
        // position would empty one stretch of the table and leave the rest packed
        // solid, so that every probe runs the length of it. Reversed bits order ties
        // by the low bits instead, which say nothing about position.
        let mut live: Vec<(u64, u64)> = self
            .table
            .entries()
            .filter(|&(_, tat)| tat > now.0)
            .map(|(key, tat)| (tat, key.reverse_bits()))
            .collect();
        let idle = self.table.len() - live.len();
        let excess = live.len().saturating_sub(target);
        // Keys are unique, so exactly `excess` pairs are at or below the cut.
        let cut = match excess {
            0 => None,
            _ => Some(*live.select_nth_unstable(excess - 1).1),
        };
        self.table.retain(|key, tat| {
            tat > now.0 && cut.is_none_or(|cut| (tat, key.reverse_bits()) > cut)
        });
        self.idle_evictions += idle as u64;
        self.forced_evictions += excess as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Rate;
    use std::time::Duration;

    fn limit(count: u64, burst: u64) -> Gcra {
        Gcra::new(
            Rate {
                count,
                per: Duration::from_secs(1),
            },
            burst,
        )
        .expect("valid test rule")
    }

    fn limiter(max_keys: usize, shards: usize) -> QuotaLimiter {
        QuotaLimiter::new(LimiterConfig { max_keys, shards }).expect("valid config")
    }

    #[test]
    fn config_is_checked_and_rounded() {
        assert_eq!(
            QuotaLimiter::new(LimiterConfig {
                max_keys: 0,
                shards: 4
            })
            .err(),
            Some(LimiterError::NoCapacity { max_keys: 0 })
        );
        let l = limiter(100, 6);
        assert_eq!(l.shards.len(), 8);
        assert_eq!(l.capacity(), 96);
        let tiny = limiter(3, 64);
        assert_eq!(tiny.shards.len(), 2);
        assert_eq!(tiny.capacity(), 2);
        assert_eq!(limiter(10, 0).shards.len(), 1);
    }

    #[test]
    fn keys_are_independent_and_idle_keys_are_not_stored() {
        let l = limiter(1024, 4);
        let rule = limit(10, 1);
        assert!(l.check(&rule, KeyHash(1), 1, Nanos(0)).is_allow());
        assert!(!l.check(&rule, KeyHash(1), 1, Nanos(0)).is_allow());
        assert!(l.check(&rule, KeyHash(2), 1, Nanos(0)).is_allow());
        assert!(l.check(&rule, KeyHash(3), 0, Nanos(0)).is_allow());
        assert_eq!(l.len(), 2, "a free action on a fresh key stores nothing");
        assert_eq!(l.remaining(&rule, KeyHash(1), Nanos(0)), 0);
        assert_eq!(l.remaining(&rule, KeyHash(9), Nanos(0)), 1);
        assert_eq!(l.sweep(Nanos(50_000_000)), 0, "not idle yet");
        assert_eq!(
            l.sweep(Nanos(100_000_000)),
            2,
            "idle once the TAT is reached"
        );
        assert!(l.is_empty());
        assert_eq!(l.stats().idle_evictions, 2);
    }

    #[test]
    fn full_shard_drops_idle_keys_before_owing_ones() {
        // One shard of 8 keys. Keys 10..14 owe little (rate 1000/s), keys 14..18 owe
        // 1 s, later keys owe a minute.
        let l = limiter(8, 1);
        let (fast, slow) = (limit(1000, 1), limit(1, 1));
        let slower = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            1,
        )
        .expect("valid test rule");
        for k in 10..14 {
            assert!(l.check(&fast, KeyHash(k), 1, Nanos(0)).is_allow());
        }
        for k in 14..18 {
            assert!(l.check(&slow, KeyHash(k), 1, Nanos(0)).is_allow());
        }
        // At 1 ms the fast keys are idle: a new key evicts them, nothing is forced.
        assert!(
            l.check(&slower, KeyHash(100), 1, Nanos(1_000_000))
                .is_allow()
        );
        let stats = l.stats();
        assert_eq!(
            (stats.keys, stats.idle_evictions, stats.forced_evictions),
            (5, 4, 0)
        );
        // Fill up with owing keys; the next one forces out the one owing least.
        for k in 101..104 {
            assert!(
                l.check(&slower, KeyHash(k), 1, Nanos(2_000_000 + k))
                    .is_allow()
            );
        }
        assert!(
            l.check(&slower, KeyHash(200), 1, Nanos(3_000_000))
                .is_allow()
        );
        let stats = l.stats();
        assert_eq!((stats.keys, stats.forced_evictions), (8, 1));
        // Keys 14..18 (TAT 1 s) were the closest to idle; one of them forgot its debt.
        let forgotten = (14..18).filter(|&k| l.remaining(&slow, KeyHash(k), Nanos(3_000_000)) == 1);
        assert_eq!(forgotten.count(), 1);
    }

    #[test]
    fn forced_eviction_keeps_the_table_evenly_filled() {
        // A slow rule puts every key in the same cell, so all TATs are equal: the
        // eviction order must not follow table position, or probes grow without bound.
        let l = limiter(4096, 1);
        let rule = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            1,
        )
        .expect("valid test rule");
        for k in 0..100_000u64 {
            let key = KeyHash(k.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17));
            assert!(l.check(&rule, key, 1, Nanos(k)).is_allow());
        }
        let shard = l.lock(0);
        assert!(shard.forced_evictions > 90_000);
        let mean = shard.table.mean_displacement();
        assert!(mean < 4.0, "mean probe distance {mean}");
    }

    #[test]
    fn check_all_charges_all_or_nothing() {
        let l = limiter(1024, 8);
        let (a, b) = (limit(10, 2), limit(1, 1));
        let charges = |cost_b| {
            [
                QuotaCharge {
                    limit: &a,
                    key: KeyHash(1),
                    cost: 1,
                },
                QuotaCharge {
                    limit: &b,
                    key: KeyHash(2 << 32),
                    cost: cost_b,
                },
            ]
        };
        assert_eq!(l.check_all(&charges(1), Nanos(0)), Verdict::Allow);
        // b is spent: nothing is charged to a either.
        assert_eq!(
            l.check_all(&charges(1), Nanos(0)),
            Verdict::Throttle {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(l.remaining(&a, KeyHash(1), Nanos(0)), 1);
        assert_eq!(
            l.check_all_naming(&charges(1), Nanos(0)),
            (
                Verdict::Throttle {
                    retry_after: Duration::from_secs(1)
                },
                Some(1)
            )
        );
        assert_eq!(
            l.check_all_naming(&charges(2), Nanos(0)),
            (Verdict::OverBurst { cost: 2, burst: 1 }, Some(1))
        );
        assert_eq!(l.check_all(&[], Nanos(0)), Verdict::Allow);
        // Two charges on one key see each other.
        let same = [
            QuotaCharge {
                limit: &a,
                key: KeyHash(7),
                cost: 2,
            },
            QuotaCharge {
                limit: &a,
                key: KeyHash(7),
                cost: 1,
            },
        ];
        assert_eq!(
            l.check_all(&same, Nanos(0)),
            Verdict::Throttle {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(l.remaining(&a, KeyHash(7), Nanos(0)), 2);
    }

    #[test]
    fn memory_follows_the_keys_and_comes_back_after_a_sweep() {
        let l = limiter(1 << 12, 4);
        let empty = l.memory_bytes();
        assert_eq!(
            empty,
            size_of::<QuotaLimiter>() + 4 * size_of::<PaddedShard>()
        );
        let rule = limit(1, 1);
        for k in 0..1000u64 {
            l.check(
                &rule,
                KeyHash(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                1,
                Nanos(0),
            );
        }
        let full = l.memory_bytes();
        assert!(full >= empty + 1000 * 20, "{full}");
        assert!(full <= empty + 4 * 1280 * 16, "{full}");
        assert_eq!(l.stats().memory_bytes, full);
        assert_eq!(l.sweep(Nanos(1_000_000_000)), 1000);
        assert_eq!(l.memory_bytes(), empty);
    }
}
