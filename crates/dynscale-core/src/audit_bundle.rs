//! A proof bundle: everything needed to check, offline and with only the log's
//! public key, that one entry (a decision) is in the audit log — the entry bytes, its
//! index, an inclusion proof to a tree size and the signed checkpoint of that size.

use serde::{Deserialize, Serialize};

use crate::audit_entry::{AuditEntry, DecodeError};
use crate::merkle::{
    CheckpointError, Hash, ProofError, Verifier, leaf_hash, open_checkpoint, verify_inclusion,
};

/// The bundle as written by `dynscale audit prove` and served by the API.
/// Unknown fields are ignored, so a bundle may carry more (the API adds `size` and
/// `root`); only these fields are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    /// The entry's index in the log.
    pub index: u64,
    /// The entry bytes, hex encoded.
    pub entry: String,
    /// Hex leaf hash, SHA-256(0x00 ‖ entry), for readers; recomputed when verifying.
    pub leaf_hash: Hash,
    /// Inclusion proof of the entry in the tree of `checkpoint`'s size.
    pub proof: Vec<Hash>,
    /// A signed checkpoint (C2SP signed note) whose tree holds the entry.
    pub checkpoint: String,
}

/// Why a bundle does not prove its entry.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the entry is not hex: {0}")]
    EntryEncoding(String),
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the stated leaf hash {stated} is not the entry's hash {actual}")]
    LeafHash { stated: Hash, actual: Hash },
    #[error("the inclusion proof does not verify: {0}")]
    Proof(#[from] ProofError),
    #[error("the entry bytes do not decode: {0}")]
    Entry(#[from] DecodeError),
}

impl ProofBundle {
    /// Assembles a bundle.
    pub fn new(index: u64, entry: &[u8], proof: Vec<Hash>, checkpoint: String) -> Self {
        Self {
            index,
            entry: entry.iter().map(|b| format!("{b:02x}")).collect(),
            leaf_hash: leaf_hash(entry),
            proof,
            checkpoint,
        }
    }

    /// Checks the checkpoint signature, the leaf hash and the inclusion proof, and
    /// returns the decoded entry and the checkpoint's tree size.
    pub fn verify(&self, verifier: &Verifier) -> Result<(AuditEntry, u64), BundleError> {
        let entry = decode_hex(&self.entry)?;
        let checkpoint = open_checkpoint(&self.checkpoint, verifier)?;
        let actual = leaf_hash(&entry);
        if actual != self.leaf_hash {
            return Err(BundleError::LeafHash {
                stated: self.leaf_hash,
                actual,
            });
        }
        verify_inclusion(
            self.index,
            checkpoint.size(),
            &actual,
            &self.proof,
            &checkpoint.root(),
        )?;
        Ok((AuditEntry::decode(&entry)?, checkpoint.size()))
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, BundleError> {
    if !text.len().is_multiple_of(2) {
        return Err(BundleError::EntryEncoding("odd length".into()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| BundleError::EntryEncoding(format!("bad hex at {i}")))
        })
        .collect()
}
