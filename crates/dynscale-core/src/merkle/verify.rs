//! Checking inclusion and consistency proofs with nothing but hashes, as an offline client
//! holding only a signed checkpoint does (RFC 9162 §2.1.3.2 and §2.1.4.2).
//!
//! The loops follow the RFC's verification algorithms step by step. Before running them the
//! proof length is compared with the exact length the tree shape dictates, so that a proof
//! with a missing or extra hash is reported as such rather than as a root mismatch.

use super::hash::{Hash, empty_root, node_hash};
use super::proof::{consistency_ranges, inclusion_ranges};

/// Why a proof does not verify; the fields say what mismatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old tree is larger than the new one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOrder {
        /// The claimed old tree size.
        old_size: u64,
        /// The claimed new tree size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for the tree shape.
    #[error("proof has {found} hashes, the tree shape needs {expected}")]
    WrongLength {
        /// Hashes the tree shape requires.
        expected: usize,
        /// Hashes the proof holds.
        found: usize,
    },
    /// The inclusion proof leads to a different root.
    #[error("inclusion proof leads to root {computed}, expected {expected}")]
    RootMismatch {
        /// Root computed from the leaf and the proof.
        computed: Hash,
        /// Root the proof was checked against.
        expected: Hash,
    },
    /// The consistency proof reconstructs a different old root.
    #[error("consistency proof reconstructs old root {computed}, expected {expected}")]
    OldRootMismatch {
        /// Old root computed from the proof.
        computed: Hash,
        /// Old root the proof was checked against.
        expected: Hash,
    },
    /// The consistency proof reconstructs a different new root.
    #[error("consistency proof reconstructs new root {computed}, expected {expected}")]
    NewRootMismatch {
        /// New root computed from the proof.
        computed: Hash,
        /// New root the proof was checked against.
        expected: Hash,
    },
}

/// The root an inclusion proof leads to for `leaf_hash` at `index` in a tree of `size`
/// (RFC 9162 §2.1.3.2 steps 1–4).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_ranges(index, size).len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            found: proof.len(),
        });
    }
    let wrong_length = ProofError::WrongLength {
        expected,
        found: proof.len(),
    };
    // fn is the node's index at the current level, sn the index of the last node there.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut root = *leaf_hash;
    for sibling in proof {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            root = node_hash(sibling, &root);
            // A left child with no right sibling is promoted unchanged: skip those levels.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            root = node_hash(&root, sibling);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(wrong_length);
    }
    Ok(root)
}

/// Checks that `proof` shows the leaf with `leaf_hash` at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `old_size` leaves with root `old_root` to be a
/// prefix of the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// The RFC's algorithm covers `0 < old_size < new_size`. For equal sizes the proof must be
/// empty and the roots equal; for `old_size == 0` the proof must be empty and `old_root`
/// must be the empty tree's root, since every tree extends the empty one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder { old_size, new_size });
    }
    let expected = if old_size == 0 || old_size == new_size {
        0
    } else {
        consistency_ranges(old_size, new_size).len()
    };
    let wrong_length = ProofError::WrongLength {
        expected,
        found: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if old_size == 0 {
        let empty = empty_root();
        if *old_root != empty {
            return Err(ProofError::OldRootMismatch {
                computed: empty,
                expected: *old_root,
            });
        }
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(ProofError::NewRootMismatch {
                computed: *old_root,
                expected: *new_root,
            });
        }
        return Ok(());
    }

    // Step 2: when the old tree is a complete subtree its root is the proof's implicit
    // first element.
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(hash) => *hash,
            None => return Err(wrong_length),
        }
    };
    // Steps 3–4: fn and sn index the last leaf of the old and new trees; climb past the
    // levels where the old tree's last node is a right child, which the proof starts above.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5–6: fr rebuilds the old root, sr the new one.
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if sn == 0 {
            return Err(wrong_length);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::hash::leaf_hash;

    #[test]
    fn single_leaf_tree_has_empty_proof() {
        let leaf = leaf_hash(b"only");
        assert_eq!(verify_inclusion(0, 1, &leaf, &[], &leaf), Ok(()));
        assert_eq!(
            verify_inclusion(1, 1, &leaf, &[], &leaf),
            Err(ProofError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert_eq!(
            verify_inclusion(0, 1, &leaf, &[leaf], &leaf),
            Err(ProofError::WrongLength {
                expected: 0,
                found: 1
            })
        );
    }

    #[test]
    fn consistency_edge_sizes() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_eq!(verify_consistency(0, 5, &empty_root(), &a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 5, &a, &b, &[]),
            Err(ProofError::OldRootMismatch {
                computed: empty_root(),
                expected: a
            })
        );
        assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(3, 3, &a, &b, &[]),
            Err(ProofError::NewRootMismatch {
                computed: a,
                expected: b
            })
        );
        assert_eq!(
            verify_consistency(4, 3, &a, &b, &[]),
            Err(ProofError::SizeOrder {
                old_size: 4,
                new_size: 3
            })
        );
        assert_eq!(
            verify_consistency(1, 2, &a, &node_hash(&a, &b), &[b]),
            Ok(())
        );
    }
}
