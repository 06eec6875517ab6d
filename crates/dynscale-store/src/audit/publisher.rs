//! The publisher thread: it makes what the writer thread wrote visible and answers the
//! appends. For each written group it hashes the entries into the tree, extends the
//! active segment's view and keys, advances the acknowledged size and answers the
//! `batch` appends (`sync` appends once the writer reports the fsync that covers them),
//! then hands the tiles the group completed to the tile thread (`tiler.rs`). It also
//! writes the key index of each sealed segment and signs the checkpoints the writer
//! asks for, after the writer has made everything they cover durable.
//!
//! This leaves the writer thread with what must be in order and on the way to the disk
//! (taking requests, the byte cap, framing, rolls, the write and, in `sync` mode, the
//! fsync), so that one group's fsync runs while the group before it is published.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, PoisonError};
use std::thread::{self, JoinHandle};

use dynscale_core::merkle::{Checkpoint, Signer, leaf_hash, sign_checkpoint};
use tokio::sync::oneshot;

use super::checkpoint_file::{self, LATEST, TMP_DIR};
use super::disk::replace_file;
use super::error::AuditError;
use super::frame::FrameFormat;
use super::key_index;
use super::log::{Keys, SegmentEntry, Shared};
use super::retention::Poker;
use super::segment::{self, OFFSET_STRIDE, SEGMENTS_DIR, SegmentFile, SegmentView, entry_key};
use super::tiler::{TilerHandle, TilerStart};
use super::{AuditConfig, Durability};

/// Where an append's first index (or its failure) goes.
pub(crate) type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// Where a requested checkpoint goes.
pub(crate) type CheckpointReply = SyncSender<Result<String, AuditError>>;

/// Steps the writer sends, in the order it took them.
#[derive(Debug)]
pub(crate) enum Step {
    /// Entries written to the active segment.
    Written(Written),
    /// The writer's fsync ended: entries below `durable` are durable. When the log is
    /// poisoned, `sync` appends above it are failed.
    Synced { durable: u64 },
    /// Segment `sealed` was synced and sealed; the next one starts at entry `first` and
    /// holds `len` bytes of header.
    Rolled { sealed: u64, first: u64, len: u64 },
    /// Everything written so far is durable: write the key indexes still missing and
    /// sign a checkpoint if the log grew (or when asked, always answer with one).
    Checkpoint { reply: Option<CheckpointReply> },
    /// The writer is closing and everything written is durable (unless poisoned): write
    /// what is derived, sign a last checkpoint and stop.
    Close,
}

/// Requests whose entries were written with one call, consecutive from `first`.
#[derive(Debug)]
pub(crate) struct Written {
    /// Index of the first entry.
    pub(crate) first: u64,
    /// Byte offset of its frame in the active segment.
    pub(crate) offset: u64,
    /// The frame format of the active segment.
    pub(crate) format: FrameFormat,
    /// Each request's entries and where its answer goes (none in `async` mode).
    pub(crate) appends: Vec<(Vec<Vec<u8>>, Option<Reply>)>,
}

/// What recovery leaves for the publisher.
#[derive(Debug)]
pub(crate) struct PublisherStart {
    /// Entries in the log (the tree's size).
    pub(crate) next: u64,
    /// First index of the active segment.
    pub(crate) active_first: u64,
    /// Tiles written at open and not yet synced.
    pub(crate) unsynced_tiles: Vec<PathBuf>,
    /// Tiles with a `.p` directory of partial tiles, and the bytes in it.
    pub(crate) partial_written: BTreeMap<(u8, u64), u64>,
    /// Sealed segments whose key index file still has to be written.
    pub(crate) pending_idx: Vec<u64>,
    /// Size of the latest checkpoint.
    pub(crate) last_checkpoint: Option<u64>,
}

/// The writer's end of the publisher thread.
#[derive(Debug)]
pub(crate) struct PublisherHandle {
    tx: Option<SyncSender<Step>>,
    thread: Option<JoinHandle<Result<(), AuditError>>>,
}

/// Steps the writer may be ahead of the publisher before it waits. A step is one write
/// (up to 16 384 entries) or a mark, so this bounds the memory of entries in flight.
const STEPS_AHEAD: usize = 16;

impl PublisherHandle {
    /// Starts the thread.
    pub(crate) fn start(
        shared: Arc<Shared>,
        config: &AuditConfig,
        signer: Signer,
        start: PublisherStart,
        poker: Option<Poker>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(STEPS_AHEAD);
        let tiles_next = shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .first_tiles();
        let tiler = TilerHandle::start(
            Arc::clone(&shared),
            TilerStart {
                unsynced: start.unsynced_tiles,
                partial_written: start.partial_written,
            },
        )?;
        let publisher = Publisher {
            shared,
            rx,
            durability: config.durability,
            origin: config.origin.clone(),
            signer,
            next: start.next,
            active_first: start.active_first,
            durable: start.next,
            awaiting: VecDeque::new(),
            tiler,
            tiles_next,
            pending_idx: start.pending_idx,
            last_checkpoint: start.last_checkpoint,
            poker,
        };
        let thread = thread::Builder::new()
            .name("audit-publish".into())
            .spawn(move || publisher.run())?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Sends a step; fails when the thread is gone (it panicked).
    pub(crate) fn send(&self, step: Step) -> Result<(), Step> {
        match &self.tx {
            Some(tx) => tx.send(step).map_err(|e| e.0),
            None => Err(step),
        }
    }

    /// Sends [`Step::Close`] and waits for the thread's last checkpoint.
    pub(crate) fn close(&mut self) -> Result<(), AuditError> {
        let sent = self.send(Step::Close).is_ok();
        self.tx = None;
        let result = match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                tracing::error!("the audit publisher thread panicked");
                Err(AuditError::Closed)
            }),
            None => Ok(()),
        };
        if sent {
            result
        } else {
            Err(AuditError::Closed)
        }
    }
}

impl Drop for PublisherHandle {
    fn drop(&mut self) {
        // Without a close step (the writer is unwinding) the thread stops without a
        // checkpoint: what was written may not be durable.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Publisher {
    shared: Arc<Shared>,
    rx: Receiver<Step>,
    durability: Durability,
    origin: String,
    signer: Signer,
    /// Entries published: the tree's size.
    next: u64,
    /// First index of the active segment.
    active_first: u64,
    /// Entries below this index are durable, as the writer last reported.
    durable: u64,
    /// `sync` appends published and waiting for their fsync: reply, first index, end.
    awaiting: VecDeque<(Reply, u64, u64)>,
    /// Writes the tiles.
    tiler: TilerHandle,
    /// Per tile level, the first full tile not yet handed to the tile thread.
    tiles_next: Vec<u64>,
    pending_idx: Vec<u64>,
    last_checkpoint: Option<u64>,
    poker: Option<Poker>,
}

impl Publisher {
    fn run(mut self) -> Result<(), AuditError> {
        while let Ok(step) = self.rx.recv() {
            match step {
                Step::Written(written) => self.publish(written),
                Step::Synced { durable } => {
                    self.durable = self.durable.max(durable);
                    self.release_durable();
                }
                Step::Rolled { sealed, first, len } => self.rolled(sealed, first, len),
                Step::Checkpoint { reply } => {
                    self.write_pending_idx();
                    match reply {
                        Some(reply) => {
                            // The asker may have given up waiting.
                            let _ = reply.send(self.checkpoint());
                        }
                        None => {
                            if self.shared.poison().is_none()
                                && self.last_checkpoint != Some(self.next)
                                && let Err(error) = self.checkpoint()
                            {
                                tracing::warn!(%error, "audit log: periodic checkpoint failed");
                            }
                        }
                    }
                }
                Step::Close => return self.finish(),
            }
        }
        // The writer went away without closing (it panicked): nothing is known to be
        // durable, so no checkpoint is signed; the `sync` appends waiting are failed.
        self.fail_awaiting(|| AuditError::Closed);
        Ok(())
    }

    /// Publishes written entries: tree, segment view, keys, acknowledged size; answers
    /// the appends that may be answered now; writes the full tiles they completed.
    fn publish(&mut self, written: Written) {
        let Written {
            first,
            offset,
            format,
            appends,
        } = written;
        debug_assert_eq!(first, self.next, "written entries arrive in order");
        let count: usize = appends.iter().map(|(entries, _)| entries.len()).sum();
        let mut index = first;
        let mut offset = offset;
        let mut offsets = Vec::new();
        let mut keys = Vec::with_capacity(count);
        let mut leaves = Vec::with_capacity(count);
        for (entries, _) in &appends {
            for entry in entries {
                if (index - self.active_first).is_multiple_of(OFFSET_STRIDE) {
                    offsets.push(offset);
                }
                leaves.push(leaf_hash(entry));
                if let Some(key) = entry_key(entry) {
                    keys.push((key, index));
                }
                offset += format.frame_len(entry.len());
                index += 1;
            }
        }
        {
            let mut segments = self
                .shared
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(active) = segments.last_mut() {
                active.view.count = index - self.active_first;
                active.view.len = offset;
                Arc::make_mut(&mut active.view.offsets).extend(offsets);
                if let Keys::Memory(map) = &mut active.keys {
                    map.reserve(keys.len());
                    for (key, at) in keys {
                        map.entry(key).or_insert(at);
                    }
                }
            }
        }
        {
            let mut tree = self
                .shared
                .tree
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for leaf in leaves {
                tree.push_leaf(leaf);
            }
        }
        self.next = index;
        if self.durability != Durability::Async {
            self.shared.acked.fetch_max(index, Ordering::SeqCst);
        }
        let mut at = first;
        let mut spent = Vec::with_capacity(appends.len());
        for (entries, to) in appends {
            let end = at + entries.len() as u64;
            if let Some(to) = to {
                if self.durability == Durability::Sync {
                    self.awaiting.push_back((to, at, end));
                } else {
                    reply(to, Ok(at));
                }
            }
            at = end;
            spent.push(entries);
        }
        self.release_durable();
        self.hand_out_tiles();
        // The entries are freed last, after every answer is out.
        drop(spent);
    }

    /// Answers the `sync` appends the durable mark covers, and fails those a poisoning
    /// left unsynced.
    fn release_durable(&mut self) {
        while let Some(&(_, first, end)) = self.awaiting.front() {
            let result = if end <= self.durable {
                Ok(first)
            } else if let Some(error) = self.shared.poison() {
                Err(error)
            } else {
                break;
            };
            if let Some((to, _, _)) = self.awaiting.pop_front() {
                reply(to, result);
            }
        }
    }

    fn fail_awaiting(&mut self, error: impl Fn() -> AuditError) {
        for (to, _, _) in self.awaiting.drain(..) {
            reply(to, Err(error()));
        }
    }

    /// The writer sealed the active segment and started the next one.
    fn rolled(&mut self, sealed: u64, first: u64, len: u64) {
        debug_assert_eq!(
            first, self.next,
            "a roll follows every entry of its segment"
        );
        self.active_first = first;
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SegmentEntry {
                view: SegmentView {
                    first,
                    count: 0,
                    len,
                    compressed: false,
                    offsets: Arc::new(Vec::new()),
                },
                keys: Keys::Memory(Default::default()),
            });
        self.pending_idx.push(sealed);
        self.write_pending_idx();
        if let Some(poker) = &self.poker {
            poker.poke();
        }
    }

    /// Writes the key index of every sealed segment still missing one; a failure (a
    /// full disk) keeps its keys in memory and is retried at the next checkpoint tick.
    fn write_pending_idx(&mut self) {
        let pending = std::mem::take(&mut self.pending_idx);
        for first in pending {
            if let Err(error) = write_idx(&self.shared, first) {
                tracing::warn!(%error, segment = first, "audit log: writing a key index failed");
                self.pending_idx.push(first);
            }
        }
    }

    /// Hands the full tiles completed since the last call to the tile thread.
    fn hand_out_tiles(&mut self) {
        let tiles = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .new_full_tiles(&mut self.tiles_next);
        self.tiler.write(tiles);
    }

    /// Signs a checkpoint at the current size. The writer made the entries durable
    /// before it sent the step; here the tile thread writes and syncs the full tiles and
    /// the partial tiles at this size first.
    fn checkpoint(&mut self) -> Result<String, AuditError> {
        if let Some(error) = self.shared.poison() {
            return Err(error);
        }
        let size = self.next;
        if self.last_checkpoint == Some(size)
            && let Some(note) = self
                .shared
                .latest_checkpoint
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        {
            return Ok(note);
        }
        self.hand_out_tiles();
        let (partials, root) = {
            let tree = self
                .shared
                .tree
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (tree.partial_tiles(), tree.root())
        };
        self.tiler.sync(partials)?;
        let disk = Arc::clone(&self.shared.disk);
        let dir = self.shared.dir.clone();
        let checkpoint =
            Checkpoint::new(self.origin.clone(), size, root, Vec::new()).map_err(|source| {
                AuditError::Checkpoint {
                    path: dir.join(LATEST),
                    source,
                }
            })?;
        let note = sign_checkpoint(&checkpoint, &self.signer);
        let written = checkpoint_file::write(&*disk, &dir, size, &note)
            .map_err(|e| AuditError::io("write checkpoint", dir.join(LATEST), e))?;
        self.shared.used_bytes.fetch_add(written, Ordering::SeqCst);
        *self
            .shared
            .latest_checkpoint
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(note.clone());
        self.last_checkpoint = Some(size);
        Ok(note)
    }

    /// Closing: the `sync` appends are answered, the key indexes written and a last
    /// checkpoint signed.
    fn finish(&mut self) -> Result<(), AuditError> {
        self.release_durable();
        if let Some(error) = self.shared.poison() {
            let shared = Arc::clone(&self.shared);
            self.fail_awaiting(|| shared.poison().unwrap_or(AuditError::Closed));
            return Err(error);
        }
        if !self.awaiting.is_empty() {
            // The writer syncs before it closes; an append still waiting is a bug, and
            // is failed rather than answered as durable.
            tracing::error!(
                waiting = self.awaiting.len(),
                "audit log: closing with sync appends not covered by an fsync"
            );
            self.fail_awaiting(|| AuditError::Closed);
        }
        self.write_pending_idx();
        self.checkpoint().map(|_| ())
    }
}

fn reply(to: Reply, result: Result<u64, AuditError>) {
    // The appender may have stopped waiting (its future dropped); the entry's fate is
    // the same either way.
    let _ = to.send(result);
}

/// Writes the key index of sealed segment `first` from its in-memory keys, durably,
/// and switches its lookups to the file.
pub(crate) fn write_idx(shared: &Shared, first: u64) -> Result<(), AuditError> {
    let (view, keys) = {
        let segments = shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(segment) = segments.iter().find(|s| s.view.first == first) else {
            return Ok(());
        };
        let Keys::Memory(map) = &segment.keys else {
            return Ok(());
        };
        let keys: Vec<([u8; 16], u64)> = map.iter().map(|(k, i)| (*k, *i)).collect();
        (segment.view.clone(), keys)
    };
    let bytes = key_index::encode(view.first, view.count, view.len, &view.offsets, keys);
    let name = segment::file_name(first, SegmentFile::Idx);
    let path = shared.dir.join(SEGMENTS_DIR).join(&name);
    let tmp = shared.dir.join(TMP_DIR).join(format!("{name}.tmp"));
    replace_file(&*shared.disk, &tmp, &path, &bytes)
        .map_err(|e| AuditError::io("write key index", &path, e))?;
    let summary = key_index::load(&*shared.disk, &path)
        .map_err(|e| AuditError::io("read key index", &path, e))?
        .ok_or_else(|| {
            AuditError::io(
                "read key index",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, "just written, yet unreadable"),
            )
        })?;
    shared
        .used_bytes
        .fetch_add(bytes.len() as u64, Ordering::SeqCst);
    let mut segments = shared
        .segments
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(segment) = segments.iter_mut().find(|s| s.view.first == first) {
        segment.keys = Keys::File(Arc::new(summary));
        let count = segment.view.count;
        let _ = shared
            .unindexed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(count))
            });
    }
    Ok(())
}
