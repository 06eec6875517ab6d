//! The `<first>.idx` file written when a segment is sealed: its entry count and byte
//! offsets (so opening the log does not rescan it) and what `index_of` needs to find
//! an entry by its key without reading the whole segment.
//!
//! Keys are node-generated UUIDv7 ids, so a segment holds them in nearly sorted order.
//! The index written now ("DSAUDIX3") is therefore sparse: for every block of
//! [`BLOCK`] entries (the same blocks the byte offsets start) the lowest and highest key
//! of the block, and a list of exceptions, the keys that lie far outside their block's
//! run, with their full index. Layout, little endian:
//!
//! ```text
//! magic "DSAUDIX3" | first u64 | count u64 | segment length u64
//! | offset count u64 | block count u64 | exception count u64
//! | offsets (u64 each) | blocks (lowest key 16 ‖ highest key 16 each; an empty block
//!   has lowest ff…ff, highest 00…00) | exceptions (key 16 ‖ u64 index − first, sorted)
//! | CRC32C of all before
//! ```
//!
//! A key is an exception when it lies outside the block's fences: with the block's keys
//! sorted, `lo` its key at n/8 and `hi` at n − 1 − n/8, the fences are
//! `lo − (hi − lo)` and `hi + (hi − lo)` as 128-bit numbers. The rule depends on
//! nothing but the keys, so verification rebuilds the file byte for byte.
//!
//! A lookup finds the exceptions by binary search in memory and scans the entries of
//! every block whose range holds the key (reading its frames, about 45 KB at 256
//! entries, checksums included), in block order, and returns the lowest index found.
//! A sparse file is written only when no key lies in more than [`MAX_CANDIDATES`] block
//! ranges and at most one key in [`MAX_EXCEPTION_SHARE`] is an exception, so a lookup
//! reads at most four blocks of a plain segment. (In a zstd-compressed segment a block
//! read decompresses the segment up to that block.) Keys that are not nearly sorted
//! (ids of another kind, say) get the dense "DSAUDIX2" file instead:
//!
//! ```text
//! magic "DSAUDIX2" | first u64 | count u64 | segment length u64
//! | offset count u64 | key count u64 | fence count u64
//! | offsets (u64 each) | fences (16-byte key of every 512th record) | CRC32C of all before
//! | records (16-byte key ‖ u32 index − first, sorted by key then index)
//! | CRC32C of the records
//! ```
//!
//! Files with magic "DSAUDIX1" (records of 16-byte key ‖ u64 index) are still read and
//! verified. A dense index of a segment of more than 2³² entries is a "DSAUDIX1" file.
//!
//! Opening a dense file reads only the summary up to the first CRC; its records are
//! read a block at a time by lookups (one read of at most 513 records), and checked
//! whole by `verify_dir`. A sparse file is read whole at open (about 0.13 byte per
//! entry, plus 24 per exception).

use std::path::{Path, PathBuf};

use super::disk::{Disk, read_exact_at};
use super::error::{AuditError, FrameProblem};
use super::segment::{self, OFFSET_STRIDE, SegmentView, entry_key};

const MAGIC_V1: &[u8; 8] = b"DSAUDIX1";
const MAGIC_V2: &[u8; 8] = b"DSAUDIX2";
const MAGIC_V3: &[u8; 8] = b"DSAUDIX3";
const HEADER: usize = 56;
/// Record bytes of a "DSAUDIX1" file.
const RECORD_V1: usize = 24;
/// Record bytes of a "DSAUDIX2" file.
const RECORD: usize = 20;
/// Records per fence: a lookup reads at most this many records (12 KiB).
const FENCE_STEP: usize = 512;
/// Entries per block of a sparse index: the stride of the byte offsets, so a block's
/// frames start at a known offset.
pub(crate) const BLOCK: u64 = OFFSET_STRIDE;
/// Bytes of a block range and of an exception in a sparse index.
const RANGE: usize = 32;
const EXCEPTION: usize = 24;
/// Most block ranges one key may lie in for the sparse index to be written.
pub(crate) const MAX_CANDIDATES: usize = 4;
/// At most one key in this many may be an exception for the sparse index.
pub(crate) const MAX_EXCEPTION_SHARE: u64 = 8;
/// The range of a block without keys: no key lies in it.
const EMPTY_RANGE: ([u8; 16], [u8; 16]) = ([0xff; 16], [0; 16]);

/// What the log keeps in memory of a segment's key index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdxSummary {
    /// The index file.
    pub(crate) path: PathBuf,
    /// First entry of the segment.
    pub(crate) first: u64,
    /// Entries in the segment.
    pub(crate) count: u64,
    /// Bytes of frames in the segment (uncompressed).
    pub(crate) segment_len: u64,
    /// Byte offset of every 256th entry.
    pub(crate) offsets: Vec<u64>,
    lookup: Lookup,
}

/// How keys are found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// A dense file: sorted records, read a fence block at a time.
    Records {
        fences: Vec<[u8; 16]>,
        records: u64,
        records_at: u64,
        /// Bytes per record: [`RECORD`], or [`RECORD_V1`] for an older file.
        record: usize,
    },
    /// A sparse file, held whole.
    Blocks {
        /// Lowest and highest key of each block's keys that are not exceptions.
        ranges: Vec<([u8; 16], [u8; 16])>,
        /// Exceptions with their index, sorted.
        exceptions: Vec<([u8; 16], u64)>,
    },
}

/// The layout an index file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// "DSAUDIX1": dense, u64 indexes.
    DenseV1,
    /// "DSAUDIX2": dense, u32 indexes relative to the segment.
    DenseV2,
    /// "DSAUDIX3": sparse.
    Sparse,
}

/// Builds the bytes of an index file. `keys` holds each key of the segment once, with
/// the lowest index that has it.
pub(crate) fn encode(
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    keys: Vec<([u8; 16], u64)>,
) -> Vec<u8> {
    if let Some(bytes) = encode_sparse(first, count, segment_len, offsets, &keys) {
        return bytes;
    }
    let layout = if count > u64::from(u32::MAX) {
        Layout::DenseV1
    } else {
        Layout::DenseV2
    };
    encode_dense(layout, first, count, segment_len, offsets, keys)
}

/// The bytes an index file with this magic holds for the segment: verification
/// compares a file with the encoding its magic names.
pub(crate) fn encode_like(
    found: &[u8],
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    keys: Vec<([u8; 16], u64)>,
) -> Vec<u8> {
    if found.starts_with(MAGIC_V1) {
        encode_dense(Layout::DenseV1, first, count, segment_len, offsets, keys)
    } else if found.starts_with(MAGIC_V2) {
        encode_dense(Layout::DenseV2, first, count, segment_len, offsets, keys)
    } else {
        encode(first, count, segment_len, offsets, keys)
    }
}

fn header(out: &mut Vec<u8>, magic: &[u8; 8], fields: [u64; 6]) {
    out.extend_from_slice(magic);
    for value in fields {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn encode_dense(
    layout: Layout,
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    mut keys: Vec<([u8; 16], u64)>,
) -> Vec<u8> {
    let v1 = layout == Layout::DenseV1;
    let record = if v1 { RECORD_V1 } else { RECORD };
    keys.sort_unstable();
    let fences: Vec<[u8; 16]> = keys.iter().step_by(FENCE_STEP).map(|(k, _)| *k).collect();
    let mut out = Vec::with_capacity(
        HEADER + offsets.len() * 8 + fences.len() * 16 + 8 + keys.len() * record,
    );
    header(
        &mut out,
        if v1 { MAGIC_V1 } else { MAGIC_V2 },
        [
            first,
            count,
            segment_len,
            offsets.len() as u64,
            keys.len() as u64,
            fences.len() as u64,
        ],
    );
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for fence in &fences {
        out.extend_from_slice(fence);
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    let records_at = out.len();
    for (key, index) in &keys {
        out.extend_from_slice(key);
        if v1 {
            out.extend_from_slice(&index.to_le_bytes());
        } else {
            // `count` fits in a u32 here, and every index lies in the segment.
            let relative = u32::try_from(index.saturating_sub(first)).unwrap_or(u32::MAX);
            out.extend_from_slice(&relative.to_le_bytes());
        }
    }
    out.extend_from_slice(&crc32c::crc32c(&out[records_at..]).to_le_bytes());
    out
}

/// The sparse file, or `None` when the keys are too far from sorted for lookups to stay
/// cheap (or do not fit the segment's blocks).
fn encode_sparse(
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    keys: &[([u8; 16], u64)],
) -> Option<Vec<u8>> {
    let blocks = count.div_ceil(BLOCK);
    if offsets.len() as u64 != blocks {
        return None;
    }
    let mut by_block: Vec<Vec<[u8; 16]>> = vec![Vec::new(); usize::try_from(blocks).ok()?];
    for (key, index) in keys {
        let relative = index.checked_sub(first).filter(|r| *r < count)?;
        by_block[usize::try_from(relative / BLOCK).ok()?].push(*key);
    }
    let mut ranges = Vec::with_capacity(by_block.len());
    let mut outliers = std::collections::HashSet::new();
    for block in &mut by_block {
        block.sort_unstable();
        let Some((floor, ceil)) = fences(block) else {
            ranges.push(EMPTY_RANGE);
            continue;
        };
        let inside: Vec<&[u8; 16]> = block
            .iter()
            .filter(|key| {
                let k = u128::from_be_bytes(**key);
                let inside = floor <= k && k <= ceil;
                if !inside {
                    outliers.insert(**key);
                }
                inside
            })
            .collect();
        // The keys at n/8 and n − 1 − n/8 lie inside their own fences.
        ranges.push((**inside.first()?, **inside.last()?));
    }
    let mut exceptions: Vec<([u8; 16], u64)> = keys
        .iter()
        .filter(|(key, _)| outliers.contains(key))
        .map(|(key, index)| (*key, index - first))
        .collect();
    // A key is an outlier in the one block that holds its lowest index.
    exceptions.sort_unstable();
    if exceptions.len() as u64 > count / MAX_EXCEPTION_SHARE || overlap(&ranges) > MAX_CANDIDATES {
        return None;
    }
    let mut out = Vec::with_capacity(
        HEADER + offsets.len() * 8 + ranges.len() * RANGE + exceptions.len() * EXCEPTION + 4,
    );
    header(
        &mut out,
        MAGIC_V3,
        [
            first,
            count,
            segment_len,
            offsets.len() as u64,
            ranges.len() as u64,
            exceptions.len() as u64,
        ],
    );
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for (low, high) in &ranges {
        out.extend_from_slice(low);
        out.extend_from_slice(high);
    }
    for (key, relative) in &exceptions {
        out.extend_from_slice(key);
        out.extend_from_slice(&relative.to_le_bytes());
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    Some(out)
}

/// The fences of a block's sorted keys as 128-bit numbers; `None` for no keys.
fn fences(sorted: &[[u8; 16]]) -> Option<(u128, u128)> {
    let n = sorted.len();
    let lo = u128::from_be_bytes(*sorted.get(n / 8)?);
    let hi = u128::from_be_bytes(*sorted.get(n.checked_sub(1 + n / 8)?)?);
    let width = hi.saturating_sub(lo);
    Some((lo.saturating_sub(width), hi.saturating_add(width)))
}

/// The most ranges any one key lies in.
fn overlap(ranges: &[([u8; 16], [u8; 16])]) -> usize {
    // Starts sort before ends at the same key: both bounds are inclusive.
    let mut events: Vec<([u8; 16], u8)> = Vec::with_capacity(ranges.len() * 2);
    for (low, high) in ranges.iter().filter(|(low, high)| low <= high) {
        events.push((*low, 0));
        events.push((*high, 1));
    }
    events.sort_unstable();
    let (mut depth, mut most) = (0usize, 0usize);
    for (_, end) in events {
        if end == 0 {
            depth += 1;
            most = most.max(depth);
        } else {
            depth -= 1;
        }
    }
    most
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn key_at(bytes: &[u8], at: usize) -> Option<[u8; 16]> {
    bytes.get(at..at + 16)?.try_into().ok()
}

/// Reads an index file's summary. `Ok(None)` when the file is missing, torn or not an
/// index file: it is derived data and the caller rebuilds it from the segment.
pub(crate) fn load(disk: &dyn Disk, path: &Path) -> std::io::Result<Option<IdxSummary>> {
    let file = match disk.open_read(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let file_len = file.size()?;
    let mut header = [0u8; HEADER];
    if file_len < HEADER as u64 || read_exact_at(&*file, &mut header, 0).is_err() {
        return Ok(None);
    }
    let layout = match &header[..8] {
        m if m == MAGIC_V3 => Layout::Sparse,
        m if m == MAGIC_V2 => Layout::DenseV2,
        m if m == MAGIC_V1 => Layout::DenseV1,
        _ => return Ok(None),
    };
    let field = |i: usize| u64_at(&header, 8 + 8 * i).unwrap_or(u64::MAX);
    let (first, count, segment_len) = (field(0), field(1), field(2));
    let (n_offsets, n_second, n_third) = (field(3), field(4), field(5));
    // Bound every count by the file length before allocating anything from it.
    let (second_width, third_width) = match layout {
        Layout::Sparse => (RANGE as u64, EXCEPTION as u64),
        // Dense: the fences are in the summary, the records after it.
        _ => (0, 16),
    };
    let summary_len = n_offsets
        .checked_mul(8)
        .and_then(|a| {
            n_second
                .checked_mul(second_width)
                .and_then(|b| a.checked_add(b))
        })
        .and_then(|a| {
            n_third
                .checked_mul(third_width)
                .and_then(|b| a.checked_add(b))
        })
        .and_then(|body| body.checked_add(HEADER as u64 + 4));
    let Some(summary_len) = summary_len.filter(|len| *len <= file_len) else {
        return Ok(None);
    };
    let expected_len = match layout {
        Layout::Sparse => Some(summary_len),
        Layout::DenseV2 => n_second
            .checked_mul(RECORD as u64)
            .and_then(|r| r.checked_add(summary_len + 4)),
        Layout::DenseV1 => n_second
            .checked_mul(RECORD_V1 as u64)
            .and_then(|r| r.checked_add(summary_len + 4)),
    };
    if expected_len != Some(file_len) {
        return Ok(None);
    }
    let mut summary = vec![0u8; summary_len as usize];
    read_exact_at(&*file, &mut summary, 0)?;
    let crc_at = summary.len() - 4;
    let stored = u32::from_le_bytes([
        summary[crc_at],
        summary[crc_at + 1],
        summary[crc_at + 2],
        summary[crc_at + 3],
    ]);
    if crc32c::crc32c(&summary[..crc_at]) != stored {
        return Ok(None);
    }
    let offsets_at = HEADER;
    let second_at = offsets_at + n_offsets as usize * 8;
    let offsets = (0..n_offsets as usize)
        .filter_map(|i| u64_at(&summary, offsets_at + 8 * i))
        .collect();
    let lookup = match layout {
        Layout::Sparse => {
            if n_second != count.div_ceil(BLOCK) || n_offsets != n_second {
                return Ok(None);
            }
            let third_at = second_at + n_second as usize * RANGE;
            let ranges = summary[second_at..third_at]
                .chunks_exact(RANGE)
                .filter_map(|chunk| Some((key_at(chunk, 0)?, key_at(chunk, 16)?)))
                .collect();
            let mut exceptions = Vec::with_capacity(n_third as usize);
            for chunk in summary[third_at..crc_at].chunks_exact(EXCEPTION) {
                let (Some(key), Some(relative)) = (key_at(chunk, 0), u64_at(chunk, 16)) else {
                    return Ok(None);
                };
                if relative >= count {
                    return Ok(None);
                }
                exceptions.push((key, first.saturating_add(relative)));
            }
            Lookup::Blocks { ranges, exceptions }
        }
        _ => Lookup::Records {
            fences: summary[second_at..crc_at]
                .chunks_exact(16)
                .filter_map(|chunk| chunk.try_into().ok())
                .collect(),
            records: n_second,
            records_at: summary_len,
            record: if layout == Layout::DenseV1 {
                RECORD_V1
            } else {
                RECORD
            },
        },
    };
    Ok(Some(IdxSummary {
        path: path.to_path_buf(),
        first,
        count,
        segment_len,
        offsets,
        lookup,
    }))
}

impl IdxSummary {
    /// The lowest index in this segment whose entry has `key`. `view` is the segment's
    /// view (a sparse index reads its frames).
    pub(crate) fn lookup(
        &self,
        disk: &dyn Disk,
        dir: &Path,
        view: &SegmentView,
        key: &[u8; 16],
    ) -> Result<Option<u64>, AuditError> {
        match &self.lookup {
            Lookup::Records {
                fences,
                records,
                records_at,
                record,
            } => self
                .lookup_records(disk, key, fences, *records, *records_at, *record)
                .map_err(|e| AuditError::io("read", &self.path, e)),
            Lookup::Blocks { ranges, exceptions } => {
                let at = exceptions.partition_point(|(k, _)| k < key);
                let exception = exceptions
                    .get(at)
                    .filter(|(k, _)| k == key)
                    .map(|(_, index)| *index);
                for (block, (low, high)) in ranges.iter().enumerate() {
                    let start = self.first + block as u64 * BLOCK;
                    if exception.is_some_and(|index| index < start) {
                        break;
                    }
                    if low <= key
                        && key <= high
                        && let Some(index) = self.scan_block(disk, dir, view, block, key)?
                    {
                        return Ok(Some(exception.map_or(index, |e| e.min(index))));
                    }
                }
                Ok(exception)
            }
        }
    }

    /// The first index in block `block` whose entry has `key`, reading its frames.
    fn scan_block(
        &self,
        disk: &dyn Disk,
        dir: &Path,
        view: &SegmentView,
        block: usize,
        key: &[u8; 16],
    ) -> Result<Option<u64>, AuditError> {
        let path = view.path(dir);
        let start = self.first + block as u64 * BLOCK;
        let end = (start + BLOCK).min(self.first + self.count);
        let offset = self.offsets.get(block).copied().unwrap_or(0);
        let until = self
            .offsets
            .get(block + 1)
            .copied()
            .unwrap_or(self.segment_len);
        let mut frames = segment::open_frames_at(disk, &path, view.compressed, offset, Some(until))
            .map_err(|source| AuditError::io("read", &path, source))?;
        let mut entry = Vec::new();
        for index in start..end {
            let found = frames
                .next_into(&mut entry)
                .map_err(|error| segment::frame_error(error, &path, index))?;
            if found.is_none() {
                return Err(AuditError::Corrupt {
                    segment: path,
                    offset: frames.offset(),
                    index,
                    problem: FrameProblem::Truncated { missing: 0 },
                });
            }
            if entry_key(&entry).as_ref() == Some(key) {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    fn lookup_records(
        &self,
        disk: &dyn Disk,
        key: &[u8; 16],
        fences: &[[u8; 16]],
        records: u64,
        records_at: u64,
        width: usize,
    ) -> std::io::Result<Option<u64>> {
        if records == 0 {
            return Ok(None);
        }
        // fences[j] is record j·FENCE_STEP. With b fences below the key, its first record
        // lies after fence b-1 and at most at fence b: one block plus one record.
        let below = fences.partition_point(|fence| fence < key);
        let start = below.saturating_sub(1) * FENCE_STEP;
        let end = (below * FENCE_STEP + 1).min(records as usize);
        if start >= end {
            return Ok(None);
        }
        let mut block = vec![0u8; (end - start) * width];
        let file = disk.open_read(&self.path)?;
        read_exact_at(&*file, &mut block, records_at + (start * width) as u64)?;
        let records: Vec<&[u8]> = block.chunks_exact(width).collect();
        let at = records.partition_point(|record| &record[..16] < key.as_slice());
        Ok(records
            .get(at)
            .filter(|record| &record[..16] == key.as_slice())
            .and_then(|record| {
                if width == RECORD_V1 {
                    u64_at(record, 16)
                } else {
                    let relative = u32::from_le_bytes(record.get(16..20)?.try_into().ok()?);
                    self.first.checked_add(u64::from(relative))
                }
            }))
    }

    /// Whether the file is sparse.
    #[cfg(test)]
    pub(crate) fn is_sparse(&self) -> bool {
        matches!(self.lookup, Lookup::Blocks { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::disk::FsDisk;
    use crate::audit::frame::FrameFormat;
    use crate::audit::segment::{SEGMENTS_DIR, SegmentFile, file_name};
    use std::collections::HashMap;
    use std::sync::Arc;

    /// SplitMix64: deterministic test keys.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn key(&mut self) -> [u8; 16] {
            (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes()
        }
    }

    /// A UUIDv7-shaped key: 48-bit milliseconds, version 7, random bits.
    fn v7(ms: u64, rng: &mut Rng) -> [u8; 16] {
        let mut key = rng.key();
        key[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        key[6] = 0x70 | (key[6] & 0x0f);
        key
    }

    /// A segment of entries (kind byte ‖ key ‖ body, or a short entry without a key)
    /// written to `dir`, its view, and each key with its lowest index.
    fn segment(
        dir: &Path,
        first: u64,
        keys: &[Option<[u8; 16]>],
    ) -> (SegmentView, Vec<([u8; 16], u64)>) {
        std::fs::create_dir_all(dir.join(SEGMENTS_DIR)).expect("dir");
        let mut bytes = crate::audit::frame::SEGMENT_MAGIC.to_vec();
        let mut offsets = Vec::new();
        let mut lowest = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if (i as u64).is_multiple_of(BLOCK) {
                offsets.push(bytes.len() as u64);
            }
            let index = first + i as u64;
            let entry = match key {
                Some(key) => {
                    lowest.entry(*key).or_insert(index);
                    let mut entry = vec![3u8];
                    entry.extend_from_slice(key);
                    entry.extend_from_slice(format!("decision {index}").as_bytes());
                    entry
                }
                None => vec![9u8; 12],
            };
            FrameFormat::V2.encode(&mut bytes, &entry);
        }
        let path = dir
            .join(SEGMENTS_DIR)
            .join(file_name(first, SegmentFile::Log));
        std::fs::write(path, &bytes).expect("write segment");
        let view = SegmentView {
            first,
            count: keys.len() as u64,
            len: bytes.len() as u64,
            compressed: false,
            offsets: Arc::new(offsets),
        };
        (view, lowest.into_iter().collect())
    }

    fn write_index(dir: &Path, view: &SegmentView, keys: Vec<([u8; 16], u64)>) -> IdxSummary {
        let bytes = encode(view.first, view.count, view.len, &view.offsets, keys);
        let path = dir
            .join(SEGMENTS_DIR)
            .join(file_name(view.first, SegmentFile::Idx));
        std::fs::write(&path, bytes).expect("write index");
        let summary = load(&FsDisk, &path).expect("read").expect("valid");
        assert_eq!(summary.count, view.count);
        assert_eq!(summary.offsets, *view.offsets);
        summary
    }

    fn assert_finds_all(
        summary: &IdxSummary,
        dir: &Path,
        view: &SegmentView,
        keys: &[([u8; 16], u64)],
    ) {
        for (key, index) in keys {
            assert_eq!(
                summary.lookup(&FsDisk, dir, view, key).expect("lookup"),
                Some(*index),
                "key {key:02x?}"
            );
        }
    }

    #[test]
    fn sparse_index_finds_every_key_of_nearly_sorted_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng(1);
        // Ids taken in time order by concurrent deciders and appended a little out of
        // order: shuffled within windows of 24.
        let mut keys: Vec<Option<[u8; 16]>> = (0..3000u64)
            .map(|i| Some(v7(1_700_000_000_000 + i / 3, &mut rng)))
            .collect();
        for window in keys.chunks_mut(24) {
            for i in (1..window.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                window.swap(i, j);
            }
        }
        // Entries too short for a key.
        keys[17] = None;
        keys[2999] = None;
        let (view, lowest) = segment(dir.path(), 10_000, &keys);
        let summary = write_index(dir.path(), &view, lowest.clone());
        assert!(summary.is_sparse());
        let Lookup::Blocks { exceptions, .. } = &summary.lookup else {
            unreachable!("checked sparse above");
        };
        assert!(exceptions.is_empty());
        let file_len = std::fs::metadata(&summary.path).expect("stat").len();
        assert!(
            file_len * 4 < view.count,
            "{file_len} bytes for {} keys",
            view.count
        );
        assert_finds_all(&summary, dir.path(), &view, &lowest);
        // Absent keys: one inside the ids' time range, one beyond, one before.
        for key in [
            v7(1_700_000_000_500, &mut rng),
            v7(1_800_000_000_000, &mut rng),
            [0u8; 16],
        ] {
            assert_eq!(
                summary
                    .lookup(&FsDisk, dir.path(), &view, &key)
                    .expect("lookup"),
                None
            );
        }
    }

    #[test]
    fn out_of_order_and_foreign_keys_are_exceptions_and_still_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng(2);
        let mut keys: Vec<Option<[u8; 16]>> = (0..2000u64)
            .map(|i| Some(v7(1_700_000_000_000 + i, &mut rng)))
            .collect();
        // Random (non-v7) ids, an id from a day before, one from a day after.
        for at in [3, 400, 401, 1024, 1999] {
            keys[at] = Some(rng.key());
        }
        keys[700] = Some(v7(1_699_900_000_000, &mut rng));
        keys[701] = Some(v7(1_700_100_000_000, &mut rng));
        // A key seen again later keeps its first index, in or out of order.
        keys[1500] = keys[20];
        keys[1600] = keys[400];
        let (view, lowest) = segment(dir.path(), 0, &keys);
        let summary = write_index(dir.path(), &view, lowest.clone());
        assert!(summary.is_sparse());
        let Lookup::Blocks { exceptions, .. } = &summary.lookup else {
            unreachable!("checked sparse above");
        };
        let expected: Vec<u64> = vec![3, 400, 401, 700, 701, 1024, 1999];
        let mut found: Vec<u64> = exceptions.iter().map(|(_, index)| *index).collect();
        found.sort_unstable();
        assert_eq!(found, expected);
        assert_finds_all(&summary, dir.path(), &view, &lowest);
        let dup = keys[20].expect("a key");
        assert_eq!(
            summary
                .lookup(&FsDisk, dir.path(), &view, &dup)
                .expect("lookup"),
            Some(20)
        );
    }

    #[test]
    fn unordered_keys_get_a_dense_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng(3);
        let keys: Vec<Option<[u8; 16]>> = (0..3000).map(|_| Some(rng.key())).collect();
        let (view, lowest) = segment(dir.path(), 5, &keys);
        let summary = write_index(dir.path(), &view, lowest.clone());
        assert!(!summary.is_sparse());
        assert_finds_all(&summary, dir.path(), &view, &lowest);
        assert_eq!(
            summary
                .lookup(&FsDisk, dir.path(), &view, &[0xff; 16])
                .expect("lookup"),
            None
        );
    }

    #[test]
    fn a_damaged_frame_in_a_scanned_block_is_an_error_not_a_miss() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng(4);
        let keys: Vec<Option<[u8; 16]>> = (0..600u64)
            .map(|i| Some(v7(1_700_000_000_000 + i, &mut rng)))
            .collect();
        let (view, lowest) = segment(dir.path(), 0, &keys);
        let summary = write_index(dir.path(), &view, lowest);
        // Flip a byte of entry 300 (block 1).
        let frame = FrameFormat::V2.frame_len(1 + 16 + "decision 300".len());
        let path = view.path(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        let at = view.offsets[1] as usize + (300 - 256) * frame as usize + 12;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let key = keys[310].expect("a key");
        assert!(matches!(
            summary.lookup(&FsDisk, dir.path(), &view, &key),
            Err(AuditError::Corrupt { index: 300, .. })
        ));
        // Block 0 is untouched.
        let key = keys[10].expect("a key");
        assert_eq!(
            summary
                .lookup(&FsDisk, dir.path(), &view, &key)
                .expect("lookup"),
            Some(10)
        );
    }

    #[test]
    fn dense_files_of_both_older_layouts_still_answer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let view = SegmentView {
            first: 10_000,
            count: 5000,
            len: 123,
            compressed: false,
            offsets: Arc::new(vec![0, 7]),
        };
        let keys: Vec<([u8; 16], u64)> = (0..5000u64)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&(i % 3000).to_be_bytes());
                (key, 10_000 + i)
            })
            .collect();
        for (layout, magic) in [(Layout::DenseV1, MAGIC_V1), (Layout::DenseV2, MAGIC_V2)] {
            let bytes = encode_dense(layout, 10_000, 5000, 123, &[0, 7], keys.clone());
            assert_eq!(&bytes[..8], magic);
            assert_eq!(
                encode_like(&bytes, 10_000, 5000, 123, &[0, 7], keys.clone()),
                bytes
            );
            let path = dir.path().join("old.idx");
            std::fs::write(&path, &bytes).expect("write");
            let summary = load(&FsDisk, &path).expect("read").expect("valid");
            assert!(!summary.is_sparse());
            assert_eq!(summary.offsets, vec![0, 7]);
            for i in 0..3000u64 {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&i.to_be_bytes());
                assert_eq!(
                    summary
                        .lookup(&FsDisk, dir.path(), &view, &key)
                        .expect("lookup"),
                    Some(10_000 + i)
                );
            }
            assert_eq!(
                summary
                    .lookup(&FsDisk, dir.path(), &view, &[0xff; 16])
                    .expect("lookup"),
                None
            );
        }
    }

    #[test]
    fn damaged_index_files_are_not_loaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng(5);
        let keys: Vec<Option<[u8; 16]>> = (0..1000u64)
            .map(|i| Some(v7(1_700_000_000_000 + i, &mut rng)))
            .collect();
        let (view, lowest) = segment(dir.path(), 0, &keys);
        let summary = write_index(dir.path(), &view, lowest);
        let good = std::fs::read(&summary.path).expect("read");
        for at in [0, 9, 60, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&summary.path, &bad).expect("write");
            assert_eq!(
                load(&FsDisk, &summary.path).expect("read"),
                None,
                "byte {at}"
            );
        }
        std::fs::write(&summary.path, &good[..good.len() - 3]).expect("write");
        assert_eq!(load(&FsDisk, &summary.path).expect("read"), None);
    }
}
