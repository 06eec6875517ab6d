//! Crash safety of the audit log: under load in `sync` mode the node is killed with
//! SIGKILL at random moments, restarted each time, and at the end every decision id a
//! client received is in the log and `dynscale audit verify` passes.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
const KILLS: usize = 20;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn body(i: u64) -> Value {
    json!({
        "subject": {"type": "Agent", "id": format!("agent-{}", i % 50), "properties": {"pack": "research"}},
        "action": {"name": "tool.call"},
        "resource": {"type": "Tool", "id": "search"},
        "context": {"namespace": "tools.search.eng.usa.acme", "readonly": true, "n": i},
    })
}

/// Sends decisions until stopped, recording every decision id it got an answer for.
fn load(url: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>, seed: u64) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Ok(resp) = client
            .post(format!("{url}/v1/decide"))
            .json(&body(i))
            .send()
        else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        if let Ok(v) = resp.json::<Value>()
            && let Some(id) = v["decision_id"].as_str()
        {
            assert!(
                v["audit_index"].is_u64(),
                "an acknowledged decision has its index: {v}"
            );
            acked.lock().expect("lock").push(id.to_owned());
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_decision() {
    let dir = tempdir();
    let d = dir.path();
    let flags = ["--audit-durability", "sync"];
    {
        let node = Node::start_with(d, &flags);
        let file = format!("{EXAMPLES}/base-safety.yaml");
        expect(d, &["policy", "push", "--url", &node.url, &file], 0);
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..KILLS {
        let mut node = Node::start_with(d, &flags);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (url, stop, acked) = (node.url.clone(), stop.clone(), acked.clone());
                thread::spawn(move || load(url, stop, acked, (round * 10 + w) as u64 * 1_000_000))
            })
            .collect();
        // Kill somewhere between 20 and 300 ms into the load: mid-write, mid-fsync,
        // mid-checkpoint, wherever it falls.
        thread::sleep(Duration::from_millis(20 + rng.next() % 280));
        node.child.kill().expect("SIGKILL");
        node.child.wait().expect("reaped");
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("load thread");
        }
    }
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > KILLS,
        "the load got answers ({} acked)",
        acked.len()
    );

    // Restart once more so recovery runs on the last crash too, then check offline.
    drop(Node::start_with(d, &flags));
    let data = d.join("data");
    let data = data.to_str().expect("utf-8 path");
    let verify = expect(d, &["audit", "verify", "--data-dir", data], 0);
    assert!(stdout(&verify).contains("ok"), "{}", stdout(&verify));
    let export = expect(
        d,
        &["audit", "export", "--data-dir", data, "--format", "jsonl"],
        0,
    );
    let logged: HashSet<String> = stdout(&export)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["decision_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged decisions are missing from the log, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
}
