//! Opening the log: check the segments follow each other, load or rebuild their key
//! indexes, cut a torn tail off the last segment, rebuild the tree from trusted tiles
//! and the segments, check it against the latest checkpoint, and remove stale tiles.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use dynscale_core::merkle::{MAX_TILE_LEVEL, TILE_HEIGHT, TILE_WIDTH, Tile, leaf_hash, tree_hash};

use super::checkpoint_file::{self, CHECKPOINTS_DIR, StoredCheckpoint, TMP_DIR};
use super::disk::{Disk, replace_file};
use super::error::AuditError;
use super::frame::{FrameFormat, SEGMENT_MAGIC};
use super::key_index;
use super::log::{KeyMap, Keys, SegmentEntry, tree_error};
use super::segment::{self, SEGMENTS_DIR, SegmentFile, SegmentView, entry_key, open_frames};
use super::tiles::{TILE_DIR, TileHashes, TreeState, write_tile};
use super::writer::WriterStart;
use super::{AuditConfig, Recovery};

/// Everything the log starts from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) recovery: Recovery,
    pub(crate) tree: TreeState,
    pub(crate) segments: Vec<SegmentEntry>,
    pub(crate) latest: Option<StoredCheckpoint>,
    pub(crate) used_bytes: u64,
    pub(crate) writer: WriterStart,
}

#[derive(Debug, Default)]
struct Parts {
    log: Option<u64>,
    zst: bool,
    idx: bool,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |e| AuditError::io(op, path, e)
}

pub(crate) fn recover(disk: &dyn Disk, config: &AuditConfig) -> Result<Recovered, AuditError> {
    let dir = &config.dir;
    for sub in [SEGMENTS_DIR, TILE_DIR, CHECKPOINTS_DIR, TMP_DIR] {
        let path = dir.join(sub);
        disk.create_dir_all(&path)
            .map_err(io_error("create", &path))?;
    }
    clear_tmp(disk, &dir.join(TMP_DIR))?;
    let latest = checkpoint_file::latest(disk, dir)?;
    // Everything below the latest checkpoint was synced before it was signed.
    let durable = latest.as_ref().map_or(0, |c| c.checkpoint.size());

    let segments_dir = dir.join(SEGMENTS_DIR);
    let mut listing = list_segments(disk, &segments_dir)?;
    if listing.is_empty() {
        listing.insert(0, Parts::default());
    }
    let count = listing.len();
    let mut segments = Vec::with_capacity(count + 1);
    let mut pending_idx = Vec::new();
    let mut truncated_bytes = 0;
    let mut active: Option<(Box<dyn super::disk::AppendFile>, PathBuf)> = None;
    let mut active_format = FrameFormat::V2;
    let mut expected = 0;
    for (position, (first, parts)) in listing.into_iter().enumerate() {
        let compressed = parts.log.is_none() && parts.zst;
        let kind = if compressed {
            SegmentFile::Zst
        } else {
            SegmentFile::Log
        };
        let path = segments_dir.join(segment::file_name(first, kind));
        if first != expected {
            return Err(AuditError::SegmentGap {
                segment: path,
                expected,
                found: first,
            });
        }
        let is_last = position + 1 == count;
        let entry = if is_last && !compressed {
            let (entry, cut, file, format) = open_active(disk, &path, first, parts.log, durable)?;
            truncated_bytes = cut;
            active_format = format;
            active = Some((file, path));
            entry
        } else {
            let (entry, idx_written) = load_sealed(disk, dir, &path, first, compressed, &parts)?;
            if !idx_written {
                pending_idx.push(first);
            }
            entry
        };
        expected = entry.view.end();
        segments.push(entry);
    }
    let total = expected;
    let (active, active_path) = match active {
        Some(active) => active,
        // The last segment is compressed (sealed): start a new one after it.
        None => {
            let path = segments_dir.join(segment::file_name(total, SegmentFile::Log));
            let file = segment::create(disk, &path).map_err(io_error("create", &path))?;
            disk.sync_dir(&segments_dir)
                .map_err(io_error("fsync directory", &segments_dir))?;
            active_format = FrameFormat::V2;
            segments.push(SegmentEntry {
                view: SegmentView {
                    first: total,
                    count: 0,
                    len: FrameFormat::V2.header_len(),
                    compressed: false,
                    offsets: Arc::new(Vec::new()),
                },
                keys: Keys::Memory(KeyMap::default()),
            });
            (file, path)
        }
    };
    if let Some(latest) = &latest
        && latest.checkpoint.size() > total
    {
        return Err(AuditError::CheckpointAhead {
            checkpoint: latest.path.clone(),
            size: latest.checkpoint.size(),
            entries: total,
        });
    }

    let mut unsynced_tiles = Vec::new();
    let tree = rebuild_tree(disk, dir, &segments, durable, &mut unsynced_tiles)?;
    let tree = match &latest {
        Some(latest) => check_root(disk, dir, tree, latest)?,
        None => tree,
    };
    finish(
        disk,
        dir,
        tree,
        segments,
        latest,
        truncated_bytes,
        WriterStart {
            active,
            active_path,
            active_first: 0,
            active_len: 0,
            active_format,
            next: total,
            unsynced_tiles,
            partial_written: BTreeMap::new(),
            pending_idx,
        },
    )
}

/// The latest checkpoint must sign the tree the log holds: otherwise the segments were
/// replaced or damaged below it, and continuing would sign a fork.
fn check_root(
    disk: &dyn Disk,
    dir: &Path,
    tree: TreeState,
    latest: &StoredCheckpoint,
) -> Result<TreeState, AuditError> {
    let size = latest.checkpoint.size();
    let lock = RwLock::new(tree);
    let computed = tree_hash(size, &TileHashes::new(disk, dir, &lock)).map_err(tree_error)?;
    if computed != latest.checkpoint.root() {
        return Err(AuditError::CheckpointMismatch {
            checkpoint: latest.path.clone(),
            size,
            signed: latest.checkpoint.root(),
            computed,
        });
    }
    Ok(lock.into_inner().unwrap_or_else(PoisonError::into_inner))
}

/// The last steps: stale tiles, accounting, the active
/// segment's position.
fn finish(
    disk: &dyn Disk,
    dir: &Path,
    tree: TreeState,
    segments: Vec<SegmentEntry>,
    latest: Option<StoredCheckpoint>,
    truncated_bytes: u64,
    mut writer: WriterStart,
) -> Result<Recovered, AuditError> {
    let total = writer.next;
    writer.partial_written = remove_stale_tiles(disk, dir, total)?;
    if let Some(active) = segments.last() {
        writer.active_first = active.view.first;
        writer.active_len = active.view.len;
    }
    let used_bytes = dir_bytes(disk, dir).map_err(io_error("measure", dir))?;
    Ok(Recovered {
        recovery: Recovery {
            entries: total,
            truncated_bytes,
            segments: segments.len(),
        },
        tree,
        segments,
        latest,
        used_bytes,
        writer,
    })
}

fn clear_tmp(disk: &dyn Disk, tmp: &Path) -> Result<(), AuditError> {
    for entry in disk.list_dir(tmp).map_err(io_error("list", tmp))? {
        let path = tmp.join(&entry.name);
        let removed = if entry.is_dir {
            disk.remove_dir_all(&path)
        } else {
            disk.remove_file(&path)
        };
        removed.map_err(io_error("remove", &path))?;
    }
    Ok(())
}

/// The segment files by first index. A segment present both plain and compressed (a
/// crash during compression) keeps the plain file; an index without a segment goes.
fn list_segments(disk: &dyn Disk, segments_dir: &Path) -> Result<BTreeMap<u64, Parts>, AuditError> {
    let mut listing: BTreeMap<u64, Parts> = BTreeMap::new();
    for entry in disk
        .list_dir(segments_dir)
        .map_err(io_error("list", segments_dir))?
    {
        match segment::parse_file_name(&entry.name) {
            Some((first, SegmentFile::Log)) => {
                listing.entry(first).or_default().log = Some(entry.len)
            }
            Some((first, SegmentFile::Zst)) => listing.entry(first).or_default().zst = true,
            Some((first, SegmentFile::Idx)) => listing.entry(first).or_default().idx = true,
            None => {
                tracing::warn!(file = %entry.name, "audit log: ignoring an unknown file in segments/")
            }
        }
    }
    let mut remove = Vec::new();
    for (first, parts) in &mut listing {
        if parts.log.is_some() && parts.zst {
            remove.push(segment::file_name(*first, SegmentFile::Zst));
            parts.zst = false;
        }
        if parts.log.is_none() && !parts.zst {
            remove.push(segment::file_name(*first, SegmentFile::Idx));
        }
    }
    for name in remove {
        let path = segments_dir.join(name);
        disk.remove_file(&path).map_err(io_error("remove", &path))?;
    }
    listing.retain(|_, parts| parts.log.is_some() || parts.zst);
    Ok(listing)
}

/// A sealed segment: from its key index file, or rebuilt by scanning it (any bad frame
/// is corruption: sealed segments were synced). Returns whether the index is on disk.
fn load_sealed(
    disk: &dyn Disk,
    dir: &Path,
    path: &Path,
    first: u64,
    compressed: bool,
    parts: &Parts,
) -> Result<(SegmentEntry, bool), AuditError> {
    let idx_path = dir
        .join(SEGMENTS_DIR)
        .join(segment::file_name(first, SegmentFile::Idx));
    if parts.idx
        && let Some(summary) =
            key_index::load(disk, &idx_path).map_err(io_error("read", &idx_path))?
        && summary.first == first
        && (compressed || parts.log == Some(summary.segment_len))
    {
        let view = SegmentView {
            first,
            count: summary.count,
            len: summary.segment_len,
            compressed,
            offsets: Arc::new(summary.offsets.clone()),
        };
        return Ok((
            SegmentEntry {
                view,
                keys: Keys::File(Arc::new(summary)),
            },
            true,
        ));
    }
    let mut keys = KeyMap::default();
    let scan = segment::scan(disk, path, first, compressed, |index, entry| {
        if let Some(key) = entry_key(entry) {
            keys.entry(key).or_insert(index);
        }
    })?;
    if let Some((offset, problem)) = scan.bad {
        return Err(AuditError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            index: first + scan.count,
            problem,
        });
    }
    let bytes = key_index::encode(
        first,
        scan.count,
        scan.len,
        &scan.offsets,
        keys.iter().map(|(k, i)| (*k, *i)).collect(),
    );
    let view = SegmentView {
        first,
        count: scan.count,
        len: scan.len,
        compressed,
        offsets: Arc::new(scan.offsets),
    };
    let tmp = dir.join(TMP_DIR).join(format!(
        "{}.tmp",
        segment::file_name(first, SegmentFile::Idx)
    ));
    let written =
        replace_file(disk, &tmp, &idx_path, &bytes).and_then(|()| key_index::load(disk, &idx_path));
    match written {
        Ok(Some(summary)) => Ok((
            SegmentEntry {
                view,
                keys: Keys::File(Arc::new(summary)),
            },
            true,
        )),
        other => {
            if let Err(error) = other {
                tracing::warn!(%error, segment = first, "audit log: rebuilding a key index failed; keys stay in memory");
            }
            Ok((
                SegmentEntry {
                    view,
                    keys: Keys::Memory(keys),
                },
                false,
            ))
        }
    }
}

/// The last segment: scanned whole; a bad frame at or above the durable size is a torn
/// tail and is cut off, below it is corruption. A segment without a whole frame starts
/// over in the current format (its header rewritten: a crash may have torn it). Returns
/// the entry, the bytes cut, the file open for appending and its frame format.
fn open_active(
    disk: &dyn Disk,
    path: &Path,
    first: u64,
    file_len: Option<u64>,
    durable: u64,
) -> Result<
    (
        SegmentEntry,
        u64,
        Box<dyn super::disk::AppendFile>,
        FrameFormat,
    ),
    AuditError,
> {
    let mut file = disk.open_append(path).map_err(io_error("open", path))?;
    let mut keys = KeyMap::default();
    let scan = segment::scan(disk, path, first, false, |index, entry| {
        if let Some(key) = entry_key(entry) {
            keys.entry(key).or_insert(index);
        }
    })?;
    let mut cut = 0;
    if let Some((offset, problem)) = scan.bad {
        let index = first + scan.count;
        if index < durable {
            return Err(AuditError::Corrupt {
                segment: path.to_path_buf(),
                offset,
                index,
                problem,
            });
        }
        let len = match file_len {
            Some(len) => len,
            None => disk
                .info(path)
                .map_err(io_error("stat", path))?
                .map_or(scan.len, |info| info.len),
        };
        cut = len.saturating_sub(scan.len);
        tracing::warn!(
            segment = %path.display(),
            offset,
            entry = index,
            %problem,
            bytes = cut,
            "audit log: cutting a torn tail"
        );
        file.truncate(scan.len)
            .map_err(io_error("truncate", path))?;
        file.sync_data().map_err(io_error("fsync", path))?;
    }
    let mut format = scan.format.unwrap_or(FrameFormat::V1);
    let mut len = scan.len;
    if scan.count == 0 && format != FrameFormat::V2 {
        // Empty, or a header torn at creation (cut above as a bad frame): nothing in
        // it was ever acknowledged.
        file.truncate(0).map_err(io_error("truncate", path))?;
        file.append(SEGMENT_MAGIC)
            .map_err(io_error("write segment header", path))?;
        file.sync_data().map_err(io_error("fsync", path))?;
        format = FrameFormat::V2;
        len = format.header_len();
    }
    let view = SegmentView {
        first,
        count: scan.count,
        len,
        compressed: false,
        offsets: Arc::new(scan.offsets),
    };
    Ok((
        SegmentEntry {
            view,
            keys: Keys::Memory(keys),
        },
        cut,
        file,
        format,
    ))
}

/// The tree over all `total` entries. Full tiles below the durable size (a multiple of
/// 256 at or below the latest checkpoint) were synced before that checkpoint and are
/// trusted; everything above is rehashed from the segments and its tiles rewritten.
fn rebuild_tree(
    disk: &dyn Disk,
    dir: &Path,
    segments: &[SegmentEntry],
    durable: u64,
    unsynced_tiles: &mut Vec<PathBuf>,
) -> Result<TreeState, AuditError> {
    let width = u64::from(TILE_WIDTH);
    let mut start = durable - durable % width;
    let mut tree = match TreeState::from_tiles(disk, dir, start) {
        Ok(tree) => tree,
        Err(error) => {
            tracing::warn!(%error, "audit log: tiles below the checkpoint are unreadable; rehashing every entry");
            start = 0;
            TreeState::new()
        }
    };
    for segment in segments {
        let view = &segment.view;
        if view.end() <= start || view.count == 0 {
            continue;
        }
        let from = start.max(view.first);
        let mut frames = open_frames(disk, dir, view, from)?;
        let path = view.path(dir);
        let mut entry = Vec::new();
        for index in from..view.end() {
            let found = frames
                .next_into(&mut entry)
                .map_err(|e| segment::frame_error(e, &path, index))?;
            if found.is_none() {
                return Err(AuditError::Corrupt {
                    segment: path,
                    offset: frames.offset(),
                    index,
                    problem: super::error::FrameProblem::Truncated { missing: 0 },
                });
            }
            tree.push_leaf(leaf_hash(&entry));
            if (index + 1).is_multiple_of(width) {
                for (tile, bytes) in tree.full_tiles() {
                    match write_tile(disk, dir, &tile, &bytes) {
                        Ok(path) => {
                            unsynced_tiles.push(path);
                            tree.tile_written(&tile);
                        }
                        // Derived data: it stays in memory and the writer retries.
                        Err(error) => {
                            tracing::warn!(%error, "audit log: writing a tile at open failed");
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(tree)
}

/// Removes tiles that cover entries beyond the log (left by entries lost in a crash
/// before they were synced), and partial tiles wider than the log. Returns the tiles
/// that keep a `.p` directory.
fn remove_stale_tiles(
    disk: &dyn Disk,
    dir: &Path,
    total: u64,
) -> Result<BTreeMap<(u8, u64), u64>, AuditError> {
    let mut partial = BTreeMap::new();
    let width = u64::from(TILE_WIDTH);
    for level in 0..=MAX_TILE_LEVEL {
        let hashes = total
            .checked_shr(u32::from(TILE_HEIGHT) * u32::from(level))
            .unwrap_or(0);
        let full = hashes / width;
        let partial_width = hashes % width;
        let mut index = full;
        while let (Ok(tile), Ok(one)) = (
            Tile::new(level, index, TILE_WIDTH),
            Tile::new(level, index, 1),
        ) {
            let full_path = dir.join(tile.path());
            let full_exists = disk
                .info(&full_path)
                .map_err(io_error("stat", &full_path))?
                .is_some();
            if full_exists {
                disk.remove_file(&full_path)
                    .map_err(io_error("remove", &full_path))?;
            }
            let partial_dir = dir
                .join(one.path())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let partial_exists = disk
                .info(&partial_dir)
                .map_err(io_error("stat", &partial_dir))?
                .is_some();
            if partial_exists {
                if index == full && partial_width > 0 {
                    let mut kept = 0;
                    for entry in disk
                        .list_dir(&partial_dir)
                        .map_err(io_error("list", &partial_dir))?
                    {
                        let keep = entry
                            .name
                            .parse::<u64>()
                            .is_ok_and(|w| w <= partial_width && !entry.is_dir);
                        if keep {
                            kept += entry.len;
                        } else {
                            let path = partial_dir.join(&entry.name);
                            let removed = if entry.is_dir {
                                disk.remove_dir_all(&path)
                            } else {
                                disk.remove_file(&path)
                            };
                            removed.map_err(io_error("remove", &path))?;
                        }
                    }
                    partial.insert((level, index), kept);
                } else {
                    disk.remove_dir_all(&partial_dir)
                        .map_err(io_error("remove", &partial_dir))?;
                }
            }
            if !full_exists && !partial_exists && index > full {
                break;
            }
            index += 1;
        }
    }
    Ok(partial)
}

/// Bytes of every file under `dir`.
fn dir_bytes(disk: &dyn Disk, dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in disk.list_dir(&current)? {
            if entry.is_dir {
                stack.push(current.join(&entry.name));
            } else {
                total += entry.len;
            }
        }
    }
    Ok(total)
}
