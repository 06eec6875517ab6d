//! Entry framing in segments, and a streaming reader that stops at the first frame
//! that is not whole and checksummed.
//!
//! Two formats, told apart by the segment's first bytes:
//!
//! - **v2** (written now): the segment starts with the 8 bytes `DSAUDSG2`, then frames
//!   `length ‖ CRC32C(length bytes ‖ entry): u32 LE ‖ entry`. The length is one byte
//!   for 1..=251, `0xFC ‖ u16 LE` for 252..=65535 and `0xFD ‖ u32 LE` above, always the
//!   shortest form; so a decision's frame costs 5 bytes of framing instead of 8. The
//!   checksum covers the length, so a damaged length is caught like damaged data.
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

/// Largest length a v2 frame writes in one byte.
const SHORT_MAX: u32 = 0xFB;
/// v2 length prefixes of a u16 and a u32 length.
const LEN_U16: u8 = 0xFC;
const LEN_U32: u8 = 0xFD;
/// Longest v2 length field.
const MAX_LENGTH_BYTES: usize = 5;

/// The frame layout of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFormat {
    /// No header; u32 length ‖ CRC32C(entry).
    V1,
    /// `DSAUDSG2` header; 1, 3 or 5 length bytes ‖ CRC32C(length ‖ entry).
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
            FrameFormat::V2 => (length_bytes(entry_len) + 4 + entry_len) as u64,
        }
    }

    /// Appends the frame of `entry` to `out`.
    pub(crate) fn encode(self, out: &mut Vec<u8>, entry: &[u8]) {
        // Entries are checked against MAX_ENTRY_BYTES before they are queued, so the
        // length fits in a u32.
        let length = u32::try_from(entry.len()).unwrap_or(u32::MAX);
        match self {
            FrameFormat::V1 => {
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(&crc32c::crc32c(entry).to_le_bytes());
            }
            FrameFormat::V2 => {
                let mut field = [0u8; MAX_LENGTH_BYTES];
                let n = put_length(&mut field, length);
                let crc = crc32c::crc32c_append(crc32c::crc32c(&field[..n]), entry);
                out.extend_from_slice(&field[..n]);
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        out.extend_from_slice(entry);
    }
}

/// Bytes of the v2 length field of an `entry_len`-byte entry.
fn length_bytes(entry_len: usize) -> usize {
    match entry_len {
        0..=0xFB => 1,
        0xFC..=0xFFFF => 3,
        _ => 5,
    }
}

/// Writes the v2 length field; returns its bytes.
fn put_length(out: &mut [u8; MAX_LENGTH_BYTES], length: u32) -> usize {
    if length <= SHORT_MAX {
        out[0] = length as u8;
        1
    } else if let Ok(short) = u16::try_from(length) {
        out[0] = LEN_U16;
        out[1..3].copy_from_slice(&short.to_le_bytes());
        3
    } else {
        out[0] = LEN_U32;
        out[1..5].copy_from_slice(&length.to_le_bytes());
        5
    }
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
                let mut field = [0u8; MAX_LENGTH_BYTES];
                let got = read_full(&mut self.reader, &mut field[..1]).map_err(FrameError::Io)?;
                if got == 0 {
                    return Ok(None);
                }
                let n = match field[0] {
                    LEN_U16 => 3,
                    LEN_U32 => 5,
                    _ => 1,
                };
                if n > 1 {
                    let got =
                        read_full(&mut self.reader, &mut field[1..n]).map_err(FrameError::Io)?;
                    if got < n - 1 {
                        // The rest of the length and the checksum.
                        return Err(bad(FrameProblem::Truncated {
                            missing: (n - 1 - got + 4) as u64,
                        }));
                    }
                }
                let length = match n {
                    3 => u32::from(u16::from_le_bytes([field[1], field[2]])),
                    5 => u32::from_le_bytes([field[1], field[2], field[3], field[4]]),
                    _ => u32::from(field[0]),
                };
                // Only the shortest form is a length; 0xFE and 0xFF are none.
                if length_bytes(length as usize) != n || field[0] > LEN_U32 {
                    return Err(bad(FrameProblem::Length { length }));
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
                    Some(crc32c::crc32c(&field[..n])),
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
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
        // Up to 251 bytes the length takes one byte, then three, then five.
        assert_eq!(FrameFormat::V2.frame_len(251), 256);
        assert_eq!(FrameFormat::V2.frame_len(252), 259);
        assert_eq!(FrameFormat::V2.frame_len(65_535), 65_542);
        assert_eq!(FrameFormat::V2.frame_len(65_536), 65_545);
        assert_eq!(
            FrameFormat::V2.frame_len(MAX_ENTRY_BYTES),
            5 + 4 + MAX_ENTRY_BYTES as u64
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
    fn v2_lengths_round_trip_at_every_width_and_must_be_shortest() {
        for len in [1usize, 251, 252, 300, 65_535, 65_536, 70_000] {
            let entry = vec![0xa5u8; len];
            let bytes = frames(FrameFormat::V2, &[&entry]);
            assert_eq!(bytes.len() as u64, FrameFormat::V2.frame_len(len));
            let mut reader = FrameReader::new(bytes.as_slice(), 0, FrameFormat::V2);
            let mut read = Vec::new();
            assert_eq!(reader.next_into(&mut read).ok().flatten(), Some(0), "{len}");
            assert_eq!(read, entry);
        }
        let framed = |field: &[u8], entry: &[u8]| {
            let mut bytes = field.to_vec();
            let crc = crc32c::crc32c_append(crc32c::crc32c(field), entry);
            bytes.extend_from_slice(&crc.to_le_bytes());
            bytes.extend_from_slice(entry);
            bytes
        };
        let mut entry = Vec::new();
        // 5 written in three or five bytes, prefixes 0xFE and 0xFF, a length above the
        // largest entry: all refused, even with a matching checksum.
        let too_long = u32::try_from(MAX_ENTRY_BYTES + 1).unwrap_or(u32::MAX);
        let mut above = vec![LEN_U32];
        above.extend_from_slice(&too_long.to_le_bytes());
        for bad in [
            framed(&[LEN_U16, 5, 0], b"hello"),
            framed(&[LEN_U32, 5, 0, 0, 0], b"hello"),
            framed(&[0xFE], b"hello"),
            framed(&[0xFF], b"hello"),
            framed(&above, b"hello"),
        ] {
            assert!(
                matches!(
                    FrameReader::new(bad.as_slice(), 0, FrameFormat::V2).next_into(&mut entry),
                    Err(FrameError::Bad {
                        problem: FrameProblem::Length { .. },
                        ..
                    })
                ),
                "{:02x?}",
                &bad[..5]
            );
        }
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
