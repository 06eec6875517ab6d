//! The sync thread of `batch` and `async` mode: it fdatasyncs the active segment while
//! the writer thread goes on writing (entries there are acknowledged at the write or
//! before). Each job asks for the entries below its index to be made durable, by an
//! fsync that begins after the job was sent (so after the write); jobs queued during an
//! fsync share the next one. In `sync` mode the writer fsyncs each group itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use super::disk::SyncFile;
use super::log::{PoisonInfo, Shared};

/// Entries written to a segment, to be made durable.
#[derive(Debug)]
pub(crate) struct SyncJob {
    /// The segment holding the entries (its first index names it).
    pub(crate) segment: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn SyncFile>,
    /// Entries below this index are written.
    pub(crate) upto: u64,
}

/// The writer's end of the sync thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    tx: Option<Sender<SyncJob>>,
    thread: Option<JoinHandle<()>>,
    /// Entries below this index are durable.
    durable: Arc<AtomicU64>,
}

impl Syncer {
    /// Starts the thread; entries below `durable` are durable already.
    pub(crate) fn start(shared: Arc<Shared>, durable: u64) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let durable = Arc::new(AtomicU64::new(durable));
        let thread = thread::Builder::new().name("audit-sync".into()).spawn({
            let durable = Arc::clone(&durable);
            move || run(&rx, &shared, &durable)
        })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            durable,
        })
    }

    /// Entries below this index are durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// Queues a job; gives it back when the thread is gone.
    pub(crate) fn send(&mut self, job: SyncJob) -> Result<(), SyncJob> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Lets the thread finish every queued job, then joins it.
    pub(crate) fn stop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(rx: &Receiver<SyncJob>, shared: &Shared, durable: &AtomicU64) {
    while let Ok(job) = rx.recv() {
        let mut jobs = vec![job];
        jobs.extend(rx.try_iter());
        let upto = jobs.iter().map(|j| j.upto).max().unwrap_or(0);
        // Jobs queued while an fsync ran may be covered by it already.
        if upto > durable.load(Ordering::SeqCst) && shared.poisoned.get().is_none() {
            match sync(&jobs) {
                Ok(()) => {
                    durable.fetch_max(upto, Ordering::SeqCst);
                }
                Err(info) => {
                    shared.poisoned.set(info);
                }
            }
        }
    }
}

/// One fdatasync per segment among the jobs (the segment rolls rarely). A failure
/// poisons the log: after a failed fsync the kernel may have dropped the dirty pages.
fn sync(jobs: &[SyncJob]) -> Result<(), PoisonInfo> {
    let mut last = None;
    for job in jobs {
        if last == Some(job.segment) {
            continue;
        }
        if let Err(error) = job.file.sync_data() {
            return Err(PoisonInfo {
                op: "fsync",
                path: job.path.clone(),
                kind: error.kind(),
            });
        }
        last = Some(job.segment);
    }
    Ok(())
}
