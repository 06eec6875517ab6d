//! Decisions over HTTP (SPEC §11): a dynscale node (audit log on, `batch` durability)
//! against a minimal axum handler on the same machine, both served in this process on
//! loopback and driven by the same closed-loop driver at saturation (keep-alive
//! HTTP/1.1, a fixed number of connections each sending its next request as soon as
//! the answer arrives). Also the batch API's decisions per second.
//!
//! The minimal handler is what any JSON API endpoint is at least: axum decodes the
//! JSON body into a `serde_json::Value` and answers a constant JSON object.
//!
//! `cargo bench -p dynscale-server --bench http`; `DYNSCALE_BENCH_QUICK=1` shortens
//! the runs. Run without `--bench` (as `cargo test --benches` does) it only
//! smoke-tests the code paths.

mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use dynscale_server::{Node, ServerConfig};
use serde_json::{Value, json};

use fixtures::{BenchResult, Mode, Row, fmt_rate, median, print_table, ten_policy_requests};

/// SPEC §11: HTTP decisions at least half a minimal axum handler's requests/s.
const HTTP_RATIO_TARGET: f64 = 0.5;
/// SPEC §11: batch API decisions per second.
const BATCH_TARGET: f64 = 200_000.0;
/// Keep-alive connections of the closed-loop driver.
const CONNECTIONS: usize = 32;
/// Decisions per batch request.
const BATCH: usize = 100;

fn main() -> BenchResult<()> {
    let mode = Mode::from_env();
    println!("http benchmark, mode: {}", mode.name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(mode))
}

async fn serve(router: Router) -> BenchResult<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("server stopped: {e}");
        }
    });
    Ok(addr)
}

/// Requests per second (and decisions per second) of `connections` closed loops
/// posting `bodies` in turn to `url` for `seconds`; any non-2xx answer is an error.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    connections: usize,
    seconds: f64,
) -> BenchResult<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, url, bodies, done, stop) = (
            http.clone(),
            url.to_owned(),
            bodies.clone(),
            done.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{url} answered {status}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn run(mode: Mode) -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let durability = format!("{:?}", config.audit.durability);
    let node = Node::open(config).await?;
    let node_addr = serve(node.router()).await?;
    let baseline = Router::new().route(
        "/v1/decide",
        post(|Json(_): Json<Value>| async { Json(json!({"decision": true})) }),
    );
    let base_addr = serve(baseline).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .tcp_nodelay(true)
        .build()?;

    for (i, doc) in fixtures::TEN_POLICIES.iter().enumerate() {
        let resp = http
            .post(format!("http://{node_addr}/v1/policies"))
            .header("content-type", "application/yaml")
            .body(*doc)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("pushing policy {i}: {}", resp.text().await?).into());
        }
    }
    // Keep the requests whose decisions have no effect: an escalation or a quarantine
    // writes the store, which is its own cost, not the decision path's.
    let mut bodies = Vec::new();
    let mut outcomes = Vec::new();
    for body in ten_policy_requests() {
        let answer: Value = http
            .post(format!("http://{node_addr}/v1/decide"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .json()
            .await?;
        let outcome = answer["outcome"].as_str().unwrap_or_default().to_owned();
        if matches!(outcome.as_str(), "allow" | "warn" | "deny") {
            bodies.push(body);
            outcomes.push(outcome);
        }
    }
    if bodies.is_empty() {
        return Err("no request without effects to send".into());
    }
    println!(
        "{} requests in turn, outcomes {}; audit durability {durability}; {CONNECTIONS} connections",
        bodies.len(),
        outcomes.join(", ")
    );
    let batches: Vec<Vec<u8>> = (0..4)
        .map(|k| {
            let requests: Vec<Value> = (0..BATCH)
                .map(|i| {
                    serde_json::from_slice(&bodies[(k + i) % bodies.len()]).unwrap_or(Value::Null)
                })
                .collect();
            json!({ "requests": requests }).to_string().into_bytes()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let batches = Arc::new(batches);

    let (seconds, rounds) = match mode {
        Mode::Full => (5.0, 3usize),
        Mode::Quick => (2.0, 3),
        Mode::Smoke => (0.2, 1),
    };
    let node_url = format!("http://{node_addr}/v1/decide");
    let base_url = format!("http://{base_addr}/v1/decide");
    let batch_url = format!("http://{node_addr}/v1/decide/batch");
    // Warm both up, then alternate which goes first.
    drive(&http, &base_url, bodies.clone(), CONNECTIONS, seconds / 4.0).await?;
    drive(&http, &node_url, bodies.clone(), CONNECTIONS, seconds / 4.0).await?;
    let (mut d, mut b, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        if round.is_multiple_of(2) {
            d.push(drive(&http, &node_url, bodies.clone(), CONNECTIONS, seconds).await?);
            b.push(drive(&http, &base_url, bodies.clone(), CONNECTIONS, seconds).await?);
        } else {
            b.push(drive(&http, &base_url, bodies.clone(), CONNECTIONS, seconds).await?);
            d.push(drive(&http, &node_url, bodies.clone(), CONNECTIONS, seconds).await?);
        }
        batch.push(drive(&http, &batch_url, batches.clone(), 8, seconds).await? * BATCH as f64);
    }
    let (d, b, batch) = (median(&mut d), median(&mut b), median(&mut batch));
    print_table(
        mode,
        &format!(
            "http: closed loop, {CONNECTIONS} keep-alive connections, {rounds} alternating runs \
             of {seconds} s, medians; client and servers share this machine's cores"
        ),
        &[
            Row {
                figure: "requests/s: POST /v1/decide (audit on) vs minimal axum JSON handler"
                    .into(),
                value: fmt_rate(d),
                baseline: fmt_rate(b),
                ratio: format!("{:.2}×", d / b),
                target: format!("≥ {HTTP_RATIO_TARGET}×"),
                met: Some(d / b >= HTTP_RATIO_TARGET),
            },
            Row {
                figure: format!(
                    "decisions/s: POST /v1/decide/batch, {BATCH} per request, 8 connections"
                ),
                value: fmt_rate(batch),
                baseline: "—".into(),
                ratio: "—".into(),
                target: format!("≥ {}", fmt_rate(BATCH_TARGET)),
                met: Some(batch >= BATCH_TARGET),
            },
        ],
    );
    node.close().await;
    Ok(())
}
