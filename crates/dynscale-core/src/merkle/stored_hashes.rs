//! The log's "stored hashes": every complete subtree hash, numbered in the order appends
//! produce them, and the tree hash computed from them.
//!
//! A log of `n` records keeps, at each level `L`, the hash of every complete subtree of
//! `2^L` leaves: `floor(n / 2^L)` hashes per level, `2n - popcount(n)` in all. Appending
//! record `i` adds its leaf hash and then the hash of every subtree that record completes,
//! so the stored hashes form one append-only sequence and each has a fixed position in it
//! (the model of the Go checksum database, which C2SP tlog-tiles also builds on). Any tree
//! hash, inclusion proof or consistency proof for any size up to `n` is then a fold of at
//! most `O(log n)` stored hashes, fetched in one batch through a [`HashReader`].

use super::hash::{Hash, empty_root, node_hash};

/// Largest tree size the stored-hash arithmetic accepts.
///
/// Positions of stored hashes are below `2 * size`, so this bound keeps every position and
/// every intermediate product inside `u64`; a log reaching it would hold 4.6 × 10^18 entries.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// Reads stored hashes by position; the audit store backs it with its tile or hash files.
///
/// Callers batch all the positions one operation needs into a single call, so a file-backed
/// reader can sort and coalesce its reads.
pub trait HashReader {
    /// Why a read failed (an IO error for a file-backed store).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Returns the stored hashes at `indexes`, in the same order.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

impl<R: HashReader + ?Sized> HashReader for &R {
    type Error = R::Error;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error> {
        (**self).read_hashes(indexes)
    }
}

/// Why a tree hash or proof could not be computed from stored hashes.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E: std::error::Error + 'static> {
    /// The record index is not inside the tree.
    #[error("record index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested record index.
        index: u64,
        /// The tree size it was asked for.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOrder {
        /// The older (supposedly smaller) tree size.
        old_size: u64,
        /// The newer tree size.
        new_size: u64,
    },
    /// The tree size exceeds [`MAX_TREE_SIZE`].
    #[error("tree size {size} exceeds the maximum of {MAX_TREE_SIZE}")]
    TooLarge {
        /// The requested size.
        size: u64,
    },
    /// The reader failed.
    #[error("reading stored hashes failed")]
    Read(#[source] E),
    /// The reader answered with the wrong number of hashes.
    #[error("asked the reader for {requested} stored hashes, it returned {returned}")]
    ShortRead {
        /// Number of positions asked for.
        requested: usize,
        /// Number of hashes returned.
        returned: usize,
    },
}

/// Position in the stored-hash sequence of the hash of the `n`-th complete subtree at
/// `level` (the subtree over leaves `n·2^level .. (n+1)·2^level`).
///
/// That hash is written when its last leaf, record `m = (n+1)·2^level - 1`, is appended.
/// Record `m` writes after the `stored_hash_count(m)` hashes of the earlier records: first
/// its leaf, then one hash per level it completes, so the level-`level` hash is at offset
/// `level` among them. Defined for subtrees inside a tree of at most [`MAX_TREE_SIZE`]
/// leaves; beyond that the arithmetic wraps.
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    let last_record = (n.wrapping_add(1) << level).wrapping_sub(1);
    stored_hash_count(last_record).wrapping_add(u64::from(level))
}

/// Number of stored hashes of a tree of `size` records: `floor(size / 2^L)` at each level
/// `L`, which sums to `2·size - popcount(size)`.
pub fn stored_hash_count(size: u64) -> u64 {
    size.wrapping_mul(2)
        .wrapping_sub(u64::from(size.count_ones()))
}

/// The inverse of [`stored_hash_index`]: the level and subtree number stored at `index`.
pub fn split_stored_hash_index(index: u64) -> (u8, u64) {
    // Record m's hashes start at stored_hash_count(m) = 2m - popcount(m), so the record
    // that wrote `index` is at least index / 2 and at most 32 past it; walk forward from
    // index / 2 to the last record whose first hash is at or before `index`.
    let mut record = index / 2;
    let mut first = stored_hash_count(record);
    loop {
        // Record m writes its leaf plus one hash per trailing one bit of m.
        let written = 1 + u64::from(record.trailing_ones());
        match first.checked_add(written) {
            Some(next) if next <= index => first = next,
            _ => break,
        }
        record += 1;
    }
    // Trailing ones of `record` are at most 63, so the level fits in a u8.
    let level = (index - first) as u8;
    (level, record >> level)
}

/// The stored hashes to append when record `index` (0-based) with `leaf_hash` is added to a
/// log that already holds records `0..index`: the leaf hash, then the hash of every subtree
/// the record completes, smallest first.
pub fn stored_hashes_for_record<R: HashReader>(
    index: u64,
    leaf_hash: Hash,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if index >= MAX_TREE_SIZE {
        return Err(TreeError::TooLarge {
            size: index.saturating_add(1),
        });
    }
    // Record `index` completes one subtree per trailing one bit: at each such level its
    // subtree is the right child and the left sibling is already stored.
    let completed = index.trailing_ones();
    let siblings: Vec<u64> = (0..completed)
        .map(|level| stored_hash_index(level as u8, (index >> level) - 1))
        .collect();
    let sibling_hashes = read_exact(reader, &siblings)?;
    let mut hashes = Vec::with_capacity(siblings.len() + 1);
    let mut current = leaf_hash;
    hashes.push(current);
    for sibling in &sibling_hashes {
        current = node_hash(sibling, &current);
        hashes.push(current);
    }
    Ok(hashes)
}

/// The root hash of the tree of the first `size` records (RFC 9162 §2.1.1 MTH).
pub fn tree_hash<R: HashReader>(size: u64, reader: &R) -> Result<Hash, TreeError<R::Error>> {
    if size == 0 {
        return Ok(empty_root());
    }
    check_size(size)?;
    let mut roots = range_hashes(&[(0, size)], reader)?;
    roots.pop().ok_or(TreeError::ShortRead {
        requested: 1,
        returned: 0,
    })
}

pub(super) fn check_size<E: std::error::Error>(size: u64) -> Result<(), TreeError<E>> {
    if size > MAX_TREE_SIZE {
        return Err(TreeError::TooLarge { size });
    }
    Ok(())
}

/// Largest power of two strictly below `n` (for `n >= 2`): the RFC 9162 split point `k`.
pub(super) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees, as (level, number), whose fold is MTH(D[lo:hi]).
///
/// Valid when `lo` is a multiple of the largest power of two not above `hi - lo`, which
/// holds for every range RFC 9162's PATH and PROOF recursions produce: the range then splits
/// into aligned complete subtrees of decreasing size, one per set bit of `hi - lo`.
fn range_subtrees(lo: u64, hi: u64) -> impl Iterator<Item = (u8, u64)> {
    let width = hi - lo;
    debug_assert!(width > 0 && lo.trailing_zeros() >= 63 - width.leading_zeros());
    (0..64u8)
        .rev()
        .scan(lo, move |start, level| {
            if width & (1 << level) == 0 {
                return Some(None);
            }
            let subtree = (level, *start >> level);
            *start += 1 << level;
            Some(Some(subtree))
        })
        .flatten()
}

/// MTH of each range `[lo, hi)`, read from stored hashes in one batch.
pub(super) fn range_hashes<R: HashReader>(
    ranges: &[(u64, u64)],
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    let mut indexes = Vec::new();
    let mut counts = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let before = indexes.len();
        indexes.extend(range_subtrees(lo, hi).map(|(level, n)| stored_hash_index(level, n)));
        counts.push(indexes.len() - before);
    }
    let stored = read_exact(reader, &indexes)?;
    let mut rest = stored.as_slice();
    let mut hashes = Vec::with_capacity(ranges.len());
    for count in counts {
        let (pieces, tail) = rest.split_at(count);
        rest = tail;
        // Subtrees come largest (leftmost) first; MTH nests them to the right.
        let mut pieces = pieces.iter().rev();
        let Some(mut hash) = pieces.next().copied() else {
            return Err(TreeError::ShortRead {
                requested: indexes.len(),
                returned: stored.len(),
            });
        };
        for left in pieces {
            hash = node_hash(left, &hash);
        }
        hashes.push(hash);
    }
    Ok(hashes)
}

fn read_exact<R: HashReader>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(indexes).map_err(TreeError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ShortRead {
            requested: indexes.len(),
            returned: hashes.len(),
        });
    }
    Ok(hashes)
}

/// Stored hashes held in memory: for tests, tools and small logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryHashes {
    hashes: Vec<Hash>,
    records: u64,
}

/// A stored hash asked of [`MemoryHashes`] that it does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored hash {index} requested, only {stored} are held")]
pub struct MissingHash {
    /// The requested position.
    pub index: u64,
    /// How many stored hashes are held.
    pub stored: u64,
}

impl MemoryHashes {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log holding the given leaf hashes in order.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut log = Self::new();
        for leaf in leaves {
            log.append(leaf);
        }
        log
    }

    /// Appends one record by its leaf hash and returns its index.
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.records;
        // Reading from our own vector cannot fail: the siblings of record `index` are
        // stored hashes of records below it, all present.
        let new = match stored_hashes_for_record(index, leaf_hash, &*self) {
            Ok(new) => new,
            Err(error) => unreachable!("in-memory stored hashes are complete: {error}"),
        };
        self.hashes.extend(new);
        self.records += 1;
        index
    }

    /// Number of records appended.
    pub fn size(&self) -> u64 {
        self.records
    }

    /// All stored hashes, in stored-hash order.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }
}

impl HashReader for MemoryHashes {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        self.hashes.as_slice().read_hashes(indexes)
    }
}

/// A reader over a plain slice of stored hashes, for callers that already hold them.
impl HashReader for [Hash] {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i).copied())
                    .ok_or(MissingHash {
                        index,
                        stored: self.len() as u64,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::hash::leaf_hash;

    #[test]
    fn stored_hash_positions_follow_append_order() {
        // Records 0..4 write: leaf0 | leaf1 n(1,0) | leaf2 | leaf3 n(1,1) n(2,0) | leaf4.
        let expected = [
            ((0, 0), 0),
            ((0, 1), 1),
            ((1, 0), 2),
            ((0, 2), 3),
            ((0, 3), 4),
            ((1, 1), 5),
            ((2, 0), 6),
            ((0, 4), 7),
        ];
        for ((level, n), index) in expected {
            assert_eq!(stored_hash_index(level, n), index, "level {level} n {n}");
            assert_eq!(split_stored_hash_index(index), (level, n), "index {index}");
        }
        assert_eq!(stored_hash_count(0), 0);
        assert_eq!(stored_hash_count(4), 7);
        assert_eq!(stored_hash_count(5), 8);
    }

    #[test]
    fn split_inverts_index_over_a_range() {
        for index in 0..100_000u64 {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index);
        }
        for index in [stored_hash_count(MAX_TREE_SIZE) - 1, (1 << 62) + 12_345] {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index);
        }
    }

    #[test]
    fn appends_match_stored_hash_count() {
        let mut log = MemoryHashes::new();
        for i in 0..300u64 {
            assert_eq!(log.append(leaf_hash(&i.to_be_bytes())), i);
            assert_eq!(log.hashes().len() as u64, stored_hash_count(i + 1));
        }
    }

    #[test]
    fn reader_errors_surface() {
        let log = MemoryHashes::from_leaf_hashes([leaf_hash(b"a")]);
        assert!(matches!(
            tree_hash(2, &log),
            Err(TreeError::Read(MissingHash {
                index: 2,
                stored: 1
            }))
        ));
        assert!(matches!(
            tree_hash(MAX_TREE_SIZE + 1, &log),
            Err(TreeError::TooLarge { .. })
        ));
        assert_eq!(tree_hash(0, &log).ok(), Some(empty_root()));
    }
}
