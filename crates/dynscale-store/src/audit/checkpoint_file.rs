//! Checkpoint files: every signed checkpoint as `checkpoints/<size, 20 digits>` and the
//! latest as `checkpoint`, each replaced atomically, and finding the latest at open.

use std::io;
use std::path::{Path, PathBuf};

use dynscale_core::merkle::{Checkpoint, CheckpointError, NoteError};

use super::disk::{Disk, replace_file};
use super::error::AuditError;

/// Directory of every checkpoint, inside the audit directory.
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
/// The latest checkpoint, inside the audit directory.
pub(crate) const LATEST: &str = "checkpoint";
/// Temporary files for atomic replacement, inside the audit directory.
pub(crate) const TMP_DIR: &str = "tmp";

/// The file name of the checkpoint at `size`.
pub(crate) fn file_name(size: u64) -> String {
    format!("{size:020}")
}

/// Parses a checkpoints-directory name back to its size.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The checkpoint body of a signed note, without checking its signature: the text
/// before the blank line that separates the signatures.
pub(crate) fn parse_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
    let end = note
        .find("\n\n")
        .ok_or(CheckpointError::Note(NoteError::NoSignatures))?;
    Checkpoint::parse_body(&note[..=end])
}

/// A checkpoint as read from disk.
#[derive(Debug, Clone)]
pub(crate) struct StoredCheckpoint {
    pub(crate) path: PathBuf,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) note: String,
}

fn read(disk: &dyn Disk, path: &Path) -> Result<Option<StoredCheckpoint>, AuditError> {
    let file = match disk.open_read(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(AuditError::io("read", path, error)),
    };
    let len = file.size().map_err(|e| AuditError::io("read", path, e))?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    super::disk::read_exact_at(&*file, &mut bytes, 0)
        .map_err(|e| AuditError::io("read", path, e))?;
    let note = String::from_utf8(bytes).map_err(|error| AuditError::Checkpoint {
        path: path.to_path_buf(),
        source: CheckpointError::Note(NoteError::NotUtf8 {
            valid_up_to: error.utf8_error().valid_up_to(),
        }),
    })?;
    let checkpoint = parse_unverified(&note).map_err(|source| AuditError::Checkpoint {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(StoredCheckpoint {
        path: path.to_path_buf(),
        checkpoint,
        note,
    }))
}

/// The latest checkpoint: the larger of `checkpoint` and the highest in `checkpoints/`
/// (they differ only after a crash between writing the one and the other).
pub(crate) fn latest(disk: &dyn Disk, dir: &Path) -> Result<Option<StoredCheckpoint>, AuditError> {
    let from_latest = read(disk, &dir.join(LATEST))?;
    let listing = dir.join(CHECKPOINTS_DIR);
    let highest = match disk.list_dir(&listing) {
        Ok(entries) => entries
            .iter()
            .filter_map(|entry| parse_file_name(&entry.name))
            .max(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(AuditError::io("list", listing, error)),
    };
    let from_dir = match highest {
        Some(size)
            if from_latest
                .as_ref()
                .is_none_or(|l| l.checkpoint.size() < size) =>
        {
            read(disk, &listing.join(file_name(size)))?
        }
        _ => None,
    };
    Ok(from_dir.or(from_latest))
}

/// Writes a signed checkpoint as `checkpoints/<size>` and then `checkpoint`, each
/// atomically and durably. Returns the bytes added to the directory.
pub(crate) fn write(disk: &dyn Disk, dir: &Path, size: u64, note: &str) -> io::Result<u64> {
    let tmp = dir.join(TMP_DIR);
    let name = file_name(size);
    replace_file(
        disk,
        &tmp.join(format!("{name}.tmp")),
        &dir.join(CHECKPOINTS_DIR).join(&name),
        note.as_bytes(),
    )?;
    replace_file(
        disk,
        &tmp.join("checkpoint.tmp"),
        &dir.join(LATEST),
        note.as_bytes(),
    )?;
    Ok(note.len() as u64)
}
