//! The HTTP API called in process (`tower::ServiceExt::oneshot`) over a real SQLite
//! store in a temporary directory.

mod common;

use std::path::Path;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use dynscale_server::ServerConfig;
use serde_json::{Value, json};

use common::Api;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");

impl Api {
    async fn in_dir(dir: &Path) -> Self {
        Api::open(ServerConfig {
            data_dir: dir.to_path_buf(),
            max_body_bytes: 64 * 1024,
            ..ServerConfig::default()
        })
        .await
    }

    /// A node in a fresh directory with the example policies pushed; the directory
    /// lives as long as the returned guard.
    async fn with_examples() -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = Api::in_dir(dir.path()).await;
        api.push_examples().await;
        (dir, api)
    }

    async fn push_examples(&self) {
        for name in [
            "base-safety",
            "shell-guard",
            "payments-guard",
            "data-export",
            "email-guard",
        ] {
            let text = std::fs::read_to_string(format!("{EXAMPLES}/{name}.yaml")).expect("example");
            let r = self.push(&text).await;
            assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.body);
        }
    }

    async fn decide(&self, agent: &str, pack: &str, action: &str, ns: &str, ctx: Value) -> Value {
        let r = self
            .post("/v1/decide", request(agent, pack, action, ns, ctx))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }
}

fn request(agent: &str, pack: &str, action: &str, ns: &str, ctx: Value) -> Value {
    let mut context = ctx;
    context["namespace"] = json!(ns);
    json!({
        "subject": {"type": "Agent", "id": agent, "properties": {"pack": pack}},
        "action": {"name": action},
        "resource": {"type": "Tool", "id": "t1"},
        "context": context,
    })
}

fn outcome(v: &Value) -> &str {
    v["outcome"].as_str().unwrap_or_default()
}

const SHELL: &str = "tools.shell.eng.usa.acme";
const PAY: &str = "payment.transfer.finance.usa.acme";

#[tokio::test]
async fn every_outcome_and_the_controls_that_change_later_decisions() {
    let (_dir, api) = Api::with_examples().await;

    let allow = api
        .decide(
            "a1",
            "research",
            "tool.call",
            "tools.search.eng.usa.acme",
            json!({"readonly": true}),
        )
        .await;
    assert_eq!(outcome(&allow), "allow", "{allow}");
    assert_eq!(allow["allowed"], json!(true));
    assert!(
        allow["policies"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("base-safety@1.0.0")))
    );

    let warn = api
        .decide(
            "a1",
            "research",
            "email.send",
            "email.outbound.sales.usa.acme",
            json!({"external_recipients": 2}),
        )
        .await;
    assert_eq!(outcome(&warn), "warn", "{warn}");
    assert_eq!(warn["allowed"], json!(true));
    assert!(
        warn["warnings"]
            .to_string()
            .contains("email-guard@1.0.0#external-recipients")
    );

    let deny = api
        .decide(
            "a1",
            "research",
            "shell.exec",
            SHELL,
            json!({"command": "ls"}),
        )
        .await;
    assert_eq!(outcome(&deny), "deny", "{deny}");
    let ops = api
        .decide("o1", "ops", "shell.exec", SHELL, json!({"command": "ls"}))
        .await;
    assert_eq!(outcome(&ops), "allow", "{ops}");

    // Quarantine: the agent is denied everything until released.
    let q = api
        .decide(
            "o1",
            "ops",
            "shell.exec",
            SHELL,
            json!({"command": "rm -rf /var"}),
        )
        .await;
    assert_eq!(outcome(&q), "quarantine", "{q}");
    let after = api
        .decide("o1", "ops", "shell.exec", SHELL, json!({"command": "ls"}))
        .await;
    assert_eq!(outcome(&after), "deny");
    assert!(
        after["reasons"].to_string().contains("quarantined"),
        "{after}"
    );
    let listed = api.get("/v1/quarantines").await;
    assert_eq!(listed.body["quarantines"][0]["agent"], json!("o1"));
    let released = api.post("/v1/agents/o1/release", json!({})).await;
    assert_eq!(released.status, StatusCode::OK);
    let again = api.post("/v1/agents/o1/release", json!({})).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let back = api
        .decide("o1", "ops", "shell.exec", SHELL, json!({"command": "ls"}))
        .await;
    assert_eq!(outcome(&back), "allow", "{back}");

    // Escalation: denied, approved, let through once when retried.
    let big = json!({"amount": 25000});
    let esc = api
        .decide("t1", "treasury", "transfer", PAY, big.clone())
        .await;
    assert_eq!(outcome(&esc), "escalate", "{esc}");
    let id = esc["escalation_id"]
        .as_str()
        .expect("escalation id")
        .to_owned();
    let pending = api.get("/v1/escalations?status=pending").await;
    assert_eq!(pending.body["escalations"][0]["id"], json!(id));
    let approve = api
        .post(&format!("/v1/escalations/{id}/approve"), json!({}))
        .await;
    assert_eq!(approve.status, StatusCode::OK, "{}", approve.body);
    assert_eq!(approve.body["status"], json!("approved"));
    let twice = api
        .post(&format!("/v1/escalations/{id}/approve"), json!({}))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let retry = api
        .decide("t1", "treasury", "transfer", PAY, big.clone())
        .await;
    assert_eq!(outcome(&retry), "allow", "{retry}");
    let third = api
        .decide("t1", "treasury", "transfer", PAY, big.clone())
        .await;
    assert_eq!(
        outcome(&third),
        "escalate",
        "the approval lets the action through once"
    );
    let other = third["escalation_id"].as_str().expect("id").to_owned();
    let denied = api
        .post(&format!("/v1/escalations/{other}/deny"), json!({}))
        .await;
    assert_eq!(denied.body["status"], json!("denied"));
    let small = api
        .decide("t1", "treasury", "transfer", PAY, json!({"amount": 50}))
        .await;
    assert_eq!(outcome(&small), "allow", "{small}");

    // Kill switches, most general first, released again.
    for (scope, id) in [
        ("agent", Some("t1")),
        ("pack", Some("treasury")),
        ("global", None),
    ] {
        let body = match id {
            Some(id) => json!({"scope": scope, "id": id}),
            None => json!({"scope": scope}),
        };
        let set = api.post("/v1/kill", body.clone()).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.body);
        let killed = api
            .decide("t1", "treasury", "transfer", PAY, json!({"amount": 50}))
            .await;
        assert_eq!(outcome(&killed), "deny");
        assert!(
            killed["reasons"].to_string().contains("kill switch"),
            "{killed}"
        );
        let released = api.post("/v1/kill/release", body).await;
        assert_eq!(released.body["changed"], json!(true));
        let back = api
            .decide("t1", "treasury", "transfer", PAY, json!({"amount": 50}))
            .await;
        assert_eq!(outcome(&back), "allow", "{scope}: {back}");
    }
    let other_pack = {
        api.post("/v1/kill", json!({"scope": "pack", "id": "ops"}))
            .await;
        api.decide("t1", "treasury", "transfer", PAY, json!({"amount": 50}))
            .await
    };
    assert_eq!(
        outcome(&other_pack),
        "allow",
        "a pack switch covers only its pack"
    );
}

#[tokio::test]
async fn authzen_single_and_batch() {
    let (_dir, api) = Api::with_examples().await;

    let r = api
        .post(
            "/access/v1/evaluation",
            request("a1", "research", "shell.exec", SHELL, json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["decision"], json!(false));
    assert_eq!(r.body["context"]["outcome"], json!("deny"));
    assert!(r.body["context"]["decision_id"].is_string());
    assert!(
        r.body["context"]["snapshot"]
            .as_u64()
            .is_some_and(|s| s > 0)
    );

    let batch = json!({
        "subject": {"type": "Agent", "id": "o1", "properties": {"pack": "ops"}},
        "resource": {"type": "Host", "id": "h1"},
        "context": {"namespace": SHELL},
        "evaluations": [
            {"action": {"name": "shell.exec"}},
            {"action": {"name": "shell.exec"}, "subject": {"type": "Agent", "id": "a1"}},
            {"action": {"name": "shell.exec"}, "context": {"namespace": "bad"}},
            {"action": {"name": "shell.exec"}},
        ],
        "options": {"evaluations_semantic": "execute_all"},
    });
    let r = api.post("/access/v1/evaluations", batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let evals = r.body["evaluations"].as_array().expect("evaluations");
    let decisions: Vec<&Value> = evals.iter().map(|e| &e["decision"]).collect();
    assert_eq!(
        decisions,
        [&json!(true), &json!(false), &json!(false), &json!(true)]
    );
    assert_eq!(
        evals[2]["context"]["error"]["field"],
        json!("context.namespace")
    );

    let mut first_deny = batch;
    first_deny["options"]["evaluations_semantic"] = json!("deny_on_first_deny");
    let r = api.post("/access/v1/evaluations", first_deny).await;
    assert_eq!(r.body["evaluations"].as_array().map(Vec::len), Some(2));

    let single = json!({
        "subject": {"type": "Agent", "id": "o1", "properties": {"pack": "ops"}},
        "action": {"name": "shell.exec"},
        "resource": {"type": "Host", "id": "h1"},
        "context": {"namespace": SHELL},
    });
    let r = api.post("/access/v1/evaluations", single).await;
    assert_eq!(
        r.body["decision"],
        json!(true),
        "no `evaluations` is a single evaluation: {}",
        r.body
    );
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_field() {
    let (_dir, api) = Api::with_examples().await;

    let cases = [
        ("malformed", StatusCode::BAD_REQUEST, None),
        (
            "missing field",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("action"),
        ),
        (
            "unknown field",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("subject.extra"),
        ),
        (
            "bad namespace",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("context.namespace"),
        ),
        (
            "unknown root",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("context.namespace"),
        ),
        (
            "unknown subject type",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("subject.type"),
        ),
        ("oversize", StatusCode::PAYLOAD_TOO_LARGE, None),
    ];
    for (name, status, field) in cases {
        for uri in ["/v1/decide", "/access/v1/evaluation"] {
            let r = api.call(Method::POST, uri, bad_body(name)).await;
            assert_eq!(r.status, status, "{name} {uri}: {}", r.body);
            assert_eq!(r.content_type, "application/problem+json", "{name}");
            assert_eq!(r.body["status"], json!(status.as_u16()));
            if let Some(field) = field {
                assert_eq!(r.body["field"], json!(field), "{name}: {}", r.body);
            }
        }
    }
    let events = api.get("/v1/events?limit=1000").await;
    let decisions = events.body["events"].as_array().map(|e| {
        e.iter()
            .filter(|e| {
                // Alerts about the machine (a nearly full disk) may come and go.
                let kind = e["kind"].as_str().unwrap_or("");
                !kind.starts_with("policy.") && !kind.starts_with("alert.")
            })
            .count()
    });
    assert_eq!(
        decisions,
        Some(0),
        "bad input changes nothing: {}",
        events.body
    );
}

/// A bad request body, by case name.
fn bad_body(name: &str) -> Body {
    match name {
        "malformed" => Body::from("{\"subject\": "),
        "missing field" => Body::from(
            json!({"subject": {"type": "Agent", "id": "a"}, "resource": {"type": "T", "id": "r"}}).to_string(),
        ),
        "unknown field" => Body::from(
            json!({"subject": {"type": "Agent", "id": "a", "extra": 1}, "action": {"name": "x"}, "resource": {"type": "T", "id": "r"}}).to_string(),
        ),
        "bad namespace" => Body::from(request("a", "p", "x", "only.four.seg.ments", json!({})).to_string()),
        "unknown root" => Body::from(request("a", "p", "x", "a.b.c.d.unknownorg", json!({})).to_string()),
        "unknown subject type" => {
            let mut r = request("a", "p", "x", SHELL, json!({}));
            r["subject"]["type"] = json!("Robot");
            Body::from(r.to_string())
        }
        _ => Body::from(vec![b' '; 70 * 1024]),
    }
}

const DOC: &str = r#"
policyId: 7e0a4f1c-2b3d-4c5e-8f9a-1b2c3d4e5f60
name: sample
version: VERSION
namespace: "*.*.*.*.acme"
EXTRA
rules:
  - id: r1
    cedar: |
      permit(principal, action == Action::"read", resource);
"#;

fn doc(version: &str, extra: &str) -> String {
    DOC.replace("VERSION", version).replace("EXTRA", extra)
}

#[tokio::test]
async fn rejected_documents_name_the_problem_and_store_nothing() {
    let (_dir, api) = Api::with_examples().await;
    assert_eq!(
        api.push(&doc("1.0.0", "")).await.status,
        StatusCode::CREATED
    );
    let before = api.get("/v1/policies").await.body;
    let before_events = api.get("/v1/events?limit=1000").await.body;

    let syntax = doc("1.1.0", "").replace("permit(principal,", "permit(principal");
    let cases = [
        (syntax, "cedar_syntax", "rules[0].cedar"),
        (
            doc(
                "1.1.0",
                "dependencies: [{ policy: nowhere, version: \"^1.0\" }]",
            ),
            "missing_dependency",
            "nowhere",
        ),
        (doc("1.0.0", ""), "version_not_increasing", "1.0.0"),
        (
            doc(
                "1.1.0",
                "conflicts: [{ policy: payments-guard, version: \">=2.0.0\" }]",
            ),
            "declared_conflict",
            "payments-guard",
        ),
        (
            doc(
                "1.1.0",
                "activation: { strategy: canary }\nvalidity: { from: 2030-01-01T00:00:00Z }",
            ),
            "strategy_unavailable",
            "scheduled version",
        ),
    ];
    for (text, code, mention) in cases {
        let r = api.push(&text).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{code}: {}",
            r.body
        );
        assert_eq!(r.content_type, "application/problem+json");
        let errors = r.body["errors"].as_array().expect("errors listed");
        assert!(
            errors.iter().any(|e| e["code"] == json!(code)),
            "{code}: {}",
            r.body
        );
        assert!(
            r.body.to_string().contains(mention),
            "{code} names {mention}: {}",
            r.body
        );
    }
    let syntax = api
        .push(&doc("1.1.0", "").replace("permit(principal,", "permit(principal"))
        .await;
    let e = &syntax.body["errors"][0];
    assert!(
        e["line"].as_u64().is_some_and(|l| l >= 9),
        "cedar error points into the document: {e}"
    );

    // A cycle: sample depends on cyc-b, which depends on sample.
    let cyc_b = doc(
        "1.0.0",
        "dependencies: [{ policy: sample, version: \"^1.0\" }]",
    )
    .replace("name: sample", "name: cyc-b")
    .replace(
        "7e0a4f1c-2b3d-4c5e-8f9a-1b2c3d4e5f60",
        "8e0a4f1c-2b3d-4c5e-8f9a-1b2c3d4e5f61",
    );
    assert_eq!(api.push(&cyc_b).await.status, StatusCode::CREATED);
    let cyc = api
        .push(&doc(
            "1.2.0",
            "dependencies: [{ policy: cyc-b, version: \"^1.0\" }]",
        ))
        .await;
    assert_eq!(cyc.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", cyc.body);
    assert!(
        cyc.body.to_string().contains("dependency_cycle"),
        "{}",
        cyc.body
    );

    let after = api.get("/v1/policies").await.body;
    let names = |v: &Value| {
        v["policies"].as_array().map(|p| {
            p.iter()
                .map(|x| (x["name"].clone(), x["versions"].clone()))
                .collect::<Vec<_>>()
        })
    };
    let mut expected = names(&before).expect("list");
    expected.push((json!("cyc-b"), json!(["1.0.0"])));
    expected.sort_by_key(|(n, _)| n.to_string());
    let mut got = names(&after).expect("list");
    got.sort_by_key(|(n, _)| n.to_string());
    assert_eq!(got, expected, "rejected pushes store nothing");
    let after_events = api.get("/v1/events?limit=1000").await.body;
    assert_eq!(
        after_events["events"].as_array().map(Vec::len),
        before_events["events"].as_array().map(|e| e.len() + 1),
        "one event, for cyc-b"
    );
}

#[tokio::test]
async fn restart_keeps_policies_versions_and_controls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, snapshot) = {
        let api = Api::in_dir(dir.path()).await;
        api.push_examples().await;
        assert_eq!(
            api.push(&doc("1.0.0", "")).await.status,
            StatusCode::CREATED
        );
        assert_eq!(
            api.push(&doc("1.1.0", "")).await.status,
            StatusCode::CREATED
        );
        let rb = api
            .post("/v1/policies/sample/rollback", json!({"to": "1.0.0"}))
            .await;
        assert_eq!(rb.status, StatusCode::OK, "{}", rb.body);
        api.post("/v1/kill", json!({"scope": "agent", "id": "z9"}))
            .await;
        let health = api.get("/healthz").await.body;
        (
            api.get("/v1/policies").await.body,
            health["snapshot"].clone(),
        )
    };
    let api = Api::in_dir(dir.path()).await;
    assert_eq!(api.get("/v1/policies").await.body, list);
    assert_eq!(api.get("/readyz").await.body["snapshot"], snapshot);
    let show = api.get("/v1/policies/sample").await;
    assert_eq!(
        show.body["version"],
        json!("1.0.0"),
        "the rolled-back version is active: {}",
        show.body
    );
    let kills = api.get("/v1/kill").await.body;
    assert_eq!(kills["kill_switches"][0]["id"], json!("z9"));
    let d = api
        .decide(
            "a1",
            "research",
            "tool.call",
            "tools.search.eng.usa.acme",
            json!({"readonly": true}),
        )
        .await;
    assert_eq!(outcome(&d), "allow");
}

#[tokio::test]
async fn openapi_covers_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;
    let doc = api.get("/openapi.json").await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let routes = [
        ("/access/v1/evaluation", "post"),
        ("/access/v1/evaluations", "post"),
        ("/v1/decide", "post"),
        ("/v1/decide/batch", "post"),
        ("/v1/policies", "post"),
        ("/v1/policies", "get"),
        ("/v1/policies/validate", "post"),
        ("/v1/policies/{name}", "get"),
        ("/v1/policies/{name}/rollback", "post"),
        ("/v1/events", "get"),
        ("/v1/kill", "get"),
        ("/v1/kill", "post"),
        ("/v1/kill/release", "post"),
        ("/v1/agents/{id}", "get"),
        ("/v1/agents/{id}", "put"),
        ("/v1/agents/{id}/release", "post"),
        ("/v1/leases/{id}/release", "post"),
        ("/v1/quarantines", "get"),
        ("/v1/escalations", "get"),
        ("/v1/escalations/{id}", "get"),
        ("/v1/escalations/{id}/approve", "post"),
        ("/v1/escalations/{id}/deny", "post"),
        ("/v1/audit/checkpoint", "get"),
        ("/v1/audit/pubkey", "get"),
        ("/v1/audit/entries", "get"),
        ("/v1/audit/decisions/{id}", "get"),
        ("/v1/audit/proof/inclusion", "get"),
        ("/v1/audit/proof/consistency", "get"),
        ("/metrics", "get"),
        ("/v1/scale/status", "get"),
        ("/v1/scale/alerts", "get"),
        ("/v1/scale/alerts/history", "get"),
        ("/v1/scale/limits", "get"),
        ("/v1/scale/limits", "put"),
        ("/v1/policies/{name}/upgrade-path", "get"),
        ("/v1/rollouts", "get"),
        ("/v1/rollouts/{name}", "get"),
        ("/v1/rollouts/{name}/{command}", "post"),
        ("/v1/feedback", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} documented"
        );
        // And the route exists: anything but the router's 404 fallback or 405.
        let uri = path
            .replace("{name}", "sample")
            .replace("{command}", "promote")
            .replace("{id}", "00000000-0000-7000-8000-000000000000");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let r = api.call(m, &uri, Body::from("{}")).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            r.body["detail"] != json!("route not found"),
            "{method} {path} routed"
        );
    }
    let documented: usize = paths
        .values()
        .filter_map(|p| p.as_object())
        .map(|p| p.len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "no undocumented extras in either direction"
    );
}

#[tokio::test]
async fn registered_agents_bring_pack_and_attributes() {
    let (_dir, api) = Api::with_examples().await;
    let r = api
        .call(
            Method::PUT,
            "/v1/agents/r7",
            json!({"pack": "ops", "attributes": {"credit_score": 50}}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The registered low credit score denies even though the request claims nothing.
    let d = api
        .decide(
            "r7",
            "research",
            "tool.call",
            "tools.search.eng.usa.acme",
            json!({"readonly": true}),
        )
        .await;
    assert_eq!(outcome(&d), "deny", "{d}");
    assert!(
        d["reasons"].to_string().contains("low-credit-blocked"),
        "{d}"
    );
    let shown = api.get("/v1/agents/r7").await.body;
    assert_eq!(shown["pack"], json!("ops"));
}

const LIMITED: &str = r#"
policyId: 0b7c6d5e-4f3a-4b2c-9d1e-0f1a2b3c4d5e
name: limited
version: 1.0.0
namespace: "ops.*.*.*.acme"
rules:
  - id: may-run
    cedar: |
      permit(principal, action, resource);
  - id: per-agent
    quota: { key: agent, rate: 2/s, burst: 3 }
  - id: one-at-a-time
    concurrency: { key: agent, limit: 1, ttl: 1h }
"#;

/// The value of one sample line of the metrics text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

#[tokio::test]
async fn quotas_throttle_with_retry_after_and_leases_hold_until_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;
    assert_eq!(api.push(LIMITED).await.status, StatusCode::CREATED);
    let ns = "ops.run.x.us.acme";

    // Concurrency 1: the first action holds the only lease; the next throttles until
    // it is released, and a throttled decision holds none.
    let first = api.decide("a-1", "p", "run", ns, json!({})).await;
    assert_eq!(first["outcome"], "allow", "{first}");
    let lease = first["lease_id"].as_str().expect("lease_id").to_owned();
    let second = api.decide("a-1", "p", "run", ns, json!({})).await;
    assert_eq!(second["outcome"], "throttle", "{second}");
    assert_eq!(second["allowed"], false);
    assert!(second["lease_id"].is_null());
    let reason = second["reasons"][0].as_str().expect("reason");
    assert!(reason.contains("limited@1.0.0#one-at-a-time"), "{reason}");
    let wait = second["retry_after"].as_f64().expect("retry_after");
    assert!(
        wait > 3500.0 && wait <= 3600.0,
        "the lease TTL is 1h: {wait}"
    );
    let r = api
        .post(&format!("/v1/leases/{lease}/release"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["released"], 1);
    let r = api
        .post(&format!("/v1/leases/{lease}/release"), json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "released twice: {}",
        r.body
    );
    let r = api.post("/v1/leases/not-a-lease/release", json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["field"], "id");

    // Rate 2/s with burst 3: two more pass (three in all at once), then throttle
    // with the exact wait for the next cell (0.5 s at most).
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let d = api.decide("a-1", "p", "run", ns, json!({})).await;
        if let Some(l) = d["lease_id"].as_str() {
            api.post(&format!("/v1/leases/{l}/release"), json!({}))
                .await;
        }
        outcomes.push(d["outcome"].as_str().map(str::to_owned));
        if d["outcome"] == "throttle" {
            let wait = d["retry_after"].as_f64().expect("retry_after");
            assert!(wait > 0.0 && wait <= 0.5, "{wait}");
            assert!(
                d["reasons"][0]
                    .as_str()
                    .is_some_and(|r| r.contains("limited@1.0.0#per-agent")),
                "{d}"
            );
        }
    }
    let allowed = outcomes
        .iter()
        .filter(|o| o.as_deref() == Some("allow"))
        .count();
    assert_eq!(allowed, 2, "{outcomes:?}");
    // Another agent has its own budget; AuthZEN carries the same context.
    let r = api
        .post(
            "/access/v1/evaluation",
            request("a-2", "p", "run", ns, json!({})),
        )
        .await;
    assert_eq!(r.body["decision"], true, "{}", r.body);
    assert!(r.body["context"]["lease_id"].is_string());

    let metrics = api.get("/metrics").await.text;
    assert_eq!(
        sample(&metrics, "dynscale_decisions_total{outcome=\"allow\"}"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "dynscale_decisions_total{outcome=\"throttle\"}"),
        2.0
    );
    // Every decision's policies were evaluated, all on the fast path.
    assert_eq!(
        sample(
            &metrics,
            "dynscale_policy_evaluations_total{evaluator=\"fast_path\"}"
        ),
        6.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "dynscale_quota_throttles_total{rule=\"limited@1.0.0#per-agent\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&metrics, "dynscale_leases_live"),
        1.0,
        "a-2 holds one"
    );
    assert!(sample(&metrics, "dynscale_audit_entries") >= 7.0);
    assert_eq!(
        sample(
            &metrics,
            "dynscale_request_duration_seconds_count{class=\"decision\"}"
        ),
        6.0,
        "six decision requests were timed"
    );
}

#[tokio::test]
async fn a_cost_field_that_is_not_a_count_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::in_dir(dir.path()).await;
    let doc = LIMITED.replace("burst: 3 }", "burst: 3, cost: units }");
    assert_eq!(api.push(&doc).await.status, StatusCode::CREATED);
    let r = api
        .post(
            "/v1/decide",
            request("a-1", "p", "run", "ops.run.x.us.acme", json!({"units": -2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["field"], "context.units");
    // A quota rule that can never pass is refused at push, naming the field.
    let r = api
        .push(&LIMITED.replace("rate: 2/s", "rate: 2000000000/s"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["errors"][0]["field"]
            .as_str()
            .is_some_and(|f| f.ends_with("quota.rate")),
        "{}",
        r.body
    );
}
