//! The writer thread: the only code that appends to segments. It takes requests from a
//! bounded queue, commits them in groups (one write for everything queued), hashes the
//! new entries into the tree, writes full tiles, rolls segments and signs checkpoints.
//! The fsyncs run on the sync thread (`syncer.rs`), which acknowledges `sync` appends,
//! so the next group is written while the previous one is being synced. On a disk
//! without sync handles the writer syncs itself, one fsync per group.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use dynscale_core::merkle::{Checkpoint, HASH_SIZE, Signer, Tile, leaf_hash, sign_checkpoint};
use tokio::sync::oneshot;

use super::checkpoint_file::{self, LATEST, TMP_DIR};
use super::disk::{AppendFile, SyncFile, is_no_space, replace_file};
use super::error::AuditError;
use super::frame::FrameFormat;
use super::key_index;
use super::log::{Keys, PoisonInfo, SegmentEntry, Shared};
use super::retention::Poker;
use super::segment::{self, OFFSET_STRIDE, SEGMENTS_DIR, SegmentFile, SegmentView, entry_key};
use super::syncer::{SyncJob, Syncer};
use super::tiles::{TILE_DIR, write_tile};
use super::{AuditConfig, Durability};

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Request {
    /// Append entries as consecutive indexes. `first` is the index promised at enqueue
    /// (async mode); `reply` gets the first index once acknowledged (other modes).
    Append {
        entries: Vec<Vec<u8>>,
        first: Option<u64>,
        reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
    /// Sign a checkpoint at the current size.
    Checkpoint {
        reply: SyncSender<Result<String, AuditError>>,
    },
    /// Drain, sync, checkpoint and stop.
    Close {
        reply: SyncSender<Result<(), AuditError>>,
    },
}

/// Most entries one group commit takes from the queue.
const MAX_GROUP_ENTRIES: usize = 16_384;
/// Most bytes one group commit takes from the queue.
const MAX_GROUP_BYTES: u64 = 8 << 20;
/// Bytes of derived data each entry will add (a 32-byte leaf hash in a tile, about 0.2
/// byte of higher tiles, a 20-byte key index record), reserved under the byte cap
/// together with its frame so the cap holds for the whole directory.
const DERIVED_BYTES_PER_ENTRY: u64 = 64;
/// Reserved under the byte cap for the next checkpoint: two copies of the note and the
/// partial tiles above level 0.
const CHECKPOINT_RESERVE: u64 = 4096;
/// How soon async entries that found no space are tried again.
const FULL_RETRY: Duration = Duration::from_millis(20);
/// Above this many unsynced tiles one `syncfs` is cheaper than a sync per file.
const SYNCFS_THRESHOLD: usize = 8;

/// Where an append's first index (or its failure) goes.
type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// An append waiting to be written.
#[derive(Debug)]
struct Pending {
    entries: Vec<Vec<u8>>,
    first: Option<u64>,
    reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    bytes: u64,
}

/// Requests taken from the queue for one group commit.
#[derive(Debug, Default)]
struct Group {
    requests: Vec<Request>,
    entries: usize,
    bytes: u64,
    /// A close request was taken: it ends the group.
    closed: bool,
}

impl Group {
    fn is_full(&self) -> bool {
        self.closed || self.entries >= MAX_GROUP_ENTRIES || self.bytes >= MAX_GROUP_BYTES
    }
}

/// Why a group of entries was not written; cheap to copy to every request in it.
#[derive(Debug, Clone)]
enum Failure {
    Full {
        disk: bool,
    },
    Io {
        op: &'static str,
        path: PathBuf,
        kind: io::ErrorKind,
    },
    Poisoned(PoisonInfo),
}

impl Failure {
    fn error(&self, shared: &Shared) -> AuditError {
        match self {
            Failure::Full { disk } => shared.full_error(*disk),
            Failure::Io { op, path, kind } => AuditError::io(op, path, io::Error::from(*kind)),
            Failure::Poisoned(info) => info.error(),
        }
    }
}

/// What recovery hands the writer.
#[derive(Debug)]
pub(crate) struct WriterStart {
    pub(crate) active: Box<dyn AppendFile>,
    pub(crate) active_path: PathBuf,
    pub(crate) active_first: u64,
    pub(crate) active_len: u64,
    /// The frame format of the active segment (a segment of an older format is
    /// appended to in its format until it rolls).
    pub(crate) active_format: FrameFormat,
    pub(crate) next: u64,
    /// Tiles written at open and not yet synced.
    pub(crate) unsynced_tiles: Vec<PathBuf>,
    /// Tiles with a `.p` directory of partial tiles, and the bytes in it.
    pub(crate) partial_written: BTreeMap<(u8, u64), u64>,
    /// Sealed segments whose key index file still has to be written.
    pub(crate) pending_idx: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    durability: Durability,
    batch_window: Duration,
    segment_bytes: u64,
    checkpoint_interval: Duration,
    origin: String,
    signer: Signer,
    active: Box<dyn AppendFile>,
    active_path: PathBuf,
    active_first: u64,
    active_len: u64,
    active_format: FrameFormat,
    next: u64,
    /// Entries below this index are fsynced.
    synced_next: u64,
    /// Entries below this index are queued for an fsync on the sync thread.
    sync_requested: u64,
    /// `sync` appends written and waiting for their fsync: reply, first index, end.
    awaiting: VecDeque<(Reply, u64, u64)>,
    unsynced_since: Option<Instant>,
    unsynced_tiles: Vec<PathBuf>,
    partial_written: BTreeMap<(u8, u64), u64>,
    pending_idx: Vec<u64>,
    /// Async appends (already acknowledged) that found no space, oldest first.
    stalled: VecDeque<Pending>,
    retry_at: Option<Instant>,
    last_checkpoint: Option<u64>,
    next_checkpoint_at: Instant,
    poker: Option<Poker>,
    poisoned: Option<PoisonInfo>,
    /// The sync thread, when the disk gives sync handles.
    syncer: Option<Syncer>,
    /// The sync handle of the active segment.
    active_sync: Option<Arc<dyn SyncFile>>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Request>,
        config: &AuditConfig,
        signer: Signer,
        start: WriterStart,
        last_checkpoint: Option<u64>,
        poker: Option<Poker>,
    ) -> Self {
        let active_sync = start.active.sync_handle().unwrap_or_else(|error| {
            tracing::warn!(%error, "audit log: no sync handle; the writer thread will fsync");
            None
        });
        let syncer = match active_sync {
            Some(_) => Syncer::start(Arc::clone(&shared), start.next)
                .map_err(|error| {
                    tracing::warn!(%error, "audit log: no sync thread; the writer thread will fsync");
                })
                .ok(),
            None => None,
        };
        Self {
            shared,
            rx,
            durability: config.durability,
            batch_window: config.batch_window,
            segment_bytes: config.segment_bytes,
            checkpoint_interval: config.checkpoint_interval,
            origin: config.origin.clone(),
            signer,
            active: start.active,
            active_path: start.active_path,
            active_first: start.active_first,
            active_len: start.active_len,
            active_format: start.active_format,
            next: start.next,
            synced_next: start.next,
            sync_requested: start.next,
            awaiting: VecDeque::new(),
            unsynced_since: None,
            unsynced_tiles: start.unsynced_tiles,
            partial_written: start.partial_written,
            pending_idx: start.pending_idx,
            stalled: VecDeque::new(),
            retry_at: None,
            last_checkpoint,
            next_checkpoint_at: Instant::now() + config.checkpoint_interval,
            poker,
            poisoned: None,
            syncer,
            active_sync,
        }
    }

    /// The thread's body: until closed, take a group of requests, commit it, run the
    /// timers (batch fsync, retries, checkpoints).
    ///
    /// In `sync` mode, one write per fsync: while the sync thread fsyncs the last
    /// group, the writer takes what is queued and then waits for that fsync to end; the
    /// next group is everything queued until then, written with one call. Requests that
    /// arrive during the wait stay in the bounded queue, which is what holds appenders
    /// back. In `batch` and `async` mode entries are written as they come: they are
    /// acknowledged at the write (or before), so holding them would add an fsync to each
    /// acknowledgement (and in `async` mode widen what a crash loses and find a full cap
    /// later); the sync thread still fsyncs whatever is written, as soon as it can.
    pub(crate) fn run(mut self) {
        loop {
            let mut group = Group::default();
            if self.durability == Durability::Sync
                && let Some(syncer) = &mut self.syncer
                && syncer.busy()
            {
                self.drain(&mut group);
                if let Some(syncer) = &mut self.syncer {
                    syncer.wait();
                }
            }
            if group.requests.is_empty() {
                // Nothing new to write before answering: answer now.
                self.release_durable();
            }
            if group.requests.is_empty() {
                let wait = self
                    .next_deadline()
                    .saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(wait) {
                    Ok(request) => self.take(&mut group, request),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        if let Err(error) = self.finish() {
                            tracing::error!(%error, "audit log: closing after the last handle was dropped failed");
                        }
                        return;
                    }
                }
            }
            self.drain(&mut group);
            if !group.requests.is_empty()
                && let Some(close) = self.process(group.requests)
            {
                let result = self.finish();
                // The closer may have given up waiting; nothing else to tell.
                let _ = close.send(result);
                return;
            }
            self.on_timers();
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.next_checkpoint_at;
        if let Some(since) = self.unsynced_since {
            deadline = deadline.min(since + self.batch_window);
        }
        if let Some(retry) = self.retry_at {
            deadline = deadline.min(retry);
        }
        deadline
    }

    /// Adds a request taken from the queue to `group`.
    fn take(&mut self, group: &mut Group, request: Request) {
        match &request {
            Request::Append { entries, .. } => {
                group.entries += entries.len();
                group.bytes += entries
                    .iter()
                    .map(|entry| self.active_format.frame_len(entry.len()))
                    .sum::<u64>();
                self.shared
                    .queued
                    .fetch_sub(entries.len(), Ordering::SeqCst);
            }
            Request::Close { .. } => group.closed = true,
            Request::Checkpoint { .. } => {}
        }
        group.requests.push(request);
    }

    /// Takes what is queued into `group` without waiting, up to the group limits.
    fn drain(&mut self, group: &mut Group) {
        while !group.is_full() {
            match self.rx.try_recv() {
                Ok(request) => self.take(group, request),
                Err(_) => break,
            }
        }
        if !group.requests.is_empty() {
            // Slots are free again: wake appenders waiting for them.
            self.shared.space.notify_waiters();
        }
    }

    /// Commits a group in order; control requests see every append queued before them.
    /// Returns the reply channel of a close request, which ends the loop.
    fn process(&mut self, group: Vec<Request>) -> Option<SyncSender<Result<(), AuditError>>> {
        let mut appends = Vec::new();
        for request in group {
            match request {
                Request::Append {
                    entries,
                    first,
                    reply,
                } => {
                    // In the active segment's format; a roll to the current format
                    // only makes frames shorter.
                    let bytes = entries
                        .iter()
                        .map(|entry| self.active_format.frame_len(entry.len()))
                        .sum();
                    appends.push(Pending {
                        entries,
                        first,
                        reply,
                        bytes,
                    });
                }
                Request::Checkpoint { reply } => {
                    self.commit(std::mem::take(&mut appends));
                    let _ = reply.send(self.checkpoint());
                }
                Request::Close { reply } => {
                    self.commit(appends);
                    return Some(reply);
                }
            }
        }
        self.commit(appends);
        None
    }

    fn commit(&mut self, appends: Vec<Pending>) {
        if appends.is_empty() {
            return;
        }
        self.take_poison();
        if self.durability == Durability::Async {
            // Acknowledged already: queue behind any that are waiting for space.
            self.stalled.extend(appends);
            self.flush_stalled();
            self.request_sync(self.next);
            return;
        }
        if let Some(info) = &self.poisoned {
            let error = Failure::Poisoned(info.clone());
            for pending in appends {
                reply(pending.reply, Err(error.error(&self.shared)));
            }
            return;
        }
        let results = self.write(&appends);
        if self.syncer.is_some() && self.active_sync.is_some() {
            // The sync thread fsyncs what was written (`batch` and `async` too: an entry
            // is durable one fsync after its write); `sync` appends wait for that fsync.
            for (pending, result) in appends.into_iter().zip(results) {
                let count = pending.entries.len() as u64;
                match (result, pending.reply) {
                    (Ok(first), Some(to)) if self.durability == Durability::Sync => {
                        self.awaiting.push_back((to, first, first + count));
                    }
                    (result, to) => {
                        reply(to, result.map_err(|failure| failure.error(&self.shared)))
                    }
                }
            }
            self.request_sync(self.next);
            self.release_durable();
            return;
        }
        if self.durability == Durability::Sync && self.synced_next < self.next {
            // One fsync acknowledges the whole group. A failure poisons the log; the
            // requests it leaves unsynced are failed below.
            let _ = self.sync_active();
        }
        for (pending, result) in appends.into_iter().zip(results) {
            let count = pending.entries.len() as u64;
            let result = match result {
                Ok(first)
                    if self.durability == Durability::Sync && first + count > self.synced_next =>
                {
                    Err(self.poison_error())
                }
                Ok(first) => Ok(first),
                Err(failure) => Err(failure.error(&self.shared)),
            };
            reply(pending.reply, result);
        }
    }

    /// Queues an fsync of the entries below `upto` on the sync thread, unless one is
    /// queued already. Without a sync thread, or when it is gone, the writer syncs
    /// itself (a failure poisons the log).
    fn request_sync(&mut self, upto: u64) {
        if self.sync_requested >= upto {
            return;
        }
        if let (Some(syncer), Some(file)) = (&mut self.syncer, &self.active_sync)
            && syncer
                .send(SyncJob {
                    segment: self.active_first,
                    path: self.active_path.clone(),
                    file: Arc::clone(file),
                    upto,
                })
                .is_ok()
        {
            self.sync_requested = upto;
            // The sync thread owns the batch window now.
            self.unsynced_since = None;
            return;
        }
        let _ = self.sync_active();
    }

    /// Answers the `sync` appends whose entries are durable, and fails those a
    /// poisoning left unsynced. When nothing queued on the sync thread can make the
    /// oldest durable (the thread is gone), the writer syncs itself.
    fn release_durable(&mut self) {
        let Some(&(_, _, needed)) = self.awaiting.back() else {
            return;
        };
        let in_flight = self.syncer.as_mut().is_some_and(Syncer::busy);
        if let Some(syncer) = &self.syncer {
            self.synced_next = self.synced_next.max(syncer.durable().min(self.next));
        }
        if self.synced_next < needed && !in_flight {
            let _ = self.sync_active();
        }
        self.take_poison();
        while let Some(&(_, first, end)) = self.awaiting.front() {
            let result = if end <= self.synced_next {
                Ok(first)
            } else if let Some(info) = &self.poisoned {
                Err(info.error())
            } else {
                break;
            };
            if let Some((to, _, _)) = self.awaiting.pop_front() {
                reply(Some(to), result);
            }
        }
    }

    /// Picks up a poisoning by the sync thread.
    fn take_poison(&mut self) {
        if self.poisoned.is_none() {
            self.poisoned = self
                .shared
                .poisoned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
        }
    }

    fn poison_error(&self) -> AuditError {
        match &self.poisoned {
            Some(info) => info.error(),
            None => AuditError::Closed,
        }
    }

    /// Writes async appends waiting for space, keeping those that still find none.
    fn flush_stalled(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        if let Some(info) = &self.poisoned {
            tracing::error!(
                lost = self.stalled.iter().map(|p| p.entries.len()).sum::<usize>(),
                error = %info.error(),
                "audit log: acknowledged async entries cannot be written"
            );
            self.stalled.clear();
            return;
        }
        let pending: Vec<Pending> = self.stalled.drain(..).collect();
        let results = self.write(&pending);
        for (pending, result) in pending.into_iter().zip(results) {
            if result.is_err() {
                self.stalled.push_back(pending);
            }
        }
        if self.stalled.is_empty() {
            self.shared.full.store(false, Ordering::SeqCst);
            self.retry_at = None;
        } else {
            self.shared.full.store(true, Ordering::SeqCst);
            self.retry_at = Some(Instant::now() + FULL_RETRY);
        }
    }

    /// Writes requests in order, rolling segments between requests. Returns each
    /// request's first index, or why it was not written; once one fails, every later
    /// one fails too, so indexes stay dense.
    fn write(&mut self, appends: &[Pending]) -> Vec<Result<u64, Failure>> {
        let mut results: Vec<Option<Result<u64, Failure>>> = vec![None; appends.len()];
        let mut failed: Option<Failure> = None;
        let cap = self.shared.max_bytes();
        let mut reserved =
            self.shared.used_bytes.load(Ordering::SeqCst) + self.outstanding_derived();
        let mut buf = Vec::new();
        let mut chunk = Vec::new();
        for (i, pending) in appends.iter().enumerate() {
            if failed.is_none() {
                reserved += pending.bytes + DERIVED_BYTES_PER_ENTRY * pending.entries.len() as u64;
                if cap.is_some_and(|cap| reserved > cap) {
                    failed = Some(Failure::Full { disk: false });
                }
            }
            if failed.is_none()
                && self.active_len + buf.len() as u64 + pending.bytes > self.segment_bytes
                && self.active_len + buf.len() as u64 > self.active_format.header_len()
            {
                if let Err(failure) = self.flush_chunk(&mut buf, &mut chunk, appends, &mut results)
                {
                    failed = Some(failure);
                } else if let Err(failure) = self.roll() {
                    failed = Some(failure);
                }
            }
            if let Some(failure) = &failed {
                results[i] = Some(Err(failure.clone()));
                continue;
            }
            for entry in &pending.entries {
                self.active_format.encode(&mut buf, entry);
            }
            chunk.push(i);
        }
        // The requests encoded before any failure are written even when a later one
        // found no room; a failed flush is recorded in `results`.
        let _ = self.flush_chunk(&mut buf, &mut chunk, appends, &mut results);
        if results
            .iter()
            .any(|r| matches!(r, Some(Err(Failure::Full { .. }))))
        {
            self.shared.full.store(true, Ordering::SeqCst);
        } else if self.durability != Durability::Async {
            self.shared.full.store(false, Ordering::SeqCst);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Failure::Full { disk: false })))
            .collect()
    }

    /// Derived bytes the entries written so far will still add: hashes not yet in full
    /// tiles, and the key index of the active segment.
    fn outstanding_derived(&self) -> u64 {
        let hashes = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .hashes_in_memory();
        hashes * HASH_SIZE as u64 + (self.next - self.active_first) * 20 + CHECKPOINT_RESERVE
    }

    /// Writes the frames of `chunk` (requests whose frames are in `buf`) with one call,
    /// then publishes them: segment view, keys, tree, acknowledged size.
    fn flush_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        chunk: &mut Vec<usize>,
        appends: &[Pending],
        results: &mut [Option<Result<u64, Failure>>],
    ) -> Result<(), Failure> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.active.append(buf) {
            let failure = self.undo_write(error);
            for &i in chunk.iter() {
                results[i] = Some(Err(failure.clone()));
            }
            buf.clear();
            chunk.clear();
            return Err(failure);
        }
        // The fsync starts now, while the entries are hashed and published, and the
        // `sync` appends of the group before (durable by now) are answered.
        let end = self.next
            + chunk
                .iter()
                .map(|&i| appends[i].entries.len() as u64)
                .sum::<u64>();
        let syncing = self.syncer.is_some() && self.active_sync.is_some();
        if syncing {
            self.request_sync(end);
            self.release_durable();
        }
        let mut offset = self.active_len;
        let mut offsets = Vec::new();
        let mut keys = Vec::new();
        let mut leaves = Vec::new();
        for &i in chunk.iter() {
            let pending = &appends[i];
            debug_assert!(pending.first.is_none_or(|first| first == self.next));
            results[i] = Some(Ok(self.next));
            for entry in &pending.entries {
                if (self.next - self.active_first).is_multiple_of(OFFSET_STRIDE) {
                    offsets.push(offset);
                }
                leaves.push(leaf_hash(entry));
                if let Some(key) = entry_key(entry) {
                    keys.push((key, self.next));
                }
                offset += self.active_format.frame_len(entry.len());
                self.next += 1;
            }
        }
        self.active_len = offset;
        self.shared
            .used_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        {
            let mut segments = self
                .shared
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(active) = segments.last_mut() {
                active.view.count = self.next - self.active_first;
                active.view.len = self.active_len;
                Arc::make_mut(&mut active.view.offsets).extend(offsets);
                if let Keys::Memory(map) = &mut active.keys {
                    for (key, index) in keys {
                        map.entry(key).or_insert(index);
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
        if self.durability != Durability::Async {
            self.shared.acked.fetch_max(self.next, Ordering::SeqCst);
        }
        if !syncing && self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        buf.clear();
        chunk.clear();
        if let Err(error) = self.write_full_tiles() {
            // Tiles are derived; they stay in memory and are tried again.
            tracing::warn!(%error, "audit log: writing a full tile failed");
        }
        Ok(())
    }

    /// After a failed append, cuts the segment back to its last good length so no
    /// partial frame is left behind.
    fn undo_write(&mut self, error: io::Error) -> Failure {
        if let Err(truncate) = self.active.truncate(self.active_len) {
            return self.poison("truncate after a failed append", truncate.kind());
        }
        if is_no_space(&error) {
            Failure::Full { disk: true }
        } else {
            Failure::Io {
                op: "append",
                path: self.active_path.clone(),
                kind: error.kind(),
            }
        }
    }

    fn poison(&mut self, op: &'static str, kind: io::ErrorKind) -> Failure {
        let info = PoisonInfo {
            op,
            path: self.active_path.clone(),
            kind,
        };
        tracing::error!(error = %info.error(), "audit log stopped taking entries");
        *self
            .shared
            .poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(info.clone());
        self.poisoned = Some(info.clone());
        Failure::Poisoned(info)
    }

    /// fdatasyncs the active segment. A failure poisons the log: after a failed fsync
    /// the kernel may have dropped the dirty pages, so what is on disk is unknown.
    fn sync_active(&mut self) -> Result<(), Failure> {
        self.take_poison();
        if let Some(info) = &self.poisoned {
            return Err(Failure::Poisoned(info.clone()));
        }
        if let Some(syncer) = &self.syncer {
            self.synced_next = self.synced_next.max(syncer.durable().min(self.next));
        }
        if self.synced_next == self.next && self.unsynced_since.is_none() {
            return Ok(());
        }
        match self.active.sync_data() {
            Ok(()) => {
                self.synced_next = self.next;
                self.unsynced_since = None;
                Ok(())
            }
            Err(error) => Err(self.poison("fsync", error.kind())),
        }
    }

    /// Seals the active segment (synced, key index written) and starts the next one.
    fn roll(&mut self) -> Result<(), Failure> {
        self.sync_active()?;
        let disk = Arc::clone(&self.shared.disk);
        let segments_dir = self.shared.dir.join(SEGMENTS_DIR);
        let path = segments_dir.join(segment::file_name(self.next, SegmentFile::Log));
        let io_failure = |op, error: io::Error| {
            if is_no_space(&error) {
                Failure::Full { disk: true }
            } else {
                Failure::Io {
                    op,
                    path: path.clone(),
                    kind: error.kind(),
                }
            }
        };
        let file = match segment::create(&*disk, &path) {
            Ok(file) => file,
            Err(error) => {
                let _ = disk.remove_file(&path);
                return Err(io_failure("create segment", error));
            }
        };
        // The new name must be durable before entries in it are acknowledged: an
        // fdatasync of the file does not persist its directory entry.
        if let Err(error) = disk.sync_dir(&segments_dir) {
            let _ = disk.remove_file(&path);
            return Err(io_failure("fsync directory", error));
        }
        let sealed = self.active_first;
        self.active_sync = file.sync_handle().unwrap_or_else(|error| {
            tracing::warn!(%error, "audit log: no sync handle; the writer thread will fsync");
            None
        });
        self.active = file;
        self.active_path = path;
        self.active_first = self.next;
        self.active_format = FrameFormat::V2;
        self.active_len = self.active_format.header_len();
        self.shared
            .used_bytes
            .fetch_add(self.active_len, Ordering::SeqCst);
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SegmentEntry {
                view: SegmentView {
                    first: self.next,
                    count: 0,
                    len: self.active_len,
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
        Ok(())
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

    /// Writes every full tile still in memory, oldest first.
    fn write_full_tiles(&mut self) -> Result<(), AuditError> {
        let tiles = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .full_tiles();
        let disk = Arc::clone(&self.shared.disk);
        for (tile, bytes) in tiles {
            let path = write_tile(&*disk, &self.shared.dir, &tile, &bytes)
                .map_err(|e| AuditError::io("write tile", self.shared.dir.join(tile.path()), e))?;
            self.unsynced_tiles.push(path);
            self.shared
                .tree
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .tile_written(&tile);
            self.shared
                .used_bytes
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
            // The full tile supersedes the partial ones (C2SP lets them go).
            self.remove_partials(&tile);
        }
        Ok(())
    }

    /// Removes the partial versions of a tile, if any were written.
    fn remove_partials(&mut self, tile: &Tile) {
        let Some(bytes) = self.partial_written.remove(&(tile.level(), tile.index())) else {
            return;
        };
        if let Some(partials) = partial_dir(&self.shared.dir, tile) {
            match self.shared.disk.remove_dir_all(&partials) {
                Ok(()) => {
                    // Removed unsynced: the partial files' own paths leave the list too.
                    self.unsynced_tiles
                        .retain(|path| !path.starts_with(&partials));
                    let _ = self.shared.used_bytes.fetch_update(
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                        |used| Some(used.saturating_sub(bytes)),
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, path = %partials.display(), "audit log: removing partial tiles failed");
                }
            }
        }
    }

    /// Makes every tile written since the last checkpoint durable.
    fn sync_tiles(&mut self) -> Result<(), AuditError> {
        if self.unsynced_tiles.is_empty() {
            return Ok(());
        }
        let disk = Arc::clone(&self.shared.disk);
        let tile_dir = self.shared.dir.join(TILE_DIR);
        if self.unsynced_tiles.len() > SYNCFS_THRESHOLD {
            match disk.sync_filesystem(&tile_dir) {
                Ok(()) => {
                    self.unsynced_tiles.clear();
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Unsupported => {}
                Err(error) => return Err(AuditError::io("syncfs", tile_dir, error)),
            }
        }
        let mut dirs = BTreeSet::new();
        for path in &self.unsynced_tiles {
            disk.sync_file(path)
                .map_err(|e| AuditError::io("fsync", path, e))?;
            // New tiles may sit in new directories: sync each one up to tile/.
            let mut parent = path.parent();
            while let Some(dir) = parent {
                dirs.insert(dir.to_path_buf());
                if dir == tile_dir {
                    break;
                }
                parent = dir.parent();
            }
        }
        for dir in dirs {
            disk.sync_dir(&dir)
                .map_err(|e| AuditError::io("fsync directory", &dir, e))?;
        }
        self.unsynced_tiles.clear();
        Ok(())
    }

    /// Signs a checkpoint at the current size, after making everything it covers
    /// durable: the entries, the full tiles, the partial tiles at this size.
    fn checkpoint(&mut self) -> Result<String, AuditError> {
        if let Some(info) = &self.poisoned {
            return Err(info.error());
        }
        let size = self.shared.tree_size();
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
        self.sync_active()
            .map_err(|failure| failure.error(&self.shared))?;
        self.write_full_tiles()?;
        let (partials, root) = {
            let tree = self
                .shared
                .tree
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (tree.partial_tiles(), tree.root())
        };
        let disk = Arc::clone(&self.shared.disk);
        let dir = self.shared.dir.clone();
        for (tile, bytes) in partials {
            // Only the latest width of a partial tile is kept: older ones would pile up
            // at every checkpoint until the tile is full.
            self.remove_partials(&tile);
            let path = write_tile(&*disk, &dir, &tile, &bytes)
                .map_err(|e| AuditError::io("write tile", dir.join(tile.path()), e))?;
            self.partial_written
                .insert((tile.level(), tile.index()), bytes.len() as u64);
            self.unsynced_tiles.push(path);
            self.shared
                .used_bytes
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        self.sync_tiles()?;
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

    fn on_timers(&mut self) {
        let now = Instant::now();
        if let Some(since) = self.unsynced_since
            && now >= since + self.batch_window
        {
            // A failure poisons the log and is reported to the next appenders.
            let _ = self.sync_active();
        }
        if self.retry_at.is_some_and(|retry| now >= retry) {
            self.flush_stalled();
        }
        if now >= self.next_checkpoint_at {
            self.next_checkpoint_at = now + self.checkpoint_interval;
            self.write_pending_idx();
            if self.poisoned.is_none()
                && self.last_checkpoint != Some(self.shared.tree_size())
                && let Err(error) = self.checkpoint()
            {
                tracing::warn!(%error, "audit log: periodic checkpoint failed");
            }
        }
    }

    /// Closing: commit whatever is still queued (other handles may have queued after
    /// the close), sync, write a final checkpoint.
    fn finish(&mut self) -> Result<(), AuditError> {
        let mut closers = Vec::new();
        loop {
            let mut group = Group::default();
            self.drain(&mut group);
            if group.requests.is_empty() {
                break;
            }
            // A group ends at a close request, so nothing after it is skipped.
            if let Some(close) = self.process(group.requests) {
                closers.push(close);
            }
        }
        let result = self.finish_inner();
        for closer in closers {
            let _ = closer.send(Ok(()));
        }
        result
    }

    fn finish_inner(&mut self) -> Result<(), AuditError> {
        // Every queued fsync runs and every `sync` append is answered first.
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop();
            self.synced_next = self.synced_next.max(syncer.durable().min(self.next));
        }
        self.release_durable();
        self.take_poison();
        self.flush_stalled();
        if let Some(info) = &self.poisoned {
            return Err(info.error());
        }
        self.sync_active()
            .map_err(|failure| failure.error(&self.shared))?;
        self.write_pending_idx();
        self.checkpoint()?;
        if !self.stalled.is_empty() {
            let lost: usize = self.stalled.iter().map(|p| p.entries.len()).sum();
            tracing::error!(
                lost,
                "audit log closed with acknowledged async entries unwritten: no space"
            );
            return Err(self.shared.full_error(false));
        }
        Ok(())
    }
}

fn reply(to: Option<oneshot::Sender<Result<u64, AuditError>>>, result: Result<u64, AuditError>) {
    if let Some(to) = to {
        // The appender may have stopped waiting (its future dropped); the entry's fate
        // is the same either way.
        let _ = to.send(result);
    }
}

/// The `.p` directory holding a tile's partial versions.
fn partial_dir(dir: &Path, tile: &Tile) -> Option<PathBuf> {
    let partial = Tile::new(tile.level(), tile.index(), 1).ok()?;
    dir.join(partial.path()).parent().map(Path::to_path_buf)
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
    }
    Ok(())
}
