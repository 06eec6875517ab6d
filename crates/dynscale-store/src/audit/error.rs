//! Errors of the audit log: [`AuditError`] for the running log and its readers,
//! [`VerifyError`] for the offline check, each naming the file, offset or entry involved.

use std::io;
use std::path::PathBuf;

use dynscale_core::merkle::{CheckpointError, Hash, ProofError};

/// Why a frame in a segment is not a whole, checksummed entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameProblem {
    /// The file ends inside the frame (a torn write).
    #[error("the file ends {missing} byte(s) before the end of the frame")]
    Truncated {
        /// Bytes missing to complete the frame.
        missing: u64,
    },
    /// The length field is 0 or above the entry size limit: not a frame this log writes.
    #[error("the length field reads {length}, which no entry has")]
    Length {
        /// The length field.
        length: u32,
    },
    /// The CRC32C of the bytes does not match the stored one.
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the frame header.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
}

/// Errors of the running audit log, its readers and the offline export.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log: {op} {path}")]
    Io {
        /// What was being done (`append`, `fsync`, `read`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The byte cap or the disk is full: the entries were not written. Everything
    /// acknowledged before is kept, and appends resume once space returns.
    #[error(
        "audit log is full ({used} bytes used, cap {})",
        max_bytes.map_or_else(|| "none: the disk is full".to_string(), |cap| cap.to_string())
    )]
    Full {
        /// Bytes the audit directory holds.
        used: u64,
        /// The configured cap; `None` when the disk itself ran out of space.
        max_bytes: Option<u64>,
    },
    /// An entry of 0 bytes or above [`super::MAX_ENTRY_BYTES`].
    #[error("an audit entry must be 1..={max} bytes, this one is {length}")]
    EntrySize {
        /// The entry's length.
        length: usize,
        /// The largest accepted length.
        max: usize,
    },
    /// A frame inside data that was durable (a sealed segment, or below the latest
    /// checkpoint) is damaged. It is reported, never truncated.
    #[error("audit segment {segment} is corrupt at byte {offset} (entry {index}): {problem}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad frame in the (uncompressed) segment.
        offset: u64,
        /// Index of the entry the frame should hold.
        index: u64,
        /// What is wrong with it.
        problem: FrameProblem,
    },
    /// Segments do not follow each other: entries are missing or duplicated.
    #[error("audit segment {segment} starts at entry {found}, expected {expected}")]
    SegmentGap {
        /// The segment that does not start where the previous one ended.
        segment: PathBuf,
        /// The entry index it should start at.
        expected: u64,
        /// The entry index its name says it starts at.
        found: u64,
    },
    /// The log holds fewer entries than its latest signed checkpoint: signed data is
    /// gone, so the log refuses to continue (it would sign a fork).
    #[error("checkpoint {checkpoint} signs {size} entries but the segments hold {entries}")]
    CheckpointAhead {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Its tree size.
        size: u64,
        /// Entries found in the segments.
        entries: u64,
    },
    /// The latest checkpoint's root differs from the tree recomputed from the segments.
    #[error(
        "checkpoint {checkpoint} at size {size} signs root {signed}, the log computes {computed}"
    )]
    CheckpointMismatch {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Its tree size.
        size: u64,
        /// The root it signs.
        signed: Hash,
        /// The root recomputed from the log.
        computed: Hash,
    },
    /// A checkpoint file is not a well-formed checkpoint.
    #[error("checkpoint {path} is malformed")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// A stored hash could not be read: a tile file is missing or has the wrong length.
    #[error("tile {path} could not be read: needed {needed} bytes at offset {offset}")]
    Tile {
        /// The tile file.
        path: PathBuf,
        /// Byte offset read.
        offset: u64,
        /// Bytes needed.
        needed: usize,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },
    /// A proof or tree hash was asked for a size the log does not have yet.
    #[error("tree size {size} requested, the log has {available} hashed entries")]
    SizeBeyondLog {
        /// The requested size.
        size: u64,
        /// Entries whose hashes are computed.
        available: u64,
    },
    /// An inclusion proof was asked for an entry outside the tree.
    #[error("entry {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The entry index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old size {old} is larger than new size {new}")]
    SizeOrder {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// Another process (or another `AuditLog` in this one) has the directory open.
    #[error("audit directory {path} is locked by another writer")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A configuration value is unusable.
    #[error("audit config: {field} {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An fsync or a rollback after a failed write failed: what reached the disk is
    /// unknown, so the log stops taking entries until it is reopened (which re-reads the
    /// segments and truncates any torn tail).
    #[error("audit log stopped after {op} failed on {path} ({kind}); reopen it to recover")]
    Poisoned {
        /// The operation that failed.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error kind reported then.
        kind: io::ErrorKind,
    },
    /// The writer has stopped (the log was closed).
    #[error("the audit log is closed")]
    Closed,
}

impl AuditError {
    /// Whether the request asked for an index or tree size the log does not have (a
    /// client error, not a fault of the log).
    pub fn is_out_of_range(&self) -> bool {
        matches!(
            self,
            Self::IndexOutOfRange { .. } | Self::SizeBeyondLog { .. } | Self::SizeOrder { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The first problem `verify_dir` found, naming the entry, file and offset involved.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A frame is damaged: the entry's bytes are not what was written.
    #[error("entry {index} in {segment} at byte {offset}: {problem}")]
    Entry {
        /// The entry index.
        index: u64,
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the frame in the (uncompressed) segment.
        offset: u64,
        /// What is wrong.
        problem: FrameProblem,
    },
    /// A segment does not start where the previous one ended.
    #[error("segment {segment} starts at entry {found}, expected {expected}")]
    SegmentGap {
        /// The segment.
        segment: PathBuf,
        /// Where it should start.
        expected: u64,
        /// Where its name says it starts.
        found: u64,
    },
    /// A file in the audit directory that the log never writes.
    #[error("unexpected file {path} in the audit directory")]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
    },
    /// A tile's bytes differ from the hashes recomputed from the entries.
    #[error(
        "tile {path}: hash {position} (covering entries {first_entry}..) is {found}, the entries give {expected}"
    )]
    TileMismatch {
        /// The tile file.
        path: PathBuf,
        /// Position of the first differing hash in the tile.
        position: usize,
        /// First entry covered by that hash.
        first_entry: u64,
        /// The hash recomputed from the entries.
        expected: Hash,
        /// The hash in the file.
        found: Hash,
    },
    /// A tile file has the wrong length for its name.
    #[error("tile {path} is {found} bytes, its name says {expected}")]
    TileLength {
        /// The tile file.
        path: PathBuf,
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// A full tile below the latest checkpoint is missing.
    #[error("tile {path} is missing, but checkpoint size {size} covers it")]
    TileMissing {
        /// The missing tile file.
        path: PathBuf,
        /// The latest checkpoint's size.
        size: u64,
    },
    /// A tile covers entries the log does not have.
    #[error("tile {path} covers entries beyond the log's {entries}")]
    TileBeyondLog {
        /// The tile file.
        path: PathBuf,
        /// Entries in the log.
        entries: u64,
    },
    /// A key index file differs from the one rebuilt from its segment.
    #[error("key index {path} does not match its segment (first difference at byte {offset})")]
    KeyIndex {
        /// The index file.
        path: PathBuf,
        /// First differing byte.
        offset: u64,
    },
    /// A checkpoint is malformed or its signature does not verify.
    #[error("checkpoint {path} does not open")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// A checkpoint's root differs from the tree hash recomputed at its size.
    #[error("checkpoint {path} at size {size} signs root {signed}, the entries give {computed}")]
    CheckpointRoot {
        /// The checkpoint file.
        path: PathBuf,
        /// Its tree size.
        size: u64,
        /// The root it signs.
        signed: Hash,
        /// The recomputed root.
        computed: Hash,
    },
    /// A checkpoint signs more entries than the log holds.
    #[error("checkpoint {path} signs {size} entries, the log holds {entries}")]
    CheckpointBeyondLog {
        /// The checkpoint file.
        path: PathBuf,
        /// Its tree size.
        size: u64,
        /// Entries in the log.
        entries: u64,
    },
    /// The file name of a checkpoint does not match the size it signs.
    #[error("checkpoint {path} signs size {size}, which its name does not say")]
    CheckpointName {
        /// The checkpoint file.
        path: PathBuf,
        /// The size it signs.
        size: u64,
    },
    /// Two successive checkpoints are not consistent: the later does not extend the
    /// earlier.
    #[error("checkpoints {old} and {new} are not consistent")]
    Inconsistent {
        /// The earlier checkpoint file.
        old: PathBuf,
        /// The later checkpoint file.
        new: PathBuf,
        /// How the proof failed.
        #[source]
        source: ProofError,
    },
}
