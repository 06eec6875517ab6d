//! The Merkle tree of the verifiable audit log: RFC 9162 hashing, proofs from stored
//! hashes, C2SP tlog-tiles layout and signed C2SP checkpoints.
//!
//! Everything here is pure computation over hashes and text. The audit store appends
//! [`stored_hashes_for_record`] output to its files and implements [`HashReader`] over them;
//! the server and CLI build proofs with [`prove_inclusion`] and [`prove_consistency`]; an
//! offline client needs only [`verify_inclusion`], [`verify_consistency`] and
//! [`open_checkpoint`] with the log's public key.

mod checkpoint;
mod hash;
mod note;
mod proof;
mod stored_hashes;
mod tiles;
mod verify;

pub use checkpoint::{Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint};
pub use hash::{HASH_SIZE, Hash, HashParseError, empty_root, leaf_hash, node_hash};
pub use note::{KeyError, MAX_SIGNATURES, NoteError, Signer, Verifier, open_note, sign_note};
pub use proof::{prove_consistency, prove_inclusion};
pub use stored_hashes::{
    HashReader, MAX_TREE_SIZE, MemoryHashes, MissingHash, TreeError, split_stored_hash_index,
    stored_hash_count, stored_hash_index, stored_hashes_for_record, tree_hash,
};
pub use tiles::{
    EntryBundle, MAX_TILE_LEVEL, TILE_HEIGHT, TILE_WIDTH, Tile, TileError, TilePathError,
    TileResource, entry_bundles_for_size, parse_tile_path, tile_for_index, tiles_between,
    tiles_for_size,
};
pub use verify::{ProofError, root_from_inclusion_proof, verify_consistency, verify_inclusion};
