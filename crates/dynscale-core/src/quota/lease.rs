//! Concurrency leases: at most `limit` actions in flight per counter, each holding a
//! lease until it is released or its TTL runs out.
//!
//! A decision that passes a concurrency rule takes a lease and hands its id to the
//! caller, who releases it when the action ends. A caller that crashes never
//! releases, so every lease also expires; expired leases are freed lazily (when their
//! counter is next asked for a lease, or when a full shard needs room) and by
//! [`LeaseTable::sweep`]. A lease is live while `now < expires_at`.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::key::KeyHash;
use super::time::Nanos;

const MAX_SHARDS: usize = 1 << 12;

/// The id of one lease, unique within its table and never 0.
///
/// The low bits name the table shard that holds the lease, so releasing it finds it
/// without a search. A node that needs ids unique across a cluster pairs them with
/// its own node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// How a [`LeaseTable`] is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The most live leases held at once, over all shards. Unlike idle quota keys,
    /// live leases cannot be dropped without letting extra work in, so a full table
    /// refuses new leases instead.
    pub max_leases: usize,
    /// How many independently locked shards; rounded up to a power of two.
    pub shards: usize,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            max_leases: 1 << 20,
            shards: 16,
        }
    }
}

/// Why a lease table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("max_leases must be at least 1, got {max_leases}")]
    NoCapacity { max_leases: usize },
}

/// Why a lease was not granted. Each is a `throttle` for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDenied {
    /// The counter already holds `limit` live leases. The first of them expires
    /// `retry_after` from now (an explicit release may free one sooner).
    AtLimit { limit: u64, retry_after: Duration },
    /// A limit of 0 admits nothing, ever.
    ZeroLimit,
    /// The table holds as many leases as it may. The first lease in the same shard
    /// expires `retry_after` from now.
    TableFull {
        max_leases: usize,
        retry_after: Duration,
    },
}

impl LeaseDenied {
    /// When to ask again, if asking again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LeaseDenied::AtLimit { retry_after, .. }
            | LeaseDenied::TableFull { retry_after, .. } => Some(*retry_after),
            LeaseDenied::ZeroLimit => None,
        }
    }
}

/// Live leases per counter, sharded behind short per-shard locks (the same trade as
/// the quota limiter: every operation is a small read-modify-write).
#[derive(Debug)]
pub struct LeaseTable {
    shards: Box<[PaddedShard]>,
    shard_bits: u32,
    shard_capacity: usize,
    max_leases: usize,
}

#[derive(Debug)]
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

#[derive(Debug)]
struct Shard {
    /// The next sequence number to hand out; ids are `seq << shard_bits | shard`.
    next_seq: u64,
    /// Counter → its leases (few per counter: at most its limit).
    by_key: HashMap<u64, Vec<Held>, BuildHasherDefault<PreHashed>>,
    /// Lease id → counter, for release by id.
    by_id: HashMap<u64, u64, foldhash::fast::FixedState>,
    /// No lease in the shard expires before this: a lower bound that lets a full
    /// shard skip a pointless scan for expired leases.
    earliest_expiry: u64,
    expired: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: u64,
    expires_at: u64,
}

/// Counter keys are already uniform hashes, so the table uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are stored (through `write_u64`); this fold keeps the type
        // a correct `Hasher` should anything else be hashed with it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl LeaseTable {
    /// An empty table sized by `config`.
    pub fn new(config: LeaseConfig) -> Result<Self, LeaseError> {
        if config.max_leases == 0 {
            return Err(LeaseError::NoCapacity {
                max_leases: config.max_leases,
            });
        }
        let mut shards = config.shards.clamp(1, MAX_SHARDS).next_power_of_two();
        while shards > config.max_leases {
            shards /= 2;
        }
        Ok(LeaseTable {
            shards: (0..shards)
                .map(|_| {
                    PaddedShard(Mutex::new(Shard {
                        next_seq: 1,
                        by_key: HashMap::default(),
                        by_id: HashMap::with_hasher(foldhash::fast::FixedState::default()),
                        earliest_expiry: u64::MAX,
                        expired: 0,
                    }))
                })
                .collect(),
            shard_bits: shards.trailing_zeros(),
            shard_capacity: config.max_leases / shards,
            max_leases: config.max_leases,
        })
    }

    /// Takes a lease on `key` if it holds fewer than `limit` live leases at `now`.
    /// The lease expires `ttl` after `now` unless released before.
    pub fn acquire(
        &self,
        key: KeyHash,
        limit: u64,
        ttl: Duration,
        now: Nanos,
    ) -> Result<LeaseId, LeaseDenied> {
        if limit == 0 {
            return Err(LeaseDenied::ZeroLimit);
        }
        let index = self.shard_of_key(key);
        let mut shard = self.lock(index);
        let shard = &mut *shard;
        let held_now = match shard.by_key.get_mut(&key.0) {
            Some(held) => {
                let by_id = &mut shard.by_id;
                let before = held.len();
                held.retain(|h| {
                    let live = h.expires_at > now.0;
                    if !live {
                        by_id.remove(&h.id);
                    }
                    live
                });
                shard.expired += (before - held.len()) as u64;
                if held.len() as u64 >= limit {
                    let first = held.iter().map(|h| h.expires_at).min().unwrap_or(now.0);
                    return Err(LeaseDenied::AtLimit {
                        limit,
                        retry_after: Duration::from_nanos(first.saturating_sub(now.0)),
                    });
                }
                held.len()
            }
            None => 0,
        };
        if shard.by_id.len() >= self.shard_capacity {
            if now.0 >= shard.earliest_expiry {
                shard.drop_expired(now);
            }
            if shard.by_id.len() >= self.shard_capacity {
                return Err(LeaseDenied::TableFull {
                    max_leases: self.max_leases,
                    retry_after: Duration::from_nanos(shard.earliest_expiry.saturating_sub(now.0)),
                });
            }
        }
        let id = (shard.next_seq << self.shard_bits) | index as u64;
        shard.next_seq += 1;
        let expires_at = now.saturating_add(ttl).0;
        shard.earliest_expiry = shard.earliest_expiry.min(expires_at);
        shard.by_id.insert(id, key.0);
        let held = shard.by_key.entry(key.0).or_default();
        debug_assert_eq!(held.len(), held_now);
        held.push(Held { id, expires_at });
        Ok(LeaseId(id))
    }

    /// Frees a lease. `true` if it was live; `false` if it had already expired, been
    /// released, or never existed (releasing twice is harmless).
    pub fn release(&self, id: LeaseId, now: Nanos) -> bool {
        let index = (id.0 & ((1u64 << self.shard_bits) - 1)) as usize;
        let mut shard = self.lock(index);
        let Some(key) = shard.by_id.remove(&id.0) else {
            return false;
        };
        let Some(held) = shard.by_key.get_mut(&key) else {
            return false;
        };
        let Some(pos) = held.iter().position(|h| h.id == id.0) else {
            return false;
        };
        let lease = held.swap_remove(pos);
        if held.is_empty() {
            shard.by_key.remove(&key);
        }
        let live = lease.expires_at > now.0;
        if !live {
            shard.expired += 1;
        }
        live
    }

    /// Live leases `key` holds at `now`.
    pub fn held(&self, key: KeyHash, now: Nanos) -> usize {
        let shard = self.lock(self.shard_of_key(key));
        shard.by_key.get(&key.0).map_or(0, |held| {
            held.iter().filter(|h| h.expires_at > now.0).count()
        })
    }

    /// Frees every lease expired at `now`; returns how many.
    pub fn sweep(&self, now: Nanos) -> usize {
        (0..self.shards.len())
            .map(|i| {
                let mut shard = self.lock(i);
                if now.0 >= shard.earliest_expiry {
                    shard.drop_expired(now)
                } else {
                    0
                }
            })
            .sum()
    }

    /// Leases held, live or expired but not yet freed.
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).by_id.len())
            .sum()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leases freed by expiry so far (not by release).
    pub fn expired_total(&self) -> u64 {
        (0..self.shards.len()).map(|i| self.lock(i).expired).sum()
    }

    /// An estimate of the bytes this table occupies.
    pub fn memory_bytes(&self) -> usize {
        let per_shard: usize = (0..self.shards.len())
            .map(|i| {
                let shard = self.lock(i);
                let vecs: usize = shard
                    .by_key
                    .values()
                    .map(|v| v.capacity() * size_of::<Held>())
                    .sum();
                // Hash-table slots (entry plus one control byte) at up to 7/8 load.
                let slots = |cap: usize, entry: usize| cap * 8 / 7 * (entry + 1);
                slots(shard.by_key.capacity(), size_of::<(u64, Vec<Held>)>())
                    + slots(shard.by_id.capacity(), size_of::<(u64, u64)>())
                    + vecs
            })
            .sum();
        size_of::<Self>() + self.shards.len() * size_of::<PaddedShard>() + per_shard
    }

    /// The shard of a key: bits 32 and up, since the per-shard `HashMap` places keys
    /// by their low bits and tags them with the top seven.
    fn shard_of_key(&self, key: KeyHash) -> usize {
        ((key.0 >> 32) as usize) & (self.shards.len() - 1)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // The shard's maps are consistent between statements, so a panic elsewhere
        // while it was locked leaves nothing to repair.
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    /// Frees every expired lease in the shard and recomputes the earliest expiry.
    fn drop_expired(&mut self, now: Nanos) -> usize {
        let by_id = &mut self.by_id;
        let mut dropped = 0;
        let mut earliest = u64::MAX;
        self.by_key.retain(|_, held| {
            held.retain(|h| {
                let live = h.expires_at > now.0;
                if live {
                    earliest = earliest.min(h.expires_at);
                } else {
                    by_id.remove(&h.id);
                    dropped += 1;
                }
                live
            });
            !held.is_empty()
        });
        self.earliest_expiry = earliest;
        self.expired += dropped as u64;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn table(max_leases: usize, shards: usize) -> LeaseTable {
        LeaseTable::new(LeaseConfig { max_leases, shards }).expect("valid config")
    }

    #[test]
    fn limit_release_and_expiry() {
        let t = table(1024, 4);
        let key = KeyHash(0xABCD_0000_0000_1234);
        let ttl = Duration::from_secs(10);
        let a = t.acquire(key, 2, ttl, Nanos(0)).expect("first lease");
        let b = t.acquire(key, 2, ttl, Nanos(SEC)).expect("second lease");
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
        // Full: the earliest expiry (a, at 10 s) is 8 s away at 2 s.
        assert_eq!(
            t.acquire(key, 2, ttl, Nanos(2 * SEC)),
            Err(LeaseDenied::AtLimit {
                limit: 2,
                retry_after: Duration::from_secs(8)
            })
        );
        // Another key is independent.
        assert!(t.acquire(KeyHash(7), 2, ttl, Nanos(2 * SEC)).is_ok());
        // Release frees a slot; a second release is a no-op.
        assert!(t.release(a, Nanos(3 * SEC)));
        assert!(!t.release(a, Nanos(3 * SEC)));
        assert!(!t.release(LeaseId(999_999), Nanos(3 * SEC)));
        let c = t
            .acquire(key, 2, ttl, Nanos(3 * SEC))
            .expect("slot freed by release");
        assert_eq!(t.held(key, Nanos(3 * SEC)), 2);
        // b expires at 11 s; retry_after is exact.
        assert_eq!(
            t.acquire(key, 2, ttl, Nanos(11 * SEC - 1))
                .map_err(|d| d.retry_after()),
            Err(Some(Duration::from_nanos(1)))
        );
        let d = t
            .acquire(key, 2, ttl, Nanos(11 * SEC))
            .expect("slot freed by expiry");
        assert_eq!(t.expired_total(), 1);
        // Releasing an expired lease reports it was no longer held.
        assert!(!t.release(b, Nanos(11 * SEC)));
        assert!(!t.release(c, Nanos(13 * SEC)), "c expired at 13 s");
        assert!(t.release(d, Nanos(20 * SEC)));
        assert_eq!(t.held(key, Nanos(20 * SEC)), 0);
        assert_eq!(
            t.acquire(key, 0, ttl, Nanos(0)),
            Err(LeaseDenied::ZeroLimit)
        );
    }

    #[test]
    fn sweep_frees_expired_leases() {
        let t = table(1024, 4);
        for k in 0..100u64 {
            let ttl = Duration::from_secs(1 + k % 2);
            t.acquire(KeyHash(k << 32 | k), 1, ttl, Nanos(0))
                .expect("lease");
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.sweep(Nanos(SEC - 1)), 0);
        assert_eq!(t.sweep(Nanos(SEC)), 50);
        assert_eq!(t.sweep(Nanos(2 * SEC)), 50);
        assert!(t.is_empty());
        assert_eq!(t.expired_total(), 100);
    }

    #[test]
    fn a_full_table_refuses_until_leases_expire() {
        let t = table(4, 1);
        let ttl = Duration::from_secs(5);
        for k in 0..4 {
            t.acquire(KeyHash(k), 10, ttl, Nanos(k)).expect("room");
        }
        assert_eq!(
            t.acquire(KeyHash(9), 10, ttl, Nanos(SEC)),
            Err(LeaseDenied::TableFull {
                max_leases: 4,
                retry_after: Duration::from_nanos(4 * SEC)
            })
        );
        assert!(
            t.acquire(KeyHash(9), 10, ttl, Nanos(5 * SEC)).is_ok(),
            "expired leases make room"
        );
        assert!(t.memory_bytes() > 0);
    }
}
