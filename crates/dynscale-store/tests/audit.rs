//! The audit log on disk: round trips in every durability mode, dense indexes under
//! concurrency, group commit, torn tails and corruption, tampering caught by
//! `verify_dir`, a full cap or disk, segment rolls with zstd, proofs against signed
//! checkpoints, key lookups, and crashes injected at random points.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynscale_core::merkle::{
    Checkpoint, MemoryHashes, Signer, Verifier, leaf_hash, open_checkpoint, tree_hash,
    verify_consistency, verify_inclusion,
};
use dynscale_store::audit::{
    AfterTear, AuditConfig, AuditError, AuditLog, Durability, FaultyDisk, FrameProblem,
    VerifyError, read_dir, verify_dir,
};

const ORIGIN: &str = "test.local/audit";

fn signer() -> Signer {
    Signer::from_seed("test.local-audit", [7u8; 32]).expect("a valid key name")
}

fn verifier() -> Verifier {
    signer().verifier()
}

/// An entry as the server shapes them: kind byte, 16-byte id, then a body.
fn entry(i: u64) -> Vec<u8> {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&key(i));
    bytes.extend_from_slice(format!("decision {i} allow").as_bytes());
    bytes
}

fn key(i: u64) -> [u8; 16] {
    (u128::from(i) | 0xabcd << 64).to_be_bytes()
}

fn config(dir: &Path, durability: Durability) -> AuditConfig {
    let mut config = AuditConfig::new(dir, ORIGIN);
    config.durability = durability;
    // Tests sign checkpoints explicitly or at close; an hour never elapses here.
    config.checkpoint_interval = Duration::from_secs(3600);
    config
}

fn open(config: AuditConfig) -> (AuditLog, dynscale_store::audit::Recovery) {
    AuditLog::open(config, signer()).unwrap_or_else(|e| panic!("open: {e}"))
}

fn open_faulty(config: AuditConfig, disk: &FaultyDisk) -> AuditLog {
    AuditLog::open_with_disk(config, signer(), Arc::new(disk.clone()))
        .unwrap_or_else(|e| panic!("open: {e}"))
        .0
}

fn opened(note: &str) -> Checkpoint {
    open_checkpoint(note, &verifier()).expect("the log's own checkpoint verifies")
}

fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .expect("segments dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

/// Bytes before a segment's first frame (its format header).
const SEGMENT_HEADER: u64 = 8;
/// Bytes of framing before an entry: a one-byte length (test entries are shorter than
/// 128 bytes) and the checksum.
const FRAME_HEADER: u64 = 5;

/// Bytes of entry `i`'s frame.
fn frame_len(i: u64) -> u64 {
    let len = entry(i).len() as u64;
    assert!(len < 128, "a test entry takes a one-byte length");
    FRAME_HEADER + len
}

async fn append_all(log: &AuditLog, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(log.append(entry(i)).await.expect("append"), i);
    }
}

fn assert_entries(log: &AuditLog, count: u64) {
    let read = log.entries(0, usize::MAX).expect("entries");
    assert_eq!(read.len() as u64, count);
    for (i, (index, bytes)) in read.into_iter().enumerate() {
        assert_eq!(index, i as u64);
        assert_eq!(bytes, entry(i as u64), "entry {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_in_every_mode() {
    for durability in [Durability::Sync, Durability::Batch, Durability::Async] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, recovery) = open(config(dir.path(), durability));
        assert_eq!(recovery.entries, 0);
        append_all(&log, 0..50).await;
        let batch: Vec<Vec<u8>> = (50..120).map(entry).collect();
        let indexes = log.append_batch(batch).await.expect("batch");
        assert_eq!(indexes, (50..120).collect::<Vec<_>>());
        assert_eq!(log.size(), 120);
        // Async entries may still be queued; a checkpoint goes through the writer.
        let checkpoint = opened(&log.checkpoint_now().expect("checkpoint"));
        assert_eq!(checkpoint.size(), 120);
        assert_entries(&log, 120);
        assert_eq!(log.entries(100, 5).expect("entries").len(), 5);
        assert_eq!(log.entries(118, 5).expect("entries").len(), 2);
        log.close().expect("close");

        let (log, recovery) = open(config(dir.path(), durability));
        assert_eq!(recovery.entries, 120, "{durability:?}");
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(log.size(), 120);
        assert_entries(&log, 120);
        assert_eq!(log.index_of(&key(77)).expect("lookup"), Some(77));
        assert_eq!(log.append(entry(120)).await.expect("append"), 120);
        let latest = log
            .latest_checkpoint()
            .expect("latest")
            .expect("one exists");
        assert_eq!(opened(&latest).size(), 120);
        log.close().expect("close");

        let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
        assert_eq!(report.entries, 121);
        assert_eq!(report.latest_checkpoint, Some(121));
        let exported: Vec<(u64, Vec<u8>)> = read_dir(dir.path())
            .collect::<Result<_, _>>()
            .expect("export");
        assert_eq!(exported.len(), 121);
        assert_eq!(exported[120], (120, entry(120)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_dense_ordered_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path(), Durability::Batch);
    // A small queue makes appenders wait for slots (backpressure) as well.
    config.queue = 16;
    let (log, _) = open(config);
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for seq in 0..300u64 {
                let id = task * 1000 + seq;
                mine.push((log.append(entry(id)).await.expect("append"), id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task");
        // Each appender's entries are in the order it appended them.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(mine);
    }
    all.sort();
    let indexes: Vec<u64> = all.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, (0..2400).collect::<Vec<_>>());
    let read = log.entries(0, 3000).expect("entries");
    for ((index, id), (read_index, bytes)) in all.iter().zip(read) {
        assert_eq!(*index, read_index);
        assert_eq!(bytes, entry(*id), "index {index}");
    }
    assert_eq!(log.queue_depth(), 0);
    log.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_fsyncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = FaultyDisk::default();
    let log = open_faulty(config(dir.path(), Durability::Sync), &disk);
    let before = disk.data_syncs();
    let appends: Vec<_> = (0..2000u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(entry(i)).await })
        })
        .collect();
    let mut indexes = Vec::new();
    for append in appends {
        indexes.push(append.await.expect("task").expect("append"));
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..2000).collect::<Vec<_>>());
    let syncs = disk.data_syncs() - before;
    let writes = disk.appends();
    // One fsync per entry would be 2000; group commit shares each one among every
    // entry queued while the previous one ran.
    assert!(syncs >= 1, "sync mode must fsync");
    assert!(syncs < 1000, "{syncs} fsyncs for 2000 sync appends");
    assert!(writes < 1000, "{writes} writes for 2000 appends");
    log.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_from_a_crash_mid_write_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = FaultyDisk::default();
    let log = open_faulty(config(dir.path(), Durability::Sync), &disk);
    append_all(&log, 0..10).await;
    log.checkpoint_now().expect("checkpoint");
    append_all(&log, 10..15).await;
    // The next write reaches the disk only in part, then the process dies.
    disk.tear_next_append(11, AfterTear::Crash);
    assert!(log.append(entry(15)).await.is_err());
    drop(log);

    let (log, recovery) = open(config(dir.path(), Durability::Sync));
    assert_eq!(recovery.entries, 15);
    assert_eq!(recovery.truncated_bytes, 11);
    assert_entries(&log, 15);
    assert_eq!(log.append(entry(15)).await.expect("append"), 15);
    log.close().expect("close");
    verify_dir(dir.path(), Some(&verifier())).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cut_mid_frame_above_the_checkpoint_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = FaultyDisk::default();
    let log = open_faulty(config(dir.path(), Durability::Sync), &disk);
    append_all(&log, 0..10).await;
    log.checkpoint_now().expect("checkpoint");
    append_all(&log, 10..14).await;
    // Kill the process: no final checkpoint.
    disk.crash();
    drop(log);
    let segment = &segment_files(dir.path(), ".log")[0];
    let cut_at = SEGMENT_HEADER + (0..13).map(frame_len).sum::<u64>() + 6;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .expect("open");
    file.set_len(cut_at).expect("cut");
    drop(file);

    let (log, recovery) = open(config(dir.path(), Durability::Sync));
    assert_eq!(recovery.entries, 13);
    assert_eq!(recovery.truncated_bytes, 6);
    assert_entries(&log, 13);
    log.close().expect("close");
    let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    assert_eq!(report.entries, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_entry_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(config(dir.path(), Durability::Batch));
    append_all(&log, 0..10).await;
    log.close().expect("close");
    let segment = &segment_files(dir.path(), ".log")[0];
    let mut bytes = std::fs::read(segment).expect("read");
    bytes.extend_from_slice(&[0x5a; 100]);
    std::fs::write(segment, bytes).expect("write");
    // Offline tools see the garbage as a torn tail, not as entries.
    let report = verify_dir(dir.path(), None).expect("verifies");
    assert_eq!(report.torn_tail_bytes, 100);
    assert_eq!(read_dir(dir.path()).count(), 10);

    let (log, recovery) = open(config(dir.path(), Durability::Batch));
    assert_eq!(recovery.entries, 10);
    assert_eq!(recovery.truncated_bytes, 100);
    append_all(&log, 10..12).await;
    assert_entries(&log, 12);
    log.close().expect("close");
    let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    assert_eq!(report.torn_tail_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_durable_data_is_refused_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut small = config(dir.path(), Durability::Sync);
    small.segment_bytes = 1024;
    let (log, _) = open(small.clone());
    append_all(&log, 0..100).await;
    log.close().expect("close");
    let segments = segment_files(dir.path(), ".log");
    assert!(segments.len() > 3, "{} segments", segments.len());

    // The last segment, below the latest checkpoint: durable, so refused, not cut.
    let last = segments.last().expect("a segment").clone();
    let last_first: u64 = last
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n[..20].parse().ok())
        .expect("numbered");
    flip(&last, SEGMENT_HEADER + FRAME_HEADER + 3);
    match AuditLog::open(small.clone(), signer()) {
        Err(AuditError::Corrupt {
            segment,
            offset,
            index,
            problem: FrameProblem::Checksum { .. },
        }) => {
            assert_eq!(segment, last);
            assert_eq!(offset, SEGMENT_HEADER);
            assert_eq!(index, last_first);
        }
        other => panic!("expected corruption in {}, got {other:?}", last.display()),
    }
    flip(&last, SEGMENT_HEADER + FRAME_HEADER + 3);

    // A sealed segment in the middle whose key index must be rebuilt: scanned, refused.
    let middle = &segments[1];
    let middle_first: u64 = middle
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n[..20].parse().ok())
        .expect("numbered");
    let offset = SEGMENT_HEADER + frame_len(middle_first) + frame_len(middle_first + 1);
    flip(middle, offset + 12);
    std::fs::remove_file(middle.with_extension("idx")).expect("remove idx");
    match AuditLog::open(small.clone(), signer()) {
        Err(AuditError::Corrupt {
            segment,
            offset: at,
            index,
            ..
        }) => {
            assert_eq!(&segment, middle);
            assert_eq!(at, offset);
            assert_eq!(index, middle_first + 2);
        }
        other => panic!("expected corruption in {}, got {other:?}", middle.display()),
    }
    let error = verify_dir(dir.path(), None).expect_err("damaged");
    assert!(
        matches!(&error, VerifyError::Entry { index, segment, offset: at, .. }
            if *index == middle_first + 2 && segment == middle && *at == offset),
        "{error:?}"
    );
    let export: Vec<_> = read_dir(dir.path()).collect();
    assert!(matches!(
        export.last(),
        Some(Err(AuditError::Corrupt { .. }))
    ));
    assert_eq!(export.len() as u64, middle_first + 2 + 1);
}

/// A closed log of 600 entries over several segments, with full and partial tiles.
async fn sample_log(dir: &Path) -> AuditConfig {
    let mut config = config(dir, Durability::Batch);
    config.segment_bytes = 8 * 1024;
    let (log, _) = open(config.clone());
    append_all(&log, 0..300).await;
    log.checkpoint_now().expect("checkpoint");
    append_all(&log, 300..600).await;
    log.close().expect("close");
    verify_dir(dir, Some(&verifier())).expect("the untouched log verifies");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_a_segment_names_the_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    sample_log(dir.path()).await;
    let segments = segment_files(dir.path(), ".log");
    let target = &segments[2];
    let first: u64 = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n[..20].parse().ok())
        .expect("numbered");
    let offset: u64 = SEGMENT_HEADER + (first..first + 5).map(frame_len).sum::<u64>();
    flip(target, offset + FRAME_HEADER + 17);
    match verify_dir(dir.path(), Some(&verifier())) {
        Err(VerifyError::Entry {
            index,
            segment,
            offset: at,
            problem: FrameProblem::Checksum { .. },
        }) => {
            assert_eq!(index, first + 5);
            assert_eq!(&segment, target);
            assert_eq!(at, offset);
        }
        other => panic!("expected entry {} named, got {other:?}", first + 5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_a_tile_names_the_tile() {
    let dir = tempfile::tempdir().expect("temp dir");
    sample_log(dir.path()).await;
    let tile = dir.path().join("tile/0/001");
    flip(&tile, 32 * 7 + 3);
    match verify_dir(dir.path(), None) {
        Err(VerifyError::TileMismatch {
            path,
            position,
            first_entry,
            ..
        }) => {
            assert_eq!(path, tile);
            assert_eq!(position, 7);
            assert_eq!(first_entry, 256 + 7);
        }
        other => panic!("expected the tile named, got {other:?}"),
    }
    flip(&tile, 32 * 7 + 3);
    // A partial tile written for a checkpoint is checked too.
    let partial = dir.path().join("tile/0/002.p/88");
    assert!(
        partial.exists(),
        "the final checkpoint at 600 wrote a partial tile"
    );
    flip(&partial, 0);
    match verify_dir(dir.path(), None) {
        Err(VerifyError::TileMismatch { path, position, .. }) => {
            assert_eq!(path, partial);
            assert_eq!(position, 0);
        }
        other => panic!("expected the partial tile named, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_a_checkpoint_names_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    sample_log(dir.path()).await;
    let checkpoint = dir.path().join(format!("checkpoints/{:020}", 300));
    let note = std::fs::read_to_string(&checkpoint).expect("read");
    // Change one character of the root line: the signature no longer verifies.
    let root_at = note
        .find('\n')
        .and_then(|a| note[a + 1..].find('\n').map(|b| a + b + 2));
    flip(&checkpoint, root_at.expect("a root line") as u64 + 4);
    match verify_dir(dir.path(), Some(&verifier())) {
        Err(VerifyError::Checkpoint { path, .. }) => assert_eq!(path, checkpoint),
        other => panic!("expected the checkpoint named, got {other:?}"),
    }
    // Without the key the forged root is caught against the recomputed tree.
    match verify_dir(dir.path(), None) {
        Err(VerifyError::Checkpoint { path, .. } | VerifyError::CheckpointRoot { path, .. }) => {
            assert_eq!(path, checkpoint)
        }
        other => panic!("expected the checkpoint named, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_cap_refuses_then_resumes_without_losing_anything() {
    for durability in [Durability::Sync, Durability::Async] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut capped = config(dir.path(), durability);
        capped.max_bytes = Some(16 * 1024);
        let (log, _) = open(capped.clone());
        let mut acked = 0u64;
        let mut refused = false;
        for i in 0..10_000u64 {
            match log.append(entry(i)).await {
                Ok(index) => {
                    assert_eq!(index, i);
                    acked = i + 1;
                }
                Err(AuditError::Full { max_bytes, .. }) => {
                    assert_eq!(max_bytes, Some(16 * 1024));
                    refused = true;
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(refused, "{durability:?}: the cap was never reached");
        assert!(acked > 50, "{durability:?}: only {acked} fit");
        if durability == Durability::Sync {
            // Nothing acknowledged is lost while full.
            assert_entries(&log, acked);
            assert!(
                log.used_bytes() <= 16 * 1024,
                "used {} acked {acked}",
                log.used_bytes()
            );
        }
        log.set_max_bytes(None);
        // Async entries refused at the cap may need the writer's retry to clear it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let next = loop {
            match log.append(entry(acked)).await {
                Ok(index) => break index,
                Err(AuditError::Full { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(other) => {
                    panic!("{durability:?}: still refused after raising the cap: {other}")
                }
            }
        };
        assert_eq!(next, acked);
        log.close().expect("close");

        let (log, recovery) = open(config(dir.path(), durability));
        assert_eq!(recovery.entries, acked + 1, "{durability:?}");
        assert_entries(&log, acked + 1);
        log.close().expect("close");
        verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_then_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = FaultyDisk::default();
    let log = open_faulty(config(dir.path(), Durability::Sync), &disk);
    append_all(&log, 0..20).await;

    disk.set_no_space(true);
    match log.append(entry(20)).await {
        Err(AuditError::Full {
            max_bytes: None, ..
        }) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    disk.set_no_space(false);
    assert_eq!(log.append(entry(20)).await.expect("space is back"), 20);

    // A write torn by ENOSPC leaves no partial frame behind.
    disk.tear_next_append(5, AfterTear::NoSpace);
    assert!(matches!(
        log.append(entry(21)).await,
        Err(AuditError::Full {
            max_bytes: None,
            ..
        })
    ));
    append_all(&log, 21..30).await;
    assert_entries(&log, 30);
    log.close().expect("close");

    let (log, recovery) = open(config(dir.path(), Durability::Sync));
    assert_eq!(recovery.entries, 30);
    assert_eq!(recovery.truncated_bytes, 0);
    log.close().expect("close");
    verify_dir(dir.path(), Some(&verifier())).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_and_compressed_segments_keep_reads_proofs_and_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path(), Durability::Batch);
    config.segment_bytes = 4096;
    config.compress_after = Some(Duration::ZERO);
    config.checkpoint_interval = Duration::from_millis(50);
    let (log, _) = open(config.clone());
    append_all(&log, 0..1500).await;
    let checkpoint = opened(&log.checkpoint_now().expect("checkpoint"));
    // The retention thread compresses every sealed segment; wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while segment_files(dir.path(), ".log").len() > 1 {
        assert!(Instant::now() < deadline, "segments were not compressed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let compressed = segment_files(dir.path(), ".log.zst");
    assert!(compressed.len() > 10, "{} compressed", compressed.len());
    assert_entries(&log, 1500);
    assert_eq!(log.entries(700, 3).expect("read")[0], (700, entry(700)));
    assert_eq!(log.index_of(&key(3)).expect("lookup"), Some(3));
    assert_eq!(log.index_of(&key(1234)).expect("lookup"), Some(1234));
    for index in [0u64, 1, 699, 1499] {
        let proof = log.inclusion_proof(index, 1500).expect("proof");
        verify_inclusion(
            index,
            1500,
            &leaf_hash(&entry(index)),
            &proof,
            &checkpoint.root(),
        )
        .expect("inclusion verifies");
    }
    log.close().expect("close");

    let (log, recovery) = open(config);
    assert_eq!(recovery.entries, 1500);
    assert_entries(&log, 1500);
    assert_eq!(log.index_of(&key(42)).expect("lookup"), Some(42));
    log.close().expect("close");
    let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    assert_eq!(report.entries, 1500);
    assert!(report.key_indexes > 10);
    let exported = read_dir(dir.path())
        .collect::<Result<Vec<_>, _>>()
        .expect("export");
    assert_eq!(exported.len(), 1500);
    assert_eq!(exported[1000], (1000, entry(1000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_against_signed_checkpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(config(dir.path(), Durability::Batch));
    append_all(&log, 0..700).await;
    let old = opened(&log.checkpoint_now().expect("checkpoint"));
    for start in (700..70_000u64).step_by(1000) {
        let batch: Vec<Vec<u8>> = (start..(start + 1000).min(70_000)).map(entry).collect();
        let indexes = log.append_batch(batch).await.expect("batch");
        assert_eq!(indexes.first(), Some(&start));
    }
    let new = opened(&log.checkpoint_now().expect("checkpoint"));
    assert_eq!((old.size(), new.size()), (700, 70_000));
    assert_eq!(log.tree_hash(700).expect("hash"), old.root());

    for index in [0u64, 255, 256, 699] {
        let proof = log.inclusion_proof(index, 700).expect("proof");
        verify_inclusion(index, 700, &leaf_hash(&entry(index)), &proof, &old.root())
            .expect("inclusion in the old tree");
    }
    for index in [0u64, 65_535, 65_536, 69_999] {
        let proof = log.inclusion_proof(index, 70_000).expect("proof");
        verify_inclusion(
            index,
            70_000,
            &leaf_hash(&entry(index)),
            &proof,
            &new.root(),
        )
        .expect("inclusion in the new tree");
        // A proof for another entry's hash fails.
        assert!(
            verify_inclusion(
                index,
                70_000,
                &leaf_hash(&entry(index + 1)),
                &proof,
                &new.root()
            )
            .is_err()
        );
    }
    let proof = log.consistency_proof(700, 70_000).expect("proof");
    verify_consistency(700, 70_000, &old.root(), &new.root(), &proof).expect("consistent");

    // Every tree hash the log serves equals an independent in-memory computation.
    let reference = MemoryHashes::from_leaf_hashes((0..1100).map(|i| leaf_hash(&entry(i))));
    for size in 0..=1100u64 {
        assert_eq!(
            log.tree_hash(size).expect("hash"),
            tree_hash(size, &reference).expect("reference"),
            "size {size}"
        );
    }
    assert!(matches!(
        log.inclusion_proof(5, 80_000),
        Err(AuditError::SizeBeyondLog { .. })
    ));
    log.close().expect("close");
    // Reopened, the proofs come from the tiles on disk.
    let (log, _) = open(config(dir.path(), Durability::Batch));
    let proof = log.consistency_proof(700, 70_000).expect("proof");
    verify_consistency(700, 70_000, &old.root(), &new.root(), &proof).expect("consistent");
    log.close().expect("close");
    verify_dir(dir.path(), Some(&verifier())).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_of_finds_keys_after_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path(), Durability::Batch);
    config.segment_bytes = 2048;
    let (log, _) = open(config.clone());
    append_all(&log, 0..400).await;
    // Too short to carry a key.
    assert_eq!(log.append(vec![9u8; 10]).await.expect("append"), 400);
    // A key seen again later keeps its first index.
    assert_eq!(log.append(entry(5)).await.expect("append"), 401);
    assert_eq!(log.index_of(&key(5)).expect("lookup"), Some(5));
    log.close().expect("close");

    let (log, _) = open(config.clone());
    for i in [0u64, 1, 150, 398, 399] {
        assert_eq!(log.index_of(&key(i)).expect("lookup"), Some(i), "key {i}");
    }
    assert_eq!(log.index_of(&key(5)).expect("lookup"), Some(5));
    assert_eq!(log.index_of(&key(400)).expect("lookup"), None);
    assert_eq!(log.index_of(&[0u8; 16]).expect("lookup"), None);
    log.close().expect("close");

    // Key indexes are derived: deleted ones are rebuilt.
    for idx in segment_files(dir.path(), ".idx") {
        std::fs::remove_file(idx).expect("remove");
    }
    let (log, _) = open(config);
    assert_eq!(log.index_of(&key(250)).expect("lookup"), Some(250));
    log.close().expect("close");
    verify_dir(dir.path(), None).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(config(dir.path(), Durability::Batch));
    assert!(matches!(
        AuditLog::open(config(dir.path(), Durability::Batch), signer()),
        Err(AuditError::Locked { .. })
    ));
    assert!(matches!(
        log.append(Vec::new()).await,
        Err(AuditError::EntrySize { length: 0, .. })
    ));
    log.close().expect("close");
}

/// Crashes at pseudo-random points under concurrent sync appends: every acknowledged
/// entry survives, the tail is never guessed, and the directory verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_random_points_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path(), Durability::Sync);
    config.segment_bytes = 3000;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut acked: Vec<Option<Vec<u8>>> = Vec::new();
    let mut torn = 0;
    for round in 0..20u64 {
        let disk = FaultyDisk::default();
        let log = open_faulty(config.clone(), &disk);
        assert!(log.size() >= acked.len() as u64);
        if random(3) == 0 {
            log.checkpoint_now().expect("checkpoint");
        }
        let appenders: Vec<_> = (0..4u64)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for seq in 0..40u64 {
                        let bytes = entry(round * 10_000 + task * 100 + seq);
                        match log.append(bytes.clone()).await {
                            Ok(index) => mine.push((index, bytes)),
                            Err(_) => break,
                        }
                    }
                    mine
                })
            })
            .collect();
        // Let some appends through, then tear one write part way and die.
        let wait = random(20);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        disk.tear_next_append(random(40) as usize, AfterTear::Crash);
        for appender in appenders {
            for (index, bytes) in appender.await.expect("task") {
                let slot = index as usize;
                if acked.len() <= slot {
                    acked.resize(slot + 1, None);
                }
                acked[slot] = Some(bytes);
            }
        }
        disk.crash();
        drop(log);

        let (log, recovery) = open(config.clone());
        torn += u64::from(recovery.truncated_bytes > 0);
        let read = log.entries(0, usize::MAX).expect("entries");
        for (index, bytes) in acked.iter().enumerate() {
            if let Some(bytes) = bytes {
                assert!(index < read.len(), "round {round}: entry {index} lost");
                assert_eq!(
                    &read[index].1, bytes,
                    "round {round}: entry {index} changed"
                );
            }
        }
        // Entries written but not acknowledged may remain; from now on they are part
        // of the log like the others.
        acked = read.into_iter().map(|(_, bytes)| Some(bytes)).collect();
        log.close().expect("close");
        verify_dir(dir.path(), Some(&verifier())).unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    // The faults must have hit writes in flight, or this test checked nothing torn.
    assert!(torn >= 10, "only {torn} of 20 crashes tore a write");
}

/// An entry with the given key, as the server shapes them.
fn entry_with_key(key: [u8; 16], i: u64) -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(format!("decision {i} allow").as_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_key_indexes_find_every_key_and_a_damaged_one_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path(), Durability::Batch);
    config.segment_bytes = 32 << 10;
    let (log, _) = open(config.clone());
    // Nearly sorted ids (a few swapped neighbours), some foreign ones far out of order,
    // and a key seen twice.
    let mut keys: Vec<[u8; 16]> = (0..6000u64).map(key).collect();
    for i in (0..6000).step_by(7) {
        keys.swap(i, (i + 3).min(5999));
    }
    for (n, at) in [5usize, 1000, 2500, 2501, 4999].into_iter().enumerate() {
        keys[at] = (0xfeed_u128 << 112 | n as u128).to_be_bytes();
    }
    keys[4000] = keys[100];
    let entries: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| entry_with_key(*k, i as u64))
        .collect();
    for chunk in entries.chunks(500) {
        log.append_batch(chunk.to_vec()).await.expect("append");
    }
    log.close().expect("close");
    let indexes = segment_files(dir.path(), ".idx");
    assert!(indexes.len() >= 5, "{} sealed segments", indexes.len());
    for idx in &indexes {
        let bytes = std::fs::read(idx).expect("read");
        assert_eq!(&bytes[..8], b"DSAUDIX3", "{}", idx.display());
    }

    let check = |log: &AuditLog| {
        for (i, k) in keys.iter().enumerate() {
            let lowest = keys.iter().position(|other| other == k).expect("present");
            assert_eq!(
                log.index_of(k).expect("lookup"),
                Some(lowest as u64),
                "key of entry {i}"
            );
        }
        assert_eq!(log.index_of(&key(6001)).expect("lookup"), None);
        assert_eq!(log.index_of(&[0xfe; 16]).expect("lookup"), None);
    };
    let (log, _) = open(config.clone());
    check(&log);
    log.close().expect("close");
    verify_dir(dir.path(), Some(&verifier())).expect("verifies");

    // A damaged block range is named by verify; the log rebuilds the file at open.
    let target = &indexes[1];
    let len = std::fs::metadata(target).expect("stat").len();
    flip(target, len - 40);
    match verify_dir(dir.path(), Some(&verifier())) {
        Err(VerifyError::KeyIndex { path, offset }) => {
            assert_eq!(&path, target);
            assert_eq!(offset, len - 40);
        }
        other => panic!("expected the key index named, got {other:?}"),
    }
    let (log, _) = open(config);
    check(&log);
    log.close().expect("close");
    verify_dir(dir.path(), Some(&verifier())).expect("verifies after the rebuild");
}

/// A segment of the first frame format: no header, `u32 length ‖ CRC32C(entry)`.
fn v1_segment(entries: std::ops::Range<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in entries {
        let entry = entry(i);
        bytes.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&entry).to_le_bytes());
        bytes.extend_from_slice(&entry);
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_of_the_first_frame_format_are_read_appended_to_and_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("segments")).expect("dir");
    // A sealed v1 segment and an active one, as an older version left them.
    std::fs::write(
        dir.path().join("segments/00000000000000000000.log"),
        v1_segment(0..40),
    )
    .expect("write");
    let mut active = v1_segment(40..50);
    // With a torn frame at its end.
    active.extend_from_slice(&v1_segment(50..51)[..7]);
    std::fs::write(dir.path().join("segments/00000000000000000040.log"), active).expect("write");
    let mut config = config(dir.path(), Durability::Sync);
    config.segment_bytes = 1024;
    let (log, recovery) = open(config.clone());
    assert_eq!(recovery.entries, 50);
    assert_eq!(recovery.truncated_bytes, 7);
    assert_entries(&log, 50);
    assert_eq!(log.index_of(&key(12)).expect("lookup"), Some(12));
    // The active v1 segment takes v1 frames until it rolls; then v2 segments follow.
    append_all(&log, 50..120).await;
    assert_entries(&log, 120);
    log.close().expect("close");
    let segments = segment_files(dir.path(), ".log");
    assert!(segments.len() > 3, "{} segments", segments.len());
    let starts = |path: &PathBuf| std::fs::read(path).expect("read")[..8].to_vec();
    assert_ne!(starts(&segments[1]), b"DSAUDSG2");
    assert_eq!(starts(&segments[2]), b"DSAUDSG2");
    let second = std::fs::read(&segments[1]).expect("read");
    assert_eq!(second[..v1_segment(40..50).len()], v1_segment(40..50)[..]);

    let (log, recovery) = open(config);
    assert_eq!(recovery.entries, 120);
    assert_entries(&log, 120);
    for i in [0u64, 39, 40, 49, 50, 119] {
        assert_eq!(log.index_of(&key(i)).expect("lookup"), Some(i), "key {i}");
    }
    log.close().expect("close");
    let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    assert_eq!(report.entries, 120);
    assert_eq!(read_dir(dir.path()).count(), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_header_torn_at_creation_is_written_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = open(config(dir.path(), Durability::Sync));
    append_all(&log, 0..30).await;
    log.close().expect("close");
    // A crash right after the next segment was created, its header half written.
    let next = dir.path().join("segments/00000000000000000030.log");
    std::fs::write(&next, &b"DSAUDSG2"[..5]).expect("write");
    let (log, recovery) = open(config(dir.path(), Durability::Sync));
    assert_eq!(recovery.entries, 30);
    assert_eq!(recovery.truncated_bytes, 5);
    append_all(&log, 30..40).await;
    assert_entries(&log, 40);
    log.close().expect("close");
    assert_eq!(&std::fs::read(&next).expect("read")[..8], b"DSAUDSG2");
    let report = verify_dir(dir.path(), Some(&verifier())).expect("verifies");
    assert_eq!(report.entries, 40);
}
