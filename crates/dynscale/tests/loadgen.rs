//! `dynscale loadgen` and `dynscale certify` against a real node with the example
//! policies: the summary adds up, the CSV has a row per second, the outcome counts
//! agree with the node's own `/metrics` counters, SLO gates set the exit code, and
//! certify writes a scale report. The rates are low: these tests check accounting,
//! never speed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use dynscale_core::certify::ScaleReport;
use serde_json::Value;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
const POLICIES: [&str; 5] = [
    "base-safety",
    "shell-guard",
    "payments-guard",
    "data-export",
    "email-guard",
];
const OUTCOMES: [&str; 6] = [
    "allow",
    "warn",
    "deny",
    "throttle",
    "quarantine",
    "escalate",
];

/// A node with the example policies pushed.
fn node_with_policies(dir: &Path) -> Node {
    started_with_policies(dir, &[])
}

/// A node started with extra `serve` flags, with the example policies pushed.
fn started_with_policies(dir: &Path, serve: &[&str]) -> Node {
    let node = Node::start_with(dir, serve);
    for p in POLICIES {
        let file = format!("{EXAMPLES}/{p}.yaml");
        expect(dir, &["policy", "push", "--url", &node.url, &file], 0);
    }
    node
}

/// Runs `loadgen --json` with `extra` flags, expecting `code`; returns the summary.
fn loadgen(dir: &Path, node: &Node, extra: &[&str], code: i32) -> (Value, String) {
    let mut args = vec!["loadgen", "--url", &node.url, "--json"];
    args.extend_from_slice(extra);
    let out = expect(dir, &args, code);
    let json: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("loadgen --json printed no JSON ({e}):\n{}", stdout(&out)));
    (json["summary"].clone(), stderr(&out))
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{field} is not a count: {summary}"))
}

fn outcomes(summary: &Value) -> BTreeMap<String, u64> {
    OUTCOMES
        .iter()
        .map(|o| {
            (
                (*o).to_owned(),
                summary["outcomes"][o].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The node's `dynscale_decisions_total{outcome="..."}` counters.
fn metrics_outcomes(node: &Node) -> BTreeMap<String, u64> {
    let url = format!("{}/metrics", node.url);
    let resp = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(
        resp.status().is_success(),
        "GET {url} answered {} (the node's /metrics endpoint is needed here)",
        resp.status()
    );
    let text = resp.text().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut counts: BTreeMap<String, u64> = OUTCOMES.iter().map(|o| ((*o).to_owned(), 0)).collect();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("dynscale_decisions_total{") else {
            continue;
        };
        let (labels, value) = rest
            .split_once("} ")
            .unwrap_or_else(|| panic!("unreadable metrics line: {line}"));
        let outcome = labels
            .split(',')
            .find_map(|l| l.strip_prefix("outcome=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no outcome label: {line}"));
        let value: f64 = value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        *counts.entry(outcome.to_owned()).or_default() += value as u64;
    }
    counts
}

#[test]
fn the_summary_and_the_csv_add_up() {
    let dir = tempdir();
    let node = node_with_policies(dir.path());
    let csv = dir.path().join("run.csv");
    let csv_arg = csv.to_string_lossy().into_owned();
    let (summary, _) = loadgen(
        dir.path(),
        &node,
        &[
            "--rps",
            "200",
            "--duration",
            "3s",
            "--agents",
            "50",
            "--packs",
            "5",
            "--output",
            &csv_arg,
            "--slo-p99",
            "60s",
            "--max-error-rate",
            "0%",
        ],
        0,
    );
    let (sent, answered, errors) = (
        count(&summary, "sent"),
        count(&summary, "answered"),
        count(&summary, "errors"),
    );
    assert_eq!(sent, answered + errors, "{summary}");
    assert_eq!(count(&summary, "scheduled"), 600, "{summary}");
    assert_eq!((errors, count(&summary, "unsent")), (0, 0), "{summary}");
    let by_outcome = outcomes(&summary);
    assert_eq!(by_outcome.values().sum::<u64>(), answered, "{summary}");
    // The default mix exercises every outcome the node gives today (throttle waits for
    // enforced quotas). The requests are fixed by the seed, so this does not flake.
    for o in ["allow", "warn", "deny", "quarantine", "escalate"] {
        assert!(by_outcome[o] > 0, "no {o} in {summary}");
    }

    let text = std::fs::read_to_string(&csv).expect("the CSV was written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(
        header,
        [
            "second",
            "sent",
            "answered",
            "errors",
            "allow",
            "warn",
            "deny",
            "throttle",
            "quarantine",
            "escalate",
            "other",
            "p50_us",
            "p99_us"
        ]
    );
    let rows: Vec<Vec<u64>> = lines
        .map(|l| {
            l.split(',')
                .map(|c| c.parse().unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 3, "one row per second:\n{text}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], i as u64);
        assert_eq!(row[1], 200, "second {i} sent its share:\n{text}");
        assert_eq!(row[1], row[2] + row[3], "second {i}:\n{text}");
        assert_eq!(
            row[4..11].iter().sum::<u64>(),
            row[2],
            "second {i}:\n{text}"
        );
        assert!(row[11] <= row[12], "p50 ≤ p99 in second {i}:\n{text}");
    }
    let column = |c: usize| rows.iter().map(|r| r[c]).sum::<u64>();
    assert_eq!((column(1), column(2), column(3)), (sent, answered, errors));
    for (c, o) in OUTCOMES.iter().enumerate() {
        // CSV outcome columns start at 4, in the same order (then `other`).
        assert_eq!(column(4 + c), by_outcome[*o], "{o}:\n{text}");
    }
}

#[test]
fn outcome_counts_match_the_node_metrics() {
    let dir = tempdir();
    let node = node_with_policies(dir.path());
    let (single, _) = loadgen(
        dir.path(),
        &node,
        &["--rps", "100", "--duration", "2s", "--max-error-rate", "0%"],
        0,
    );
    // Batch items count one decision each, on both sides.
    let (batch, _) = loadgen(
        dir.path(),
        &node,
        &[
            "--rps",
            "200",
            "--duration",
            "2s",
            "--batch",
            "10",
            "--seed",
            "2",
            "--max-error-rate",
            "0%",
        ],
        0,
    );
    assert_eq!(count(&batch, "answered"), 400, "{batch}");
    let mut expected = outcomes(&single);
    for (o, n) in outcomes(&batch) {
        *expected.entry(o).or_default() += n;
    }
    assert_eq!(metrics_outcomes(&node), expected);
}

#[test]
fn slo_gates_set_the_exit_code() {
    let dir = tempdir();
    let node = node_with_policies(dir.path());
    let run = ["--rps", "50", "--duration", "1s"];
    let strict = [&run[..], &["--slo-p99", "1us"]].concat();
    let (_, err) = loadgen(dir.path(), &node, &strict, 1);
    assert!(err.contains("SLO not met: --slo-p99"), "{err}");
    let generous = [&run[..], &["--slo-p99", "60s", "--max-error-rate", "1%"]].concat();
    let (summary, err) = loadgen(dir.path(), &node, &generous, 0);
    assert!(!err.contains("SLO not met"), "{err}");
    assert_eq!(count(&summary, "answered"), 50, "{summary}");
}

#[test]
fn bad_mixes_and_unreachable_nodes_are_clear_errors() {
    let dir = tempdir();
    let mix = write(
        dir.path(),
        "mix.yaml",
        "templates: [{name: t, weight: 1, action: x, namespace: a.b}]",
    );
    let out = expect(
        dir.path(),
        &[
            "loadgen",
            "--mix",
            &mix.to_string_lossy(),
            "--url",
            "http://127.0.0.1:9",
        ],
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("mix.yaml: templates[0] (t): `namespace`"),
        "{err}"
    );
    let out = expect(dir.path(), &["loadgen", "--url", "http://127.0.0.1:9"], 1);
    assert!(
        stderr(&out).contains("cannot reach a dynscale node"),
        "{}",
        stderr(&out)
    );
    let out = expect(dir.path(), &["loadgen", "--print-mix"], 0);
    assert!(stdout(&out).contains("templates:"));
}

#[test]
fn certify_writes_a_scale_report() {
    let dir = tempdir();
    let node = node_with_policies(dir.path());
    let reports = dir.path().join("reports");
    let args = [
        "certify",
        "--url",
        &node.url,
        "--duration",
        "3s",
        "--steps",
        "2",
        "--start-rps",
        "50",
        "--slo-p99",
        "60s",
        "--max-error-rate",
        "1%",
        "--output-dir",
        &reports.to_string_lossy(),
    ];
    let out = expect(dir.path(), &args, 0);
    let json = std::fs::read_to_string(reports.join("scale-report.json")).expect("json report");
    let report: ScaleReport = serde_json::from_str(&json).expect("a scale report");
    assert_eq!(report.steps.len(), 2, "{json}");
    assert_eq!(report.steps[0].target_rps, 50.0);
    assert_eq!(report.steps[1].target_rps, 100.0);
    for s in &report.steps {
        assert_eq!(s.sent, s.answered + s.errors, "{json}");
    }
    let limit = report.limit.as_ref().expect("a generous objective is met");
    assert_eq!(limit.first_failing_rps, None);
    assert!(report.machine.cores >= 1);
    let md = std::fs::read_to_string(reports.join("scale-report.md")).expect("markdown report");
    assert!(md.contains("## Steps"), "{md}");

    // Recorded on the node when it has the endpoint; otherwise a warning says so.
    let url = format!("{}/v1/scale/limits", node.url);
    let resp = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if resp.status().is_success() {
        let stored: ScaleReport = resp.json().expect("the node serves the report");
        assert_eq!(stored, report);
    } else {
        assert_eq!(resp.status().as_u16(), 404);
        assert!(
            stderr(&out).contains("warning: the node has no PUT /v1/scale/limits"),
            "{}",
            stderr(&out)
        );
    }
}

/// Overload: open-loop load far above a small admission limit. Every request gets an
/// answer (a decision or a 429, never a timeout or a 5xx), the node sheds instead of
/// falling over, and admission resumes once the load stops.
#[test]
fn overload_is_shed_with_429_and_admission_resumes() {
    let dir = tempdir();
    let config = write(
        dir.path(),
        "node.toml",
        "[admission]\nmax_in_flight = 4\nreserved_share = 0.25\n",
    );
    let config = config.to_string_lossy().into_owned();
    let node = Node::start_with(dir.path(), &["--config", &config]);
    for p in POLICIES {
        let file = format!("{EXAMPLES}/{p}.yaml");
        expect(
            dir.path(),
            &["policy", "push", "--url", &node.url, &file],
            0,
        );
    }
    let (summary, _) = loadgen(
        dir.path(),
        &node,
        &["--rps", "3000", "--duration", "4s", "--connections", "64"],
        0,
    );
    let (sent, answered, errors) = (
        count(&summary, "sent"),
        count(&summary, "answered"),
        count(&summary, "errors"),
    );
    assert_eq!(sent, answered + errors, "{summary}");
    let kinds = summary["error_kinds"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let shed = kinds.get("status 429").and_then(Value::as_u64).unwrap_or(0);
    assert!(
        shed > 0,
        "load above the limit must be shed with 429: {summary}"
    );
    assert_eq!(
        kinds.keys().filter(|k| *k != "status 429").count(),
        0,
        "every request answered with a decision or a 429: {summary}"
    );
    assert!(answered > 0, "admitted requests were decided: {summary}");

    // The node is alive, counted what it shed, and admits again.
    let metrics = reqwest::blocking::get(format!("{}/metrics", node.url))
        .and_then(|r| r.text())
        .expect("metrics");
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dynscale_admission_rejections_total{class=\"decision\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rejected >= shed as f64, "{rejected} < {shed}");
    let out = expect(
        dir.path(),
        &[
            "decide",
            "--url",
            &node.url,
            "--agent",
            "a1",
            "--action",
            "tool.call",
            "--namespace",
            "tools.search.eng.usa.acme",
            "--context",
            r#"{"readonly": true}"#,
        ],
        0,
    );
    assert!(stdout(&out).contains("allow"), "{}", stdout(&out));
}
