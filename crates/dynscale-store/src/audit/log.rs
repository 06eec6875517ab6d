//! [`AuditLog`]: the cheap, cloneable handle to an open audit log. Appends go to the
//! writer thread through a bounded queue; reads and proofs are served from the files and
//! the state the writer publishes, without going through the writer.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use dynscale_core::merkle::{
    Hash, Signer, TreeError, prove_consistency, prove_inclusion, tree_hash,
};
use tokio::sync::{Notify, oneshot};

use super::disk::{Disk, FsDisk};
use super::error::AuditError;
use super::frame::MAX_ENTRY_BYTES;
use super::key_index::IdxSummary;
use super::segment::{SegmentView, open_frames};
use super::tiles::{TileHashes, TileReadError, TreeState};
use super::writer::{Request, Writer};
use super::{AuditConfig, Durability, Recovery, recover, retention};

/// The keys of a segment in memory, with the lowest index of each.
pub(crate) type KeyMap = HashMap<[u8; 16], u64, foldhash::fast::RandomState>;

/// Where the keys of one segment are looked up.
#[derive(Debug)]
pub(crate) enum Keys {
    /// In memory: the active segment, or a sealed one whose index file is not written.
    /// Holds the lowest index of each key.
    Memory(KeyMap),
    /// In the segment's `.idx` file.
    File(Arc<IdxSummary>),
}

/// One segment as the log tracks it.
#[derive(Debug)]
pub(crate) struct SegmentEntry {
    pub(crate) view: SegmentView,
    pub(crate) keys: Keys,
}

/// Why the writer stopped taking entries.
#[derive(Debug, Clone)]
pub(crate) struct PoisonInfo {
    pub(crate) op: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) kind: io::ErrorKind,
}

impl PoisonInfo {
    pub(crate) fn error(&self) -> AuditError {
        AuditError::Poisoned {
            op: self.op,
            path: self.path.clone(),
            kind: self.kind,
        }
    }
}

/// State shared between the handles and the log's threads. Only the writer appends to
/// the active segment; only the publisher grows the tree and the segment list (the tile
/// thread only lets go of the hashes of tiles it wrote, the retention thread only flips
/// sealed segments to compressed).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) durability: Durability,
    pub(crate) tree: RwLock<TreeState>,
    pub(crate) segments: RwLock<Vec<SegmentEntry>>,
    pub(crate) latest_checkpoint: RwLock<Option<String>>,
    /// Entries acknowledged (async: queued; otherwise written).
    pub(crate) acked: AtomicU64,
    /// Entries queued and not yet taken by the writer.
    pub(crate) queued: AtomicUsize,
    /// Set while appends fail for lack of space.
    pub(crate) full: AtomicBool,
    /// The byte cap, `u64::MAX` for none.
    pub(crate) max_bytes: AtomicU64,
    /// Bytes in the audit directory, as the log accounts them.
    pub(crate) used_bytes: AtomicU64,
    /// Entries of sealed segments whose key index file is not written yet: its bytes
    /// are still to come under the byte cap.
    pub(crate) unindexed: AtomicU64,
    /// Woken when the writer frees queue slots.
    pub(crate) space: Notify,
    pub(crate) poisoned: PoisonSlot,
}

/// Why the log stopped taking entries, once it has. A flag is read first, so the check
/// every append makes takes no lock.
#[derive(Debug, Default)]
pub(crate) struct PoisonSlot {
    set: AtomicBool,
    info: Mutex<Option<PoisonInfo>>,
}

impl PoisonSlot {
    pub(crate) fn get(&self) -> Option<PoisonInfo> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `info` unless the log is poisoned already; returns the poisoning in
    /// force (the first one).
    pub(crate) fn set(&self, info: PoisonInfo) -> PoisonInfo {
        let mut slot = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        let info = slot.get_or_insert_with(|| {
            tracing::error!(error = %info.error(), "audit log stopped taking entries");
            info
        });
        self.set.store(true, Ordering::Release);
        info.clone()
    }
}

impl Shared {
    pub(crate) fn max_bytes(&self) -> Option<u64> {
        match self.max_bytes.load(Ordering::SeqCst) {
            u64::MAX => None,
            cap => Some(cap),
        }
    }

    pub(crate) fn full_error(&self, disk_full: bool) -> AuditError {
        AuditError::Full {
            used: self.used_bytes.load(Ordering::SeqCst),
            max_bytes: if disk_full { None } else { self.max_bytes() },
        }
    }

    pub(crate) fn poison(&self) -> Option<AuditError> {
        self.poisoned.get().as_ref().map(PoisonInfo::error)
    }

    /// Entries whose hashes are computed: the largest tree proofs can be asked for.
    pub(crate) fn tree_size(&self) -> u64 {
        self.tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .size()
    }
}

/// A handle to an open audit log. Clones share the log; the writer stops at
/// [`AuditLog::close`] or when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tx: SyncSender<Request>,
    /// Next index to hand out in `async` mode, where the index is promised at enqueue.
    /// Taken together with the queue slot, so queue order is index order.
    next: Mutex<u64>,
    threads: Mutex<Threads>,
    _lock: File,
}

/// The outcome of one attempt to queue a request.
enum Enqueued {
    /// Queued; the first index (promised in async mode, a placeholder otherwise).
    Sent(u64),
    /// No slot free: the request comes back to wait with.
    QueueFull(Request),
}

#[derive(Debug, Default)]
struct Threads {
    writer: Option<JoinHandle<()>>,
    retention: Option<retention::Handle>,
}

impl AuditLog {
    /// Opens (creating if needed) the log in `config.dir` on the real file system:
    /// recovers it and starts the writer thread.
    pub fn open(config: AuditConfig, signer: Signer) -> Result<(AuditLog, Recovery), AuditError> {
        Self::open_with_disk(config, signer, Arc::new(FsDisk))
    }

    /// Opens the log doing all file IO through `disk` (tests inject faults this way).
    pub fn open_with_disk(
        config: AuditConfig,
        signer: Signer,
        disk: Arc<dyn Disk>,
    ) -> Result<(AuditLog, Recovery), AuditError> {
        check_config(&config)?;
        disk.create_dir_all(&config.dir)
            .map_err(|e| AuditError::io("create", &config.dir, e))?;
        let lock = lock_dir(&config.dir)?;
        let recover::Recovered {
            recovery,
            tree,
            segments,
            latest,
            used_bytes,
            writer: start,
        } = recover::recover(&*disk, &config)?;
        let next = recovery.entries;
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            disk: Arc::clone(&disk),
            durability: config.durability,
            tree: RwLock::new(tree),
            segments: RwLock::new(segments),
            latest_checkpoint: RwLock::new(latest.as_ref().map(|c| c.note.clone())),
            acked: AtomicU64::new(next),
            queued: AtomicUsize::new(0),
            full: AtomicBool::new(false),
            max_bytes: AtomicU64::new(config.max_bytes.unwrap_or(u64::MAX)),
            used_bytes: AtomicU64::new(used_bytes),
            unindexed: AtomicU64::new(0),
            space: Notify::new(),
            poisoned: PoisonSlot::default(),
        });
        let retention = config
            .compress_after
            .map(|age| retention::spawn(Arc::clone(&shared), age, config.checkpoint_interval))
            .transpose()
            .map_err(|e| AuditError::io("spawn retention thread", &config.dir, e))?;
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let writer = Writer::new(
            Arc::clone(&shared),
            rx,
            &config,
            signer,
            start,
            latest.map(|c| c.checkpoint.size()),
            retention.as_ref().map(retention::Handle::poker),
        )
        .map_err(|e| AuditError::io("spawn publisher thread", &config.dir, e))?;
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::io("spawn writer thread", &config.dir, e))?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                shared,
                tx,
                next: Mutex::new(next),
                threads: Mutex::new(Threads {
                    writer: Some(writer),
                    retention,
                }),
                _lock: lock,
            }),
        };
        Ok((log, recovery))
    }

    /// Appends one entry; resolves with its index once acknowledged (see
    /// [`Durability`]). Fails with [`AuditError::Full`] when the byte cap or the disk is
    /// full; nothing acknowledged before is lost, and appends resume when space returns.
    pub async fn append(&self, entry: Vec<u8>) -> Result<u64, AuditError> {
        let indexes = self.append_batch(vec![entry]).await?;
        indexes.first().copied().ok_or(AuditError::Closed)
    }

    /// Appends entries as consecutive indexes, all acknowledged or failed together.
    pub async fn append_batch(&self, entries: Vec<Vec<u8>>) -> Result<Vec<u64>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bad) = entries
            .iter()
            .find(|entry| entry.is_empty() || entry.len() > MAX_ENTRY_BYTES)
        {
            return Err(AuditError::EntrySize {
                length: bad.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        let count = entries.len() as u64;
        let shared = &self.inner.shared;
        let asynchronous = shared.durability == Durability::Async;
        let (reply_tx, reply_rx) = if asynchronous {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let mut request = Request::Append {
            entries,
            first: None,
            reply: reply_tx,
        };
        let first = loop {
            request = match self.try_enqueue(request, count)? {
                Enqueued::Sent(first) => break first,
                Enqueued::QueueFull(back) => back,
            };
            // The queue is full: register for a wake-up, then try once more, so a slot
            // freed between the first try and the registration is not missed. (Only
            // here: registering takes the `Notify`'s lock, twice, on every append.)
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            request = match self.try_enqueue(request, count)? {
                Enqueued::Sent(first) => break first,
                Enqueued::QueueFull(back) => back,
            };
            notified.await;
        };
        let first = match reply_rx {
            None => first,
            Some(rx) => rx.await.map_err(|_| AuditError::Closed)??,
        };
        Ok((first..first + count).collect())
    }

    /// One attempt to queue `request` without waiting. Synchronous so that no lock is
    /// ever held across an await.
    fn try_enqueue(&self, mut request: Request, count: u64) -> Result<Enqueued, AuditError> {
        let shared = &self.inner.shared;
        let asynchronous = shared.durability == Durability::Async;
        if let Some(error) = shared.poison() {
            return Err(error);
        }
        if asynchronous && shared.full.load(Ordering::SeqCst) {
            // In async mode the entry would be acknowledged before it is written; with
            // no space it could only be dropped later, so it is refused now.
            return Err(shared.full_error(false));
        }
        if !asynchronous {
            // Indexes are given by the writer: the queue's own order is enough.
            return self.send(request, count, 0);
        }
        // Async indexes are promised here: the promise and the queue slot are taken
        // together, so queue order is index order.
        let mut next = self
            .inner
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Request::Append { first, .. } = &mut request {
            *first = Some(*next);
        }
        let sent = self.send(request, count, *next)?;
        if matches!(sent, Enqueued::Sent(_)) {
            *next += count;
            shared.acked.store(*next, Ordering::SeqCst);
        }
        Ok(sent)
    }

    /// Puts a request in the queue without waiting; `first` is what `Sent` carries.
    fn send(&self, request: Request, count: u64, first: u64) -> Result<Enqueued, AuditError> {
        let shared = &self.inner.shared;
        shared.queued.fetch_add(count as usize, Ordering::SeqCst);
        match self.inner.tx.try_send(request) {
            Ok(()) => Ok(Enqueued::Sent(first)),
            Err(TrySendError::Full(back)) => {
                shared.queued.fetch_sub(count as usize, Ordering::SeqCst);
                Ok(Enqueued::QueueFull(back))
            }
            Err(TrySendError::Disconnected(_)) => {
                shared.queued.fetch_sub(count as usize, Ordering::SeqCst);
                Err(AuditError::Closed)
            }
        }
    }

    /// Entries acknowledged or written.
    pub fn size(&self) -> u64 {
        self.inner.shared.acked.load(Ordering::SeqCst)
    }

    /// Entries queued for the writer.
    pub fn queue_depth(&self) -> usize {
        self.inner.shared.queued.load(Ordering::SeqCst)
    }

    /// Changes the byte cap at run time; raising it lets refused appends succeed again.
    pub fn set_max_bytes(&self, max_bytes: Option<u64>) {
        self.inner
            .shared
            .max_bytes
            .store(max_bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The byte cap in force, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        self.inner.shared.max_bytes()
    }

    /// Bytes the audit directory holds, as the log accounts them.
    pub fn used_bytes(&self) -> u64 {
        self.inner.shared.used_bytes.load(Ordering::SeqCst)
    }

    /// Up to `limit` written entries from index `from`, with their indexes.
    pub fn entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        read_entries(&self.inner.shared, from, limit)
    }

    /// The lowest index whose entry has `key` as its bytes 1..17.
    ///
    /// Cost: a hash lookup for the active segment; for each sealed segment before the
    /// one holding the key, a binary search and a pass over its block ranges in memory
    /// (sparse index) or one read of at most 513 records (dense index); in the segment
    /// holding it, a scan of at most four blocks of 256 frames (see `key_index.rs`).
    pub fn index_of(&self, key: &[u8; 16]) -> Result<Option<u64>, AuditError> {
        // A sealed segment may be swapped for its compressed file between taking the
        // view and reading it; the second attempt sees the new view.
        match self.index_of_once(key) {
            Err(AuditError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                self.index_of_once(key)
            }
            other => other,
        }
    }

    fn index_of_once(&self, key: &[u8; 16]) -> Result<Option<u64>, AuditError> {
        enum Probe {
            File(Arc<IdxSummary>, SegmentView),
            Hit(u64),
        }
        let shared = &self.inner.shared;
        let mut probes = Vec::new();
        {
            let segments = shared
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for segment in segments.iter() {
                match &segment.keys {
                    Keys::File(summary) => {
                        probes.push(Probe::File(Arc::clone(summary), segment.view.clone()));
                    }
                    Keys::Memory(map) => {
                        if let Some(&index) = map.get(key) {
                            // Later segments only hold higher indexes.
                            probes.push(Probe::Hit(index));
                            break;
                        }
                    }
                }
            }
        }
        for probe in probes {
            match probe {
                Probe::Hit(index) => return Ok(Some(index)),
                Probe::File(summary, view) => {
                    let found = summary.lookup(&*shared.disk, &shared.dir, &view, key)?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The latest signed checkpoint (a C2SP signed note), if one was written.
    pub fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        Ok(self
            .inner
            .shared
            .latest_checkpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    /// Signs a checkpoint at the current size now and returns it. Blocks until the
    /// writer has synced the entries and written the checkpoint.
    pub fn checkpoint_now(&self) -> Result<String, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Request::Checkpoint { reply: tx })
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// The inclusion proof of entry `index` in the tree of the first `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let shared = &self.inner.shared;
        check_size(shared, size)?;
        let reader = TileHashes::new(&*shared.disk, &shared.dir, &shared.tree);
        prove_inclusion(size, index, &reader).map_err(tree_error)
    }

    /// The consistency proof from the tree of `old` entries to the tree of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        let shared = &self.inner.shared;
        check_size(shared, new)?;
        let reader = TileHashes::new(&*shared.disk, &shared.dir, &shared.tree);
        prove_consistency(old, new, &reader).map_err(tree_error)
    }

    /// The root hash of the tree of the first `size` entries.
    pub fn tree_hash(&self, size: u64) -> Result<Hash, AuditError> {
        let shared = &self.inner.shared;
        check_size(shared, size)?;
        let reader = TileHashes::new(&*shared.disk, &shared.dir, &shared.tree);
        tree_hash(size, &reader).map_err(tree_error)
    }

    /// Drains the queue, syncs, writes a final checkpoint and the partial tiles, and
    /// stops the writer. Other handles fail with [`AuditError::Closed`] afterwards.
    pub fn close(self) -> Result<(), AuditError> {
        self.inner.shutdown()
    }
}

impl Inner {
    fn shutdown(&self) -> Result<(), AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        // A send fails only when the writer is gone already (closed before).
        let result = match self.tx.send(Request::Close { reply: tx }) {
            Ok(()) => rx.recv().unwrap_or(Err(AuditError::Closed)),
            Err(_) => Ok(()),
        };
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = threads.writer.take() {
            // The writer thread catches nothing; a panic there is a bug, reported as a
            // closed log rather than propagated into the caller.
            if writer.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
        if let Some(retention) = threads.retention.take() {
            retention.stop();
        }
        // Wake appenders waiting for queue space: they now see the closed queue.
        self.shared.space.notify_waiters();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the last handle closes the log like `close`, so entries queued in
        // async mode are written and a final checkpoint is signed.
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "closing the audit log on drop failed");
        }
    }
}

fn check_config(config: &AuditConfig) -> Result<(), AuditError> {
    if config.queue == 0 {
        return Err(AuditError::Config {
            field: "queue",
            reason: "must be at least 1",
        });
    }
    if config.segment_bytes == 0 {
        return Err(AuditError::Config {
            field: "segment_bytes",
            reason: "must be at least 1",
        });
    }
    if config.checkpoint_interval.is_zero() {
        return Err(AuditError::Config {
            field: "checkpoint_interval",
            reason: "must be above zero",
        });
    }
    Ok(())
}

/// Takes the directory's lock file, so two writers never append to the same log.
fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::Locked { path }),
        Err(TryLockError::Error(e)) => Err(AuditError::io("lock", &path, e)),
    }
}

fn check_size(shared: &Shared, size: u64) -> Result<(), AuditError> {
    let available = shared.tree_size();
    if size > available {
        return Err(AuditError::SizeBeyondLog { size, available });
    }
    Ok(())
}

/// Maps a tree read over tiles to the log's error.
pub(super) fn tree_error(error: TreeError<TileReadError>) -> AuditError {
    match error {
        TreeError::IndexOutOfRange { index, size } => AuditError::IndexOutOfRange { index, size },
        TreeError::SizeOrder { old_size, new_size } => AuditError::SizeOrder {
            old: old_size,
            new: new_size,
        },
        TreeError::TooLarge { size } => AuditError::SizeBeyondLog { size, available: 0 },
        TreeError::Read(TileReadError::Missing { index, stored }) => AuditError::SizeBeyondLog {
            size: index,
            available: stored,
        },
        TreeError::Read(TileReadError::Io {
            path,
            offset,
            needed,
            source,
        }) => AuditError::Tile {
            path,
            offset,
            needed,
            source,
        },
        TreeError::ShortRead {
            requested,
            returned,
        } => AuditError::Tile {
            path: PathBuf::from(super::tiles::TILE_DIR),
            offset: 0,
            needed: requested,
            source: io::Error::other(format!("read {returned} of {requested} hashes")),
        },
    }
}

/// Reads up to `limit` entries from `from`, as far as the writer has written.
pub(crate) fn read_entries(
    shared: &Shared,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    // A sealed segment may be swapped for its compressed file between taking the view
    // and opening it; the second attempt sees the new view.
    match read_entries_once(shared, from, limit) {
        Err(AuditError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            read_entries_once(shared, from, limit)
        }
        other => other,
    }
}

fn read_entries_once(
    shared: &Shared,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    let views: Vec<SegmentView> = {
        let segments = shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        segments
            .iter()
            .filter(|segment| segment.view.end() > from && segment.view.count > 0)
            .map(|segment| segment.view.clone())
            .collect()
    };
    let mut out = Vec::new();
    let mut index = from;
    for view in views {
        if out.len() >= limit {
            break;
        }
        let mut frames = open_frames(&*shared.disk, &shared.dir, &view, index.max(view.first))?;
        index = index.max(view.first);
        while index < view.end() && out.len() < limit {
            let mut entry = Vec::new();
            let found = frames
                .next_into(&mut entry)
                .map_err(|e| super::segment::frame_error(e, &view.path(&shared.dir), index))?;
            if found.is_none() {
                return Err(AuditError::Corrupt {
                    segment: view.path(&shared.dir),
                    offset: frames.offset(),
                    index,
                    problem: super::error::FrameProblem::Truncated { missing: 0 },
                });
            }
            out.push((index, entry));
            index += 1;
        }
    }
    Ok(out)
}
