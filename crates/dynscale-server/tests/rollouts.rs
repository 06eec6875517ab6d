//! Progressive delivery through the real server in process: pushes that start
//! rollouts, decisions routed by arm, agent feedback, the rollout loop driven with
//! explicit times (`Node::rollout_tick`), promotion, rollback, shadow diffs, quota
//! rules per arm, restart, and bad input. Traffic is generated from fixed seeds.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use dynscale_core::ids::AgentId;
use dynscale_core::rollout::{Arm, BasisPoints, RolloutSalt, UnixMillis, assign};
use dynscale_server::ServerConfig;
use dynscale_server::config::{RolloutSettings, ScaleConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use common::Api;

const NS: &str = "tools.search.eng.usa.acme";
const POLICY_ID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

impl Api {
    async fn in_dir(dir: &Path) -> Self {
        let config = ServerConfig {
            data_dir: dir.to_path_buf(),
            // The tests read audit events one by one; host alerts must not add any.
            scale: ScaleConfig {
                rules: vec![],
                ..ScaleConfig::default()
            },
            // The tests drive the rollout loop themselves with explicit times.
            rollouts: RolloutSettings {
                tick_every: Duration::from_secs(3_600),
                ..RolloutSettings::default()
            },
            ..ServerConfig::default()
        };
        Api::open(config).await
    }

    async fn pushed(&self, text: &str) -> Value {
        let r = self.push(text).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn status(&self, name: &str) -> Value {
        let r = self.get(&format!("/v1/rollouts/{name}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// Decides a batch; every request must be decided.
    async fn decide_all(&self, requests: Vec<Value>) -> Vec<Value> {
        let r = self
            .post("/v1/decide/batch", json!({ "requests": requests }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let results = r.body["results"].as_array().cloned().unwrap_or_default();
        for d in &results {
            assert!(d.get("error").is_none(), "{d}");
        }
        results
    }

    async fn tick(&self, at: u64) {
        self.node
            .rollout_tick(UnixMillis(at))
            .await
            .expect("the rollout loop runs");
    }
}

/// A version of `tools-guard`: `rules` as YAML list items.
fn policy(version: &str, activation: &str, namespace: &str, rules: &str) -> String {
    format!(
        "policyId: {POLICY_ID}\nname: tools-guard\nversion: \"{version}\"\nnamespace: \"{namespace}\"\n\
         activation: {activation}\nrules:\n{rules}"
    )
}

const PERMIT_TOOLS: &str = "  - id: tools\n    cedar: |\n      permit(principal, action == Action::\"tool.call\", resource);\n";

fn request(agent: &str, action: &str, ctx: Value) -> Value {
    let mut context = ctx;
    context["namespace"] = json!(NS);
    json!({
        "subject": {"type": "Agent", "id": agent, "properties": {"pack": "p"}},
        "action": {"name": action},
        "resource": {"type": "Tool", "id": "t1"},
        "context": context,
    })
}

/// How each arm's actions turn out.
#[derive(Clone, Copy)]
struct Behaviour {
    failure_rate: f64,
    latency_ms: f64,
}

/// One canary under load: `per_arm` decisions per tick from agents of each arm,
/// feedback for each, then a tick 10 s later; until the rollout finishes or
/// `max_ticks`. Returns the final status and every candidate share seen.
async fn drive(
    api: &Api,
    seed: u64,
    control: Behaviour,
    candidate: Behaviour,
    per_arm: usize,
    max_ticks: usize,
) -> (Value, Vec<u64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let first = api.status("tools-guard").await;
    let started = first["report"]["started_at"].as_u64().expect("started_at");
    let salt = RolloutSalt::new(format!(
        "tools-guard@{}",
        first["candidate"].as_str().expect("a candidate version")
    ))
    .expect("salt");
    let agents: Vec<String> = (0..2_000).map(|i| format!("agent-{i}")).collect();
    let mut shares = Vec::new();
    for tick in 1..=max_ticks {
        let status = api.status("tools-guard").await;
        if status["state"] != "running" {
            return (status, shares);
        }
        let share = status["report"]["candidate_share"].as_u64().expect("share");
        shares.push(share);
        let bp = BasisPoints::new(u32::try_from(share).expect("bp")).expect("bp");
        // As many decisions from each arm, whatever the share: the agents are
        // picked by the pinned bucketing.
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for arm in [Arm::Control, Arm::Candidate] {
            let pool: Vec<&String> = agents
                .iter()
                .filter(|a| assign(&salt, &AgentId::new(a.as_str()), bp) == arm)
                .take(50)
                .collect();
            for i in 0..per_arm {
                requests.push(request(pool[i % pool.len()], "tool.call", json!({})));
                expected.push(arm);
            }
        }
        let decided = api.decide_all(requests).await;
        for (d, arm) in decided.iter().zip(&expected) {
            let want = if *arm == Arm::Control {
                "control"
            } else {
                "candidate"
            };
            assert_eq!(d["rollout"]["arm"], want, "{d}");
            let b = if *arm == Arm::Control {
                control
            } else {
                candidate
            };
            let outcome = if rng.random_bool(b.failure_rate) {
                "failure"
            } else {
                "success"
            };
            let latency = b.latency_ms + rng.random_range(0.0..40.0);
            let r = api
                .post(
                    "/v1/feedback",
                    json!({"decision_id": d["decision_id"], "outcome": outcome, "latency_ms": latency}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.body["arm"], want);
        }
        api.tick(started + 10_000 * tick as u64).await;
    }
    (api.status("tools-guard").await, shares)
}

async fn canary_node(dir: &Path, min_samples: u64) -> Api {
    let api = Api::in_dir(dir).await;
    api.pushed(&policy(
        "1.0.0",
        "{ strategy: immediate }",
        "tools.*.*.*.acme",
        PERMIT_TOOLS,
    ))
    .await;
    let pushed = api
        .pushed(&policy(
            "1.1.0",
            &format!(
                "{{ strategy: canary, steps: [10, 25, 50, 100], stepDuration: 30s, \
                 minSamples: {min_samples} }}"
            ),
            "tools.*.*.*.acme",
            PERMIT_TOOLS,
        ))
        .await;
    assert_eq!(pushed["rollout"]["strategy"], "canary", "{pushed}");
    assert_eq!(
        pushed["active"],
        json!(["1.0.0"]),
        "the control stays active"
    );
    api
}

const BASE: Behaviour = Behaviour {
    failure_rate: 0.005,
    latency_ms: 80.0,
};

#[tokio::test]
async fn a_candidate_failing_three_points_more_is_rolled_back_before_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = canary_node(dir.path(), 2000).await;
    let worse = Behaviour {
        failure_rate: BASE.failure_rate + 0.03,
        ..BASE
    };
    let (status, shares) = drive(&api, 11, BASE, worse, 500, 40).await;
    assert_eq!(status["state"], "rolled-back", "{status:#}");
    assert!(
        shares.iter().all(|s| *s < 5_000),
        "rolled back before 50 %: {shares:?}"
    );
    let enforced_us = status["rollback_enforced_us"]
        .as_u64()
        .unwrap_or_else(|| panic!("{status:#}"));
    println!("rollback enforced {enforced_us} µs after the trigger; shares {shares:?}");
    // Decisions now use the control again, outside any rollout.
    let d = api
        .decide_all(vec![request("agent-1", "tool.call", json!({}))])
        .await;
    assert_eq!(d[0]["policies"], json!(["tools-guard@1.0.0"]));
    assert!(d[0].get("rollout").is_none());
    // The rollback is an audited event with the statistics that caused it.
    let events = api.get("/v1/events?limit=1000").await.body;
    let rb = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollout.rolled_back")
        .expect("a rollout.rolled_back event");
    assert!(rb["detail"]["audit_index"].as_u64().is_some(), "{rb}");
    assert!(
        rb["detail"]["rollback_enforced_us"].as_u64().is_some(),
        "{rb}"
    );
    assert_eq!(rb["detail"]["record"]["verdict"]["verdict"], "rollback");
    // Caught by the failure-rate e-value (or, on an unlucky batch, the +5 point
    // trigger), never by another metric.
    let cause = &rb["detail"]["record"]["verdict"]["cause"];
    let metric = match cause["by"].as_str() {
        Some("statistic") => cause["finding"]["metric"].clone(),
        _ => cause["hit"]["trigger"].clone(),
    };
    assert!(metric == "failures" || metric == "failure-rate", "{cause}");
    assert!(
        rb["detail"]["totals"]["candidate"]["failures"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn an_equal_candidate_is_promoted_through_every_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = canary_node(dir.path(), 1000).await;
    let (status, shares) = drive(&api, 7, BASE, BASE, 250, 40).await;
    assert_eq!(status["state"], "promoted", "{status:#}");
    let mut steps = shares.clone();
    steps.dedup();
    assert_eq!(steps, [1_000, 2_500, 5_000], "{shares:?}");
    let list = api.get("/v1/policies").await.body;
    assert_eq!(list["policies"][0]["active"], json!(["1.1.0"]));
    let d = api
        .decide_all(vec![request("agent-1", "tool.call", json!({}))])
        .await;
    assert_eq!(d[0]["policies"], json!(["tools-guard@1.1.0"]));
    assert!(d[0].get("rollout").is_none());
    let kinds: Vec<String> = api.get("/v1/events?limit=1000").await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in [
        "rollout.started",
        "rollout.advanced",
        "rollout.promoted",
        "policy.promoted",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
}

#[tokio::test]
async fn a_candidate_adding_250_ms_is_rolled_back_by_the_latency_trigger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = canary_node(dir.path(), 1000).await;
    let slow = Behaviour {
        latency_ms: BASE.latency_ms + 250.0,
        ..BASE
    };
    let (status, shares) = drive(&api, 3, BASE, slow, 150, 10).await;
    assert_eq!(status["state"], "rolled-back", "{status:#}");
    assert_eq!(
        shares,
        [1_000, 1_000],
        "the second batch crosses 200 reports"
    );
    let cause = &status["report"]["verdict"];
    let events = api.get("/v1/events?limit=1000").await.body;
    let rb = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollout.rolled_back")
        .expect("a rollout.rolled_back event");
    let hit = &rb["detail"]["record"]["verdict"]["cause"];
    assert_eq!(hit["by"], "trigger", "{rb}");
    assert_eq!(hit["hit"]["trigger"], "feedback-latency", "{rb}");
    let rise = hit["hit"]["observed"].as_f64().unwrap();
    assert!((230.0..270.0).contains(&rise), "{rise}");
    assert_eq!(
        cause["verdict"], "hold",
        "a finished rollout holds: {cause}"
    );
}

#[tokio::test]
async fn shadow_reports_exactly_the_decisions_the_candidate_flips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;
    api.pushed(&policy(
        "1.0.0",
        "{ strategy: immediate }",
        "tools.*.*.*.acme",
        PERMIT_TOOLS,
    ))
    .await;
    let candidate_rules = "  - id: tools\n    cedar: |\n      permit(principal, action == Action::\"tool.call\", resource);\n\
         \x20 - id: risky\n    cedar: |\n      forbid(principal, action == Action::\"tool.call\", resource) when { context has risky && context.risky };\n\
         \x20 - id: admin\n    cedar: |\n      permit(principal, action == Action::\"tool.admin\", resource);\n";
    let pushed = api
        .pushed(&policy(
            "1.1.0",
            "{ strategy: shadow }",
            "tools.*.*.*.acme",
            candidate_rules,
        ))
        .await;
    assert_eq!(pushed["rollout"]["routing"]["mode"], "shadow");
    let mut requests = Vec::new();
    for i in 0..5 {
        requests.push(request(
            &format!("r{i}"),
            "tool.call",
            json!({"risky": true}),
        ));
    }
    for i in 0..3 {
        requests.push(request(&format!("a{i}"), "tool.admin", json!({})));
    }
    for i in 0..7 {
        requests.push(request(
            &format!("n{i}"),
            "tool.call",
            json!({"risky": false}),
        ));
    }
    let decided = api.decide_all(requests).await;
    // The control enforces: risky calls allowed, admin denied.
    let outcomes: Vec<&str> = decided
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(&outcomes[..5], ["allow"; 5]);
    assert_eq!(&outcomes[5..8], ["deny"; 3]);
    assert!(decided.iter().all(|d| d["rollout"]["arm"] == "control"));
    // Exemplars are the first ids seen by each of the meter's shards, so compare
    // them as sets.
    let ids = |r: std::ops::Range<usize>| -> Vec<String> {
        let mut v: Vec<String> = decided[r]
            .iter()
            .map(|d| d["decision_id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let sorted = |v: &Value| -> Vec<String> {
        let mut v: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let status = api.status("tools-guard").await;
    let started = status["report"]["started_at"].as_u64().unwrap();
    api.tick(started + 5_000).await;
    let status = api.status("tools-guard").await;
    let shadow = &status["report"]["shadow"];
    assert_eq!(shadow["compared"], 15, "{status:#}");
    assert_eq!(shadow["allow_to_deny"]["count"], 5);
    assert_eq!(sorted(&shadow["allow_to_deny"]["exemplars"]), ids(0..5));
    assert_eq!(shadow["deny_to_allow"]["count"], 3);
    assert_eq!(sorted(&shadow["deny_to_allow"]["exemplars"]), ids(5..8));
    assert_eq!(shadow["other"]["count"], 0);
    assert_eq!(status["report"]["next"]["action"], "operator");
    // Shadow never ends by itself; an operator promotes.
    let r = api
        .post("/v1/rollouts/tools-guard/promote", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "promoted");
    let d = api
        .decide_all(vec![request("r9", "tool.call", json!({"risky": true}))])
        .await;
    assert_eq!(d[0]["outcome"], "deny");
}

#[tokio::test]
async fn quota_rules_follow_the_arm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;
    let quota = "  - id: rate\n    quota: { key: agent, rate: 1/m, burst: 2 }\n";
    api.pushed(&policy(
        "1.0.0",
        "{ strategy: immediate }",
        "tools.*.*.*.acme",
        &format!("{PERMIT_TOOLS}{quota}"),
    ))
    .await;
    api.pushed(&policy(
        "1.1.0",
        "{ strategy: canary, steps: [50, 100] }",
        "tools.*.*.*.acme",
        PERMIT_TOOLS,
    ))
    .await;
    let salt = RolloutSalt::new("tools-guard@1.1.0").unwrap();
    let half = BasisPoints::from_percent(50).unwrap();
    let pick = |arm| {
        (0..100)
            .map(|i| format!("q{i}"))
            .find(|a| assign(&salt, &AgentId::new(a.as_str()), half) == arm)
            .expect("an agent in each arm")
    };
    let (control, candidate) = (pick(Arm::Control), pick(Arm::Candidate));
    let outcomes = |ds: Vec<Value>| -> Vec<String> {
        ds.iter()
            .map(|d| d["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    let c = api
        .decide_all(vec![request(&control, "tool.call", json!({})); 3])
        .await;
    assert_eq!(
        outcomes(c),
        ["allow", "allow", "throttle"],
        "the control's quota"
    );
    let k = api
        .decide_all(vec![request(&candidate, "tool.call", json!({})); 5])
        .await;
    assert_eq!(outcomes(k), ["allow"; 5], "the candidate has no quota");
}

#[tokio::test]
async fn a_restart_resumes_the_rollout_at_the_same_step_with_the_same_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let api = canary_node(dir.path(), 1000).await;
        let (status, shares) = drive(&api, 5, BASE, BASE, 250, 5).await;
        assert_eq!(status["state"], "running", "{status:#}");
        assert!(shares.contains(&2_500), "past the first step: {shares:?}");
        api.node.close().await;
        status
    };
    // Let the first node's tasks see their handles gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let api = Api::in_dir(dir.path()).await;
    let after = api.status("tools-guard").await;
    assert_eq!(
        after["report"], before["report"],
        "the same state after a restart"
    );
    assert_eq!(after["id"], before["id"]);
    let totals = after["report"]["totals"]["candidate"]["decisions"]
        .as_u64()
        .unwrap();
    assert_eq!(totals, 5 * 250, "every sample before the stop is kept");
    // Decisions are routed as before and the rollout goes on.
    let (status, _) = drive(&api, 6, BASE, BASE, 250, 40).await;
    assert_eq!(status["state"], "promoted", "{status:#}");
}

#[tokio::test]
async fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;

    let r = api.get("/v1/rollouts/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["detail"], "rollout of policy nope not found");
    let r = api.post("/v1/rollouts/nope/promote", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A first version has nothing to compare with: activated at once, and said so.
    let first = api
        .pushed(&policy(
            "1.0.0",
            "{ strategy: canary }",
            "tools.*.*.*.acme",
            PERMIT_TOOLS,
        ))
        .await;
    assert_eq!(first["active"], json!(["1.0.0"]));
    assert!(
        first["note"]
            .as_str()
            .unwrap()
            .contains("no standing version"),
        "{first}"
    );
    assert!(first.get("rollout").is_none());

    api.pushed(&policy(
        "1.1.0",
        "{ strategy: canary }",
        "tools.*.*.*.acme",
        PERMIT_TOOLS,
    ))
    .await;
    let r = api
        .post("/v1/rollouts/tools-guard/frobnicate", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("promote, pause, resume or abort")
    );
    let r = api.post("/v1/rollouts/tools-guard/resume", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("not paused"));
    let r = api.post("/v1/rollouts/tools-guard/pause", json!({})).await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (StatusCode::OK, json!("paused"))
    );
    let r = api.post("/v1/rollouts/tools-guard/pause", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("already paused")
    );

    // The name cannot change while it rolls out.
    let r = api
        .push(&policy(
            "1.2.0",
            "{ strategy: immediate }",
            "tools.*.*.*.acme",
            PERMIT_TOOLS,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("tools-guard is rolling out version 1.1.0")
    );
    let r = api
        .post("/v1/policies/tools-guard/rollback", json!({"to": "1.0.0"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    // Another policy's rollout may not overlap this one's scope.
    let other = |version: &str, activation: &str, ns: &str| {
        format!(
            "policyId: 0e1d2c3b-4a59-4687-a5b4-c3d2e1f00a1b\nname: org-guard\nversion: \"{version}\"\n\
             namespace: \"{ns}\"\nactivation: {activation}\nrules:\n{PERMIT_TOOLS}"
        )
    };
    api.pushed(&other("1.0.0", "{ strategy: immediate }", "*.*.*.*.acme"))
        .await;
    let r = api
        .push(&other("1.1.0", "{ strategy: shadow }", "*.*.*.*.acme"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("running rollout of tools-guard@1.1.0"),
        "{}",
        r.body
    );

    // Feedback: malformed, wrong fields, unknown ids, twice.
    let r = api
        .call(Method::POST, "/v1/feedback", "{\"decision_id\": ")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let id = uuid::Uuid::now_v7();
    let r = api
        .post("/v1/feedback", json!({"decision_id": id, "latency_ms": 3}))
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("outcome"))
    );
    let r = api
        .post(
            "/v1/feedback",
            json!({"decision_id": id, "outcome": "great", "latency_ms": 3}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("outcome"))
    );
    let r = api
        .post(
            "/v1/feedback",
            json!({"decision_id": id, "outcome": "success", "latency_ms": -1}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("latency_ms"))
    );
    let r = api
        .post(
            "/v1/feedback",
            json!({"decision_id": id, "outcome": "success", "latency_ms": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("not a recent decision")
    );
    let d = api
        .decide_all(vec![request("agent-1", "tool.call", json!({}))])
        .await;
    let fb = json!({"decision_id": d[0]["decision_id"], "outcome": "success", "latency_ms": 12.5});
    assert_eq!(
        api.post("/v1/feedback", fb.clone()).await.status,
        StatusCode::OK
    );
    let r = api.post("/v1/feedback", fb).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("already recorded")
    );

    // Abort, then every command is refused with the reason.
    let r = api.post("/v1/rollouts/tools-guard/abort", json!({})).await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (StatusCode::OK, json!("aborted"))
    );
    let r = api
        .post("/v1/rollouts/tools-guard/promote", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["detail"],
        "the rollout of tools-guard@1.1.0 has finished (aborted); `promote` does not apply"
    );
    let list = api.get("/v1/policies").await.body;
    let guard = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tools-guard")
        .unwrap()
        .clone();
    assert_eq!(
        guard["active"],
        json!(["1.0.0"]),
        "aborted: the control stays"
    );
    // Now the name is free again.
    let r = api
        .push(&policy(
            "1.2.0",
            "{ strategy: immediate }",
            "tools.*.*.*.acme",
            PERMIT_TOOLS,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}
