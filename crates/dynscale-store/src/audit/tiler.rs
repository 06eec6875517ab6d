//! The tile thread: it writes the full tiles the publisher hands it, each once, and
//! before a checkpoint the partial tiles of the checkpoint's size, then makes them all
//! durable. A tile file is a new file, and creating one can cost far more than hashing
//! its 256 entries (on ext4 without a journal, inode allocation skips every inode freed
//! in the last minute, one by one), so it is kept off the thread that answers appends.
//! The hashes of a tile stay in the tree's memory rows until its file is written, so
//! readers always find them, and a tile that could not be written (a full disk) is
//! tried again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use dynscale_core::merkle::Tile;

use super::error::AuditError;
use super::log::Shared;
use super::tiles::{TILE_DIR, write_tile};

/// Above this many unsynced tiles one `syncfs` is cheaper than a sync per file.
const SYNCFS_THRESHOLD: usize = 8;
/// How soon tiles that could not be written are tried again.
const RETRY: Duration = Duration::from_millis(200);
/// Jobs (nearly always one tile each) the publisher may be ahead before it waits: a
/// tile thread far behind holds each tile's hashes twice, in the tree's rows and in its
/// job, so this bounds that memory (and slows appends, as writing tiles on the
/// publisher's own thread would) rather than let it grow.
const JOBS_AHEAD: usize = 1024;

/// A tile and its bytes.
pub(crate) type TileBytes = (Tile, Vec<u8>);

#[derive(Debug)]
enum Job {
    /// Full tiles, oldest first per level, not handed out before.
    Full(Vec<TileBytes>),
    /// Before a checkpoint: write every full tile handed out, then these partial tiles,
    /// and make every tile written since the last sync durable.
    Sync {
        partials: Vec<TileBytes>,
        reply: SyncSender<Result<(), AuditError>>,
    },
}

/// What recovery leaves for the tile thread.
#[derive(Debug)]
pub(crate) struct TilerStart {
    /// Tiles written at open and not yet synced.
    pub(crate) unsynced: Vec<PathBuf>,
    /// Tiles with a `.p` directory of partial tiles, and the bytes in it.
    pub(crate) partial_written: BTreeMap<(u8, u64), u64>,
}

/// The publisher's end of the tile thread.
#[derive(Debug)]
pub(crate) struct TilerHandle {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl TilerHandle {
    pub(crate) fn start(shared: Arc<Shared>, start: TilerStart) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(JOBS_AHEAD);
        let tiler = Tiler {
            shared,
            rx,
            pending: VecDeque::new(),
            unsynced: start.unsynced,
            partial_written: start.partial_written,
        };
        let thread = thread::Builder::new()
            .name("audit-tiles".into())
            .spawn(move || tiler.run())?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands full tiles over to be written.
    pub(crate) fn write(&self, tiles: Vec<TileBytes>) {
        if tiles.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx
            && tx.send(Job::Full(tiles)).is_err()
        {
            // The thread is gone (it panicked): the hashes stay in memory and the next
            // checkpoint reports the failure.
            tracing::error!("audit log: the tile thread is gone");
        }
    }

    /// Writes every tile handed out and `partials`, durably; waits for it.
    pub(crate) fn sync(&self, partials: Vec<TileBytes>) -> Result<(), AuditError> {
        let (reply, done) = mpsc::sync_channel(1);
        let gone = || {
            AuditError::io(
                "write tiles",
                PathBuf::from(TILE_DIR),
                io::Error::other("the tile thread is gone"),
            )
        };
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(Job::Sync { partials, reply })
            .map_err(|_| gone())?;
        done.recv().map_err(|_| gone())?
    }
}

impl Drop for TilerHandle {
    fn drop(&mut self) {
        // The thread writes what it was handed, then stops.
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the audit tile thread panicked");
        }
    }
}

#[derive(Debug)]
struct Tiler {
    shared: Arc<Shared>,
    rx: Receiver<Job>,
    /// Full tiles handed out and not written yet, oldest first.
    pending: VecDeque<TileBytes>,
    /// Tiles written and not yet synced.
    unsynced: Vec<PathBuf>,
    /// Tiles with a `.p` directory of partial tiles, and the bytes in it.
    partial_written: BTreeMap<(u8, u64), u64>,
}

impl Tiler {
    fn run(mut self) {
        lower_priority();
        loop {
            let job = if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            } else {
                match self.rx.recv_timeout(RETRY) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.write_pending_logged();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.write_pending_logged();
                        return;
                    }
                }
            };
            match job {
                Job::Full(tiles) => {
                    self.pending.extend(tiles);
                    self.write_pending_logged();
                }
                Job::Sync { partials, reply } => {
                    // The publisher may have given up waiting (it cannot, but a dropped
                    // receiver must not stop the thread).
                    let _ = reply.send(self.sync(partials));
                }
            }
        }
    }

    fn write_pending_logged(&mut self) {
        if let Err(error) = self.write_pending() {
            // Tiles are derived; they stay in memory and are tried again.
            tracing::warn!(%error, "audit log: writing a full tile failed");
        }
    }

    /// Writes the pending full tiles in order; the hashes of each leave memory once its
    /// file is written. Stops at the first failure, keeping the rest.
    fn write_pending(&mut self) -> Result<(), AuditError> {
        let disk = Arc::clone(&self.shared.disk);
        while let Some((tile, bytes)) = self.pending.front() {
            let path = write_tile(&*disk, &self.shared.dir, tile, bytes)
                .map_err(|e| AuditError::io("write tile", self.shared.dir.join(tile.path()), e))?;
            self.unsynced.push(path);
            self.shared
                .tree
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .tile_written(tile);
            self.shared
                .used_bytes
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
            if let Some((tile, _)) = self.pending.pop_front() {
                // The full tile supersedes the partial ones (C2SP lets them go).
                self.remove_partials(&tile);
            }
        }
        Ok(())
    }

    /// Writes what is pending and the partial tiles, then syncs every tile written.
    fn sync(&mut self, partials: Vec<TileBytes>) -> Result<(), AuditError> {
        self.write_pending()?;
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
            self.unsynced.push(path);
            self.shared
                .used_bytes
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        self.sync_unsynced()
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
                    self.unsynced.retain(|path| !path.starts_with(&partials));
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

    /// Makes every tile written since the last sync durable.
    fn sync_unsynced(&mut self) -> Result<(), AuditError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let disk = Arc::clone(&self.shared.disk);
        let tile_dir = self.shared.dir.join(TILE_DIR);
        if self.unsynced.len() > SYNCFS_THRESHOLD {
            match disk.sync_filesystem(&tile_dir) {
                Ok(()) => {
                    self.unsynced.clear();
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Unsupported => {}
                Err(error) => return Err(AuditError::io("syncfs", tile_dir, error)),
            }
        }
        let mut dirs = BTreeSet::new();
        for path in &self.unsynced {
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
        self.unsynced.clear();
        Ok(())
    }
}

/// Tile files are derived and can wait: the thread yields the processor to the writer,
/// the publisher and the appenders when they want it (nice 10 weighs about a tenth of
/// a normal thread). Where file creation turns slow, it then takes only spare time.
#[cfg(target_os = "linux")]
fn lower_priority() {
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%error, "audit log: the tile thread keeps its priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The `.p` directory holding a tile's partial versions.
fn partial_dir(dir: &Path, tile: &Tile) -> Option<PathBuf> {
    let partial = Tile::new(tile.level(), tile.index(), 1).ok()?;
    dir.join(partial.path()).parent().map(Path::to_path_buf)
}
