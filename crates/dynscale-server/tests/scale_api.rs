//! Scale monitoring through the HTTP API, in process: an audit log at its byte cap
//! drives the storage signal RED, the alert fires, is recorded in the history,
//! appears in `/metrics` and is posted to the webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use dynscale_core::scale::{Level, RuleConfig, ScaleConfig, Signal, WhenConfig};
use dynscale_server::config::AlertingSettings;
use dynscale_server::{Node, ServerConfig};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn get(router: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

async fn get_json(router: &Router, uri: &str) -> Value {
    let (status, bytes) = get(router, uri).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("json")
}

/// A webhook receiver on 127.0.0.1 that keeps what it is sent.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    let app = Router::new().route(
        "/hook",
        post(move |body: axum::Json<Value>| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().expect("lock").push(body.0);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn a_full_audit_log_fires_the_storage_alert_with_history_metrics_and_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, received) = webhook().await;
    let rule = RuleConfig {
        name: "storage-full".into(),
        when: WhenConfig {
            signal: Some(Signal::Storage),
            level: Some(Level::Red),
            ..WhenConfig::default()
        },
        for_: Duration::ZERO,
        keep_firing_for: Duration::ZERO,
        level: Level::Red,
        owner: "storage-team".into(),
        respond_within: Duration::from_secs(3600),
        repeat_every: None,
    };
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        scale: ScaleConfig {
            evaluate_every: Duration::from_millis(50),
            rules: vec![rule],
            ..ScaleConfig::default()
        },
        alerting: AlertingSettings {
            webhook_url: Some(url),
            ..AlertingSettings::default()
        },
        ..ServerConfig::default()
    };
    let node = Node::open(config).await.expect("node opens");
    let router = node.router();
    // Something in the log, then a cap below it: the storage signal is over 100 %.
    node.audit_log()
        .append(b"entry".to_vec())
        .await
        .expect("append");
    node.audit_log().set_max_bytes(Some(1));

    // Wait (bounded) for the evaluation loop to fire and deliver.
    let mut alerts = Value::Null;
    for _ in 0..200 {
        alerts = get_json(&router, "/v1/scale/alerts").await;
        let delivered = !received.lock().expect("lock").is_empty();
        if alerts["alerts"][0]["state"] == "firing" && delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["alert"], "storage-full", "{alerts}");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["level"], "red");
    assert_eq!(alert["owner"], "storage-team");
    assert_eq!(alert["respond_within_secs"], 3600);

    let notice = received.lock().expect("lock")[0].clone();
    assert_eq!(notice["alert"], "storage-full", "{notice}");
    assert_eq!(notice["kind"], "firing");
    assert_eq!(notice["owner"], "storage-team");
    assert_eq!(notice["level"], "red");
    let (since, by) = (
        notice["firing_since"].as_u64().expect("ms"),
        notice["respond_by"].as_u64().expect("ms"),
    );
    assert_eq!(by - since, 3_600_000, "respond within an hour");

    let status = get_json(&router, "/v1/scale/status").await;
    let storage = status["status"]["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["signal"] == "storage")
        .cloned()
        .expect("storage signal");
    assert_eq!(storage["level"], "red", "{status}");
    assert!(storage["value"].as_f64().expect("value") >= 100.0);
    assert_eq!(status["admission"]["shedding"], false);

    // The history is persisted even though the log is full (marked unaudited).
    let history = get_json(&router, "/v1/scale/alerts/history?limit=5").await;
    let firing = history["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .find(|t| t["kind"] == "alert.firing")
        .cloned()
        .expect("a firing transition");
    assert_eq!(firing["subject"], "storage-full");
    assert_eq!(firing["detail"]["to"], "firing");
    assert!(firing["detail"]["unaudited"].is_string(), "{firing}");
    let (status_code, _) = get(&router, "/v1/scale/alerts/history?limit=100000").await;
    assert_eq!(status_code, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, metrics) = get(&router, "/metrics").await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains(
            "dynscale_alert_state{alert=\"storage-full\",instance=\"\",state=\"firing\",level=\"red\"} 1"
        ),
        "{metrics}"
    );
    node.close().await;
}
