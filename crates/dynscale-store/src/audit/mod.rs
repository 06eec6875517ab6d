//! The verifiable audit log on disk: an append-only, checksummed, segmented log of
//! opaque entries with an RFC 9162 Merkle tree over them, stored as C2SP tlog-tiles and
//! signed as C2SP checkpoints, written by one thread with group commit.
//!
//! # On disk
//!
//! ```text
//! <dir>/
//!   LOCK                             held (flock) by the one process writing the log
//!   segments/
//!     <first, 20 digits>.log         "DSAUDSG2", then frames: varint length ‖ u32
//!                                    CRC32C(length ‖ bytes) ‖ bytes (see `frame.rs`;
//!                                    older segments without the header hold u32 length
//!                                    ‖ CRC32C(bytes) frames); rolled before a write
//!                                    would pass `segment_bytes`
//!     <first>.log.zst                a sealed segment older than `compress_after`,
//!                                    replaced by one zstd stream of the same bytes
//!     <first>.idx                    written when a segment is sealed: entry count, byte
//!                                    offset of every 256th entry, and for each block of
//!                                    256 entries its lowest and highest key plus the
//!                                    keys far out of order (sparse), or every key
//!                                    sorted (dense, for keys not nearly sorted); see
//!                                    `key_index.rs`; rebuilt when missing or torn
//!   tile/<L>/<N>                     C2SP tlog-tiles: full tiles, 256 × 32-byte hashes of
//!                                    tree level 8·L, written once when complete; N in
//!                                    3-digit groups (`x001/x234/067`)
//!   tile/<L>/<N>.p/<W>               partial tiles, written for each checkpoint's size
//!   checkpoints/<size, 20 digits>    every signed checkpoint (C2SP signed note)
//!   checkpoint                       the latest one
//!   tmp/                             temporary files of atomic replacements
//! ```
//!
//! Entries are opaque bytes. Leaf hash SHA-256(0x00 ‖ entry), node hash
//! SHA-256(0x01 ‖ left ‖ right), as `dynscale_core::merkle` computes them. An entry of
//! at least 17 bytes has a lookup key, its bytes 1..17 (the server puts a kind byte and
//! a 16-byte decision or event id first), for [`AuditLog::index_of`].
//!
//! # Durability
//!
//! Segments are the only source of truth: tiles, key indexes and the tile rows in memory
//! are derived and rebuilt from them. `sync` acknowledges after an `fdatasync` that
//! began after the entry was written; `batch` after the write; `async` on enqueue. In
//! `sync` mode the writer thread fdatasyncs each group right after writing it, and the
//! appends that arrive meanwhile make the next group. In `batch` and `async` mode the
//! sync thread fdatasyncs the active segment whenever something is written and not yet
//! synced, so an entry is durable about one fsync after its write (the writer syncs
//! itself at `batch_window` on a [`Disk`] without sync handles). The publisher thread
//! hashes, publishes and answers what was written, while the next group is written
//! and synced; the tile thread writes the tile files.
//! Before a checkpoint is signed at size `n`, the segment is synced, then every tile
//! written since the previous checkpoint (one `syncfs`), so whatever a checkpoint covers
//! is durable and its tiles can be trusted at the next open.
//!
//! # Recovery at open
//!
//! The last segment is read frame by frame; a torn or checksum-failing tail is cut back
//! to the last whole, checksummed entry (a segment without one starts over with a new
//! header), unless that entry lies below the latest
//! checkpoint (then the data was durable and the damage is reported, as it is anywhere in
//! a sealed segment). Tiles up to the latest checkpoint are trusted; the tree above them
//! is rehashed from the segments, stale tiles beyond the log are removed, and the
//! latest checkpoint's root is checked against the tree.

mod checkpoint_file;
mod disk;
mod error;
mod export;
mod fault;
mod frame;
mod key_index;
mod log;
mod publisher;
mod recover;
mod retention;
mod segment;
mod syncer;
mod tiler;
mod tiles;
mod verify;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use disk::{AppendFile, DirEntry, Disk, FileInfo, FsDisk, ReadFile, SyncFile};
pub use dynscale_core::merkle::Hash;
pub use error::{AuditError, FrameProblem, VerifyError};
pub use export::read_dir;
pub use fault::{AfterTear, FaultyDisk};
pub use frame::{FRAME_OVERHEAD, MAX_ENTRY_BYTES};
pub use log::AuditLog;
pub use segment::entry_key;
pub use verify::{VerifyReport, verify_dir};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the entry is written and `fdatasync`ed.
    Sync,
    /// After the entry is written; `fdatasync` follows within `batch_window`.
    #[default]
    Batch,
    /// When the entry is queued; it is written and synced in the background.
    Async,
}

/// How to open an audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The audit directory (created if missing).
    pub dir: PathBuf,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Longest time written entries stay unsynced in `batch` and `async` modes.
    pub batch_window: Duration,
    /// A segment is sealed and a new one started before a write would pass this size.
    pub segment_bytes: u64,
    /// Cap on the bytes of the whole audit directory; appends fail with
    /// [`AuditError::Full`] rather than pass it. Adjustable with
    /// [`AuditLog::set_max_bytes`].
    pub max_bytes: Option<u64>,
    /// A checkpoint is signed this often when the log grew (and at close).
    pub checkpoint_interval: Duration,
    /// The checkpoint origin line, e.g. `dynscale.local/audit`.
    pub origin: String,
    /// Capacity of the writer's request queue (requests, each one or more entries).
    pub queue: usize,
    /// Sealed segments older than this are compressed with zstd.
    pub compress_after: Option<Duration>,
}

impl AuditConfig {
    /// A configuration with the defaults: `batch` durability, 5 ms batch window, 64 MiB
    /// segments, no byte cap, a checkpoint every 10 s, a queue of 65 536, no compression.
    pub fn new(dir: impl Into<PathBuf>, origin: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            durability: Durability::Batch,
            batch_window: Duration::from_millis(5),
            segment_bytes: 64 << 20,
            max_bytes: None,
            checkpoint_interval: Duration::from_secs(10),
            origin: origin.into(),
            queue: 65_536,
            compress_after: None,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Entries in the log.
    pub entries: u64,
    /// Bytes cut from the end of the last segment (a torn or damaged tail).
    pub truncated_bytes: u64,
    /// Segment files.
    pub segments: usize,
}
