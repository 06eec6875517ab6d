//! Helpers shared by the binary's integration tests: running `dynscale` with a clean
//! environment, and a node started on a free loopback port, killed on drop.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dynscale");

/// Every variable the binary reads, removed so the caller's environment cannot
/// change what a test sees.
pub const ENV_VARS: &[&str] = &[
    "DYNSCALE_URL",
    "DYNSCALE_CONFIG",
    "DYNSCALE_LISTEN",
    "DYNSCALE_DATA_DIR",
    "DYNSCALE_MAX_BODY_BYTES",
    "DYNSCALE_DEFAULT_NAMESPACE",
    "DYNSCALE_DEFAULT_DECISION",
    "DYNSCALE_CEDAR_SCHEMA",
    "DYNSCALE_AUDIT_DURABILITY",
    "DYNSCALE_LOG",
];

pub fn dynscale(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir);
    cmd
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    dynscale(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running dynscale {args:?}: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "dynscale {args:?} exited {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Runs and asserts the exit code.
pub fn expect(dir: &Path, args: &[&str], code: i32) -> Output {
    let out = run(dir, args);
    assert_eq!(out.status.code(), Some(code), "{}", describe(args, &out));
    out
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A node started for one test; killed when dropped, even if the test panics.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Node {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts a node with extra `serve` flags; the server log is appended to, so
    /// restarts keep the history of earlier runs.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join("serve.log");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening the server log");
        let log_err = log_file.try_clone().expect("cloning the log handle");
        let child = dynscale(dir)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .expect("starting dynscale serve");
        let mut node = Node {
            child,
            url: format!("http://{listen}"),
            log,
        };
        node.wait_healthy();
        node
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls /healthz. The deadline only bounds a broken start-up; nothing here
    /// asserts how fast the node starts.
    pub fn wait_healthy(&mut self) {
        let client = reqwest::blocking::Client::new();
        let health = format!("{}/healthz", self.url);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dynscale serve exited with {status}:\n{}", self.log());
            }
            if client
                .get(&health)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not become healthy:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
