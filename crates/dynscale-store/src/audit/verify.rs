//! Offline verification of a whole audit directory, read-only: every frame's CRC, every
//! leaf and stored hash recomputed from the entries and compared with every tile file
//! byte for byte, every key index rebuilt and compared, every checkpoint's signature,
//! its root against the recomputed tree, and consistency between successive ones.
//!
//! The entries are streamed once; memory holds the tree's right edge and partial tile
//! rows, and the keys of one segment at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use dynscale_core::merkle::{
    Checkpoint, HASH_SIZE, Hash, TILE_HEIGHT, TILE_WIDTH, Tile, TileResource, Verifier, empty_root,
    leaf_hash, open_checkpoint, parse_tile_path, prove_consistency, verify_consistency,
};

use super::checkpoint_file::{self, CHECKPOINTS_DIR, LATEST};
use super::disk::{Disk, FsDisk};
use super::error::VerifyError;
use super::export;
use super::frame::FrameError;
use super::key_index;
use super::segment::{self, OFFSET_STRIDE, SEGMENTS_DIR, SegmentFile, entry_key, open_frames_at};
use super::tiles::{TILE_DIR, TileHashes, TreeState, parse_hashes};

/// What a successful verification checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the log, each CRC-checked and hashed.
    pub entries: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes of frames read (uncompressed).
    pub bytes: u64,
    /// The tree hash over all entries.
    pub root: Hash,
    /// Tile files compared byte for byte.
    pub tiles: u64,
    /// Key index files compared.
    pub key_indexes: usize,
    /// Checkpoint files whose signature (when a verifier is given) and root were checked.
    pub checkpoints: usize,
    /// Size of the latest checkpoint.
    pub latest_checkpoint: Option<u64>,
    /// Bytes after the last whole entry of the last segment, above the latest checkpoint:
    /// a torn tail from a crash, which the next open cuts off.
    pub torn_tail_bytes: u64,
    /// Tile files above the latest checkpoint that cover entries the log no longer has
    /// or that do not match (written before a crash, not yet synced); the next open
    /// rewrites or removes them.
    pub stale_tiles: u64,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} entries in {} segments ({} bytes), root {}, {} tiles and {} key indexes match, {} checkpoints",
            self.entries,
            self.segments,
            self.bytes,
            self.root,
            self.tiles,
            self.key_indexes,
            self.checkpoints
        )?;
        if let Some(size) = self.latest_checkpoint {
            write!(f, " (latest at size {size})")?;
        }
        if self.torn_tail_bytes > 0 {
            write!(
                f,
                "; a torn tail of {} bytes will be cut at the next open",
                self.torn_tail_bytes
            )?;
        }
        if self.stale_tiles > 0 {
            write!(
                f,
                "; {} stale tiles above the latest checkpoint will be rewritten",
                self.stale_tiles
            )?;
        }
        Ok(())
    }
}

/// A checkpoint file to check.
#[derive(Debug)]
struct CheckpointFile {
    path: PathBuf,
    checkpoint: Checkpoint,
}

/// Something to check when the stream reaches a tree size.
#[derive(Debug)]
enum Event {
    Partial { tile: Tile, path: PathBuf },
    Checkpoint(usize),
}

/// Checks the audit directory `dir`; with a `verifier`, every checkpoint's signature too.
pub fn verify_dir(dir: &Path, verifier: Option<&Verifier>) -> Result<VerifyReport, VerifyError> {
    let disk = FsDisk;
    let checkpoints = read_checkpoints(&disk, dir, verifier)?;
    let latest = checkpoints.iter().map(|c| c.checkpoint.size()).max();
    let strict_upto = latest.unwrap_or(0);
    let (mut full_tiles, partial_tiles) = list_tiles(&disk, dir)?;
    let segments = list_segment_files(&disk, dir)?;

    let mut events: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    for (i, checkpoint) in checkpoints.iter().enumerate() {
        events
            .entry(checkpoint.checkpoint.size())
            .or_default()
            .push(Event::Checkpoint(i));
    }
    for (tile, path) in partial_tiles {
        events
            .entry(tile.leaf_range().end)
            .or_default()
            .push(Event::Partial { tile, path });
    }

    let mut run = Run {
        disk: &disk,
        dir,
        tree: TreeState::new(),
        full_tiles: &mut full_tiles,
        strict_upto,
        tiles: 0,
        stale: 0,
        previous: None,
        checkpoints: &checkpoints,
    };
    run.events_at(0, &mut events)?;
    let mut report = VerifyReport {
        entries: 0,
        segments: segments.len(),
        bytes: 0,
        root: empty_root(),
        tiles: 0,
        key_indexes: 0,
        checkpoints: checkpoints.len(),
        latest_checkpoint: latest,
        torn_tail_bytes: 0,
        stale_tiles: 0,
    };
    let mut index = 0u64;
    let count = segments.len();
    let mut entry = Vec::new();
    for (position, (first, path, compressed)) in segments.into_iter().enumerate() {
        if first != index {
            return Err(VerifyError::SegmentGap {
                segment: path,
                expected: index,
                found: first,
            });
        }
        let is_last = position + 1 == count;
        let mut frames = open_frames_at(&disk, &path, compressed, 0, None)
            .map_err(|source| read_error(&path, source))?;
        let mut keys: HashMap<[u8; 16], u64> = HashMap::new();
        let mut offsets = Vec::new();
        loop {
            match frames.next_into(&mut entry) {
                Ok(Some(offset)) => {
                    if (index - first).is_multiple_of(OFFSET_STRIDE) {
                        offsets.push(offset);
                    }
                    if let Some(key) = entry_key(&entry) {
                        keys.entry(key).or_insert(index);
                    }
                    run.tree.push_leaf(leaf_hash(&entry));
                    index += 1;
                    if index.is_multiple_of(u64::from(TILE_WIDTH)) {
                        run.compare_full_tiles()?;
                    }
                    run.events_at(index, &mut events)?;
                }
                Ok(None) => break,
                Err(FrameError::Bad { offset, .. })
                    if is_last && !compressed && index >= strict_upto =>
                {
                    let len = disk
                        .info(&path)
                        .map_err(|source| read_error(&path, source))?
                        .map_or(offset, |info| info.len);
                    report.torn_tail_bytes = len.saturating_sub(offset);
                    break;
                }
                Err(FrameError::Bad { offset, problem }) => {
                    return Err(VerifyError::Entry {
                        index,
                        segment: path,
                        offset,
                        problem,
                    });
                }
                Err(FrameError::Io(source)) => return Err(read_error(&path, source)),
            }
        }
        report.bytes += frames.offset();
        let idx_path = dir
            .join(SEGMENTS_DIR)
            .join(segment::file_name(first, SegmentFile::Idx));
        if disk
            .info(&idx_path)
            .map_err(|source| read_error(&idx_path, source))?
            .is_some()
        {
            let found = std::fs::read(&idx_path).map_err(|source| read_error(&idx_path, source))?;
            let expected = key_index::encode_like(
                &found,
                first,
                index - first,
                frames.offset(),
                &offsets,
                keys.into_iter().collect(),
            );
            if let Some(offset) = first_difference(&expected, &found) {
                return Err(VerifyError::KeyIndex {
                    path: idx_path,
                    offset,
                });
            }
            report.key_indexes += 1;
        }
    }
    // Whatever is still due lies beyond the log.
    for (size, due) in events {
        for event in due {
            match event {
                Event::Checkpoint(i) => {
                    return Err(VerifyError::CheckpointBeyondLog {
                        path: checkpoints[i].path.clone(),
                        size,
                        entries: index,
                    });
                }
                Event::Partial { .. } if size > strict_upto => run.stale += 1,
                Event::Partial { path, .. } => {
                    return Err(VerifyError::TileBeyondLog {
                        path,
                        entries: index,
                    });
                }
            }
        }
    }
    // Full tiles the stream never reached lie beyond the log too.
    for (&(level, n), path) in run.full_tiles.iter() {
        let start = (n * u64::from(TILE_WIDTH)) << (u32::from(TILE_HEIGHT) * u32::from(level));
        if start < strict_upto {
            return Err(VerifyError::TileBeyondLog {
                path: path.clone(),
                entries: index,
            });
        }
        run.stale += 1;
    }
    report.entries = index;
    report.root = run.tree.root();
    report.tiles = run.tiles;
    report.stale_tiles = run.stale;
    Ok(report)
}

fn read_error(path: &Path, source: io::Error) -> VerifyError {
    VerifyError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    }
}

fn first_difference(expected: &[u8], found: &[u8]) -> Option<u64> {
    let common = expected
        .iter()
        .zip(found)
        .position(|(a, b)| a != b)
        .or_else(|| (expected.len() != found.len()).then(|| expected.len().min(found.len())))?;
    Some(common as u64)
}

/// The streaming state.
struct Run<'a> {
    disk: &'a FsDisk,
    dir: &'a Path,
    tree: TreeState,
    /// Full tile files not yet compared, by (level, index), with their paths.
    full_tiles: &'a mut BTreeMap<(u8, u64), PathBuf>,
    /// Tiles covering entries below this (the latest checkpoint) must be present and
    /// exact; above it they may be missing or stale after a crash.
    strict_upto: u64,
    tiles: u64,
    stale: u64,
    previous: Option<usize>,
    checkpoints: &'a [CheckpointFile],
}

impl Run<'_> {
    /// Compares every tile just completed with its file, then drops it from memory.
    fn compare_full_tiles(&mut self) -> Result<(), VerifyError> {
        for (tile, bytes) in self.tree.full_tiles() {
            let completed_at = tile.leaf_range().end;
            let strict = completed_at <= self.strict_upto;
            match self.full_tiles.remove(&(tile.level(), tile.index())) {
                Some(path) => {
                    let found = std::fs::read(&path).map_err(|source| read_error(&path, source))?;
                    match compare_tile(&tile, &path, &bytes, &found) {
                        Ok(()) => self.tiles += 1,
                        Err(_) if !strict => self.stale += 1,
                        Err(error) => return Err(error),
                    }
                }
                None if strict => {
                    return Err(VerifyError::TileMissing {
                        path: self.dir.join(tile.path()),
                        size: self.strict_upto,
                    });
                }
                None => {}
            }
            self.tree.tile_written(&tile);
        }
        Ok(())
    }

    /// Runs the checks due at tree size `size`.
    fn events_at(
        &mut self,
        size: u64,
        events: &mut BTreeMap<u64, Vec<Event>>,
    ) -> Result<(), VerifyError> {
        if events.keys().next() != Some(&size) {
            return Ok(());
        }
        let Some(due) = events.remove(&size) else {
            return Ok(());
        };
        for event in due {
            match event {
                Event::Partial { tile, path } => self.compare_partial(&tile, &path)?,
                Event::Checkpoint(i) => self.check_checkpoint(i)?,
            }
        }
        Ok(())
    }

    fn compare_partial(&mut self, tile: &Tile, path: &Path) -> Result<(), VerifyError> {
        let strict = tile.leaf_range().end <= self.strict_upto;
        let expected = self
            .tree
            .partial_tiles()
            .into_iter()
            .find(|(t, _)| t.level() == tile.level() && t.index() == tile.index());
        let found = std::fs::read(path).map_err(|source| read_error(path, source))?;
        let result = match expected {
            Some((_, bytes)) => compare_tile(tile, path, &bytes, &found),
            None => Err(VerifyError::TileBeyondLog {
                path: path.to_path_buf(),
                entries: self.tree.size(),
            }),
        };
        match result {
            Ok(()) => self.tiles += 1,
            Err(_) if !strict => self.stale += 1,
            Err(error) => return Err(error),
        }
        Ok(())
    }

    fn check_checkpoint(&mut self, i: usize) -> Result<(), VerifyError> {
        let current = &self.checkpoints[i];
        let size = current.checkpoint.size();
        let computed = self.tree.root();
        if computed != current.checkpoint.root() {
            return Err(VerifyError::CheckpointRoot {
                path: current.path.clone(),
                size,
                signed: current.checkpoint.root(),
                computed,
            });
        }
        if let Some(previous) = self.previous.map(|p| &self.checkpoints[p]) {
            let old = previous.checkpoint.size();
            // Prove from the recomputed hashes (memory and the tiles already compared),
            // verify against the two signed roots.
            let lock = RwLock::new(mem::replace(&mut self.tree, TreeState::new()));
            let proof = prove_consistency(old, size, &TileHashes::new(self.disk, self.dir, &lock));
            self.tree = lock.into_inner().unwrap_or_else(PoisonError::into_inner);
            let proof = proof.map_err(|error| VerifyError::Io {
                op: "read tiles for a consistency proof",
                path: self.dir.join(TILE_DIR),
                source: io::Error::other(error.to_string()),
            })?;
            verify_consistency(
                old,
                size,
                &previous.checkpoint.root(),
                &current.checkpoint.root(),
                &proof,
            )
            .map_err(|source| VerifyError::Inconsistent {
                old: previous.path.clone(),
                new: current.path.clone(),
                source,
            })?;
        }
        self.previous = Some(i);
        Ok(())
    }
}

fn compare_tile(
    tile: &Tile,
    path: &Path,
    expected: &[u8],
    found: &[u8],
) -> Result<(), VerifyError> {
    if expected.len() != found.len() {
        return Err(VerifyError::TileLength {
            path: path.to_path_buf(),
            expected: expected.len() as u64,
            found: found.len() as u64,
        });
    }
    let Some(offset) = first_difference(expected, found) else {
        return Ok(());
    };
    let position = offset as usize / HASH_SIZE;
    let hash_at = |bytes: &[u8]| {
        parse_hashes(&bytes[position * HASH_SIZE..(position + 1) * HASH_SIZE])
            .first()
            .copied()
            .unwrap_or_default()
    };
    let first_hash = tile.index() * u64::from(TILE_WIDTH) + position as u64;
    Err(VerifyError::TileMismatch {
        path: path.to_path_buf(),
        position,
        first_entry: first_hash << (u32::from(TILE_HEIGHT) * u32::from(tile.level())),
        expected: hash_at(expected),
        found: hash_at(found),
    })
}

/// Every checkpoint file, opened (signature checked with a verifier) and sorted by
/// size; `checkpoint` (the latest) is checked like the others.
fn read_checkpoints(
    disk: &FsDisk,
    dir: &Path,
    verifier: Option<&Verifier>,
) -> Result<Vec<CheckpointFile>, VerifyError> {
    let mut files = Vec::new();
    let listing = dir.join(CHECKPOINTS_DIR);
    match disk.list_dir(&listing) {
        Ok(entries) => {
            for entry in entries {
                let path = listing.join(&entry.name);
                let Some(size) = checkpoint_file::parse_file_name(&entry.name) else {
                    return Err(VerifyError::UnexpectedFile { path });
                };
                let checkpoint = open_file(&path, verifier)?;
                if checkpoint.size() != size {
                    return Err(VerifyError::CheckpointName {
                        path,
                        size: checkpoint.size(),
                    });
                }
                files.push(CheckpointFile { path, checkpoint });
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(VerifyError::Io {
                op: "list",
                path: listing,
                source,
            });
        }
    }
    let latest = dir.join(LATEST);
    if latest.exists() {
        let checkpoint = open_file(&latest, verifier)?;
        files.push(CheckpointFile {
            path: latest,
            checkpoint,
        });
    }
    files.sort_by_key(|file| file.checkpoint.size());
    Ok(files)
}

fn open_file(path: &Path, verifier: Option<&Verifier>) -> Result<Checkpoint, VerifyError> {
    let note = std::fs::read(path).map_err(|source| read_error(path, source))?;
    let opened = match verifier {
        Some(verifier) => open_checkpoint(&note, verifier),
        None => match String::from_utf8(note) {
            Ok(text) => checkpoint_file::parse_unverified(&text),
            Err(error) => Err(dynscale_core::merkle::CheckpointError::Note(
                dynscale_core::merkle::NoteError::NotUtf8 {
                    valid_up_to: error.utf8_error().valid_up_to(),
                },
            )),
        },
    };
    opened.map_err(|source| VerifyError::Checkpoint {
        path: path.to_path_buf(),
        source,
    })
}

type FullTiles = BTreeMap<(u8, u64), PathBuf>;
type PartialTiles = Vec<(Tile, PathBuf)>;

/// Every file under `tile/`, parsed as a tlog-tiles path; anything else is reported.
fn list_tiles(disk: &FsDisk, dir: &Path) -> Result<(FullTiles, PartialTiles), VerifyError> {
    let mut full = BTreeMap::new();
    let mut partial = Vec::new();
    let mut stack = vec![PathBuf::from(TILE_DIR)];
    let mut seen = HashSet::new();
    while let Some(relative) = stack.pop() {
        let absolute = dir.join(&relative);
        let entries = match disk.list_dir(&absolute) {
            Ok(entries) => entries,
            Err(error)
                if error.kind() == io::ErrorKind::NotFound && relative.as_os_str() == TILE_DIR =>
            {
                continue;
            }
            Err(source) => {
                return Err(VerifyError::Io {
                    op: "list",
                    path: absolute,
                    source,
                });
            }
        };
        for entry in entries {
            let child = relative.join(&entry.name);
            if entry.is_dir {
                stack.push(child);
                continue;
            }
            let path = dir.join(&child);
            let text = child.to_string_lossy().replace('\\', "/");
            let tile = match parse_tile_path(&text) {
                Ok(TileResource::Hashes(tile)) if seen.insert(text.clone()) => tile,
                _ => return Err(VerifyError::UnexpectedFile { path }),
            };
            if entry.len != tile.byte_len() as u64 {
                return Err(VerifyError::TileLength {
                    path,
                    expected: tile.byte_len() as u64,
                    found: entry.len,
                });
            }
            if tile.is_full() {
                full.insert((tile.level(), tile.index()), path);
            } else {
                partial.push((tile, path));
            }
        }
    }
    Ok((full, partial))
}

/// The segment files in order; names the log does not write are reported.
fn list_segment_files(disk: &FsDisk, dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, VerifyError> {
    let segments_dir = dir.join(SEGMENTS_DIR);
    for entry in disk
        .list_dir(&segments_dir)
        .map_err(|source| VerifyError::Io {
            op: "list",
            path: segments_dir.clone(),
            source,
        })?
    {
        if entry.is_dir || segment::parse_file_name(&entry.name).is_none() {
            return Err(VerifyError::UnexpectedFile {
                path: segments_dir.join(&entry.name),
            });
        }
    }
    export::list(disk, dir).map_err(|error| VerifyError::Io {
        op: "list",
        path: segments_dir,
        source: io::Error::other(error.to_string()),
    })
}
