//! The audit log as a user meets it: decisions carry their audit index, `audit tail`,
//! `show`, `prove` and `verify-proof` work against a node, and `verify` and `export`
//! work offline on a stopped node's data directory — and flipping one byte of a
//! segment, a tile or a checkpoint makes `verify` fail and name what is bad.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");

fn decide(url: &str, agent: &str, n: u64) -> Value {
    reqwest::blocking::Client::new()
        .post(format!("{url}/v1/decide"))
        .json(&json!({
            "subject": {"type": "Agent", "id": agent, "properties": {"pack": "research"}},
            "action": {"name": "tool.call"},
            "resource": {"type": "Tool", "id": "search"},
            "context": {"namespace": "tools.search.eng.usa.acme", "readonly": true, "n": n},
        }))
        .send()
        .and_then(|r| r.json())
        .expect("a decision")
}

/// Stops the node with SIGTERM, so it writes its final checkpoint and tiles.
fn stop_gracefully(node: &mut Node) {
    let pid = node.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = node.child.wait().expect("the node exits");
    assert!(
        exit.success(),
        "graceful stop exits 0: {exit}\n{}",
        node.log()
    );
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read");
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

#[test]
fn audit_commands_and_tampering() {
    let dir = tempdir();
    let d = dir.path();
    let mut node = Node::start(d);
    let file = format!("{EXAMPLES}/base-safety.yaml");
    expect(d, &["policy", "push", "--url", &node.url, &file], 0);
    let mut last = Value::Null;
    for n in 0..300 {
        last = decide(&node.url, &format!("a{}", n % 7), n);
        assert!(last["audit_index"].is_u64(), "{last}");
    }
    let id = last["decision_id"].as_str().expect("id").to_owned();

    let tail = expect(d, &["audit", "tail", "--url", &node.url, "-n", "5"], 0);
    assert!(stdout(&tail).contains("tool.call"), "{}", stdout(&tail));
    let show = expect(d, &["audit", "show", "--url", &node.url, &id], 0);
    assert!(stdout(&show).contains(&id), "{}", stdout(&show));
    assert!(
        stdout(&show).contains("base-safety@1.0.0"),
        "{}",
        stdout(&show)
    );

    let bundle = expect(d, &["audit", "prove", "--url", &node.url, &id], 0);
    let bundle_path = write(d, "bundle.json", &stdout(&bundle));
    let pubkey = expect(d, &["audit", "pubkey", "--url", &node.url], 0);
    let key = stdout(&pubkey).trim().to_owned();
    let ok = expect(
        d,
        &[
            "audit",
            "verify-proof",
            bundle_path.to_str().expect("path"),
            "--pubkey",
            &key,
        ],
        0,
    );
    assert!(stdout(&ok).contains(&id), "{}", stdout(&ok));
    // A bundle whose entry was altered fails.
    let mut altered: Value = serde_json::from_str(&stdout(&bundle)).expect("bundle json");
    let entry = altered["entry"].as_str().expect("entry").to_owned();
    let flipped = format!(
        "{}{}",
        &entry[..entry.len() - 1],
        if entry.ends_with('0') { "1" } else { "0" }
    );
    altered["entry"] = json!(flipped);
    let altered_path = write(d, "altered.json", &altered.to_string());
    expect(
        d,
        &[
            "audit",
            "verify-proof",
            altered_path.to_str().expect("path"),
            "--pubkey",
            &key,
        ],
        1,
    );

    stop_gracefully(&mut node);
    let data = d.join("data");
    let data_arg = data.to_str().expect("path").to_owned();
    let verify = expect(d, &["audit", "verify", "--data-dir", &data_arg], 0);
    assert!(stdout(&verify).starts_with("ok"), "{}", stdout(&verify));
    let offline_key = expect(d, &["audit", "pubkey", "--data-dir", &data_arg], 0);
    assert_eq!(stdout(&offline_key).trim(), key);

    let jsonl = expect(
        d,
        &[
            "audit",
            "export",
            "--data-dir",
            &data_arg,
            "--format",
            "jsonl",
        ],
        0,
    );
    let lines: Vec<Value> = stdout(&jsonl)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(lines.iter().any(|v| v["decision_id"] == json!(id)));
    assert!(
        lines.iter().any(|v| v["kind"] == json!("policy.pushed")),
        "policy events are logged"
    );
    let csv = expect(
        d,
        &[
            "audit",
            "export",
            "--data-dir",
            &data_arg,
            "--format",
            "csv",
        ],
        0,
    );
    assert_eq!(
        stdout(&csv).lines().count(),
        lines.len() + 1,
        "a header and one row per entry"
    );

    // Tamper with one byte of each kind of file, on a copy each time.
    let audit = data.join("audit");
    let mut files = Vec::new();
    files_under(&audit, &mut files);
    let pick = |needle: &str| {
        files
            .iter()
            .find(|p| p.to_string_lossy().contains(needle))
            .unwrap_or_else(|| panic!("no {needle} file under {}: {files:?}", audit.display()))
            .clone()
    };
    for (what, victim, at) in [
        ("segment", pick("segments"), 200),
        ("tile", pick("tile"), 40),
        ("checkpoint", pick("checkpoints"), 30),
    ] {
        let copy = tempdir();
        let copy_data = copy.path().join("data");
        let status = Command::new("cp")
            .args([
                "-r",
                data.to_str().expect("path"),
                copy_data.to_str().expect("path"),
            ])
            .status()
            .expect("cp");
        assert!(status.success());
        let relative = victim.strip_prefix(&data).expect("under data");
        flip_byte(&copy_data.join(relative), at);
        let out = expect(
            d,
            &[
                "audit",
                "verify",
                "--data-dir",
                copy_data.to_str().expect("path"),
            ],
            1,
        );
        let message = stderr(&out);
        let named = relative.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            message.contains(named) || message.contains("entry"),
            "{what}: verify names the bad entry or file: {message}"
        );
    }
}
