//! Entry framing in segments, and a streaming reader that stops at the first frame
//! that is not whole and checksummed.
//!
//! Two formats, told apart by the segment's first bytes:
//!
//! - **v2** (written now): the segment starts with the 8 bytes `DSAUDSG2`, then frames
//!   `length: LEB128 varint ‖ CRC32C(length bytes ‖ entry): u32 LE ‖ entry`. The length
//!   takes 2 bytes for entries of 128 B to 16 KiB, so a frame costs 6 bytes of framing
//!   instead of 8. The varint must be minimal (no trailing zero groups) and at most 4
//!   bytes; the checksum covers it, so a damaged length is caught like damaged data.
//! - **v1** (segments written before, still read and appended to): no header, frames
//!   `length: u32 LE ‖ CRC32C(entry): u32 LE ‖ entry`.
//!
//! In both a zero length is refused: zeroed pages (a torn write on many file systems)
//! would otherwise read as an endless run of valid empty entries. A v1 segment cannot
//! start with `DSAUDSG2`: those bytes as a u32 length are far above [`MAX_ENTRY_BYTES`].

use std::io::{self, BufReader, Read};

use super::error::FrameProblem;

/// Largest entry the log takes. Far above any decision or event; it bounds what a
/// damaged length field can make a reader allocate.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// Most bytes of framing before an entry (either format).
pub const FRAME_OVERHEAD: u64 = 8;

/// The first bytes of a v2 segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"DSAUDSG2";

/// Longest length varint of a v2 frame: 4 × 7 bits hold [`MAX_ENTRY_BYTES`].
const MAX_VARINT: usize = 4;

/// The frame layout of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFormat {
    /// No header; u32 length ‖ CRC32C(entry).
    V1,
    /// `DSAUDSG2` header; varint length ‖ CRC32C(length ‖ entry).
    V2,
}

impl FrameFormat {
    /// Bytes before the first frame.
    pub(crate) fn header_len(self) -> u64 {
        match self {
            FrameFormat::V1 => 0,
            FrameFormat::V2 => SEGMENT_MAGIC.len() as u64,
        }
    }

    /// The format of a segment starting with `head` (its first bytes, up to 8).
    pub(crate) fn of(head: &[u8]) -> Self {
        if head == SEGMENT_MAGIC {
            FrameFormat::V2
        } else {
            FrameFormat::V1
        }
    }

    /// Bytes a frame of an `entry_len`-byte entry occupies.
    pub(crate) fn frame_len(self, entry_len: usize) -> u64 {
        match self {
            FrameFormat::V1 => 8 + entry_len as u64,
            FrameFormat::V2 => (varint_len(entry_len as u64) + 4 + entry_len) as u64,
        }
    }

    /// Appends the frame of `entry` to `out`.
    pub(crate) fn encode(self, out: &mut Vec<u8>, entry: &[u8]) {
        // Entries are checked against MAX_ENTRY_BYTES before they are queued, so the
        // length fits in a u32 (and in a 4-byte varint).
        let length = u32::try_from(entry.len()).unwrap_or(u32::MAX);
        match self {
            FrameFormat::V1 => {
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(&crc32c::crc32c(entry).to_le_bytes());
            }
            FrameFormat::V2 => {
                let mut varint = [0u8; 5];
                let n = put_varint(&mut varint, length);
                let crc = crc32c::crc32c_append(crc32c::crc32c(&varint[..n]), entry);
                out.extend_from_slice(&varint[..n]);
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        out.extend_from_slice(entry);
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut [u8; 5], mut v: u32) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// Why reading the next frame failed.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The underlying read failed.
    Io(io::Error),
    /// The frame at `offset` is not whole or not checksummed.
    Bad {
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong.
        problem: FrameProblem,
    },
}

/// Reads frames one after the other from a byte stream that starts at `offset` in its
/// segment.
pub(crate) struct FrameReader<R: Read> {
    reader: BufReader<R>,
    offset: u64,
    format: FrameFormat,
}

impl<R: Read> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("offset", &self.offset)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Read buffer: large enough that a segment scan is a few hundred reads per 64 MiB.
const READ_BUFFER: usize = 256 * 1024;

impl<R: Read> FrameReader<R> {
    /// A reader of `format` frames over `reader`, whose first byte is at `offset` in
    /// the segment (at a frame's start).
    pub(crate) fn new(reader: R, offset: u64, format: FrameFormat) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER, reader),
            offset,
            format,
        }
    }

    /// The frame format read.
    pub(crate) fn format(&self) -> FrameFormat {
        self.format
    }

    /// Byte offset of the next frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next entry into `entry`. `Ok(None)` at a clean end of the stream.
    pub(crate) fn next_into(&mut self, entry: &mut Vec<u8>) -> Result<Option<u64>, FrameError> {
        let start = self.offset;
        let bad = |problem| FrameError::Bad {
            offset: start,
            problem,
        };
        // The v2 checksum starts over the length bytes.
        let (length, stored, header_len, seed) = match self.format {
            FrameFormat::V1 => {
                let mut header = [0u8; 8];
                let got = read_full(&mut self.reader, &mut header).map_err(FrameError::Io)?;
                if got == 0 {
                    return Ok(None);
                }
                if got < header.len() {
                    return Err(bad(FrameProblem::Truncated {
                        missing: (header.len() - got) as u64,
                    }));
                }
                let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
                (
                    u32::from_le_bytes([l0, l1, l2, l3]),
                    u32::from_le_bytes([c0, c1, c2, c3]),
                    8,
                    None,
                )
            }
            FrameFormat::V2 => {
                let mut varint = [0u8; MAX_VARINT];
                let mut n = 0;
                let mut length = 0u32;
                loop {
                    let mut byte = [0u8; 1];
                    let got = read_full(&mut self.reader, &mut byte).map_err(FrameError::Io)?;
                    if got == 0 {
                        if n == 0 {
                            return Ok(None);
                        }
                        // At least one more length byte and the checksum.
                        return Err(bad(FrameProblem::Truncated { missing: 5 }));
                    }
                    let [b] = byte;
                    varint[n] = b;
                    length |= u32::from(b & 0x7f) << (7 * n);
                    n += 1;
                    if b & 0x80 == 0 {
                        // A last group of zero after the first is not minimal.
                        if n > 1 && b == 0 {
                            return Err(bad(FrameProblem::Length { length }));
                        }
                        break;
                    }
                    if n == MAX_VARINT {
                        return Err(bad(FrameProblem::Length { length }));
                    }
                }
                let mut crc = [0u8; 4];
                let got = read_full(&mut self.reader, &mut crc).map_err(FrameError::Io)?;
                if got < crc.len() {
                    return Err(bad(FrameProblem::Truncated {
                        missing: (crc.len() - got) as u64,
                    }));
                }
                let stored = u32::from_le_bytes(crc);
                (
                    length,
                    stored,
                    n as u64 + 4,
                    Some(crc32c::crc32c(&varint[..n])),
                )
            }
        };
        // A zero length is refused too: zeroed pages (a torn write on many file systems)
        // would otherwise read as an endless run of valid empty entries.
        let size = usize::try_from(length).unwrap_or(usize::MAX);
        if size == 0 || size > MAX_ENTRY_BYTES {
            return Err(bad(FrameProblem::Length { length }));
        }
        entry.clear();
        entry.resize(size, 0);
        let got = read_full(&mut self.reader, entry).map_err(FrameError::Io)?;
        if got < size {
            return Err(bad(FrameProblem::Truncated {
                missing: (size - got) as u64,
            }));
        }
        let computed = match seed {
            None => crc32c::crc32c(entry),
            Some(seed) => crc32c::crc32c_append(seed, entry),
        };
        if computed != stored {
            return Err(bad(FrameProblem::Checksum { stored, computed }));
        }
        self.offset += header_len + size as u64;
        Ok(Some(start))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(format: FrameFormat, entries: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            format.encode(&mut out, entry);
        }
        out
    }

    #[test]
    fn round_trip_and_clean_end_in_both_formats() {
        let long = vec![7u8; 300];
        for (format, second) in [(FrameFormat::V1, 111), (FrameFormat::V2, 108)] {
            let bytes = frames(format, &[b"one", b"two!", &long]);
            assert_eq!(
                bytes.len() as u64,
                format.frame_len(3) + format.frame_len(4) + format.frame_len(300)
            );
            let mut reader = FrameReader::new(bytes.as_slice(), 100, format);
            let mut entry = Vec::new();
            assert_eq!(reader.next_into(&mut entry).ok().flatten(), Some(100));
            assert_eq!(entry, b"one");
            assert_eq!(reader.next_into(&mut entry).ok().flatten(), Some(second));
            assert_eq!(entry, b"two!");
            assert!(reader.next_into(&mut entry).ok().flatten().is_some());
            assert_eq!(entry, long);
            assert!(matches!(reader.next_into(&mut entry), Ok(None)));
            assert_eq!(reader.offset(), 100 + bytes.len() as u64);
        }
        // 300 bytes take a 2-byte length: 6 bytes of framing.
        assert_eq!(FrameFormat::V2.frame_len(300), 306);
        assert_eq!(FrameFormat::V2.frame_len(127), 132);
        assert_eq!(
            FrameFormat::V2.frame_len(MAX_ENTRY_BYTES),
            4 + 4 + MAX_ENTRY_BYTES as u64
        );
    }

    #[test]
    fn torn_zeroed_and_flipped_frames_are_refused() {
        for format in [FrameFormat::V1, FrameFormat::V2] {
            let bytes = frames(format, &[b"entry"]);
            let mut entry = Vec::new();
            let torn = &bytes[..bytes.len() - 2];
            assert!(matches!(
                FrameReader::new(torn, 0, format).next_into(&mut entry),
                Err(FrameError::Bad {
                    offset: 0,
                    problem: FrameProblem::Truncated { missing: 2 }
                })
            ));
            // Torn inside the header.
            assert!(matches!(
                FrameReader::new(&bytes[..3], 0, format).next_into(&mut entry),
                Err(FrameError::Bad {
                    offset: 0,
                    problem: FrameProblem::Truncated { .. }
                })
            ));
            let zeros = [0u8; 64];
            assert!(matches!(
                FrameReader::new(&zeros[..], 0, format).next_into(&mut entry),
                Err(FrameError::Bad {
                    problem: FrameProblem::Length { length: 0 },
                    ..
                })
            ));
            // Every single bit flip is caught, in the length, checksum or entry.
            for at in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[at] ^= 1 << bit;
                    let mut reader = FrameReader::new(flipped.as_slice(), 0, format);
                    assert!(
                        matches!(reader.next_into(&mut entry), Err(FrameError::Bad { .. })),
                        "{format:?}: flip of bit {bit} in byte {at} was not caught"
                    );
                }
            }
        }
    }

    #[test]
    fn v2_lengths_must_be_minimal_and_short() {
        let mut entry = Vec::new();
        // 5 as a two-byte varint (0x85 0x00): not minimal.
        let mut bytes = vec![0x85, 0x00];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes), b"hello");
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(b"hello");
        assert!(matches!(
            FrameReader::new(bytes.as_slice(), 0, FrameFormat::V2).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Length { .. },
                ..
            })
        ));
        // Five length bytes are refused before anything is allocated.
        let long = [0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0];
        assert!(matches!(
            FrameReader::new(&long[..], 0, FrameFormat::V2).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Length { .. },
                ..
            })
        ));
        // Above the largest entry.
        let mut varint = [0u8; 5];
        let n = put_varint(&mut varint, MAX_ENTRY_BYTES as u32 + 1);
        let mut big = varint[..n].to_vec();
        big.extend_from_slice(&[0; 8]);
        assert!(matches!(
            FrameReader::new(big.as_slice(), 0, FrameFormat::V2).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Length { .. },
                ..
            })
        ));
    }

    #[test]
    fn the_v2_header_is_no_v1_frame() {
        assert_eq!(FrameFormat::of(SEGMENT_MAGIC), FrameFormat::V2);
        assert_eq!(FrameFormat::of(&SEGMENT_MAGIC[..5]), FrameFormat::V1);
        let mut entry = Vec::new();
        assert!(matches!(
            FrameReader::new(&SEGMENT_MAGIC[..], 0, FrameFormat::V1).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Length { .. },
                ..
            })
        ));
    }
}
