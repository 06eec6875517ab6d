//! Decisions in process against Rego (`regorus`, the OPA language in Rust) on the
//! same JSON requests and an equivalent policy (`fixtures/ten-policies.rego`, the ten
//! policies of the `decide` benchmark): parse the request, evaluate, read allow/deny.
//! SPEC §11 sets no target against Rego; the figure places dynscale beside the other
//! policy engine operators know, measured in the same run.
//!
//! `cargo bench -p dynscale-server --bench rego`; `DYNSCALE_BENCH_QUICK=1` shortens
//! the runs. Run without `--bench` (as `cargo test --benches` does) it only
//! smoke-tests the code paths.

mod fixtures;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use dynscale_core::controls::ControlState;
use dynscale_core::decision;
use dynscale_core::ids::SnapshotId;
use dynscale_core::policy::check_document;
use dynscale_core::request::ActionRequest;
use dynscale_core::snapshot::{EngineConfig, Snapshot};
use dynscale_server::wire::EvaluationRequest;

use fixtures::{BenchResult, Mode, Row, fmt_rate, median, print_table, ten_policy_requests};

const REGO: &str = include_str!("fixtures/ten-policies.rego");
const RULE: &str = "data.dynscale.allow";

fn main() -> BenchResult<()> {
    let mode = Mode::from_env();
    println!("rego benchmark, mode: {}", mode.name());
    let policies = fixtures::TEN_POLICIES
        .iter()
        .enumerate()
        .map(|(i, text)| {
            check_document(&format!("policy {i}"), text, None)
                .map(Arc::new)
                .map_err(|d| format!("policy {i}: {d:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot = Snapshot::compile(
        SnapshotId(1),
        policies,
        None,
        Arc::new(EngineConfig::default()),
        None,
    )?;
    let controls = ControlState::default();
    let mut engine = regorus::Engine::new();
    engine.add_policy("ten-policies.rego".into(), REGO.into())?;
    let reqs = ten_policy_requests();

    let mut dyn_path = |bytes: &[u8]| -> BenchResult<bool> {
        let req: EvaluationRequest = serde_json::from_slice(bytes)?;
        let action = ActionRequest::build(&req.action_input(None), None)?;
        Ok(decision::decide(&snapshot, &controls, &action)?
            .outcome
            .is_allowed())
    };
    let mut rego_path = |bytes: &[u8]| -> BenchResult<bool> {
        let input = regorus::Value::from_json_str(std::str::from_utf8(bytes)?)?;
        engine.set_input(input);
        let v = engine.eval_rule(RULE.into())?;
        Ok(v == regorus::Value::from(true))
    };

    // Sanity, not timing: both reach the same allow/deny on every request.
    let mut allowed = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let (d, g) = (dyn_path(r)?, rego_path(r)?);
        if d != g {
            return Err(format!("request {i}: dynscale allow={d}, Rego allow={g}").into());
        }
        allowed.push(if d { "allow" } else { "deny" });
    }
    println!("the {} requests: {}", reqs.len(), allowed.join(", "));

    let (seconds, rounds) = match mode {
        Mode::Full => (1.0, 7usize),
        Mode::Quick => (0.2, 5),
        Mode::Smoke => (0.01, 3),
    };
    let throughput = |n: usize, f: &mut dyn FnMut(&[u8]) -> BenchResult<bool>| {
        let start = Instant::now();
        for i in 0..n {
            black_box(f(black_box(&reqs[i % reqs.len()]))?);
        }
        Ok::<f64, Box<dyn std::error::Error>>(n as f64 / start.elapsed().as_secs_f64())
    };
    let warm = mode.size(20_000, 200);
    let n_dyn = ((throughput(warm, &mut dyn_path)? * seconds) as usize).max(100);
    let n_rego = ((throughput(warm / 10, &mut rego_path)? * seconds) as usize).max(100);
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift of the machine hits both alike.
        if round.is_multiple_of(2) {
            d.push(throughput(n_dyn, &mut dyn_path)?);
            g.push(throughput(n_rego, &mut rego_path)?);
        } else {
            g.push(throughput(n_rego, &mut rego_path)?);
            d.push(throughput(n_dyn, &mut dyn_path)?);
        }
    }
    let (d, g) = (median(&mut d), median(&mut g));
    print_table(
        mode,
        &format!(
            "rego: 10 policies, {rounds} alternating runs of ~{seconds} s, medians \
             (baseline: regorus on an equivalent Rego policy)"
        ),
        &[Row {
            figure: "decisions/s, JSON → decision (dynscale vs Rego)".into(),
            value: fmt_rate(d),
            baseline: fmt_rate(g),
            ratio: format!("{:.2}×", d / g),
            target: "— (no SPEC target; context)".into(),
            met: None,
        }],
    );
    Ok(())
}
