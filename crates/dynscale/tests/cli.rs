//! The `dynscale` binary run as a user runs it: help, offline validation, start-up
//! refusals, and an end-to-end session against a real node on a loopback port.

mod common;

use std::process::Output;

use common::*;

const GOOD_POLICY: &str = r#"policyId: 1f0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f
name: tools-guard
version: 1.0.0
namespace: "*.*.*.*.acme"
rules:
  - id: allow-read
    cedar: |
      permit(principal, action == Action::"read", resource);
  - id: no-shell
    cedar: |
      forbid(principal, action == Action::"shell", resource);
"#;

const NAMESPACE: &str = "tools.exec.eng.usa.acme";

#[test]
fn help_lists_every_command() {
    let dir = tempdir();
    let out = expect(dir.path(), &["--help"], 0);
    let text = stdout(&out);
    for command in [
        "serve",
        "policy",
        "decide",
        "agent",
        "escalation",
        "kill",
        "events",
        "audit",
        "loadgen",
        "certify",
        "scale",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list `{command}`:\n{text}"
        );
    }
    assert!(text.contains("Example session"), "{text}");
    assert!(text.contains("dynscale policy push"), "{text}");

    let decide = stdout(&expect(dir.path(), &["decide", "--help"], 0));
    assert!(decide.contains("Exit codes"), "{decide}");
    let policy = stdout(&expect(dir.path(), &["policy", "--help"], 0));
    for sub in ["validate", "push", "list", "show", "rollback"] {
        assert!(policy.contains(sub), "policy --help lacks {sub}:\n{policy}");
    }
}

#[test]
fn validate_accepts_a_good_document() {
    let dir = tempdir();
    write(dir.path(), "good.yaml", GOOD_POLICY);
    let out = expect(dir.path(), &["policy", "validate", "good.yaml"], 0);
    assert_eq!(stdout(&out).trim(), "ok good.yaml (tools-guard@1.0.0)");
}

/// Whether `line` starts `file:LINE:COL:` with numbers for LINE and COL.
fn has_position(line: &str, file: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{file}:")) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let numeric =
        |p: Option<&str>| p.is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_some()
}

#[test]
fn validate_reports_a_cedar_syntax_error_with_its_position() {
    let dir = tempdir();
    write(dir.path(), "good.yaml", GOOD_POLICY);
    write(
        dir.path(),
        "bad.yaml",
        &GOOD_POLICY.replace(r#"Action::"read", resource"#, r#"Action::"read" resource"#),
    );
    let out = expect(
        dir.path(),
        &["policy", "validate", "good.yaml", "bad.yaml"],
        1,
    );
    let text = stdout(&out);
    assert!(text.contains("ok good.yaml (tools-guard@1.0.0)"), "{text}");
    let finding = text
        .lines()
        .find(|l| l.starts_with("bad.yaml"))
        .unwrap_or_else(|| panic!("no finding for bad.yaml:\n{text}"));
    assert!(has_position(finding, "bad.yaml"), "{finding}");
    assert!(finding.contains("[cedar_syntax]"), "{finding}");
    assert!(finding.contains("rules[0].cedar"), "{finding}");
    assert!(stderr(&out).contains("1 of 2"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_a_non_loopback_address() {
    let dir = tempdir();
    let out = expect(
        dir.path(),
        &["serve", "--listen", "0.0.0.0:0", "--data-dir", "data"],
        1,
    );
    let text = stderr(&out);
    assert!(text.contains("refusing to listen on 0.0.0.0:0"), "{text}");
    assert!(text.contains("loopback"), "{text}");
}

#[test]
fn serve_names_an_unknown_config_key() {
    let dir = tempdir();
    write(
        dir.path(),
        "node.toml",
        "data_dir = \"data\"\nlisten_adress = \"x\"\n",
    );
    let out = expect(dir.path(), &["serve", "--config", "node.toml"], 1);
    let text = stderr(&out);
    assert!(text.contains("listen_adress"), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn an_unreachable_node_is_named_with_a_hint() {
    let dir = tempdir();
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = expect(dir.path(), &["policy", "list", "--url", &url], 1);
    let text = stderr(&out);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("dynscale serve"), "{text}");
}

#[test]
fn end_to_end_push_decide_and_kill() {
    let dir = tempdir();
    let d = dir.path();
    write(d, "tools-guard.yaml", GOOD_POLICY);
    write(
        d,
        "broken.yaml",
        &GOOD_POLICY.replace("1.0.0", "1.1.0").replace(
            r#"Action::"shell", resource"#,
            r#"Action::"shell" resource"#,
        ),
    );
    let node = Node::start(d);
    let url = node.url.clone();
    let with_url = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| (*s).to_owned())
            .chain(["--url".to_owned(), url.clone()])
            .collect()
    };
    let call = |args: &[&str], code: i32| -> Output {
        let args = with_url(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(d, &args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}\n--- server log\n{}",
            describe(&args, &out),
            node.log()
        );
        out
    };
    let decide = |action: &str, code: i32| -> String {
        stdout(&call(
            &[
                "decide",
                "--agent",
                "a1",
                "--action",
                action,
                "--namespace",
                NAMESPACE,
            ],
            code,
        ))
    };

    // The node announced development mode.
    assert!(node.log().contains("development mode"), "{}", node.log());

    let pushed = stdout(&call(&["policy", "push", "tools-guard.yaml"], 0));
    assert!(pushed.contains("pushed tools-guard@1.0.0"), "{pushed}");

    // A rejected push prints the problem and every finding with its position.
    let rejected = call(&["policy", "push", "broken.yaml"], 1);
    let text = stderr(&rejected);
    assert!(
        text.starts_with("error: Policy document rejected"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| has_position(l, "broken.yaml")),
        "{text}"
    );

    let listing = stdout(&call(&["policy", "list"], 0));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("tools-guard") && l.contains("*.*.*.*.acme")),
        "{listing}"
    );
    let shown = stdout(&call(&["policy", "show", "tools-guard"], 0));
    assert!(shown.starts_with("# tools-guard@1.0.0 (active"), "{shown}");
    assert!(shown.contains(r#"forbid(principal, action == Action::"shell""#));

    let allowed = decide("read", 0);
    assert!(allowed.contains("outcome:     allow"), "{allowed}");
    assert!(
        allowed.contains("tools-guard@1.0.0#allow-read"),
        "{allowed}"
    );
    let denied = decide("shell", 2);
    assert!(denied.contains("outcome:     deny"), "{denied}");
    assert!(denied.contains("tools-guard@1.0.0#no-shell"), "{denied}");

    // --json prints the node's answer as it is.
    let raw = stdout(&call(
        &[
            "decide",
            "--agent",
            "a1",
            "--action",
            "shell",
            "--namespace",
            NAMESPACE,
            "--json",
        ],
        2,
    ));
    let value: serde_json::Value = serde_json::from_str(&raw).expect("decide --json is JSON");
    assert_eq!(value["outcome"], "deny");
    assert_eq!(value["allowed"], false);

    // A kill switch denies what the policy allows, until released.
    let set = stdout(&call(&["kill", "--agent", "a1"], 0));
    assert!(set.contains("kill switch set: agent a1"), "{set}");
    let listed = stdout(&call(&["kill", "--list"], 0));
    assert_eq!(listed.trim(), "agent a1");
    let killed = decide("read", 2);
    assert!(killed.contains("outcome:     deny"), "{killed}");
    let released = stdout(&call(&["kill", "--release", "--agent", "a1"], 0));
    assert!(
        released.contains("kill switch released: agent a1"),
        "{released}"
    );
    let listed = stdout(&call(&["kill", "--list"], 0));
    assert_eq!(listed.trim(), "no kill switches in force");
    decide("read", 0);

    // Errors from the node come back as `error: <title>: <detail>`.
    let missing = call(&["policy", "show", "no-such-policy"], 1);
    assert!(
        stderr(&missing).starts_with("error: Not found: "),
        "{}",
        stderr(&missing)
    );

    let events = stdout(&call(&["events"], 0));
    for kind in ["policy.pushed", "kill.set", "kill.released"] {
        assert!(events.contains(kind), "events lack {kind}:\n{events}");
    }
}

#[test]
fn scale_status_and_alerts_read_a_running_node() {
    let dir = tempdir();
    let node = Node::start(dir.path());
    // The first evaluation runs as the node starts; `status` names every signal.
    let out = expect(dir.path(), &["scale", "status", "--url", &node.url], 0);
    let text = stdout(&out);
    for signal in [
        "concurrency",
        "throughput",
        "latency_p99",
        "audit_queue",
        "storage",
        "time_to_full",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(signal)),
            "no {signal} row:\n{text}"
        );
    }
    assert!(text.contains(" of 1024 in flight"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "no colour codes when not on a terminal"
    );
    let json = stdout(&expect(
        dir.path(),
        &["scale", "status", "--json", "--url", &node.url],
        0,
    ));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(parsed["admission"]["limit"], 1024);
    let alerts = stdout(&expect(
        dir.path(),
        &["scale", "alerts", "--url", &node.url],
        0,
    ));
    assert!(
        alerts == "no alerts\n" || alerts.starts_with("ALERT"),
        "{alerts}"
    );
}
