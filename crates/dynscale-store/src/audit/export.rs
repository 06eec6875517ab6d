//! Offline export: every entry of a stopped node's log, in order, straight from the
//! segment files (plain or compressed), without opening the log for writing.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use super::checkpoint_file;
use super::disk::{Disk, FsDisk};
use super::error::AuditError;
use super::frame::FrameError;
use super::segment::{self, Frames, SEGMENTS_DIR, SegmentFile, open_frames_at};

/// Every entry of the log in `dir` with its index. A torn tail of the last segment above
/// the latest checkpoint (what the next open would cut) ends the export quietly; any
/// other damage is an error item, after which the iterator ends.
pub fn read_dir(dir: &Path) -> impl Iterator<Item = Result<(u64, Vec<u8>), AuditError>> + use<> {
    Export {
        dir: dir.to_path_buf(),
        state: State::Start,
    }
}

#[derive(Debug)]
enum State {
    Start,
    Reading {
        pending: VecDeque<(u64, PathBuf, bool)>,
        current: Option<(Frames, PathBuf, bool)>,
        next: u64,
        durable: u64,
    },
    Done,
}

#[derive(Debug)]
struct Export {
    dir: PathBuf,
    state: State,
}

/// The segment files in order: first index, path, compressed. A segment present both
/// plain and compressed is read from the plain file, as recovery would.
pub(crate) fn list(disk: &dyn Disk, dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, AuditError> {
    let segments_dir = dir.join(SEGMENTS_DIR);
    let mut found: BTreeMap<u64, bool> = BTreeMap::new();
    for entry in disk
        .list_dir(&segments_dir)
        .map_err(|e| AuditError::io("list", &segments_dir, e))?
    {
        match segment::parse_file_name(&entry.name) {
            Some((first, SegmentFile::Log)) => {
                found.insert(first, false);
            }
            Some((first, SegmentFile::Zst)) => {
                found.entry(first).or_insert(true);
            }
            _ => {}
        }
    }
    Ok(found
        .into_iter()
        .map(|(first, compressed)| {
            let kind = if compressed {
                SegmentFile::Zst
            } else {
                SegmentFile::Log
            };
            (
                first,
                segments_dir.join(segment::file_name(first, kind)),
                compressed,
            )
        })
        .collect())
}

impl Export {
    fn start(&mut self) -> Result<(), AuditError> {
        let disk = FsDisk;
        let durable =
            checkpoint_file::latest(&disk, &self.dir)?.map_or(0, |latest| latest.checkpoint.size());
        self.state = State::Reading {
            pending: list(&disk, &self.dir)?.into(),
            current: None,
            next: 0,
            durable,
        };
        Ok(())
    }

    fn step(&mut self) -> Option<Result<(u64, Vec<u8>), AuditError>> {
        let State::Reading {
            pending,
            current,
            next,
            durable,
        } = &mut self.state
        else {
            return None;
        };
        loop {
            if current.is_none() {
                let (first, path, compressed) = pending.pop_front()?;
                if first != *next {
                    return Some(Err(AuditError::SegmentGap {
                        segment: path,
                        expected: *next,
                        found: first,
                    }));
                }
                let frames = match open_frames_at(&FsDisk, &path, compressed, 0, None) {
                    Ok(frames) => frames,
                    Err(e) => return Some(Err(AuditError::io("read", &path, e))),
                };
                *current = Some((frames, path, pending.is_empty()));
            }
            let (frames, path, is_last) = current.as_mut()?;
            let mut entry = Vec::new();
            match frames.next_into(&mut entry) {
                Ok(Some(_)) => {
                    let index = *next;
                    *next += 1;
                    return Some(Ok((index, entry)));
                }
                Ok(None) => *current = None,
                Err(FrameError::Bad { .. }) if *is_last && *next >= *durable => return None,
                Err(error) => return Some(Err(segment::frame_error(error, path, *next))),
            }
        }
    }
}

impl Iterator for Export {
    type Item = Result<(u64, Vec<u8>), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if matches!(self.state, State::Start)
            && let Err(error) = self.start()
        {
            self.state = State::Done;
            return Some(Err(error));
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.state = State::Done;
        }
        item
    }
}
