//! Audit log benchmarks (SPEC §11, issue 3): group-commit appends against the raw
//! write+fdatasync limit of the same disk, bytes per decision of the example workload,
//! `audit verify` of 10 M entries, and decision throughput with the audit log on
//! against off, side by side in one run.
//!
//! `cargo bench -p dynscale-server --bench audit`; `DYNSCALE_BENCH_QUICK=1` shrinks the
//! sizes about ten times. Run without `--bench` (as `cargo test --benches` does) it only
//! smoke-tests the code paths. Every file goes to one temporary directory under Cargo's
//! target directory, so the logs and the raw baseline share a file system; nothing is
//! deleted before the run ends (a few GB in a full run), because on a `discard` mount
//! freed blocks slow down the fsyncs that follow. `DYNSCALE_BENCH_KEEP=1` keeps the
//! directory after the run too (for runs back to back; remove it afterwards).
//!
//! The example workload runs first: its decision entries, as the node encoded them,
//! are the entries the append and verify parts write (each with a fresh id).

mod fixtures;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use dynscale_core::audit_entry::AuditEntry;
use dynscale_core::merkle::{Hash, Signer, Verifier, empty_root, leaf_hash, node_hash};
use dynscale_server::config::{AuditDurability, AuditSettings};
use dynscale_server::recorder::{AUDIT_DIR, public_key_path};
use dynscale_server::wire::EvaluationRequest;
use dynscale_server::{Node, ServerConfig};
use dynscale_store::audit::{
    AppendFile, AuditConfig, AuditError, AuditLog, DirEntry, Disk, Durability, FileInfo, FsDisk,
    ReadFile, SyncFile, entry_key, verify_dir,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use fixtures::{BenchResult, Mode, Row, fmt_ns, fmt_rate, median, print_table};

/// SPEC §11: group-commit appends at least 0.7 × the raw write+fsync limit of the disk.
const APPEND_RATIO_TARGET: f64 = 0.7;
/// SPEC §11: bytes on disk per decision of the example workload, before compression.
const BYTES_PER_DECISION_TARGET: f64 = 200.0;
/// SPEC §11: `audit verify` of 10 M entries in at most 60 s.
const VERIFY_TARGET_SECS: f64 = 60.0;
const VERIFY_TARGET_ENTRIES: u64 = 10_000_000;

/// Concurrent appenders (part 1) and deciders (part 4).
const TASKS: usize = 256;
/// Concurrent deciders of the example workload (part 2).
const WORKLOAD_TASKS: usize = 32;
/// Entries per `append_batch` call when the verify log is built, and concurrent callers.
const BUILD_BATCH: u64 = 4096;
const BUILD_PRODUCERS: u64 = 3;
const ORIGIN: &str = "bench.local/audit";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
const EXAMPLE_POLICIES: [&str; 5] = [
    "base-safety",
    "shell-guard",
    "payments-guard",
    "data-export",
    "email-guard",
];

/// Sizes and durations of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    /// Rounds of part 1 (each: log `sync`, its raw baseline, log `batch`, its baseline).
    rounds: usize,
    log_secs: f64,
    raw_secs: f64,
    /// Decisions of the example workload (part 2).
    workload: usize,
    /// Entries of the verified log (part 3).
    verify_entries: u64,
    /// Alternating rounds of part 4, each side running `decide_secs`.
    decide_rounds: usize,
    decide_secs: f64,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Full => Plan {
                mode,
                rounds: 3,
                log_secs: 3.0,
                raw_secs: 2.0,
                workload: 50_000,
                verify_entries: VERIFY_TARGET_ENTRIES,
                decide_rounds: 3,
                decide_secs: 2.0,
            },
            Mode::Quick => Plan {
                mode,
                rounds: 1,
                log_secs: 1.0,
                raw_secs: 0.5,
                workload: 5_000,
                verify_entries: VERIFY_TARGET_ENTRIES / 10,
                decide_rounds: 1,
                decide_secs: 0.5,
            },
            Mode::Smoke => Plan {
                mode,
                rounds: 1,
                log_secs: 0.1,
                raw_secs: 0.05,
                workload: 200,
                verify_entries: 10_000,
                decide_rounds: 1,
                decide_secs: 0.1,
            },
        }
    }
}

fn main() -> BenchResult<()> {
    let mode = Mode::from_env();
    println!("audit benchmark, mode: {}", mode.name());
    let root = tempfile::Builder::new()
        .prefix("audit-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("files under {}", root.path().display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(Plan::new(mode), root.path()));
    if std::env::var_os("DYNSCALE_BENCH_KEEP").is_some_and(|v| v == "1") {
        // For runs back to back: removing a run's tens of thousands of files slows the
        // next one. On ext4 without a journal, creating a file skips every inode freed
        // in the last minute (five, while its inode block is dirty) one by one, and the
        // next run's tile files land in the same block groups.
        println!("kept {}", root.keep().display());
    }
    result
}

async fn run(plan: Plan, root: &Path) -> BenchResult<()> {
    let workload = example_workload(&plan, &root.join("workload")).await?;
    if workload.templates.is_empty() {
        return Err("the example workload logged no decision".into());
    }
    let templates = Arc::new(workload.templates.clone());
    append_throughput(&plan, root, &templates).await?;
    print_workload(plan.mode, &workload);
    verify_time(&plan, &root.join("verify"), &templates).await?;
    decision_throughput(&plan, &root.join("decide")).await?;
    Ok(())
}

fn signer() -> BenchResult<Signer> {
    Ok(Signer::from_seed(ORIGIN, [7u8; 32])?)
}

/// Closes a log off the async workers: closing waits for the writer thread.
async fn close(log: AuditLog) -> BenchResult<()> {
    tokio::task::spawn_blocking(move || log.close()).await??;
    Ok(())
}

/// A template entry with a fresh id in bytes 1..17, where the entry layout keeps the
/// decision id and the log reads its lookup key. Streams keep ids distinct.
fn entry_with_id(templates: &[Vec<u8>], stream: u64, n: u64) -> Vec<u8> {
    let pick = (stream.wrapping_mul(7919).wrapping_add(n) % templates.len() as u64) as usize;
    let mut entry = templates[pick].clone();
    // The count first, like the time in a UUIDv7: streams appending side by side write
    // nearly sorted ids, as the node's deciders do.
    let id = (u128::from(n) << 64 | u128::from(stream)).to_be_bytes();
    entry[1..17].copy_from_slice(&id);
    entry
}

// ---------------------------------------------------------------------------------
// The example workload: requests over the example policies.
// ---------------------------------------------------------------------------------

/// SplitMix64, so every run decides the same requests.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One AuthZEN-shaped request; the namespace travels in the context, as clients send it.
fn request(
    agent: String,
    pack: &str,
    action: &str,
    resource: Value,
    ns: &str,
    ctx: Value,
) -> Value {
    let mut context = ctx;
    context["namespace"] = json!(ns);
    json!({
        "subject": {"type": "Agent", "id": agent, "properties": {"pack": pack}},
        "action": {"name": action},
        "resource": resource,
        "context": context,
    })
}

/// `n` requests of the example workload: read-only tool calls, emails (some to outside
/// recipients), shell commands (ops may, others may not, a rare destructive one),
/// transfers (small, large, sanctioned) and data exports from Germany. Without
/// `effects`, the requests whose decision changes the node's state (quarantine,
/// escalation) are left out.
fn workload_requests(n: usize, effects: bool, seed: u64) -> BenchResult<Vec<EvaluationRequest>> {
    const SHELL: &str = "tools.shell.eng.usa.acme";
    const PAY: &str = "payment.transfer.finance.usa.acme";
    const EXPORT: &str = "data.export.crm.deu.acme";
    const EMAIL: &str = "email.outbound.sales.usa.acme";
    const SAFE_COMMANDS: [&str; 4] = [
        "ls -la /srv/app",
        "systemctl status nginx",
        "df -h",
        "tail -n 100 /var/log/app.log",
    ];
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let roll = rng.below(1000);
        let effect = roll == 750 || (871..881).contains(&roll);
        if effect && !effects {
            continue;
        }
        let a = rng.below(200);
        let host = json!({"type": "Host", "id": format!("web-{:02}", rng.below(8))});
        let account = json!({"type": "Account", "id": format!("acct-{:05}", rng.below(20_000))});
        let dataset = json!({
            "type": "Dataset",
            "id": rng.pick(&["crm-contacts", "orders", "tickets"]),
            "properties": {"personal": true},
        });
        let mailbox = json!({"type": "Mailbox", "id": "outbound"});
        let recipients = 1 + rng.below(5);
        let v = match roll {
            0..350 => request(
                format!("research-{a:03}"),
                "research",
                "tool.call",
                json!({"type": "Tool", "id": rng.pick(&["web-search", "wiki", "calendar", "crm-lookup"])}),
                "tools.search.eng.usa.acme",
                json!({"readonly": true}),
            ),
            350..400 => request(
                format!("research-{a:03}"),
                "research",
                "tool.call",
                json!({"type": "Tool", "id": "crm-update"}),
                "tools.search.eng.usa.acme",
                json!({"readonly": false}),
            ),
            400..550 => request(
                format!("sales-{a:03}"),
                "sales",
                "email.send",
                mailbox,
                EMAIL,
                json!({"recipients": recipients, "external_recipients": 0}),
            ),
            550..600 => request(
                format!("sales-{a:03}"),
                "sales",
                "email.send",
                mailbox,
                EMAIL,
                json!({"recipients": recipients + 1, "external_recipients": 1 + rng.below(3)}),
            ),
            600..700 => request(
                format!("ops-{a:03}"),
                "ops",
                "shell.exec",
                host,
                SHELL,
                json!({"command": rng.pick(&SAFE_COMMANDS)}),
            ),
            700..750 => request(
                format!("eng-{a:03}"),
                "eng",
                "shell.exec",
                host,
                SHELL,
                json!({"command": rng.pick(&SAFE_COMMANDS)}),
            ),
            750 => request(
                format!("ops-{a:03}"),
                "ops",
                "shell.exec",
                host,
                SHELL,
                json!({"command": "rm -rf /var/lib/app"}),
            ),
            751..871 => request(
                format!("treasury-{a:03}"),
                "treasury",
                "transfer",
                account,
                PAY,
                json!({
                    "amount": 50 + rng.below(4_950),
                    "currency": "EUR",
                    "destination_country": rng.pick(&["deu", "fra", "usa", "gbr", "nld"]),
                }),
            ),
            871..881 => request(
                format!("treasury-{a:03}"),
                "treasury",
                "transfer",
                account,
                PAY,
                json!({
                    "amount": 12_000 + rng.below(38_000),
                    "currency": "EUR",
                    "destination_country": "deu",
                }),
            ),
            881..890 => request(
                format!("treasury-{a:03}"),
                "treasury",
                "transfer",
                account,
                PAY,
                json!({
                    "amount": 50 + rng.below(950),
                    "currency": "EUR",
                    "destination_country": rng.pick(&["prk", "irn"]),
                }),
            ),
            890..970 => request(
                format!("analytics-{a:03}"),
                "analytics",
                "data.export",
                dataset,
                EXPORT,
                json!({"destination_country": rng.pick(&["fra", "nld", "deu"])}),
            ),
            _ => request(
                format!("analytics-{a:03}"),
                "analytics",
                "data.export",
                dataset,
                EXPORT,
                json!({"destination_country": rng.pick(&["usa", "ind", "bra"])}),
            ),
        };
        out.push(serde_json::from_value(v)?);
    }
    Ok(out)
}

/// A node over SQLite in `dir` with the example policies pushed through its API, the
/// audit log in `batch` durability.
async fn open_node(dir: &Path, segment_bytes: Option<u64>) -> BenchResult<Node> {
    let mut audit = AuditSettings {
        durability: AuditDurability::Batch,
        ..AuditSettings::default()
    };
    if let Some(bytes) = segment_bytes {
        audit.segment_bytes = bytes;
    }
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        audit,
        ..ServerConfig::default()
    };
    let node = Node::open(config).await?;
    let router = node.router();
    for name in EXAMPLE_POLICIES {
        let text = fs::read_to_string(format!("{EXAMPLES}/{name}.yaml"))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/policies")
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(Body::from(text))?;
        let status = router.clone().oneshot(req).await?.status();
        if status != StatusCode::CREATED {
            return Err(format!("pushing the example policy {name}: {status}").into());
        }
    }
    Ok(node)
}

// ---------------------------------------------------------------------------------
// Part 1: appends against the raw write+fdatasync limit.
// ---------------------------------------------------------------------------------

/// Segment writes and fsyncs the log made, counted on their way to the file system.
#[derive(Debug, Default)]
struct IoCounts {
    writes: AtomicU64,
    fdatasyncs: AtomicU64,
    /// Syncs of tiles, checkpoints and directories.
    other_syncs: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct IoSnapshot {
    writes: u64,
    fdatasyncs: u64,
    other_syncs: u64,
}

impl IoCounts {
    fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes.load(Ordering::SeqCst),
            fdatasyncs: self.fdatasyncs.load(Ordering::SeqCst),
            other_syncs: self.other_syncs.load(Ordering::SeqCst),
        }
    }
}

impl IoSnapshot {
    fn since(self, before: IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes - before.writes,
            fdatasyncs: self.fdatasyncs - before.fdatasyncs,
            other_syncs: self.other_syncs - before.other_syncs,
        }
    }
}

/// The real file system, counting what the log asks of it.
#[derive(Debug)]
struct CountingDisk {
    counts: Arc<IoCounts>,
}

#[derive(Debug)]
struct CountingFile {
    file: Box<dyn AppendFile>,
    counts: Arc<IoCounts>,
}

impl Disk for CountingDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FsDisk.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        FsDisk.list_dir(dir)
    }

    fn info(&self, path: &Path) -> io::Result<Option<FileInfo>> {
        FsDisk.info(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(CountingFile {
            file: FsDisk.open_append(path)?,
            counts: Arc::clone(&self.counts),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        FsDisk.open_read(path)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        FsDisk.write_file(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsDisk.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        FsDisk.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        FsDisk.remove_dir_all(path)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.counts.other_syncs.fetch_add(1, Ordering::SeqCst);
        FsDisk.sync_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.counts.other_syncs.fetch_add(1, Ordering::SeqCst);
        FsDisk.sync_dir(dir)
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        self.counts.other_syncs.fetch_add(1, Ordering::SeqCst);
        FsDisk.sync_filesystem(path)
    }
}

impl AppendFile for CountingFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.counts.writes.fetch_add(1, Ordering::SeqCst);
        self.file.append(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.counts.fdatasyncs.fetch_add(1, Ordering::SeqCst);
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.truncate(len)
    }

    fn sync_handle(&self) -> io::Result<Option<Arc<dyn SyncFile>>> {
        Ok(self.file.sync_handle()?.map(|file| {
            Arc::new(CountingSync {
                file,
                counts: Arc::clone(&self.counts),
            }) as Arc<dyn SyncFile>
        }))
    }
}

/// The sync thread's handle on a segment, counting its fdatasyncs.
#[derive(Debug)]
struct CountingSync {
    file: Arc<dyn SyncFile>,
    counts: Arc<IoCounts>,
}

impl SyncFile for CountingSync {
    fn sync_data(&self) -> io::Result<()> {
        self.counts.fdatasyncs.fetch_add(1, Ordering::SeqCst);
        self.file.sync_data()
    }
}

/// The framed bytes of a segment the log wrote, replayed by the raw baseline.
#[derive(Debug)]
struct Frames {
    bytes: Vec<u8>,
    /// Offset of each frame, then the end of the last one.
    starts: Vec<usize>,
    next: usize,
}

impl Frames {
    /// The first segment of the log in `dir`, cut into its frames.
    fn read_first_segment(dir: &Path) -> BenchResult<Self> {
        let path = segment_files(dir)?
            .into_iter()
            .next()
            .ok_or("the log wrote no segment")?;
        let bytes = fs::read(&path)?;
        let starts = frame_starts(&bytes)?;
        if starts.len() < 2 {
            return Err(format!("{}: no whole frame", path.display()).into());
        }
        Ok(Frames {
            bytes,
            starts,
            next: 0,
        })
    }

    fn count(&self) -> usize {
        self.starts.len() - 1
    }

    /// The next `n` consecutive frames, starting over at the first when too few are
    /// left.
    fn take(&mut self, n: usize) -> &[u8] {
        if self.next + n > self.count() {
            self.next = 0;
        }
        let slice = &self.bytes[self.starts[self.next]..self.starts[self.next + n]];
        self.next += n;
        slice
    }
}

/// The `.log` segment files of a log directory in index order (their names are the
/// zero-padded first index).
fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("segments"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "log"));
    files.sort();
    Ok(files)
}

#[derive(Debug)]
struct LogRun {
    entries: u64,
    elapsed: Duration,
    io: IoSnapshot,
    /// CPU seconds spent in the run.
    cpu: Cpu,
}

/// CPU time (user + system) in seconds of the whole process and of the audit log's
/// threads, from `/proc` (Linux; zero elsewhere). It tells whether a run was bound by
/// the disk or by the processor, and which thread was busy. Clock ticks are USER_HZ,
/// 100 per second on Linux.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    process: f64,
    writer_user: f64,
    writer_system: f64,
    publisher: f64,
    sync: f64,
    tiles: f64,
}

impl Cpu {
    fn now() -> Cpu {
        /// User and system seconds from a stat(5) line.
        fn seconds(stat: &str) -> Option<(f64, f64)> {
            // Fields after the command name, which ends at the last ')': the state is
            // field 3 of stat(5), utime 14 and stime 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user / 100.0, system / 100.0))
        }
        let read = |path: PathBuf| {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| seconds(&s))
                .unwrap_or_default()
        };
        let mut cpu = Cpu::default();
        for task in fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            // The thread names the audit log gives its threads.
            let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let (user, system) = read(task.path().join("stat"));
            match comm.trim_end() {
                "audit-writer" => {
                    cpu.writer_user += user;
                    cpu.writer_system += system;
                }
                "audit-publish" => cpu.publisher += user + system,
                "audit-sync" => cpu.sync += user + system,
                "audit-tiles" => cpu.tiles += user + system,
                _ => {}
            }
        }
        let (user, system) = read(PathBuf::from("/proc/self/stat"));
        cpu.process = user + system;
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            process: self.process - before.process,
            writer_user: self.writer_user - before.writer_user,
            writer_system: self.writer_system - before.writer_system,
            publisher: self.publisher - before.publisher,
            sync: self.sync - before.sync,
            tiles: self.tiles - before.tiles,
        }
    }

    /// As cores busy over `elapsed`: process, writer thread user, writer thread system,
    /// publisher thread, sync thread, tile thread.
    fn cores(self, elapsed: Duration) -> [f64; 6] {
        let secs = elapsed.as_secs_f64();
        [
            self.process / secs,
            self.writer_user / secs,
            self.writer_system / secs,
            self.publisher / secs,
            self.sync / secs,
            self.tiles / secs,
        ]
    }
}

/// What `fmt_cores` prints.
const CORES: &str =
    "process / writer thread (user + system) / publisher / sync thread / tile thread";

/// Medians of per-run core counts, in the order of [`CORES`].
fn fmt_cores(runs: &[[f64; 6]]) -> String {
    let column = |i: usize| median(&mut runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    let (process, user, system) = (column(0), column(1), column(2));
    format!(
        "{process:.2} / {:.2} ({user:.2} + {system:.2}) / {:.2} / {:.2} / {:.2}",
        user + system,
        column(3),
        column(4),
        column(5)
    )
}

impl LogRun {
    fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    /// Entries per fdatasync: the group size the log's commits reached.
    fn per_fsync(&self) -> f64 {
        self.entries as f64 / self.io.fdatasyncs.max(1) as f64
    }

    fn per_write(&self) -> f64 {
        self.entries as f64 / self.io.writes.max(1) as f64
    }
}

/// `TASKS` tasks append entries one at a time for `secs` (each waits for its
/// acknowledgement before the next); returns the run and the frames the log wrote.
async fn log_run(
    dir: &Path,
    durability: Durability,
    templates: &Arc<Vec<Vec<u8>>>,
    secs: f64,
) -> BenchResult<(LogRun, Frames)> {
    let counts = Arc::new(IoCounts::default());
    let mut config = AuditConfig::new(dir, ORIGIN);
    config.durability = durability;
    let disk = Arc::new(CountingDisk {
        counts: Arc::clone(&counts),
    });
    let (log, _) = AuditLog::open_with_disk(config, signer()?, disk)?;
    let stop = Arc::new(AtomicBool::new(false));
    let before = counts.snapshot();
    let cpu_before = Cpu::now();
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|task| {
            let (log, stop, templates) = (log.clone(), Arc::clone(&stop), Arc::clone(templates));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    log.append(entry_with_id(&templates, task, n)).await?;
                    n += 1;
                }
                Ok::<u64, AuditError>(n)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut entries = 0;
    for task in tasks {
        entries += task.await??;
    }
    let run = LogRun {
        entries,
        elapsed: start.elapsed(),
        io: counts.snapshot().since(before),
        cpu: Cpu::now().since(cpu_before),
    };
    close(log).await?;
    let frames = Frames::read_first_segment(dir)?;
    Ok((run, frames))
}

#[derive(Debug, Clone, Copy)]
struct RawRun {
    entries: u64,
    elapsed: Duration,
}

impl RawRun {
    fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
}

/// The raw limit: the log's own frames appended to a fresh file in the same file
/// system, `batch` frames per write() and one fdatasync per write, for `secs`. Gives
/// the frames back for the next run. The file stays until the part ends: with `discard`
/// mounts, freeing blocks makes the next journal commits (and so the next fsyncs) slow.
async fn raw_run(
    path: PathBuf,
    mut frames: Frames,
    batch: usize,
    secs: f64,
) -> BenchResult<(RawRun, Frames)> {
    let run = tokio::task::spawn_blocking(move || -> io::Result<(RawRun, Frames)> {
        let batch = batch.clamp(1, frames.count());
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let limit = Duration::from_secs_f64(secs);
        let mut entries = 0u64;
        let start = Instant::now();
        while start.elapsed() < limit {
            file.write_all(frames.take(batch))?;
            file.sync_data()?;
            entries += batch as u64;
        }
        Ok((
            RawRun {
                entries,
                elapsed: start.elapsed(),
            },
            frames,
        ))
    })
    .await??;
    Ok(run)
}

/// The runs of one durability mode over the rounds.
#[derive(Debug, Default)]
struct ModeRuns {
    log: Vec<f64>,
    raw: Vec<f64>,
    per_fsync: Vec<f64>,
    per_write: Vec<f64>,
    /// Raw rate at the log's entries per write() (one fsync each), where that differs
    /// from its entries per fsync (`batch`).
    raw_at_write: Vec<f64>,
    /// Cores busy during the log runs (see `Cpu::cores`).
    cores: Vec<[f64; 6]>,
    /// Log rate ÷ raw rate of each round (the two run back to back).
    ratios: Vec<f64>,
}

impl ModeRuns {
    async fn round(
        &mut self,
        root: &Path,
        durability: Durability,
        round: usize,
        templates: &Arc<Vec<Vec<u8>>>,
        plan: &Plan,
    ) -> BenchResult<Frames> {
        let name = format!("{durability:?}-{round}").to_lowercase();
        let dir = root.join(format!("log-{name}"));
        let (run, frames) = log_run(&dir, durability, templates, plan.log_secs).await?;
        // The raw baseline commits groups of the size the log reached: its fsyncs
        // divided into its entries.
        let batch = run.per_fsync().round().max(1.0) as usize;
        let (raw, frames) = raw_run(
            root.join(format!("raw-{name}")),
            frames,
            batch,
            plan.raw_secs,
        )
        .await?;
        println!(
            "  {durability:?} round {round}: log {} ({} entries, {} fdatasyncs, {} writes, \
             {} other syncs); raw at {batch}/fsync {}",
            fmt_rate(run.rate()),
            run.entries,
            run.io.fdatasyncs,
            run.io.writes,
            run.io.other_syncs,
            fmt_rate(raw.rate())
        );
        self.log.push(run.rate());
        self.raw.push(raw.rate());
        self.ratios.push(run.rate() / raw.rate());
        self.per_fsync.push(run.per_fsync());
        self.per_write.push(run.per_write());
        self.cores.push(run.cpu.cores(run.elapsed));
        let per_write = run.per_write().round().max(1.0) as usize;
        if per_write == batch {
            return Ok(frames);
        }
        let path = root.join(format!("raw-{name}-write"));
        let (raw, frames) = raw_run(path, frames, per_write, plan.raw_secs).await?;
        println!("  raw at {per_write}/fsync {}", fmt_rate(raw.rate()));
        self.raw_at_write.push(raw.rate());
        Ok(frames)
    }

    fn rows(&mut self, name: &str) -> Vec<Row> {
        let log = median(&mut self.log);
        let raw = median(&mut self.raw);
        let per_fsync = median(&mut self.per_fsync);
        let per_write = median(&mut self.per_write);
        let ratio = log / raw;
        let mut rows = vec![
            Row {
                figure: format!("appends/s, `{name}`, {TASKS} appenders"),
                value: fmt_rate(log),
                baseline: format!(
                    "{} (raw, {:.0} entries per write+fdatasync)",
                    fmt_rate(raw),
                    per_fsync.round().max(1.0)
                ),
                ratio: format!("{ratio:.2}"),
                target: format!("≥ {APPEND_RATIO_TARGET}"),
                met: Some(ratio >= APPEND_RATIO_TARGET),
            },
            Row::info(
                format!("entries per fdatasync / per write(), `{name}`"),
                format!("{per_fsync:.0} / {per_write:.0}"),
            ),
            Row::info(
                format!("cores busy in the log run, {CORES}, `{name}`"),
                fmt_cores(&self.cores),
            ),
            Row::info(
                format!("range over rounds, `{name}`: log; raw"),
                format!("{}; {}", spread(&self.log), spread(&self.raw)),
            ),
            Row::info(
                format!("ratio of each round (log ÷ its raw run), `{name}`"),
                self.ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        if !self.raw_at_write.is_empty() {
            let raw = median(&mut self.raw_at_write);
            rows.push(Row {
                figure: format!("appends/s, `{name}`, against raw at the log's write size"),
                value: fmt_rate(log),
                baseline: format!(
                    "{} (raw, {per_write:.0} entries per write+fdatasync)",
                    fmt_rate(raw)
                ),
                ratio: format!("{:.2}", log / raw),
                target: "—".into(),
                met: None,
            });
        }
        rows
    }
}

/// The lowest and highest of some rates.
fn spread(rates: &[f64]) -> String {
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    format!("{} – {}", fmt_rate(lo), fmt_rate(hi))
}

/// The frame starts of a segment's bytes (after its format header), then the end of
/// the last whole frame.
fn frame_starts(bytes: &[u8]) -> BenchResult<Vec<usize>> {
    let v2 = bytes.starts_with(SEGMENT_MAGIC);
    let mut pos = if v2 { SEGMENT_MAGIC.len() } else { 0 };
    let mut starts = vec![pos];
    while let Some((header, len)) = frame_header(&bytes[pos..], v2) {
        if pos + header + len > bytes.len() {
            break;
        }
        pos += header + len;
        starts.push(pos);
    }
    Ok(starts)
}

/// The first bytes of a segment in the current frame format.
const SEGMENT_MAGIC: &[u8; 8] = b"DSAUDSG2";

/// The header bytes and entry length of the frame at the start of `bytes`: `u32 length
/// ‖ CRC32C` in the first format; in the current one a length of one byte (up to 251),
/// or 0xFC ‖ u16 or 0xFD ‖ u32, then the CRC32C.
fn frame_header(bytes: &[u8], v2: bool) -> Option<(usize, usize)> {
    if !v2 {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        return Some((8, len));
    }
    match *bytes.first()? {
        0xFC => Some((
            3 + 4,
            u16::from_le_bytes(bytes.get(1..3)?.try_into().ok()?).into(),
        )),
        0xFD => Some((
            5 + 4,
            u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?) as usize,
        )),
        len => Some((1 + 4, usize::from(len))),
    }
}

async fn append_throughput(
    plan: &Plan,
    root: &Path,
    templates: &Arc<Vec<Vec<u8>>>,
) -> BenchResult<()> {
    println!(
        "part 1: {TASKS} appenders, {} rounds of {} s per log run and {} s per raw run",
        plan.rounds, plan.log_secs, plan.raw_secs
    );
    // Nothing is deleted before the part ends (see `raw_run`).
    let root = &root.join("append");
    fs::create_dir_all(root)?;
    let mut sync = ModeRuns::default();
    let mut batch = ModeRuns::default();
    let mut frames = None;
    for round in 0..plan.rounds {
        sync.round(root, Durability::Sync, round, templates, plan)
            .await?;
        // The last batch run's frames feed the per-entry fsync limit below.
        frames = Some(
            batch
                .round(root, Durability::Batch, round, templates, plan)
                .await?,
        );
    }
    let frames = frames.ok_or("no round ran")?;
    let frame_bytes =
        (frames.starts[frames.count()] - frames.starts[0]) as f64 / frames.count() as f64;
    let (single, _) = raw_run(root.join("raw-single"), frames, 1, plan.raw_secs).await?;
    let mut rows = sync.rows("sync");
    rows.extend(batch.rows("batch"));
    let sync_rate = median(&mut sync.log.clone());
    rows.extend([
        Row::info(
            "raw write+fdatasync, 1 entry per fsync (the per-entry fsync limit)",
            fmt_rate(single.rate()),
        ),
        Row::info(
            "`sync` appends/s ÷ the per-entry fsync limit",
            format!("{:.0}×", sync_rate / single.rate()),
        ),
        Row::info(
            "mean frame (length and checksum + entry)",
            format!("{frame_bytes:.0} B"),
        ),
    ]);
    print_table(
        plan.mode,
        &format!(
            "audit part 1: appends against the raw write+fdatasync limit, medians of {} rounds",
            plan.rounds
        ),
        &rows,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Part 2: bytes per decision of the example workload.
// ---------------------------------------------------------------------------------

/// File bytes of an audit directory by kind.
#[derive(Debug, Default, Clone, Copy)]
struct DirUsage {
    segments: u64,
    key_indexes: u64,
    tiles: u64,
    checkpoints: u64,
    other: u64,
    /// Allocated on disk (st_blocks), all files.
    allocated: u64,
}

impl DirUsage {
    fn measure(dir: &Path) -> BenchResult<Self> {
        let mut usage = DirUsage::default();
        usage.walk(dir, dir)?;
        Ok(usage)
    }

    fn walk(&mut self, root: &Path, dir: &Path) -> BenchResult<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                self.walk(root, &path)?;
                continue;
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                self.allocated += meta.blocks() * 512;
            }
            let rel = path.strip_prefix(root)?;
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            let slot = match top.as_str() {
                "segments" if path.extension().is_some_and(|x| x == "idx") => &mut self.key_indexes,
                "segments" => &mut self.segments,
                "tile" => &mut self.tiles,
                "checkpoints" | "checkpoint" => &mut self.checkpoints,
                _ => &mut self.other,
            };
            *slot += meta.len();
        }
        Ok(())
    }

    fn total(&self) -> u64 {
        self.segments + self.key_indexes + self.tiles + self.checkpoints + self.other
    }
}

#[derive(Debug)]
struct Workload {
    decisions: u64,
    elapsed: Duration,
    outcomes: BTreeMap<String, u64>,
    entries: u64,
    events: u64,
    usage: DirUsage,
    segment_files: usize,
    decision_bytes: u64,
    json_bytes: u64,
    /// Bytes of the contexts as JSON text (the entries hold binary JSON).
    context_bytes: u64,
    /// Entries and their bytes by action.
    by_action: BTreeMap<String, (u64, u64)>,
    /// The decision entries as the node encoded them.
    templates: Vec<Vec<u8>>,
    lookups: Lookups,
}

/// Drives the example workload through `Node::decide` (decision, effects, audit
/// append) with 1 MiB segments, so that most entries sit in sealed segments with their
/// key index, as in a long-running node; then measures the audit directory.
async fn example_workload(plan: &Plan, dir: &Path) -> BenchResult<Workload> {
    let node = open_node(dir, Some(1 << 20)).await?;
    let requests = Arc::new(workload_requests(plan.workload, true, 1)?);
    let start = Instant::now();
    let tasks: Vec<_> = (0..WORKLOAD_TASKS)
        .map(|task| {
            let (node, requests) = (node.clone(), Arc::clone(&requests));
            tokio::spawn(async move {
                let mut outcomes = BTreeMap::<String, u64>::new();
                for req in requests.iter().skip(task).step_by(WORKLOAD_TASKS) {
                    let ctx = node.decide(req).await?;
                    *outcomes.entry(ctx.outcome).or_default() += 1;
                }
                Ok::<_, dynscale_server::ApiError>(outcomes)
            })
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        for (outcome, n) in task.await?? {
            *outcomes.entry(outcome).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    let decisions = outcomes.values().sum();
    let log = node.audit_log();
    let size = log.size();
    let logged = log.entries(0, usize::try_from(size)?)?;
    let lookups = time_lookups(log, &logged)?;
    node.close().await;
    drop(node);

    let (mut events, mut decision_bytes, mut json_bytes) = (0, 0, 0);
    let mut context_bytes = 0;
    let mut by_action = BTreeMap::<String, (u64, u64)>::new();
    let mut templates = Vec::new();
    for (_, bytes) in logged {
        let entry = AuditEntry::decode(&bytes)?;
        if let AuditEntry::Decision(d) = &entry {
            decision_bytes += bytes.len() as u64;
            json_bytes += serde_json::to_vec(&entry)?.len() as u64 + 1;
            if !d.context.is_empty() {
                context_bytes += Value::Object(d.context.clone()).to_string().len() as u64;
            }
            if std::env::var("DYNSCALE_BENCH_SAMPLES").is_ok() && !by_action.contains_key(&d.action)
            {
                eprintln!(
                    "SAMPLE {} B: {}",
                    bytes.len(),
                    serde_json::to_string(&entry)?
                );
            }
            let slot = by_action.entry(d.action.clone()).or_default();
            slot.0 += 1;
            slot.1 += bytes.len() as u64;
            templates.push(bytes);
        } else {
            events += 1;
        }
    }
    let audit_dir = dir.join(AUDIT_DIR);
    let usage = DirUsage::measure(&audit_dir)?;
    let verifier: Verifier = fs::read_to_string(public_key_path(dir))?.trim().parse()?;
    let report = verify_dir(&audit_dir, Some(&verifier))?;
    if report.entries != size {
        return Err(format!("verify saw {} entries, the log has {size}", report.entries).into());
    }
    Ok(Workload {
        decisions,
        elapsed,
        outcomes,
        entries: size,
        events,
        usage,
        segment_files: report.segments,
        decision_bytes,
        json_bytes,
        context_bytes,
        by_action,
        templates,
        lookups,
    })
}

/// `index_of` timed over the workload's log, whose keys are the node's UUIDv7 ids.
#[derive(Debug)]
struct Lookups {
    /// Keys looked up, each of them present and absent.
    count: u64,
    hit: Duration,
    miss: Duration,
}

/// Looks up the key of every 25th entry (each must come back with its own index) and
/// as many absent keys (the same ids with the last byte changed, so they fall inside
/// the block ranges and every candidate block is scanned).
fn time_lookups(log: &AuditLog, logged: &[(u64, Vec<u8>)]) -> BenchResult<Lookups> {
    let sample: Vec<(u64, [u8; 16])> = logged
        .iter()
        .step_by(25)
        .filter_map(|(index, bytes)| Some((*index, entry_key(bytes)?)))
        .collect();
    let start = Instant::now();
    for (index, key) in &sample {
        let found = log.index_of(key)?;
        if found != Some(*index) {
            return Err(format!("index_of found {found:?} for entry {index}").into());
        }
    }
    let hit = start.elapsed();
    let start = Instant::now();
    for (index, key) in &sample {
        let mut absent = *key;
        absent[15] ^= 0x5a;
        if let Some(found) = log.index_of(&absent)? {
            return Err(format!("index_of found {found} for an absent key near {index}").into());
        }
    }
    let miss = start.elapsed();
    Ok(Lookups {
        count: sample.len() as u64,
        hit,
        miss,
    })
}

fn print_workload(mode: Mode, w: &Workload) {
    let per = |bytes: u64| bytes as f64 / w.entries as f64;
    let total = per(w.usage.total());
    let decisions_logged = w.templates.len() as u64;
    let json = w.json_bytes as f64 / decisions_logged as f64;
    let per_decision = |bytes: u64| bytes as f64 / decisions_logged as f64;
    let by_action = w
        .by_action
        .iter()
        .map(|(action, (n, bytes))| format!("{action} {:.0} B", *bytes as f64 / *n as f64))
        .collect::<Vec<_>>()
        .join(", ");
    let mix = w
        .outcomes
        .iter()
        .map(|(o, n)| format!("{o} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    print_table(
        mode,
        &format!(
            "audit part 2: bytes on disk, example workload: {} decisions through `Node::decide` \
             ({}), {} entries ({} events), {} segments of 1 MiB",
            w.decisions,
            fmt_rate(w.decisions as f64 / w.elapsed.as_secs_f64()),
            w.entries,
            w.events,
            w.segment_files
        ),
        &[
            Row {
                figure: "bytes per entry, whole audit directory (segments + tiles + key \
                         indexes + checkpoints)"
                    .into(),
                value: format!("{total:.1} B"),
                baseline: format!("{json:.0} B (the decision as a JSON line)"),
                ratio: format!("{:.2}", total / json),
                target: format!("≤ {BYTES_PER_DECISION_TARGET:.0} B"),
                met: Some(total <= BYTES_PER_DECISION_TARGET),
            },
            Row::info(
                "bytes per entry, segments only (frame header + entry)",
                format!("{:.1} B", per(w.usage.segments)),
            ),
            Row::info(
                "mean decision entry, encoded",
                format!("{:.1} B", per_decision(w.decision_bytes)),
            ),
            Row::info(
                "the context as JSON text (stored as binary JSON, smaller)",
                format!("{:.1} B", per_decision(w.context_bytes)),
            ),
            Row::info("mean decision entry by action", by_action),
            Row::info("tiles per entry", format!("{:.1} B", per(w.usage.tiles))),
            Row::info(
                "key indexes per entry",
                format!("{:.1} B", per(w.usage.key_indexes)),
            ),
            Row::info(
                "checkpoints and other files per entry",
                format!("{:.1} B", per(w.usage.checkpoints + w.usage.other)),
            ),
            Row::info(
                "allocated blocks per entry (`du`), whole directory",
                format!("{:.1} B", per(w.usage.allocated)),
            ),
            Row::info("outcomes", mix),
            Row::info(
                "`index_of` by decision id, mean: present; absent",
                format!(
                    "{}; {} ({} keys each)",
                    fmt_ns(w.lookups.hit.as_nanos() as f64 / w.lookups.count.max(1) as f64),
                    fmt_ns(w.lookups.miss.as_nanos() as f64 / w.lookups.count.max(1) as f64),
                    w.lookups.count
                ),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------
// Part 3: `audit verify`.
// ---------------------------------------------------------------------------------

/// The least any verifier has to do: read every segment and compute the RFC 9162 tree
/// hash (a leaf hash per entry, a node hash per interior node) on one thread, like
/// `verify_dir`; no CRC, tiles, key indexes or signatures. Returns the root and the
/// entry count.
fn hash_floor(dir: &Path) -> io::Result<(Hash, u64)> {
    // Perfect subtrees, largest first; equal neighbours merge as leaves arrive.
    let mut stack: Vec<(Hash, u64)> = Vec::new();
    let mut entries = 0u64;
    for path in segment_files(dir)? {
        let bytes = fs::read(&path)?;
        let v2 = bytes.starts_with(SEGMENT_MAGIC);
        let starts = frame_starts(&bytes).map_err(|e| io::Error::other(e.to_string()))?;
        for &start in &starts[..starts.len() - 1] {
            let (header, len) = frame_header(&bytes[start..], v2)
                .ok_or_else(|| io::Error::other("a frame header"))?;
            let entry = &bytes[start + header..start + header + len];
            let mut node = (leaf_hash(entry), 1u64);
            while let Some(&(left, size)) = stack.last()
                && size == node.1
            {
                stack.pop();
                node = (node_hash(&left, &node.0), size * 2);
            }
            stack.push(node);
            entries += 1;
        }
    }
    let mut subtrees = stack.iter().rev();
    let root = match subtrees.next() {
        None => empty_root(),
        Some(&(last, _)) => subtrees.fold(last, |right, (left, _)| node_hash(left, &right)),
    };
    Ok((root, entries))
}

async fn verify_time(plan: &Plan, dir: &Path, templates: &Arc<Vec<Vec<u8>>>) -> BenchResult<()> {
    let count = plan.verify_entries;
    let signer = signer()?;
    let verifier = signer.verifier();
    let (log, _) = AuditLog::open(AuditConfig::new(dir, ORIGIN), signer)?;
    let batches = count.div_ceil(BUILD_BATCH);
    let start = Instant::now();
    let producers: Vec<_> = (0..BUILD_PRODUCERS)
        .map(|p| {
            let (log, templates) = (log.clone(), Arc::clone(templates));
            tokio::spawn(async move {
                for b in (p..batches).step_by(BUILD_PRODUCERS as usize) {
                    let first = b * BUILD_BATCH;
                    let batch = (first..(first + BUILD_BATCH).min(count))
                        .map(|i| entry_with_id(&templates, 1 << 32, i))
                        .collect();
                    log.append_batch(batch).await?;
                }
                Ok::<(), AuditError>(())
            })
        })
        .collect();
    for producer in producers {
        producer.await??;
    }
    let built = start.elapsed();
    close(log).await?;
    let usage = DirUsage::measure(dir)?;

    let owned = dir.to_path_buf();
    let (report, took) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let report = verify_dir(&owned, Some(&verifier));
        (report, start.elapsed())
    })
    .await?;
    let report = report?;
    if report.entries != count {
        return Err(format!("verify saw {} entries of {count}", report.entries).into());
    }
    let owned = dir.to_path_buf();
    let (floor, floor_took) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        hash_floor(&owned).map(|r| (r, start.elapsed()))
    })
    .await??;
    if floor != (report.root, count) {
        return Err(format!(
            "the baseline computed root {} over {} entries, verify {} over {count}",
            floor.0, floor.1, report.root
        )
        .into());
    }

    let secs = took.as_secs_f64();
    let target = VERIFY_TARGET_SECS * count as f64 / VERIFY_TARGET_ENTRIES as f64;
    let target_text = if count == VERIFY_TARGET_ENTRIES {
        format!("≤ {VERIFY_TARGET_SECS:.0} s")
    } else {
        format!("≤ {target:.1} s (60 s per 10 M, scaled)")
    };
    print_table(
        plan.mode,
        &format!(
            "audit part 3: `audit verify` (verify_dir with the public key) of {count} entries, \
             page cache warm"
        ),
        &[
            Row {
                figure: format!("verify time, {count} entries"),
                value: format!("{secs:.1} s"),
                baseline: format!(
                    "{:.1} s (read + RFC 9162 tree hash only)",
                    floor_took.as_secs_f64()
                ),
                ratio: format!("{:.2}", secs / floor_took.as_secs_f64()),
                target: target_text,
                met: Some(secs <= target),
            },
            Row::info("verify rate", fmt_rate(count as f64 / secs)),
            Row::info(
                "checked",
                format!(
                    "{} segments, {} MB of frames, {} tiles, {} key indexes, {} checkpoints",
                    report.segments,
                    report.bytes / 1_000_000,
                    report.tiles,
                    report.key_indexes,
                    report.checkpoints
                ),
            ),
            Row::info(
                "segments (frames) / key indexes / whole directory, bytes per entry",
                format!(
                    "{:.1} B / {:.2} B / {:.1} B",
                    report.bytes as f64 / count as f64,
                    usage.key_indexes as f64 / count as f64,
                    usage.total() as f64 / count as f64
                ),
            ),
            Row::info(
                format!("log built with append_batch({BUILD_BATCH}) × {BUILD_PRODUCERS} callers"),
                format!(
                    "{:.1} s ({})",
                    built.as_secs_f64(),
                    fmt_rate(count as f64 / built.as_secs_f64())
                ),
            ),
        ],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Part 4: decisions with the audit log on against off.
// ---------------------------------------------------------------------------------

/// Decisions per second of `TASKS` tasks deciding for `secs`, logged (`Node::decide`)
/// or not (`Node::decide_unlogged`, the same decision and entry encoding, no append).
async fn decide_run(
    node: &Node,
    requests: &Arc<Vec<EvaluationRequest>>,
    logged: bool,
    secs: f64,
) -> BenchResult<(f64, [f64; 6])> {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = Cpu::now();
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (node, requests, stop) = (node.clone(), Arc::clone(requests), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let req = &requests[(task + n * TASKS) % requests.len()];
                    if logged {
                        black_box(node.decide(req).await?);
                    } else {
                        black_box(node.decide_unlogged(req).await?);
                    }
                    n += 1;
                    // An unlogged decision never waits, so without this a task would
                    // hold its worker (and the timer that stops the run) to itself.
                    tokio::task::yield_now().await;
                }
                Ok::<usize, dynscale_server::ApiError>(n)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut decided = 0;
    for task in tasks {
        decided += task.await??;
    }
    let elapsed = start.elapsed();
    Ok((
        decided as f64 / elapsed.as_secs_f64(),
        Cpu::now().since(cpu).cores(elapsed),
    ))
}

async fn decision_throughput(plan: &Plan, dir: &Path) -> BenchResult<()> {
    let node = open_node(dir, None).await?;
    // No quarantines or escalations: they change the node's state (and log events) on
    // either side, which would make the two sides decide different things.
    let requests = Arc::new(workload_requests(1_000, false, 2)?);
    let mut mix = BTreeMap::<String, u64>::new();
    for req in requests.iter() {
        *mix.entry(node.decide(req).await?.outcome).or_default() += 1;
    }
    let warm = plan.decide_secs / 4.0;
    decide_run(&node, &requests, true, warm).await?;
    decide_run(&node, &requests, false, warm).await?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..plan.decide_rounds {
        // Alternate which goes first, so drift of the machine hits both alike.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for logged in order {
            let run = decide_run(&node, &requests, logged, plan.decide_secs).await?;
            if logged { &mut on } else { &mut off }.push(run);
        }
    }
    let logged = node.audit_log().size();
    node.close().await;
    let (on_cores, off_cores) = (
        fmt_cores(&on.iter().map(|r| r.1).collect::<Vec<_>>()),
        fmt_cores(&off.iter().map(|r| r.1).collect::<Vec<_>>()),
    );
    let mut on: Vec<f64> = on.iter().map(|r| r.0).collect();
    let mut off: Vec<f64> = off.iter().map(|r| r.0).collect();
    let (on_spread, off_spread) = (spread(&on), spread(&off));
    let (on, off) = (median(&mut on), median(&mut off));
    let mix = mix
        .iter()
        .map(|(o, n)| format!("{o} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    print_table(
        plan.mode,
        &format!(
            "audit part 4: decisions in process, {TASKS} tasks, audit on (`batch`) against off, \
             {} alternating runs of {} s, medians",
            plan.decide_rounds, plan.decide_secs
        ),
        &[
            Row {
                figure: "decisions/s, `Node::decide` (on) vs `Node::decide_unlogged` (off)".into(),
                value: fmt_rate(on),
                baseline: fmt_rate(off),
                ratio: format!("{:.2}", on / off),
                target: "—".into(),
                met: None,
            },
            Row::info(
                "mean time per decision, on / off",
                format!("{} / {}", fmt_ns(1e9 / on), fmt_ns(1e9 / off)),
            ),
            Row::info("range over runs, on", on_spread),
            Row::info("range over runs, off", off_spread),
            Row::info(format!("cores busy, on: {CORES}"), on_cores),
            Row::info(format!("cores busy, off: {CORES}"), off_cores),
            Row::info("entries logged in the run", logged.to_string()),
            Row::info("outcomes of the 1 000 distinct requests", mix),
        ],
    );
    Ok(())
}
