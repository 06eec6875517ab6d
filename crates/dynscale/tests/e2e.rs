//! The acceptance session of the foundation: a real `dynscale serve`, the example
//! policies pushed through the CLI, one decision of each outcome over AuthZEN, over
//! `/v1/decide` and through `dynscale decide`; quarantine, release, escalation
//! approval and the kill switch changing later decisions; a restart keeping it all.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
const SEARCH: &str = "tools.search.eng.usa.acme";
const EMAIL: &str = "email.outbound.sales.usa.acme";
const SHELL: &str = "tools.shell.eng.usa.acme";
const PAY: &str = "payment.transfer.finance.usa.acme";

/// One action, as the three surfaces ask it.
struct Ask<'a> {
    agent: &'a str,
    pack: &'a str,
    action: &'a str,
    namespace: &'a str,
    context: Value,
}

impl Ask<'_> {
    fn body(&self) -> Value {
        let mut context = self.context.clone();
        context["namespace"] = json!(self.namespace);
        json!({
            "subject": {"type": "Agent", "id": self.agent, "properties": {"pack": self.pack}},
            "action": {"name": self.action},
            "resource": {"type": "Resource", "id": "default"},
            "context": context,
        })
    }
}

fn post(url: &str, body: &Value) -> Value {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
    resp.json().unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// The outcome over AuthZEN, checking `decision` agrees with it.
fn authzen(node: &Node, ask: &Ask) -> String {
    let r = post(&format!("{}/access/v1/evaluation", node.url), &ask.body());
    let outcome = r["context"]["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let allowed = matches!(outcome.as_str(), "allow" | "warn");
    assert_eq!(r["decision"], json!(allowed), "{r}");
    outcome
}

/// The full decision over `/v1/decide`.
fn decide(node: &Node, ask: &Ask) -> Value {
    post(&format!("{}/v1/decide", node.url), &ask.body())
}

/// The outcome through the CLI, checking its exit code (0 allowed, 2 not).
fn cli(dir: &Path, node: &Node, ask: &Ask) -> Value {
    let context = ask.context.to_string();
    let args = [
        "decide",
        "--url",
        &node.url,
        "--agent",
        ask.agent,
        "--pack",
        ask.pack,
        "--action",
        ask.action,
        "--namespace",
        ask.namespace,
        "--context",
        &context,
        "--json",
    ];
    let out = run(dir, &args);
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&args, &out)));
    let allowed = matches!(v["outcome"].as_str(), Some("allow" | "warn"));
    assert_eq!(
        out.status.code(),
        Some(if allowed { 0 } else { 2 }),
        "{}",
        describe(&args, &out)
    );
    v
}

fn outcome(v: &Value) -> &str {
    v["outcome"].as_str().unwrap_or_default()
}

fn push_examples(dir: &Path, node: &Node) {
    for name in [
        "base-safety",
        "shell-guard",
        "payments-guard",
        "data-export",
        "email-guard",
    ] {
        let file = format!("{EXAMPLES}/{name}.yaml");
        expect(dir, &["policy", "push", "--url", &node.url, &file], 0);
    }
}

#[test]
fn every_outcome_on_every_surface_and_the_controls() {
    let dir = tempdir();
    let d = dir.path();
    let node = Node::start(d);
    expect(
        d,
        &[
            "policy",
            "validate",
            &format!("{EXAMPLES}/payments-guard.yaml"),
        ],
        0,
    );
    push_examples(d, &node);

    let allow = Ask {
        agent: "a1",
        pack: "research",
        action: "tool.call",
        namespace: SEARCH,
        context: json!({"readonly": true}),
    };
    let warn = Ask {
        agent: "a1",
        pack: "research",
        action: "email.send",
        namespace: EMAIL,
        context: json!({"external_recipients": 2}),
    };
    let deny = Ask {
        agent: "a1",
        pack: "research",
        action: "shell.exec",
        namespace: SHELL,
        context: json!({"command": "ls"}),
    };
    for (ask, expected) in [(&allow, "allow"), (&warn, "warn"), (&deny, "deny")] {
        assert_eq!(authzen(&node, ask), expected);
        assert_eq!(outcome(&decide(&node, ask)), expected);
        assert_eq!(outcome(&cli(d, &node, ask)), expected);
    }

    // Quarantine, once per surface: each quarantines, denies later actions, and is
    // released through the CLI.
    let wipe = |agent| Ask {
        agent,
        pack: "ops",
        action: "shell.exec",
        namespace: SHELL,
        context: json!({"command": "rm -rf /var"}),
    };
    let ls = |agent| Ask {
        agent,
        pack: "ops",
        action: "shell.exec",
        namespace: SHELL,
        context: json!({"command": "ls"}),
    };
    let surfaces: [&dyn Fn(&Ask) -> String; 3] = [
        &|a| authzen(&node, a),
        &|a| outcome(&decide(&node, a)).to_owned(),
        &|a| outcome(&cli(d, &node, a)).to_owned(),
    ];
    for (i, surface) in surfaces.iter().enumerate() {
        let agent = ["q-authzen", "q-decide", "q-cli"][i];
        assert_eq!(surface(&ls(agent)), "allow");
        assert_eq!(surface(&wipe(agent)), "quarantine");
        assert_eq!(surface(&ls(agent)), "deny", "{agent} stays quarantined");
        expect(d, &["agent", "release", "--url", &node.url, agent], 0);
        assert_eq!(surface(&ls(agent)), "allow", "{agent} released");
    }
    expect(d, &["agent", "release", "--url", &node.url, "q-cli"], 1);

    // Escalation, once per surface: escalate, approve through the CLI, the retry is
    // let through once.
    for (i, surface) in surfaces.iter().enumerate() {
        let agent = ["e-authzen", "e-decide", "e-cli"][i];
        let big = Ask {
            agent,
            pack: "treasury",
            action: "transfer",
            namespace: PAY,
            context: json!({"amount": 25000}),
        };
        assert_eq!(surface(&big), "escalate");
        let pending = decide(&node, &big);
        assert_eq!(outcome(&pending), "escalate");
        let id = pending["escalation_id"]
            .as_str()
            .expect("an escalation id")
            .to_owned();
        expect(d, &["escalation", "approve", "--url", &node.url, &id], 0);
        assert_eq!(
            surface(&big),
            "allow",
            "{agent}: the approved action passes"
        );
        assert_eq!(surface(&big), "escalate", "{agent}: once");
    }
    let list = expect(
        d,
        &[
            "escalation",
            "list",
            "--url",
            &node.url,
            "--status",
            "pending",
        ],
        0,
    );
    assert!(stdout(&list).contains("e-cli"), "{}", stdout(&list));

    // Kill switch: everything under it is denied at once, on every surface.
    let small = Ask {
        agent: "k1",
        pack: "treasury",
        action: "transfer",
        namespace: PAY,
        context: json!({"amount": 10}),
    };
    for flags in [
        &["--agent", "k1"][..],
        &["--pack", "treasury"][..],
        &["--global"][..],
    ] {
        for surface in &surfaces {
            assert_eq!(surface(&small), "allow");
        }
        let mut set = vec!["kill", "--url", &node.url];
        set.extend_from_slice(flags);
        expect(d, &set, 0);
        for surface in &surfaces {
            assert_eq!(surface(&small), "deny", "{flags:?}");
        }
        let mut release = set.clone();
        release.push("--release");
        expect(d, &release, 0);
    }
    for surface in &surfaces {
        assert_eq!(surface(&small), "allow");
    }
}

#[test]
fn a_restart_keeps_policies_versions_and_controls() {
    let dir = tempdir();
    let d = dir.path();
    let (list, health) = {
        let node = Node::start(d);
        push_examples(d, &node);
        expect(d, &["kill", "--url", &node.url, "--pack", "ops"], 0);
        let list = expect(d, &["policy", "list", "--url", &node.url], 0);
        let health: Value = reqwest::blocking::get(format!("{}/readyz", node.url))
            .and_then(|r| r.json())
            .expect("readyz");
        (stdout(&list), health)
        // The node is killed (SIGKILL) here, as a crash would.
    };
    let node = Node::start(d);
    let again = expect(d, &["policy", "list", "--url", &node.url], 0);
    assert_eq!(stdout(&again), list);
    let ready: Value = reqwest::blocking::get(format!("{}/readyz", node.url))
        .and_then(|r| r.json())
        .expect("readyz");
    assert_eq!(
        ready, health,
        "same snapshot and policy count after restart"
    );
    let killed = Ask {
        agent: "o1",
        pack: "ops",
        action: "shell.exec",
        namespace: SHELL,
        context: json!({"command": "ls"}),
    };
    assert_eq!(
        outcome(&decide(&node, &killed)),
        "deny",
        "the kill switch survived"
    );
    let allowed = Ask {
        agent: "a1",
        pack: "research",
        action: "tool.call",
        namespace: SEARCH,
        context: json!({"readonly": true}),
    };
    assert_eq!(outcome(&decide(&node, &allowed)), "allow");
}
