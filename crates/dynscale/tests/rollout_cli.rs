//! `dynscale rollout` and `dynscale policy upgrade-path` against a real
//! `dynscale serve`, as an operator runs them.

mod common;

use common::*;
use serde_json::Value;

fn doc(version: &str, activation: &str) -> String {
    format!(
        "policyId: 2b7c1e4d-5f6a-4b8c-9d0e-1f2a3b4c5d6e\nname: tools-guard\nversion: \"{version}\"\n\
         namespace: \"tools.*.*.*.acme\"\nactivation: {activation}\nrules:\n  - id: tools\n    \
         cedar: |\n      permit(principal, action == Action::\"tool.call\", resource);\n"
    )
}

#[test]
fn rollout_status_and_controls_from_the_command_line() {
    let dir = tempdir();
    let node = Node::start(dir.path());
    let url = node.url.as_str();
    let v1 = write(
        dir.path(),
        "v1.yaml",
        &doc("1.0.0", "{ strategy: immediate }"),
    );
    let v2 = write(dir.path(), "v2.yaml", &doc("2.0.0", "{ strategy: canary }"));
    let v3 = write(
        dir.path(),
        "v3.yaml",
        &doc("3.0.0", "{ strategy: immediate }"),
    );
    expect(
        dir.path(),
        &["policy", "push", "--url", url, &v1.display().to_string()],
        0,
    );

    // A major upgrade by canary needs no --force, and starts a rollout.
    let out = expect(
        dir.path(),
        &["policy", "push", "--url", url, &v2.display().to_string()],
        0,
    );
    let text = stdout(&out);
    assert!(text.contains("canary of 2.0.0 against 1.0.0"), "{text}");

    let out = expect(dir.path(), &["rollout", "status", "--url", url], 0);
    let text = stdout(&out);
    assert!(
        text.contains("tools-guard") && text.contains("1.0.0 → 2.0.0"),
        "{text}"
    );
    assert!(text.contains("5.00 %"), "first canary step: {text}");

    let out = expect(
        dir.path(),
        &["rollout", "status", "tools-guard", "--url", url],
        0,
    );
    let text = stdout(&out);
    for part in [
        "candidate share: 5.00 %",
        "statistics",
        "failures",
        "hard triggers",
        "next: advance to 25.00 %",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let out = expect(
        dir.path(),
        &["rollout", "status", "tools-guard", "--json", "--url", url],
        0,
    );
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["report"]["candidate_share"], 500);

    // The upgrade path: 2.0.0 is pushed but not active; the rollback limit.
    let out = expect(
        dir.path(),
        &["policy", "upgrade-path", "tools-guard", "--url", url],
        0,
    );
    let text = stdout(&out);
    assert!(text.contains("active 1.0.0"), "{text}");
    assert!(text.contains("2.0.0") && text.contains("major"), "{text}");
    assert!(
        text.contains("rollback limit: 2 major versions back"),
        "{text}"
    );

    // While the rollout runs, no other version of the name may be pushed.
    let out = expect(
        dir.path(),
        &[
            "policy",
            "push",
            "--force",
            "--url",
            url,
            &v3.display().to_string(),
        ],
        1,
    );
    assert!(
        stderr(&out).contains("rolling out version 2.0.0"),
        "{}",
        stderr(&out)
    );

    expect(
        dir.path(),
        &["rollout", "pause", "tools-guard", "--url", url],
        0,
    );
    let out = expect(
        dir.path(),
        &["rollout", "pause", "tools-guard", "--url", url],
        1,
    );
    assert!(stderr(&out).contains("already paused"), "{}", stderr(&out));
    let out = expect(
        dir.path(),
        &["rollout", "abort", "tools-guard", "--url", url],
        0,
    );
    assert!(stdout(&out).contains("is aborted"), "{}", stdout(&out));
    let out = expect(
        dir.path(),
        &["rollout", "promote", "tools-guard", "--url", url],
        1,
    );
    assert!(
        stderr(&out).contains("has finished (aborted)"),
        "{}",
        stderr(&out)
    );
    let out = expect(dir.path(), &["rollout", "status", "nope", "--url", url], 1);
    assert!(
        stderr(&out).contains("rollout of policy nope not found"),
        "{}",
        stderr(&out)
    );

    // Now 3.0.0 immediate is a major upgrade from 1.0.0: it needs --force.
    let out = expect(
        dir.path(),
        &["policy", "push", "--url", url, &v3.display().to_string()],
        1,
    );
    assert!(
        stdout(&out).contains("--force") || stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    expect(
        dir.path(),
        &[
            "policy",
            "push",
            "--force",
            "--url",
            url,
            &v3.display().to_string(),
        ],
        0,
    );
}
