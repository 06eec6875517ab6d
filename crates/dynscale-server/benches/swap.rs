//! Policy swap benchmark (SPEC §11): push → enforced with 10 000 active policies on a
//! node over the embedded SQLite store, through the HTTP API called in process. A push
//! answers after the new snapshot is swapped in, so its request time is the swap time.
//!
//! `cargo bench -p dynscale-server --bench swap`; `DYNSCALE_BENCH_QUICK=1` shrinks the
//! sizes about ten times. Run without `--bench` (as `cargo test --benches` does) it
//! only smoke-tests the code paths.

mod fixtures;

use std::io::Write;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use dynscale_server::{Node, ServerConfig};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use fixtures::{
    BenchResult, FleetPolicy, Mode, Row, fleet_policies, fmt_ns, histogram, print_table, quantile,
    record,
};

/// SPEC §11: p95 of push → enforced on a single node with 10 000 active policies.
const SWAP_P95_TARGET_NS: u64 = 10_000_000;
/// SPEC §11: sustained policy updates per minute.
const UPDATES_PER_MINUTE_TARGET: f64 = 10_000.0;

fn main() -> BenchResult<()> {
    let mode = Mode::from_env();
    println!("swap benchmark, mode: {}", mode.name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(mode))
}

/// The node's router, called in process.
struct Api {
    router: Router,
}

impl Api {
    async fn call(&self, req: Request<Body>) -> BenchResult<(StatusCode, Value)> {
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    fn request(
        method: Method,
        uri: &str,
        content_type: &str,
        body: String,
    ) -> BenchResult<Request<Body>> {
        Ok(Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))?)
    }

    fn push_request(yaml: String) -> BenchResult<Request<Body>> {
        Self::request(Method::POST, "/v1/policies", "application/yaml", yaml)
    }

    /// Sends a prepared push; returns the time to the answer and the snapshot it names.
    async fn push(&self, req: Request<Body>) -> BenchResult<(Duration, u64)> {
        let start = Instant::now();
        let (status, body) = self.call(req).await?;
        let took = start.elapsed();
        if status != StatusCode::CREATED {
            return Err(format!("push answered {status}: {body}").into());
        }
        let snapshot = body["snapshot"]
            .as_u64()
            .ok_or_else(|| format!("push answer without a snapshot: {body}"))?;
        Ok((took, snapshot))
    }

    /// Checks, right after a push, that the node enforces it: `/healthz` reports the
    /// push's snapshot and a decision in the policy's scope evaluates the new version.
    async fn check_enforced(
        &self,
        p: &FleetPolicy,
        version: &str,
        snapshot: u64,
    ) -> BenchResult<()> {
        let (_, health) = self
            .call(Self::request(
                Method::GET,
                "/healthz",
                "application/json",
                String::new(),
            )?)
            .await?;
        if health["snapshot"].as_u64() != Some(snapshot) {
            return Err(
                format!("healthz shows {health}, the push made snapshot {snapshot}").into(),
            );
        }
        let decide = json!({
            "subject": {"type": "Agent", "id": "verifier", "properties": {"pack": "research", "credit_score": 700}},
            "action": {"name": p.sample_action},
            "resource": {"type": "Resource", "id": "r1"},
            "context": {"namespace": p.sample_namespace},
        });
        let (status, body) = self
            .call(Self::request(
                Method::POST,
                "/v1/decide",
                "application/json",
                decide.to_string(),
            )?)
            .await?;
        let label = format!("{}@{version}", p.name);
        let sees = body["policies"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|v| v.as_str() == Some(label.as_str())));
        if status != StatusCode::OK || !sees || body["snapshot"].as_u64() != Some(snapshot) {
            return Err(
                format!("decision right after pushing {label} does not use it: {body}").into(),
            );
        }
        Ok(())
    }
}

/// Pushes version 1.0.0 of each policy; progress on stderr. Returns the latency of
/// every push, in order.
async fn push_initial(
    api: &Api,
    policies: &[FleetPolicy],
    done_before: usize,
    total: usize,
) -> BenchResult<Vec<Duration>> {
    let mut took = Vec::with_capacity(policies.len());
    let started = Instant::now();
    for (i, p) in policies.iter().enumerate() {
        let (d, _) = api.push(Api::push_request(p.yaml("1.0.0", 0))?).await?;
        took.push(d);
        let n = done_before + i + 1;
        if n.is_multiple_of(500) || i + 1 == policies.len() {
            let recent = &took[took.len().saturating_sub(500)..];
            let mean = recent.iter().sum::<Duration>() / recent.len().max(1) as u32;
            eprintln!(
                "setup: {n}/{total} policies pushed, {:.1?} elapsed, mean of the last {} pushes {mean:.2?}",
                started.elapsed(),
                recent.len()
            );
        }
    }
    Ok(took)
}

/// Times `n` pushes of new versions of existing names, spread over `policies`, and
/// checks after each (untimed) that the node enforces it.
async fn timed_pushes(
    api: &Api,
    policies: &[FleetPolicy],
    versions: &mut [usize],
    n: usize,
) -> BenchResult<Histogram<u64>> {
    let mut h = histogram()?;
    for t in 0..n {
        let i = (t * 7919 + 13) % policies.len();
        let p = &policies[i];
        versions[i] += 1;
        let version = format!("1.0.{}", versions[i]);
        let req = Api::push_request(p.yaml(&version, versions[i]))?;
        let (took, snapshot) = api.push(req).await?;
        record(&mut h, took);
        api.check_enforced(p, &version, snapshot).await?;
    }
    Ok(h)
}

/// write + fsync of 4 KiB in the data directory's file system: the floor under any
/// durable push.
fn fsync_floor(dir: &std::path::Path, n: usize) -> BenchResult<Histogram<u64>> {
    let mut h = histogram()?;
    let mut f = std::fs::File::create(dir.join("fsync-probe"))?;
    let block = [0x5au8; 4096];
    for _ in 0..n {
        let start = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        record(&mut h, start.elapsed());
    }
    std::fs::remove_file(dir.join("fsync-probe"))?;
    Ok(h)
}

fn percentile_of(durations: &[Duration], q: f64) -> BenchResult<f64> {
    let mut h = histogram()?;
    for d in durations {
        record(&mut h, *d);
    }
    Ok(h.value_at_quantile(q) as f64)
}

async fn run(mode: Mode) -> BenchResult<()> {
    let count = mode.size(10_000, 100);
    let namespaces = mode.size(1_000, 10);
    let small = mode.size(100, 10);
    let timed = mode.size(300, 20);
    let fleet = fleet_policies(count, namespaces);
    let dir = tempfile::tempdir()?;
    let floor = fsync_floor(dir.path(), timed)?;

    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let node = Node::open(config).await?;
    let api = Api {
        router: node.router(),
    };
    let mut versions = vec![0usize; count];

    // Baseline: the same pushes against a node holding only `small` policies.
    eprintln!("setup: {small} policies for the small-node baseline");
    push_initial(&api, &fleet[..small], 0, count).await?;
    let base = timed_pushes(&api, &fleet[..small], &mut versions[..small], timed).await?;

    let started = Instant::now();
    let setup = push_initial(&api, &fleet[small..], small, count).await?;
    let setup_time = started.elapsed();
    let per_minute = setup.len() as f64 / setup_time.as_secs_f64() * 60.0;
    let window = setup.len().min(1_000);
    let first = percentile_of(&setup[..window], 0.5)?;
    let last = percentile_of(&setup[setup.len() - window..], 0.5)?;

    eprintln!("timing {timed} pushes of new versions with {count} active policies");
    let full = timed_pushes(&api, &fleet, &mut versions, timed).await?;

    let p95 = full.value_at_quantile(0.95);
    let vs_base = |q: f64| {
        format!(
            "{:.1}×",
            full.value_at_quantile(q) as f64 / base.value_at_quantile(q) as f64
        )
    };
    print_table(
        mode,
        &format!(
            "swap: push → enforced, {count} active policies over {namespaces} namespaces, \
             {timed} timed pushes (baseline: the same pushes with {small} active policies; \
             ratio = measured / baseline)"
        ),
        &[
            Row {
                figure: "p50 push → enforced".into(),
                value: quantile(&full, 0.5),
                baseline: quantile(&base, 0.5),
                ratio: vs_base(0.5),
                target: "—".into(),
                met: None,
            },
            Row {
                figure: "p95 push → enforced".into(),
                value: quantile(&full, 0.95),
                baseline: quantile(&base, 0.95),
                ratio: vs_base(0.95),
                target: format!("≤ {}", fmt_ns(SWAP_P95_TARGET_NS as f64)),
                met: Some(p95 <= SWAP_P95_TARGET_NS),
            },
            Row {
                figure: "p99 push → enforced".into(),
                value: quantile(&full, 0.99),
                baseline: quantile(&base, 0.99),
                ratio: vs_base(0.99),
                target: "—".into(),
                met: None,
            },
            Row::info(
                "p50 / p99 write + fsync of 4 KiB (disk floor)",
                format!("{} / {}", quantile(&floor, 0.5), quantile(&floor, 0.99)),
            ),
            Row {
                figure: format!("setup: {} pushes of new names, sustained", setup.len()),
                value: format!("{per_minute:.0} /min ({setup_time:.1?})"),
                baseline: "—".into(),
                ratio: "—".into(),
                target: format!("≥ {UPDATES_PER_MINUTE_TARGET:.0} /min"),
                met: Some(per_minute >= UPDATES_PER_MINUTE_TARGET),
            },
            Row::info(
                format!("setup: p50 of the first / last {window} pushes"),
                format!("{} / {}", fmt_ns(first), fmt_ns(last)),
            ),
        ],
    );
    println!(
        "every timed push was enforced at once: /healthz showed its snapshot and a decision evaluated the new version"
    );
    Ok(())
}
