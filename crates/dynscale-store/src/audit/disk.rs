//! The narrow file-system seam of the audit log: every byte it reads or writes goes
//! through [`Disk`], so tests can swap in a disk that fills up, tears a write or dies.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// A directory entry as the audit log needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The file name (not the path).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Its length in bytes (0 for directories).
    pub len: u64,
}

/// What the audit log asks of a file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Length in bytes.
    pub len: u64,
    /// Last modification time: the age of a sealed segment, for compression.
    pub modified: SystemTime,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// The file operations of the audit log. Paths are absolute or relative to the process;
/// the log never holds a path outside its directory.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Lists a directory; a missing directory is an error of kind `NotFound`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Metadata of a path, `None` when nothing is there.
    fn info(&self, path: &Path) -> io::Result<Option<FileInfo>>;
    /// Opens a file for appending, creating it if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Opens a file for positional reads.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Creates or replaces a file with `bytes` (not synced; see [`Disk::sync_file`]).
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes a closed file's contents durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything written on the file system holding `path` durable in one call
    /// (`syncfs`). Returns `Unsupported` where there is no such call; the caller then
    /// syncs file by file.
    fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
}

/// A file open for appending: the active segment, or a file being compressed.
pub trait AppendFile: Send + fmt::Debug {
    /// Writes all of `bytes` at the end. On error some prefix may have been written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends go after them.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// A second handle that syncs this file from another thread while this one keeps
    /// appending, so in `batch` and `async` mode the log writes the next group during
    /// an fsync. `None` (the default) makes the log sync on its writer thread, as it
    /// always does in `sync` mode.
    fn sync_handle(&self) -> io::Result<Option<Arc<dyn SyncFile>>> {
        Ok(None)
    }
}

/// A handle that only syncs a file open for appending (see [`AppendFile::sync_handle`]).
pub trait SyncFile: Send + Sync + fmt::Debug {
    /// Makes the data appended before the call durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// A file open for positional reads.
pub trait ReadFile: Send + Sync + fmt::Debug {
    /// Reads at `offset` into `buf`, returning how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The file's current length in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsDisk;

#[derive(Debug)]
struct FsAppend {
    file: File,
}

#[derive(Debug)]
struct FsRead {
    file: File,
}

impl Disk for FsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            // Names that are not UTF-8 are not ours; they are reported with a lossy name
            // so that the caller can still complain about them.
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                len: if meta.is_dir() { 0 } else { meta.len() },
            });
        }
        Ok(entries)
    }

    fn info(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(FileInfo {
                len: meta.len(),
                modified: meta.modified()?,
                is_dir: meta.is_dir(),
            })),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(FsAppend { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(FsRead {
            file: File::open(path)?,
        }))
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::write(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        // fsync through a read-only handle is allowed on Linux and the BSDs; Windows
        // needs write access to flush.
        #[cfg(unix)]
        let file = File::open(path)?;
        #[cfg(not(unix))]
        let file = OpenOptions::new().write(true).open(path)?;
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // A directory's entries are made durable by fsyncing the directory itself on
        // Unix; Windows has no such handle and commits renames with the file.
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let file = File::open(path)?;
            rustix::fs::syncfs(&file).map_err(io::Error::from)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
}

impl AppendFile for FsAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is in append mode, so the next write goes to the new end.
        self.file.set_len(len)
    }

    fn sync_handle(&self) -> io::Result<Option<Arc<dyn SyncFile>>> {
        Ok(Some(Arc::new(FsSync {
            file: self.file.try_clone()?,
        })))
    }
}

/// A duplicate descriptor of an append file: `fdatasync` on it syncs the same file.
#[derive(Debug)]
struct FsSync {
    file: File,
}

impl SyncFile for FsSync {
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl ReadFile for FsRead {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
        }
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &dyn ReadFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        done += n;
    }
    Ok(())
}

/// An `io::Read` over a [`ReadFile`] from a starting offset, for streaming readers.
#[derive(Debug)]
pub(crate) struct ReadCursor {
    file: Box<dyn ReadFile>,
    offset: u64,
}

impl ReadCursor {
    pub(crate) fn new(file: Box<dyn ReadFile>, offset: u64) -> Self {
        Self { file, offset }
    }
}

impl io::Read for ReadCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// An `io::Write` over an [`AppendFile`], for the zstd encoder.
#[derive(Debug)]
pub(crate) struct AppendWriter(pub(crate) Box<dyn AppendFile>);

impl io::Write for AppendWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether an error means "no space" (disk full or quota exceeded) rather than a fault.
pub(crate) fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Replaces `path` so that it is either the old file or the whole new one, durably:
/// write `tmp` (in the same file system), fsync it, rename it over `path`, fsync the
/// target directory.
pub(crate) fn replace_file(
    disk: &dyn Disk,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    disk.write_file(tmp, bytes)?;
    disk.sync_file(tmp)?;
    disk.rename(tmp, path)?;
    if let Some(parent) = path.parent() {
        disk.sync_dir(parent)?;
    }
    Ok(())
}
