//! The writer thread: the only code that appends to segments. It takes requests from a
//! bounded queue, commits them in groups (one write for everything queued), keeps the
//! byte cap, rolls segments and decides when a checkpoint is signed. What a write makes
//! visible (hashes, tiles, segment views, keys, answers, checkpoints) is done by the
//! publisher thread (`publisher.rs`), which gets each written group as a [`Step`].
//!
//! In `sync` mode the writer fdatasyncs each group itself, right after its write, as a
//! plain write+fdatasync loop would: the appends that arrive meanwhile wait in the
//! queue and make the next group, taken without any thread handoff once the fsync ends,
//! while the publisher hashes and answers the group before. In `batch` and `async`
//! mode entries are acknowledged at the write (or before), so the fsyncs run on the
//! sync thread (`syncer.rs`) while the writer goes on writing; on a disk without sync
//! handles the writer syncs itself at `batch_window`.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use dynscale_core::merkle::{HASH_SIZE, Signer};

use super::disk::{AppendFile, SyncFile, is_no_space};
use super::error::AuditError;
use super::frame::FrameFormat;
use super::log::{PoisonInfo, Shared};
use super::publisher::{CheckpointReply, PublisherHandle, PublisherStart, Reply, Step, Written};
use super::retention::Poker;
use super::segment::{self, SEGMENTS_DIR, SegmentFile};
use super::syncer::{SyncJob, Syncer};
use super::{AuditConfig, Durability};

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Request {
    /// Append entries as consecutive indexes. `first` is the index promised at enqueue
    /// (async mode); `reply` gets the first index once acknowledged (other modes).
    Append {
        entries: Vec<Vec<u8>>,
        first: Option<u64>,
        reply: Option<Reply>,
    },
    /// Sign a checkpoint at the current size.
    Checkpoint { reply: CheckpointReply },
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
/// Key index bytes reserved per entry of a segment whose index is not written yet.
const INDEX_BYTES_PER_ENTRY: u64 = 20;
/// Reserved under the byte cap for the next checkpoint: two copies of the note and the
/// partial tiles above level 0.
const CHECKPOINT_RESERVE: u64 = 4096;
/// How soon async entries that found no space are tried again.
const FULL_RETRY: Duration = Duration::from_millis(20);

/// An append waiting to be written.
#[derive(Debug)]
struct Pending {
    entries: Vec<Vec<u8>>,
    first: Option<u64>,
    reply: Option<Reply>,
    bytes: u64,
}

/// Requests taken from the queue for one group commit.
#[derive(Debug, Default)]
struct Group {
    requests: Vec<Request>,
    entries: usize,
    /// Entries already taken off the log's queued count.
    counted: usize,
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

/// What recovery hands the writer (and through it the publisher).
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
    unsynced_since: Option<Instant>,
    /// The frames of the group being written, kept to spare an allocation per group.
    buf: Vec<u8>,
    /// Async appends (already acknowledged) that found no space, oldest first.
    stalled: VecDeque<Pending>,
    retry_at: Option<Instant>,
    next_checkpoint_at: Instant,
    poisoned: Option<PoisonInfo>,
    publisher: PublisherHandle,
    /// The sync thread (`batch` and `async` mode, when the disk gives sync handles).
    syncer: Option<Syncer>,
    /// The sync handle of the active segment.
    active_sync: Option<Arc<dyn SyncFile>>,
}

impl Writer {
    /// Sets the writer up and starts its publisher thread (and, outside `sync` mode,
    /// its sync thread).
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Request>,
        config: &AuditConfig,
        signer: Signer,
        start: WriterStart,
        last_checkpoint: Option<u64>,
        poker: Option<Poker>,
    ) -> io::Result<Self> {
        let unindexed: u64 = {
            let segments = shared
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            segments
                .iter()
                .filter(|s| start.pending_idx.contains(&s.view.first))
                .map(|s| s.view.count)
                .sum()
        };
        shared.unindexed.store(unindexed, Ordering::SeqCst);
        let publisher = PublisherHandle::start(
            Arc::clone(&shared),
            config,
            signer,
            PublisherStart {
                next: start.next,
                active_first: start.active_first,
                unsynced_tiles: start.unsynced_tiles,
                partial_written: start.partial_written,
                pending_idx: start.pending_idx,
                last_checkpoint,
            },
            poker,
        )?;
        let (syncer, active_sync) = if config.durability == Durability::Sync {
            (None, None)
        } else {
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
            (syncer, active_sync)
        };
        Ok(Self {
            shared,
            rx,
            durability: config.durability,
            batch_window: config.batch_window,
            segment_bytes: config.segment_bytes,
            checkpoint_interval: config.checkpoint_interval,
            active: start.active,
            active_path: start.active_path,
            active_first: start.active_first,
            active_len: start.active_len,
            active_format: start.active_format,
            next: start.next,
            synced_next: start.next,
            sync_requested: start.next,
            unsynced_since: None,
            buf: Vec::new(),
            stalled: VecDeque::new(),
            retry_at: None,
            next_checkpoint_at: Instant::now() + config.checkpoint_interval,
            poisoned: None,
            publisher,
            syncer,
            active_sync,
        })
    }

    /// The thread's body: until closed, take a group of requests, commit it, run the
    /// timers (batch fsync, retries, checkpoints). In `sync` mode the commit ends with
    /// the group's fsync, so what arrives during it is the next group.
    pub(crate) fn run(mut self) {
        loop {
            let mut group = Group::default();
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

    /// Adds a request taken from the queue to `group` (`drain` follows, which accounts
    /// for it).
    fn take(&mut self, group: &mut Group, request: Request) {
        match &request {
            Request::Append { entries, .. } => {
                group.entries += entries.len();
                group.bytes += entries
                    .iter()
                    .map(|entry| self.active_format.frame_len(entry.len()))
                    .sum::<u64>();
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
            // One update of the shared count per group, not one per request: appenders
            // update it too.
            self.shared
                .queued
                .fetch_sub(group.entries - group.counted, Ordering::SeqCst);
            group.counted = group.entries;
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
                    self.checkpoint(Some(reply));
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
            return;
        }
        if let Some(info) = &self.poisoned {
            let error = Failure::Poisoned(info.clone());
            for pending in appends {
                reply(pending.reply, Err(error.error(&self.shared)));
            }
            return;
        }
        for (pending, failure) in self.write(appends) {
            reply(pending.reply, Err(failure.error(&self.shared)));
        }
        if self.durability == Durability::Sync {
            // One fsync acknowledges the whole group (through the publisher). A failure
            // poisons the log, and the publisher fails the appends it left unsynced.
            let _ = self.sync_active();
        }
    }

    /// Makes everything written durable and has the publisher sign a checkpoint (and
    /// write the key indexes still missing). `reply` gets the note; without one (the
    /// periodic checkpoint) the publisher signs only when the log grew.
    fn checkpoint(&mut self, reply: Option<CheckpointReply>) {
        let synced = self
            .sync_active()
            .map_err(|failure| failure.error(&self.shared));
        match (synced, reply) {
            (Err(error), Some(reply)) => {
                let _ = reply.send(Err(error));
            }
            (Err(_), None) => {}
            (Ok(()), reply) => self.publish(Step::Checkpoint { reply }),
        }
    }

    /// Hands a step to the publisher. Its thread ends only at close, or by a bug (a
    /// panic); then nothing more can be answered, and the log stops taking entries.
    fn publish(&mut self, step: Step) {
        if self.publisher.send(step).is_err() && self.poisoned.is_none() {
            self.poison("publish", io::ErrorKind::BrokenPipe);
        }
    }

    /// Queues an fsync of the entries below `upto` on the sync thread, unless one is
    /// queued already. Without a sync thread, or when it is gone, the writer syncs
    /// itself at the batch window (a failure poisons the log).
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
            return;
        }
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
    }

    /// Picks up a poisoning by the sync thread.
    fn take_poison(&mut self) {
        if self.poisoned.is_none() {
            self.poisoned = self.shared.poisoned.get();
        }
    }

    /// Writes async appends waiting for space, keeping those that still find none.
    fn flush_stalled(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        self.take_poison();
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
        let unwritten = self.write(pending);
        self.stalled
            .extend(unwritten.into_iter().map(|(pending, _)| pending));
        if self.stalled.is_empty() {
            self.shared.full.store(false, Ordering::SeqCst);
            self.retry_at = None;
        } else {
            self.shared.full.store(true, Ordering::SeqCst);
            self.retry_at = Some(Instant::now() + FULL_RETRY);
        }
    }

    /// Writes requests in order, rolling segments between requests, and hands what was
    /// written to the publisher. Returns the requests not written, in order, each with
    /// why; once one fails, every later one fails too, so indexes stay dense.
    fn write(&mut self, appends: Vec<Pending>) -> Vec<(Pending, Failure)> {
        let mut unwritten = Vec::new();
        let mut failed: Option<Failure> = None;
        let cap = self.shared.max_bytes();
        let mut reserved =
            self.shared.used_bytes.load(Ordering::SeqCst) + self.outstanding_derived();
        let mut buf = std::mem::take(&mut self.buf);
        let mut chunk = Vec::new();
        for pending in appends {
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
                if let Err(failure) = self.flush_chunk(&mut buf, &mut chunk, &mut unwritten) {
                    failed = Some(failure);
                } else if let Err(failure) = self.roll() {
                    failed = Some(failure);
                }
            }
            if let Some(failure) = &failed {
                unwritten.push((pending, failure.clone()));
                continue;
            }
            for entry in &pending.entries {
                self.active_format.encode(&mut buf, entry);
            }
            chunk.push(pending);
        }
        // The requests encoded before any failure are written even when a later one
        // found no room; a failed flush puts them in `unwritten`, in order.
        let _ = self.flush_chunk(&mut buf, &mut chunk, &mut unwritten);
        self.buf = buf;
        if unwritten
            .iter()
            .any(|(_, failure)| matches!(failure, Failure::Full { .. }))
        {
            self.shared.full.store(true, Ordering::SeqCst);
        } else if self.durability != Durability::Async {
            self.shared.full.store(false, Ordering::SeqCst);
        }
        unwritten
    }

    /// Derived bytes the entries written so far will still add: hashes not yet in full
    /// tiles (including those of entries the publisher has not hashed yet), and the key
    /// indexes of the active segment and of sealed ones still without their file.
    fn outstanding_derived(&self) -> u64 {
        let (hashes, hashed) = {
            let tree = self
                .shared
                .tree
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (tree.hashes_in_memory(), tree.size())
        };
        let unhashed = self.next.saturating_sub(hashed);
        let unindexed =
            self.next - self.active_first + self.shared.unindexed.load(Ordering::SeqCst);
        (hashes + unhashed) * HASH_SIZE as u64
            + unindexed * INDEX_BYTES_PER_ENTRY
            + CHECKPOINT_RESERVE
    }

    /// Writes the frames of `chunk` (requests whose frames are in `buf`) with one call
    /// and hands them to the publisher; outside `sync` mode their fsync is queued first.
    /// On failure the chunk's requests go to the front of `unwritten`.
    fn flush_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        chunk: &mut Vec<Pending>,
        unwritten: &mut Vec<(Pending, Failure)>,
    ) -> Result<(), Failure> {
        if chunk.is_empty() {
            return Ok(());
        }
        let written = self.active.append(buf);
        let written_len = buf.len() as u64;
        buf.clear();
        if let Err(error) = written {
            let failure = self.undo_write(error);
            let later = std::mem::take(unwritten);
            unwritten.extend(chunk.drain(..).map(|pending| (pending, failure.clone())));
            unwritten.extend(later);
            return Err(failure);
        }
        let first = self.next;
        let offset = self.active_len;
        let mut appends = Vec::with_capacity(chunk.len());
        for pending in chunk.drain(..) {
            debug_assert!(pending.first.is_none_or(|first| first == self.next));
            self.next += pending.entries.len() as u64;
            appends.push((pending.entries, pending.reply));
        }
        self.active_len += written_len;
        self.shared
            .used_bytes
            .fetch_add(written_len, Ordering::SeqCst);
        if self.durability != Durability::Sync {
            self.request_sync(self.next);
        }
        self.publish(Step::Written(Written {
            first,
            offset,
            format: self.active_format,
            appends,
        }));
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
        let info = self.shared.poisoned.set(PoisonInfo {
            op,
            path: self.active_path.clone(),
            kind,
        });
        self.poisoned = Some(info.clone());
        Failure::Poisoned(info)
    }

    /// fdatasyncs the active segment and tells the publisher how far entries are
    /// durable. A failure poisons the log: after a failed fsync the kernel may have
    /// dropped the dirty pages, so what is on disk is unknown.
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
        let result = match self.active.sync_data() {
            Ok(()) => {
                self.synced_next = self.next;
                self.unsynced_since = None;
                Ok(())
            }
            Err(error) => Err(self.poison("fsync", error.kind())),
        };
        // After a failure too: the publisher then fails the `sync` appends above it.
        self.publish(Step::Synced {
            durable: self.synced_next,
        });
        result
    }

    /// Seals the active segment (synced) and starts the next one; the publisher writes
    /// the sealed segment's key index.
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
        if self.syncer.is_some() {
            self.active_sync = file.sync_handle().unwrap_or_else(|error| {
                tracing::warn!(%error, "audit log: no sync handle; the writer thread will fsync");
                None
            });
        }
        self.active = file;
        self.active_path = path;
        self.active_first = self.next;
        self.active_format = FrameFormat::V2;
        self.active_len = self.active_format.header_len();
        self.shared
            .used_bytes
            .fetch_add(self.active_len, Ordering::SeqCst);
        self.shared
            .unindexed
            .fetch_add(self.next - sealed, Ordering::SeqCst);
        self.publish(Step::Rolled {
            sealed,
            first: self.next,
            len: self.active_len,
        });
        Ok(())
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
            self.take_poison();
            if self.poisoned.is_none() {
                self.checkpoint(None);
            }
        }
    }

    /// Closing: commit whatever is still queued (other handles may have queued after
    /// the close), sync, have the publisher write a final checkpoint.
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
        // Every queued fsync runs first.
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop();
            self.synced_next = self.synced_next.max(syncer.durable().min(self.next));
        }
        self.take_poison();
        self.flush_stalled();
        // Poisoned, the publisher fails what waits and signs nothing.
        let synced = self.sync_active();
        let published = self.publisher.close();
        if let Err(failure) = synced {
            return Err(failure.error(&self.shared));
        }
        published?;
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

fn reply(to: Option<Reply>, result: Result<u64, AuditError>) {
    if let Some(to) = to {
        // The appender may have stopped waiting (its future dropped); the entry's fate
        // is the same either way.
        let _ = to.send(result);
    }
}
