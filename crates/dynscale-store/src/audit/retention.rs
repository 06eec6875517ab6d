//! Retention: a background thread that replaces sealed segments older than
//! `compress_after` with one zstd stream of the same bytes. It runs off the writer
//! thread so compressing 64 MiB never holds up an append.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::checkpoint_file::TMP_DIR;
use super::disk::{AppendWriter, ReadCursor};
use super::error::AuditError;
use super::log::Shared;
use super::segment::{self, SEGMENTS_DIR, SegmentFile};

/// zstd level: the library default, a good ratio at several hundred MB/s.
const LEVEL: i32 = 3;

#[derive(Debug)]
enum Message {
    /// A segment was sealed: look now rather than at the next tick.
    Poke,
    Stop,
}

/// Lets the writer wake the retention thread.
#[derive(Debug, Clone)]
pub(crate) struct Poker(Sender<Message>);

impl Poker {
    pub(crate) fn poke(&self) {
        // The thread may have stopped at close; then there is nothing to wake.
        let _ = self.0.send(Message::Poke);
    }
}

/// The running retention thread.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: Sender<Message>,
    thread: JoinHandle<()>,
}

impl Handle {
    pub(crate) fn poker(&self) -> Poker {
        Poker(self.tx.clone())
    }

    pub(crate) fn stop(self) {
        let _ = self.tx.send(Message::Stop);
        if self.thread.join().is_err() {
            tracing::error!("the audit retention thread panicked");
        }
    }
}

/// Starts the thread; it makes a pass at once (so a log reopened after a long stop is
/// compressed), then at every tick and poke.
pub(crate) fn spawn(shared: Arc<Shared>, age: Duration, tick: Duration) -> io::Result<Handle> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("audit-retention".into())
        .spawn(move || run(&shared, age, tick, &rx))?;
    Ok(Handle { tx, thread })
}

fn run(shared: &Shared, age: Duration, tick: Duration, rx: &Receiver<Message>) {
    loop {
        if let Err(error) = pass(shared, age) {
            tracing::warn!(%error, "audit log: compressing a sealed segment failed");
        }
        match rx.recv_timeout(tick) {
            Ok(Message::Poke) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Compresses every sealed, uncompressed segment last modified at least `age` ago.
fn pass(shared: &Shared, age: Duration) -> Result<(), AuditError> {
    let candidates: Vec<u64> = {
        let segments = shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let sealed = segments.len().saturating_sub(1);
        segments[..sealed]
            .iter()
            .filter(|s| !s.view.compressed)
            .map(|s| s.view.first)
            .collect()
    };
    let now = SystemTime::now();
    for first in candidates {
        let path = shared
            .dir
            .join(SEGMENTS_DIR)
            .join(segment::file_name(first, SegmentFile::Log));
        let info = shared
            .disk
            .info(&path)
            .map_err(|e| AuditError::io("stat", &path, e))?;
        let old_enough = info.is_some_and(|info| {
            now.duration_since(info.modified)
                .is_ok_and(|elapsed| elapsed >= age)
        });
        if old_enough {
            compress(shared, first)?;
        }
    }
    Ok(())
}

/// Replaces `<first>.log` with `<first>.log.zst`: compress to a temporary file, sync,
/// rename, sync the directory, switch readers to it, then remove the plain file. A
/// crash at any point leaves a readable segment (both files: the plain one is used).
pub(crate) fn compress(shared: &Shared, first: u64) -> Result<(), AuditError> {
    let disk = &*shared.disk;
    let segments_dir = shared.dir.join(SEGMENTS_DIR);
    let plain = segments_dir.join(segment::file_name(first, SegmentFile::Log));
    let packed = segments_dir.join(segment::file_name(first, SegmentFile::Zst));
    let tmp = shared.dir.join(TMP_DIR).join(format!(
        "{}.tmp",
        segment::file_name(first, SegmentFile::Zst)
    ));
    let io = |op: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |e| AuditError::io(op, path, e)
    };
    let _ = disk.remove_file(&tmp);
    let plain_len = disk
        .info(&plain)
        .map_err(io("stat", &plain))?
        .map_or(0, |info| info.len);
    let result = (|| {
        let mut reader = ReadCursor::new(disk.open_read(&plain)?, 0);
        let writer = AppendWriter(disk.open_append(&tmp)?);
        let mut encoder = zstd::stream::write::Encoder::new(writer, LEVEL)?;
        io::copy(&mut reader, &mut encoder)?;
        let mut writer = encoder.finish()?;
        writer.0.sync_data()
    })();
    if let Err(error) = result {
        let _ = disk.remove_file(&tmp);
        return Err(AuditError::io("compress", &plain, error));
    }
    disk.rename(&tmp, &packed).map_err(io("rename", &tmp))?;
    disk.sync_dir(&segments_dir)
        .map_err(io("fsync directory", &segments_dir))?;
    {
        let mut segments = shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(segment) = segments.iter_mut().find(|s| s.view.first == first) {
            segment.view.compressed = true;
        }
    }
    disk.remove_file(&plain).map_err(io("remove", &plain))?;
    disk.sync_dir(&segments_dir)
        .map_err(io("fsync directory", &segments_dir))?;
    let packed_len = disk
        .info(&packed)
        .map_err(io("stat", &packed))?
        .map_or(0, |info| info.len);
    shared.used_bytes.fetch_add(packed_len, Ordering::SeqCst);
    // Saturating: the accounting must never wrap if the two ever disagree.
    let _ = shared
        .used_bytes
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            Some(used.saturating_sub(plain_len))
        });
    Ok(())
}
