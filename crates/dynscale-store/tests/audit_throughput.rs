//! A quick throughput check of the audit log, printed rather than asserted (speed lives
//! in benchmarks, not tests): appends/s in each durability mode beside the raw
//! write+fsync rate of the same disk, bytes on disk per entry, and `verify_dir` time.
//! It still asserts that everything appended is there and verifies.
//!
//! `cargo test --release -p dynscale-store --test audit_throughput -- --ignored --nocapture`
//! (`AUDIT_VERIFY_ENTRIES=10000000` for the 10 M entry verify).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use dynscale_core::merkle::Signer;
use dynscale_store::audit::{AuditConfig, AuditLog, Durability, verify_dir};

const ENTRY_BYTES: usize = 150;

fn entry(i: u64) -> Vec<u8> {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&u128::from(i).to_be_bytes());
    bytes.resize(ENTRY_BYTES, b'x');
    bytes
}

fn signer() -> Signer {
    Signer::from_seed("bench.local-audit", [9u8; 32]).expect("a valid key name")
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// fdatasyncs per second of one small append each, on the same file system.
fn raw_fsync_rate(dir: &Path) -> f64 {
    let mut file = std::fs::File::create(dir.join("raw")).expect("create");
    let record = entry(0);
    let start = Instant::now();
    let mut count = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fsync");
        count += 1;
    }
    f64::from(count) / start.elapsed().as_secs_f64()
}

async fn appends_per_second(dir: &Path, durability: Durability, appenders: u64, each: u64) -> f64 {
    let mut config = AuditConfig::new(dir, "bench.local/audit");
    config.durability = durability;
    let (log, _) = AuditLog::open(config, signer()).expect("open");
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                for seq in 0..each {
                    log.append(entry(task * each + seq)).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let rate = (appenders * each) as f64 / start.elapsed().as_secs_f64();
    log.close().expect("close");
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput measurement, not a check; run with --ignored --nocapture in release"]
async fn throughput() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let raw = raw_fsync_rate(root.path());
    println!("raw write+fdatasync: {raw:.0}/s");
    for (durability, appenders, each) in [
        (Durability::Sync, 256, 200),
        (Durability::Batch, 256, 400),
        (Durability::Async, 256, 400),
    ] {
        let dir = root.path().join(format!("{durability:?}"));
        let rate = appends_per_second(&dir, durability, appenders, each).await;
        println!(
            "{durability:?}: {rate:.0} appends/s with {appenders} appenders ({:.1}x raw fsync)",
            rate / raw
        );
        let entries = appenders * each;
        let bytes = dir_bytes(&dir);
        println!(
            "  on disk: {:.1} bytes per {ENTRY_BYTES}-byte entry ({:.1} overhead: frame, tiles, key index, checkpoints)",
            bytes as f64 / entries as f64,
            bytes as f64 / entries as f64 - ENTRY_BYTES as f64
        );
        let report = verify_dir(&dir, Some(&signer().verifier())).expect("verifies");
        assert_eq!(report.entries, entries);
    }

    let count: u64 = std::env::var("AUDIT_VERIFY_ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = root.path().join("verify");
    let mut config = AuditConfig::new(&dir, "bench.local/audit");
    config.durability = Durability::Batch;
    let (log, _) = AuditLog::open(config, signer()).expect("open");
    let start = Instant::now();
    for first in (0..count).step_by(4096) {
        let batch = (first..(first + 4096).min(count)).map(entry).collect();
        log.append_batch(batch).await.expect("append");
    }
    let written = start.elapsed();
    log.close().expect("close");
    println!(
        "wrote {count} entries with append_batch(4096) in {:.1} s ({:.0}/s)",
        written.as_secs_f64(),
        count as f64 / written.as_secs_f64()
    );
    let start = Instant::now();
    let report = verify_dir(&dir, Some(&signer().verifier())).expect("verifies");
    let took = start.elapsed();
    assert_eq!(report.entries, count);
    println!(
        "verify_dir: {count} entries, {} tiles, {} segments in {:.1} s ({:.0} entries/s)",
        report.tiles,
        report.segments,
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
}
