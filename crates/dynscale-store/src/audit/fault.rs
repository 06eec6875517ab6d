//! A [`Disk`] that injects faults into a real one: a full disk, a write torn part way,
//! a process that dies mid-write. It also counts data syncs so tests can see group commit.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::disk::{AppendFile, DirEntry, Disk, FileInfo, FsDisk, ReadFile, SyncFile};

/// What happens after a torn append has written its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTear {
    /// The append fails with "no space left on device"; the disk keeps working.
    NoSpace,
    /// The process "dies": this and every later write, sync, rename or removal fails, as
    /// if nothing more reached the disk.
    Crash,
}

#[derive(Debug, Default)]
struct FaultState {
    no_space: AtomicBool,
    crashed: AtomicBool,
    tear: Mutex<Option<(usize, AfterTear)>>,
    appends: AtomicU64,
    data_syncs: AtomicU64,
}

/// A disk over a real directory with switchable faults. Clones share their state, so a
/// test keeps one clone to steer the one given to the log.
#[derive(Debug, Clone)]
pub struct FaultyDisk {
    inner: Arc<dyn Disk>,
    state: Arc<FaultState>,
}

impl Default for FaultyDisk {
    fn default() -> Self {
        Self::new(Arc::new(FsDisk))
    }
}

impl FaultyDisk {
    /// Wraps `inner`, with no fault switched on.
    pub fn new(inner: Arc<dyn Disk>) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// While on, every append and file write fails with "no space left on device" and
    /// writes nothing.
    pub fn set_no_space(&self, on: bool) {
        self.state.no_space.store(on, Ordering::SeqCst);
    }

    /// The next append writes only its first `keep` bytes, then fails as `after` says.
    pub fn tear_next_append(&self, keep: usize, after: AfterTear) {
        *self
            .state
            .tear
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((keep, after));
    }

    /// From now on nothing reaches the disk: every mutating operation fails.
    pub fn crash(&self) {
        self.state.crashed.store(true, Ordering::SeqCst);
    }

    /// Appends attempted on files opened for appending (segments and compressed files).
    pub fn appends(&self) -> u64 {
        self.state.appends.load(Ordering::SeqCst)
    }

    /// `fdatasync` calls on files opened for appending: the segment fsyncs.
    pub fn data_syncs(&self) -> u64 {
        self.state.data_syncs.load(Ordering::SeqCst)
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the process is gone")
}

impl FaultState {
    fn check_alive(&self) -> io::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(crashed_error());
        }
        Ok(())
    }

    fn check_write(&self) -> io::Result<()> {
        self.check_alive()?;
        if self.no_space.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultyAppend {
    inner: Box<dyn AppendFile>,
    state: Arc<FaultState>,
}

impl AppendFile for FaultyAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.state.appends.fetch_add(1, Ordering::SeqCst);
        self.state.check_write()?;
        let tear = self
            .state
            .tear
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match tear {
            Some((keep, after)) => {
                self.inner.append(&bytes[..keep.min(bytes.len())])?;
                match after {
                    AfterTear::NoSpace => Err(io::Error::from(io::ErrorKind::StorageFull)),
                    AfterTear::Crash => {
                        self.state.crashed.store(true, Ordering::SeqCst);
                        Err(crashed_error())
                    }
                }
            }
            None => self.inner.append(bytes),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.state.check_alive()?;
        self.state.data_syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.truncate(len)
    }

    fn sync_handle(&self) -> io::Result<Option<Arc<dyn SyncFile>>> {
        Ok(self.inner.sync_handle()?.map(|inner| {
            Arc::new(FaultySync {
                inner,
                state: Arc::clone(&self.state),
            }) as Arc<dyn SyncFile>
        }))
    }
}

/// The sync handle of a [`FaultyAppend`]: dies with the disk and counts as a data sync.
#[derive(Debug)]
struct FaultySync {
    inner: Arc<dyn SyncFile>,
    state: Arc<FaultState>,
}

impl SyncFile for FaultySync {
    fn sync_data(&self) -> io::Result<()> {
        self.state.check_alive()?;
        self.state.data_syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
}

impl Disk for FaultyDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list_dir(dir)
    }

    fn info(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        self.inner.info(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.state.check_alive()?;
        Ok(Box::new(FaultyAppend {
            inner: self.inner.open_append(path)?,
            state: Arc::clone(&self.state),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.inner.open_read(path)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.state.check_write()?;
        self.inner.write_file(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.remove_dir_all(path)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.sync_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.sync_dir(dir)
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        self.state.check_alive()?;
        self.inner.sync_filesystem(path)
    }
}
