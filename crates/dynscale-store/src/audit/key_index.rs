//! The `<first>.idx` file written when a segment is sealed: its entry count and byte
//! offsets (so opening the log does not rescan it) and its entry keys sorted for
//! `index_of` (so a lookup reads one small block per segment, not the segment).
//!
//! Layout, little endian:
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
//! verified. A segment of more than 2³² entries gets a "DSAUDIX1" file.
//!
//! Opening reads only the summary up to the first CRC; the records are read a block at
//! a time by lookups, and checked whole by `verify_dir`.

use std::path::{Path, PathBuf};

use super::disk::{Disk, read_exact_at};

const MAGIC_V1: &[u8; 8] = b"DSAUDIX1";
const MAGIC: &[u8; 8] = b"DSAUDIX2";
const HEADER: usize = 56;
/// Record bytes of a "DSAUDIX1" file.
const RECORD_V1: usize = 24;
/// Record bytes of a "DSAUDIX2" file.
const RECORD: usize = 20;
/// Records per fence: a lookup reads at most this many records (12 KiB).
const FENCE_STEP: usize = 512;

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
    fences: Vec<[u8; 16]>,
    records: u64,
    records_at: u64,
    /// Bytes per record: [`RECORD`], or [`RECORD_V1`] for an older file.
    record: usize,
}

/// Builds the bytes of an index file.
pub(crate) fn encode(
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    keys: Vec<([u8; 16], u64)>,
) -> Vec<u8> {
    let v1 = count > u64::from(u32::MAX);
    encode_as(v1, first, count, segment_len, offsets, keys)
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
        encode_as(true, first, count, segment_len, offsets, keys)
    } else {
        encode(first, count, segment_len, offsets, keys)
    }
}

fn encode_as(
    v1: bool,
    first: u64,
    count: u64,
    segment_len: u64,
    offsets: &[u64],
    mut keys: Vec<([u8; 16], u64)>,
) -> Vec<u8> {
    let record = if v1 { RECORD_V1 } else { RECORD };
    keys.sort_unstable();
    let fences: Vec<[u8; 16]> = keys.iter().step_by(FENCE_STEP).map(|(k, _)| *k).collect();
    let mut out = Vec::with_capacity(
        HEADER + offsets.len() * 8 + fences.len() * 16 + 8 + keys.len() * record,
    );
    out.extend_from_slice(if v1 { MAGIC_V1 } else { MAGIC });
    for value in [
        first,
        count,
        segment_len,
        offsets.len() as u64,
        keys.len() as u64,
        fences.len() as u64,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
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

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
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
    let record = match &header[..8] {
        m if m == MAGIC => RECORD,
        m if m == MAGIC_V1 => RECORD_V1,
        _ => return Ok(None),
    };
    let field = |i: usize| u64_at(&header, 8 + 8 * i).unwrap_or(u64::MAX);
    let (first, count, segment_len) = (field(0), field(1), field(2));
    let (n_offsets, records, n_fences) = (field(3), field(4), field(5));
    // Bound every count by the file length before allocating anything from it.
    let summary_len = n_offsets
        .checked_mul(8)
        .and_then(|a| n_fences.checked_mul(16).and_then(|b| a.checked_add(b)))
        .and_then(|body| body.checked_add(HEADER as u64 + 4));
    let Some(summary_len) = summary_len.filter(|len| *len <= file_len) else {
        return Ok(None);
    };
    let expected_len = records
        .checked_mul(record as u64)
        .and_then(|r| r.checked_add(summary_len + 4));
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
    let fences_at = offsets_at + n_offsets as usize * 8;
    let offsets = (0..n_offsets as usize)
        .filter_map(|i| u64_at(&summary, offsets_at + 8 * i))
        .collect();
    let fences = summary[fences_at..crc_at]
        .chunks_exact(16)
        .filter_map(|chunk| chunk.try_into().ok())
        .collect();
    Ok(Some(IdxSummary {
        path: path.to_path_buf(),
        first,
        count,
        segment_len,
        offsets,
        fences,
        records,
        records_at: summary_len,
        record,
    }))
}

impl IdxSummary {
    /// The lowest index in this segment whose entry has `key`.
    pub(crate) fn lookup(&self, disk: &dyn Disk, key: &[u8; 16]) -> std::io::Result<Option<u64>> {
        if self.records == 0 {
            return Ok(None);
        }
        // fences[j] is record j·FENCE_STEP. With b fences below the key, its first record
        // lies after fence b-1 and at most at fence b: one block plus one record.
        let below = self.fences.partition_point(|fence| fence < key);
        let start = below.saturating_sub(1) * FENCE_STEP;
        let end = (below * FENCE_STEP + 1).min(self.records as usize);
        if start >= end {
            return Ok(None);
        }
        let width = self.record;
        let mut block = vec![0u8; (end - start) * width];
        let file = disk.open_read(&self.path)?;
        read_exact_at(&*file, &mut block, self.records_at + (start * width) as u64)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::disk::FsDisk;

    #[test]
    fn lookups_find_the_lowest_index_of_every_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.idx");
        let mut keys = Vec::new();
        for i in 0..5000u64 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i % 3000).to_be_bytes());
            keys.push((key, 10_000 + i));
        }
        let bytes = encode(10_000, 5000, 123, &[0, 7], keys);
        std::fs::write(&path, bytes).expect("write");
        let summary = load(&FsDisk, &path).expect("read").expect("valid");
        assert_eq!(summary.count, 5000);
        assert_eq!(summary.offsets, vec![0, 7]);
        for i in 0..3000u64 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&i.to_be_bytes());
            assert_eq!(
                summary.lookup(&FsDisk, &key).expect("read"),
                Some(10_000 + i)
            );
        }
        assert_eq!(summary.lookup(&FsDisk, &[0xff; 16]).expect("read"), None);
        // A file of the first layout (u64 indexes) still answers the same.
        let old_path = dir.path().join("old.idx");
        let mut keys = Vec::new();
        for i in 0..5000u64 {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i % 3000).to_be_bytes());
            keys.push((key, 10_000 + i));
        }
        let old = encode_as(true, 10_000, 5000, 123, &[0, 7], keys.clone());
        assert_eq!(&old[..8], MAGIC_V1);
        assert_eq!(encode_like(&old, 10_000, 5000, 123, &[0, 7], keys), old);
        std::fs::write(&old_path, &old).expect("write");
        let old_summary = load(&FsDisk, &old_path).expect("read").expect("valid");
        for i in (0..3000u64).step_by(7) {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&i.to_be_bytes());
            assert_eq!(
                old_summary.lookup(&FsDisk, &key).expect("read"),
                Some(10_000 + i)
            );
        }
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[60] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(load(&FsDisk, &path).expect("read"), None);
    }
}
