//! Building RFC 9162 inclusion and consistency proofs from the log's stored hashes.
//!
//! Each proof is first planned as the list of leaf ranges `[lo, hi)` whose Merkle tree hash
//! RFC 9162's PATH (§2.1.3.1) or SUBPROOF (§2.1.4.1) recursion would emit, in the order it
//! emits them. Every such range is a run of complete stored subtrees, so all the hashes a
//! proof needs are read in one batch and folded. The plans also give verifiers the exact
//! proof length to expect.

use super::hash::Hash;
use super::stored_hashes::{HashReader, TreeError, check_size, range_hashes, split_point};

/// The ranges whose hashes form the inclusion proof of leaf `index` in a tree of `size`
/// leaves, leaf sibling first. Requires `index < size`.
pub(super) fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    // PATH(m, D[lo:hi]) descends into the half holding the leaf and emits the other half
    // after the deeper path, so the ranges are found root-down and reversed.
    let mut ranges = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
        }
    }
    ranges.reverse();
    ranges
}

/// The ranges whose hashes form the consistency proof from `old_size` to `new_size`, in
/// proof order. Empty when `old_size` is 0 or equal to `new_size`.
pub(super) fn consistency_ranges(old_size: u64, new_size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    if old_size == 0 || old_size >= new_size {
        return ranges;
    }
    // SUBPROOF(m, D[lo:hi], b): `m` counts the old tree's leaves inside [lo, hi), and
    // `whole_old_tree` is RFC 9162's flag b, true while [lo, lo+m) is still the entire old
    // tree (whose root the verifier already has, so it is left out).
    let (mut lo, mut hi, mut m, mut whole_old_tree) = (0, new_size, old_size, true);
    loop {
        if m == hi - lo {
            if !whole_old_tree {
                ranges.push((lo, hi));
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    ranges.reverse();
    ranges
}

/// The inclusion proof (RFC 9162 §2.1.3.1 audit path) of record `index` in the tree of the
/// first `size` records.
pub fn prove_inclusion<R: HashReader>(
    size: u64,
    index: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_size(size)?;
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    range_hashes(&inclusion_ranges(index, size), reader)
}

/// The consistency proof (RFC 9162 §2.1.4.1) that the tree of `old_size` records is a prefix
/// of the tree of `new_size` records.
///
/// Empty when the sizes are equal or `old_size` is 0: every tree extends the empty tree.
pub fn prove_consistency<R: HashReader>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_size(new_size)?;
    if old_size > new_size {
        return Err(TreeError::SizeOrder { old_size, new_size });
    }
    range_hashes(&consistency_ranges(old_size, new_size), reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_plan_matches_rfc_example() {
        // RFC 9162 §2.1.5: the path for d0 in the 7-leaf tree is [b, h, l] =
        // leaf 1, hash of leaves 2..4, hash of leaves 4..7.
        assert_eq!(inclusion_ranges(0, 7), vec![(1, 2), (2, 4), (4, 7)]);
        // The path for d6 in the same tree is [i, k] = leaves 4..6, leaves 0..4.
        assert_eq!(inclusion_ranges(6, 7), vec![(4, 6), (0, 4)]);
        assert!(inclusion_ranges(0, 1).is_empty());
    }

    #[test]
    fn consistency_plan_matches_rfc_example() {
        // RFC 9162 §2.1.5: from 3 to 7 leaves the proof is [c, d, g, l].
        assert_eq!(
            consistency_ranges(3, 7),
            vec![(2, 3), (3, 4), (0, 2), (4, 7)]
        );
        // From 4 to 7 it is [l]: the old root is a complete subtree and is left out.
        assert_eq!(consistency_ranges(4, 7), vec![(4, 7)]);
        // From 6 to 7 it is [i, j, k]: leaves 4..6, leaf 6, leaves 0..4.
        assert_eq!(consistency_ranges(6, 7), vec![(4, 6), (6, 7), (0, 4)]);
        assert!(consistency_ranges(0, 7).is_empty());
        assert!(consistency_ranges(7, 7).is_empty());
    }
}
