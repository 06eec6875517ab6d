//! Segment files: their names, what the log knows of each one, scanning one frame by
//! frame, and reading entries from any of them, plain or zstd-compressed.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{AppendFile, Disk, ReadCursor};
use super::error::{AuditError, FrameProblem};
use super::frame::{FrameError, FrameFormat, FrameReader, SEGMENT_MAGIC, read_full};

/// Directory of the segment files, inside the audit directory.
pub(crate) const SEGMENTS_DIR: &str = "segments";

/// Every this many entries a segment's byte offset is remembered, so a read starts at
/// most this many frames before the entry it wants. 256 matches the level-0 tiles.
pub(crate) const OFFSET_STRIDE: u64 = 256;

/// The kinds of file in the segments directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SegmentFile {
    /// `<first>.log`, plain frames.
    Log,
    /// `<first>.log.zst`, the same bytes compressed as one zstd stream.
    Zst,
    /// `<first>.idx`, the key index and byte offsets of a sealed segment.
    Idx,
}

/// The file name of a segment part.
pub(crate) fn file_name(first: u64, kind: SegmentFile) -> String {
    match kind {
        SegmentFile::Log => format!("{first:020}.log"),
        SegmentFile::Zst => format!("{first:020}.log.zst"),
        SegmentFile::Idx => format!("{first:020}.idx"),
    }
}

/// Parses a segments-directory file name; `None` for names the log does not write.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, SegmentFile)> {
    let (digits, kind) = if let Some(digits) = name.strip_suffix(".log.zst") {
        (digits, SegmentFile::Zst)
    } else if let Some(digits) = name.strip_suffix(".log") {
        (digits, SegmentFile::Log)
    } else {
        (name.strip_suffix(".idx")?, SegmentFile::Idx)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

/// The lookup key of an entry: bytes 1..17 (the decision or event id after the kind
/// byte), when the entry is that long.
pub fn entry_key(entry: &[u8]) -> Option<[u8; 16]> {
    entry.get(1..17).and_then(|key| key.try_into().ok())
}

/// What readers need to know of one segment; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    /// Index of its first entry.
    pub(crate) first: u64,
    /// Entries it holds (for the active segment: written so far).
    pub(crate) count: u64,
    /// Bytes of frames, uncompressed.
    pub(crate) len: u64,
    /// Whether only the `.log.zst` file holds it.
    pub(crate) compressed: bool,
    /// Byte offset of entry `first + k·OFFSET_STRIDE`, for each k.
    pub(crate) offsets: Arc<Vec<u64>>,
}

impl SegmentView {
    /// The file holding the segment's bytes.
    pub(crate) fn path(&self, dir: &Path) -> PathBuf {
        let kind = if self.compressed {
            SegmentFile::Zst
        } else {
            SegmentFile::Log
        };
        dir.join(SEGMENTS_DIR).join(file_name(self.first, kind))
    }

    /// One past its last entry.
    pub(crate) fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// A stream of frames.
pub(crate) type Frames = FrameReader<Box<dyn Read + Send>>;

/// Opens the frames of a segment file at byte `offset` (a frame's start; 0 means the
/// first frame, after a v2 header). The file's first bytes tell its frame format. `len`
/// bounds a plain file (the active segment may be growing past what readers may see);
/// compressed files are read to their end.
pub(crate) fn open_frames_at(
    disk: &dyn Disk,
    path: &Path,
    compressed: bool,
    offset: u64,
    len: Option<u64>,
) -> io::Result<Frames> {
    let file = disk.open_read(path)?;
    let mut head = [0u8; SEGMENT_MAGIC.len()];
    if compressed {
        let mut decoder = zstd::stream::read::Decoder::new(ReadCursor::new(file, 0))?;
        let got = read_full(&mut decoder, &mut head)?;
        let format = FrameFormat::of(&head[..got]);
        let start = offset.max(format.header_len());
        // A compressed segment is one stream: skipping to `start` means decompressing
        // and discarding what comes before it.
        let mut stream = io::Cursor::new(head[..got].to_vec()).chain(decoder);
        let skipped = io::copy(&mut (&mut stream).take(start), &mut io::sink())?;
        if skipped < start {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let reader: Box<dyn Read + Send> = match len {
            Some(len) => Box::new(stream.take(len.saturating_sub(start))),
            None => Box::new(stream),
        };
        return Ok(FrameReader::new(reader, start, format));
    }
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let format = FrameFormat::of(&head[..got]);
    let start = offset.max(format.header_len());
    let cursor = ReadCursor::new(file, start);
    let reader: Box<dyn Read + Send> = match len {
        Some(len) => Box::new(cursor.take(len.saturating_sub(start))),
        None => Box::new(cursor),
    };
    Ok(FrameReader::new(reader, start, format))
}

/// Creates a segment file in the current format (its header written, not synced: the
/// first fsync of its entries makes it durable, and recovery rewrites a header torn by
/// a crash before then).
pub(crate) fn create(disk: &dyn Disk, path: &Path) -> io::Result<Box<dyn AppendFile>> {
    let mut file = disk.open_append(path)?;
    file.append(SEGMENT_MAGIC)?;
    Ok(file)
}

/// Opens a segment's frames positioned at entry `index` (which it must hold).
pub(crate) fn open_frames(
    disk: &dyn Disk,
    dir: &Path,
    view: &SegmentView,
    index: u64,
) -> Result<Frames, AuditError> {
    let path = view.path(dir);
    let relative = index.saturating_sub(view.first);
    let stride = usize::try_from(relative / OFFSET_STRIDE).unwrap_or(usize::MAX);
    let (offset, skip) = match view.offsets.get(stride) {
        Some(&offset) => (offset, relative % OFFSET_STRIDE),
        None => (0, relative),
    };
    let mut frames = open_frames_at(disk, &path, view.compressed, offset, Some(view.len))
        .map_err(|source| AuditError::io("read", &path, source))?;
    let base = view.first + relative - skip;
    let mut scratch = Vec::new();
    for k in 0..skip {
        let found = frames
            .next_into(&mut scratch)
            .map_err(|error| frame_error(error, &path, base + k))?;
        if found.is_none() {
            return Err(AuditError::Corrupt {
                segment: path,
                offset: frames.offset(),
                index: base + k,
                problem: FrameProblem::Truncated { missing: 0 },
            });
        }
    }
    Ok(frames)
}

/// Turns a frame error into an [`AuditError`] naming the segment; `index` is the entry
/// the bad frame should hold.
pub(crate) fn frame_error(error: FrameError, path: &Path, index: u64) -> AuditError {
    match error {
        FrameError::Io(source) => AuditError::io("read", path, source),
        FrameError::Bad { offset, problem } => AuditError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            index,
            problem,
        },
    }
}

/// The result of reading a segment from its start to its first bad frame or its end.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Whole, checksummed entries read.
    pub(crate) count: u64,
    /// Bytes they occupy, with the segment's header.
    pub(crate) len: u64,
    /// The segment's frame format.
    pub(crate) format: Option<FrameFormat>,
    /// Byte offset of every `OFFSET_STRIDE`-th entry.
    pub(crate) offsets: Vec<u64>,
    /// The first frame that is not whole and checksummed, and what is wrong with it.
    pub(crate) bad: Option<(u64, FrameProblem)>,
}

/// Reads every frame of a segment file in order, calling `on_entry(index, bytes)` for
/// each good one, and stops at the first bad frame (reported in [`Scan::bad`]).
pub(crate) fn scan(
    disk: &dyn Disk,
    path: &Path,
    first: u64,
    compressed: bool,
    mut on_entry: impl FnMut(u64, &[u8]),
) -> Result<Scan, AuditError> {
    let mut frames = open_frames_at(disk, path, compressed, 0, None)
        .map_err(|source| AuditError::io("read", path, source))?;
    let mut result = Scan {
        len: frames.offset(),
        format: Some(frames.format()),
        ..Scan::default()
    };
    let mut entry = Vec::new();
    loop {
        match frames.next_into(&mut entry) {
            Ok(Some(offset)) => {
                if result.count.is_multiple_of(OFFSET_STRIDE) {
                    result.offsets.push(offset);
                }
                on_entry(first + result.count, &entry);
                result.count += 1;
                result.len = frames.offset();
            }
            Ok(None) => break,
            Err(FrameError::Bad { offset, problem }) => {
                result.bad = Some((offset, problem));
                break;
            }
            Err(FrameError::Io(source)) => return Err(AuditError::io("read", path, source)),
        }
    }
    Ok(result)
}
