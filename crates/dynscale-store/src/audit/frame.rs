//! Entry framing in segments: `u32 length ‖ u32 CRC32C(bytes) ‖ bytes`, little endian,
//! and a streaming reader that stops at the first frame that is not whole and checksummed.

use std::io::{self, BufReader, Read};

use super::error::FrameProblem;

/// Largest entry the log takes. Far above any decision or event; it bounds what a
/// damaged length field can make a reader allocate.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// Bytes of framing before each entry.
pub const FRAME_OVERHEAD: u64 = 8;

/// Bytes a frame of an `entry_len`-byte entry occupies.
pub(crate) fn frame_len(entry_len: usize) -> u64 {
    FRAME_OVERHEAD + entry_len as u64
}

/// Appends the frame of `entry` to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, entry: &[u8]) {
    // Entries are checked against MAX_ENTRY_BYTES before they are queued, so the
    // length fits in a u32.
    let length = u32::try_from(entry.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(entry).to_le_bytes());
    out.extend_from_slice(entry);
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
}

impl<R: Read> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Read buffer: large enough that a segment scan is a few hundred reads per 64 MiB.
const READ_BUFFER: usize = 256 * 1024;

impl<R: Read> FrameReader<R> {
    /// A reader over `reader`, whose first byte is at `offset` in the segment.
    pub(crate) fn new(reader: R, offset: u64) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER, reader),
            offset,
        }
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
        let mut header = [0u8; FRAME_OVERHEAD as usize];
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
        let length = u32::from_le_bytes([l0, l1, l2, l3]);
        let stored = u32::from_le_bytes([c0, c1, c2, c3]);
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
        let computed = crc32c::crc32c(entry);
        if computed != stored {
            return Err(bad(FrameProblem::Checksum { stored, computed }));
        }
        self.offset += frame_len(size);
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

    fn frames(entries: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            encode_frame(&mut out, entry);
        }
        out
    }

    #[test]
    fn round_trip_and_clean_end() {
        let bytes = frames(&[b"one", b"two!"]);
        let mut reader = FrameReader::new(bytes.as_slice(), 100);
        let mut entry = Vec::new();
        assert_eq!(reader.next_into(&mut entry).ok().flatten(), Some(100));
        assert_eq!(entry, b"one");
        assert_eq!(reader.next_into(&mut entry).ok().flatten(), Some(111));
        assert_eq!(entry, b"two!");
        assert!(matches!(reader.next_into(&mut entry), Ok(None)));
        assert_eq!(reader.offset(), 100 + bytes.len() as u64);
    }

    #[test]
    fn torn_zeroed_and_flipped_frames_are_refused() {
        let bytes = frames(&[b"entry"]);
        let mut entry = Vec::new();
        let torn = &bytes[..bytes.len() - 2];
        assert!(matches!(
            FrameReader::new(torn, 0).next_into(&mut entry),
            Err(FrameError::Bad {
                offset: 0,
                problem: FrameProblem::Truncated { missing: 2 }
            })
        ));
        let zeros = [0u8; 64];
        assert!(matches!(
            FrameReader::new(&zeros[..], 0).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Length { length: 0 },
                ..
            })
        ));
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(
            FrameReader::new(flipped.as_slice(), 0).next_into(&mut entry),
            Err(FrameError::Bad {
                problem: FrameProblem::Checksum { .. },
                ..
            })
        ));
    }
}
