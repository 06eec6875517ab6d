//! Quota accuracy end to end: a real `dynscale serve`, a quota policy pushed through
//! the CLI, one client asking over HTTP faster than the rate for a few seconds. The
//! allowed count must be within ±1 of R·T + B, every other answer a `throttle` naming
//! the rule with a `retry_after` no longer than one emission interval.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The quota under test: R = 5/s, B = 3. A slow rate keeps the check robust against
/// the scheduling jitter of a shared machine: one token is 200 ms.
const RATE_PER_SEC: f64 = 5.0;
const BURST: f64 = 3.0;
const POLICY: &str = r#"
policyId: 3c9a7e51-0b6d-4f2a-9e84-5d1c7b2a6f03
name: rate-guard
version: 1.0.0
namespace: "tools.rate.*.*.acme"
rules:
  - id: may-call
    cedar: |
      permit(principal, action == Action::"tool.call", resource);
  - id: agent-rate
    quota: { key: agent, rate: 5/s, burst: 3 }
"#;

#[test]
fn allowed_count_is_rate_times_time_plus_burst_within_one() {
    let dir = tempdir();
    let node = Node::start(dir.path());
    let policy = write(dir.path(), "rate-guard.yaml", POLICY);
    expect(
        dir.path(),
        &[
            "policy",
            "push",
            "--url",
            &node.url,
            &policy.to_string_lossy(),
        ],
        0,
    );

    let client = reqwest::blocking::Client::new();
    let url = format!("{}/v1/decide", node.url);
    let body = json!({
        "subject": {"type": "Agent", "id": "agent-q", "properties": {"pack": "ops"}},
        "action": {"name": "tool.call"},
        "resource": {"type": "Resource", "id": "default"},
        "context": {"namespace": "tools.rate.eng.usa.acme"},
    });
    let ask = || -> Value {
        let resp = client
            .post(&url)
            .json(&body)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
        resp.json().unwrap_or_else(|e| panic!("POST {url}: {e}"))
    };

    // One request every 20 ms (ten per token) for 3 s; T runs from the first send to
    // the last.
    let interval = Duration::from_millis(20);
    let run = Duration::from_secs(3);
    let start = Instant::now();
    let mut last_sent = start;
    let (mut allowed, mut throttled) = (0u64, 0u64);
    let mut k = 0u32;
    loop {
        let due = start + interval * k;
        if due > start + run {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        last_sent = Instant::now();
        let d = ask();
        match d["outcome"].as_str() {
            Some("allow") => allowed += 1,
            Some("throttle") => {
                throttled += 1;
                let reason = d["reasons"][0].as_str().unwrap_or_default();
                assert!(
                    reason.starts_with("quota rate-guard@1.0.0#agent-rate: 5/s, burst 3"),
                    "the throttle names its rule: {d}"
                );
                let retry = d["retry_after"].as_f64().unwrap_or_else(|| panic!("{d}"));
                assert!(
                    retry > 0.0 && retry <= 1.0 / RATE_PER_SEC + 1e-6,
                    "retry_after {retry} outside (0, 1/R]: {d}"
                );
            }
            other => panic!("unexpected outcome {other:?}: {d}"),
        }
        k += 1;
    }
    let t = last_sent.duration_since(start).as_secs_f64();
    let expected = RATE_PER_SEC * t + BURST;
    println!("allowed {allowed}, throttled {throttled} over T = {t:.3} s; R·T + B = {expected:.2}");
    assert!(
        (allowed as f64 - expected).abs() <= 1.0,
        "allowed {allowed} over T = {t:.3} s, R·T + B = {expected:.2} (throttled {throttled})"
    );
    assert!(throttled > 0, "the client asked faster than the rate");
}
