//! The audit log through the node in process: decisions and changes carry their
//! entries' indexes and their proofs verify; configured context fields are hashed or
//! dropped; a full log halts writes with 503, loses nothing acknowledged, and resumes.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use dynscale_core::audit_bundle::ProofBundle;
use dynscale_core::merkle::Verifier;
use dynscale_server::config::AuditSettings;
use dynscale_server::{Node, ServerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const POLICY: &str = r#"
policyId: 7e0a4f1c-2b3d-4c5e-8f9a-1b2c3d4e5f60
name: pay
version: 1.0.0
namespace: "payment.*.*.*.acme"
rules:
  - id: ok
    cedar: |
      permit(principal, action == Action::"transfer", resource);
"#;

async fn call(router: &Router, method: Method, uri: &str, body: String) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn transfer(account: &str) -> String {
    json!({
        "subject": {"type": "Agent", "id": "t1"},
        "action": {"name": "transfer"},
        "resource": {"type": "Account", "id": "a"},
        "context": {"namespace": "payment.wire.fin.usa.acme", "account": account, "ssn": "123-45", "amount": 5},
    })
    .to_string()
}

async fn node(dir: &std::path::Path, audit: AuditSettings) -> Node {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        audit,
        // These tests read the log entry by entry; alerts about the machine running
        // them (a nearly full disk) would be audited in between.
        scale: dynscale_core::scale::ScaleConfig {
            rules: Vec::new(),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    Node::open(config).await.expect("node opens")
}

#[tokio::test]
async fn decisions_are_logged_private_fields_hashed_and_proofs_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings: AuditSettings = toml::from_str(
        r#"
        [[privacy]]
        namespace = "payment.*.*.*.acme"
        hash = ["account"]
        drop = ["ssn"]
        "#,
    )
    .expect("settings parse");
    let node = node(dir.path(), settings).await;
    let router = node.router();
    let (status, pushed) = call(&router, Method::POST, "/v1/policies", POLICY.into()).await;
    assert_eq!(status, StatusCode::CREATED, "{pushed}");

    let (status, decided) = call(&router, Method::POST, "/v1/decide", transfer("DE89-0001")).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let index = decided["audit_index"].as_u64().expect("an audit index");
    assert!(index >= 1, "the push was logged first");
    let id = decided["decision_id"].as_str().expect("id");

    let (_, entry) = call(
        &router,
        Method::GET,
        &format!("/v1/audit/decisions/{id}"),
        String::new(),
    )
    .await;
    assert_eq!(entry["index"], json!(index));
    let ctx = &entry["entry"]["context"];
    assert_eq!(ctx["amount"], json!(5));
    assert!(ctx.get("ssn").is_none(), "dropped: {ctx}");
    let hashed = ctx["account"].as_str().expect("hashed account");
    assert!(
        hashed.starts_with("sha256:") && !hashed.contains("DE89"),
        "{hashed}"
    );

    let (_, events) = call(
        &router,
        Method::GET,
        "/v1/audit/entries?from=0&limit=10",
        String::new(),
    )
    .await;
    assert_eq!(
        events["entries"][0]["entry"]["kind"],
        json!("policy.pushed")
    );

    let (status, bundle) = call(
        &router,
        Method::GET,
        &format!("/v1/audit/proof/inclusion?decision_id={id}"),
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    let (_, key) = call(&router, Method::GET, "/v1/audit/pubkey", String::new()).await;
    let verifier: Verifier = key.as_str().expect("text").trim().parse().expect("vkey");
    let bundle: ProofBundle = serde_json::from_value(bundle).expect("bundle");
    let (entry, _) = bundle
        .verify(&verifier)
        .expect("the bundle verifies offline");
    assert_eq!(entry.id().to_string(), id);

    let (status, consistency) = call(
        &router,
        Method::GET,
        &format!("/v1/audit/proof/consistency?old=1&new={}", index + 1),
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{consistency}");
    let (status, bad) = call(
        &router,
        Method::GET,
        "/v1/audit/proof/consistency?old=5&new=2",
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, bad) = call(
        &router,
        Method::GET,
        "/v1/audit/proof/inclusion?index=abc",
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(bad["field"], json!("index"), "{bad}");

    // Deleting the salt unlinks the hashed data; the log still verifies as it is.
    std::fs::remove_file(dir.path().join("privacy.salt")).expect("salt removed");
    let log_dir = dir.path().join("audit");
    node.close().await;
    drop(router);
    drop(node);
    let report = dynscale_store::audit::verify_dir(&log_dir, Some(&verifier));
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn a_full_log_halts_writes_loses_nothing_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path(), AuditSettings::default()).await;
    let router = node.router();
    let (status, _) = call(&router, Method::POST, "/v1/policies", POLICY.into()).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut acked = Vec::new();
    for i in 0..20 {
        let (status, d) = call(
            &router,
            Method::POST,
            "/v1/decide",
            transfer(&format!("x{i}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        acked.push(d["decision_id"].as_str().expect("id").to_owned());
    }
    // Cap the log at what it uses now: the next write does not fit.
    let used = node.audit_log().used_bytes();
    node.audit_log().set_max_bytes(Some(used));

    let (status, problem) = call(&router, Method::POST, "/v1/decide", transfer("full")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "decisions fail closed: {problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("audit log is full"),
        "{problem}"
    );
    let (status, _) = call(
        &router,
        Method::POST,
        "/v1/kill",
        json!({"scope": "global"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "changes halt too");
    let (_, kills) = call(&router, Method::GET, "/v1/kill", String::new()).await;
    assert_eq!(
        kills["kill_switches"],
        json!([]),
        "a change that was not logged did not happen"
    );
    let (status, ready) = call(&router, Method::GET, "/readyz", String::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["audit"]["full"], json!(true), "{ready}");

    // Space returns: writes resume.
    node.audit_log().set_max_bytes(None);
    let (status, d) = call(&router, Method::POST, "/v1/decide", transfer("back")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let (status, _) = call(&router, Method::GET, "/readyz", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    for id in &acked {
        let (status, e) = call(
            &router,
            Method::GET,
            &format!("/v1/audit/decisions/{id}"),
            String::new(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged decision {id} is in the log: {e}"
        );
    }
}

#[tokio::test]
async fn fail_open_answers_unaudited_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = AuditSettings {
        fail_open: true,
        ..AuditSettings::default()
    };
    let node = node(dir.path(), settings).await;
    let router = node.router();
    call(&router, Method::POST, "/v1/policies", POLICY.into()).await;
    node.audit_log()
        .set_max_bytes(Some(node.audit_log().used_bytes()));
    let (status, d) = call(&router, Method::POST, "/v1/decide", transfer("open")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert!(d.get("audit_index").is_none(), "{d}");
    assert!(d["warnings"].to_string().contains("not audited"), "{d}");
}
