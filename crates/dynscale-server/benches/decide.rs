//! Decision benchmarks (SPEC §11): in-process decisions from JSON bytes, against raw
//! Cedar on the same requests. Part 1: ten policies, throughput ratio. Part 2: 10 000
//! active policies over 1 000 namespaces, per-decision latency percentiles.
//!
//! `cargo bench -p dynscale-server --bench decide`; `DYNSCALE_BENCH_QUICK=1` shrinks
//! the sizes about ten times. Run without `--bench` (as `cargo test --benches` does)
//! it only smoke-tests the code paths.

mod fixtures;

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request,
};
use dynscale_core::controls::ControlState;
use dynscale_core::decision::{self, Decision};
use dynscale_core::ids::SnapshotId;
use dynscale_core::policy::{CheckedPolicy, check_document};
use dynscale_core::request::ActionRequest;
use dynscale_core::snapshot::{EngineConfig, Evaluator, Snapshot};
use dynscale_server::wire::EvaluationRequest;
use serde_json::{Value, json};

use fixtures::{
    BenchResult, Mode, Row, fleet_policies, fleet_requests, fmt_ns, fmt_rate, histogram, median,
    print_table, quantile, record, ten_policy_requests,
};

/// SPEC §11: a decision over ten policies at least 0.8 × raw Cedar's throughput.
const TEN_POLICY_RATIO_TARGET: f64 = 0.8;
/// SPEC §11: p99 of a decision over 10 000 active policies.
const FLEET_P99_TARGET_NS: u64 = 50_000;

fn main() -> BenchResult<()> {
    let mode = Mode::from_env();
    println!("decide benchmark, mode: {}", mode.name());
    ten_policies(mode)?;
    fleet(mode)?;
    Ok(())
}

/// The dynscale path: decode the wire type, build the Cedar request and entities,
/// decide under the snapshot and (empty) controls.
fn dynscale_decide(
    bytes: &[u8],
    snapshot: &Snapshot,
    controls: &ControlState,
) -> BenchResult<Decision> {
    let req: EvaluationRequest = serde_json::from_slice(bytes)?;
    let action = build(&req)?;
    Ok(decision::decide(snapshot, controls, &action)?)
}

fn build(req: &EvaluationRequest) -> BenchResult<ActionRequest> {
    Ok(ActionRequest::build(&req.action_input(None), None)?)
}

/// Raw Cedar over one policy set, as an application would call it directly.
struct RawCedar {
    set: PolicySet,
    authorizer: Authorizer,
}

impl RawCedar {
    fn new(policies: &[Arc<CheckedPolicy>]) -> BenchResult<Self> {
        let mut set = PolicySet::new();
        for p in policies {
            for rule in &p.cedar {
                set.add(rule.policy.clone())?;
            }
        }
        Ok(Self {
            set,
            authorizer: Authorizer::new(),
        })
    }

    /// Parse the JSON, build principal/action/resource, the entities (principal with
    /// its attributes and its Pack as parent, resource with its attributes) and the
    /// context, and ask Cedar. True for allow.
    fn decide(&self, bytes: &[u8]) -> BenchResult<bool> {
        let mut v: Value = serde_json::from_slice(bytes)?;
        let text = |v: &Value, ptr: &str| -> BenchResult<String> {
            Ok(v.pointer(ptr)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("request has no string at {ptr}"))?
                .to_owned())
        };
        let (s_type, s_id) = (text(&v, "/subject/type")?, text(&v, "/subject/id")?);
        let (r_type, r_id) = (text(&v, "/resource/type")?, text(&v, "/resource/id")?);
        let action_name = text(&v, "/action/name")?;
        let parents = match v
            .pointer("/subject/properties/pack")
            .and_then(Value::as_str)
        {
            Some(pack) => json!([{"type": "Pack", "id": pack}]),
            None => json!([]),
        };
        let mut attrs = |ptr: &str| match v.pointer_mut(ptr).map(Value::take) {
            Some(Value::Null) | None => json!({}),
            Some(a) => a,
        };
        let s_attrs = attrs("/subject/properties");
        let r_attrs = attrs("/resource/properties");
        let context = Context::from_json_value(v["context"].take(), None)?;

        let principal = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(&s_type)?,
            EntityId::new(&s_id),
        );
        let action = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Action")?,
            EntityId::new(&action_name),
        );
        let resource = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(&r_type)?,
            EntityId::new(&r_id),
        );
        let entities = Entities::from_json_value(
            json!([
                {"uid": {"type": s_type, "id": s_id}, "attrs": s_attrs, "parents": parents},
                {"uid": {"type": r_type, "id": r_id}, "attrs": r_attrs, "parents": []},
            ]),
            None,
        )?;
        let request = Request::new(principal, action, resource, context, None)?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        Ok(response.decision() == CedarDecision::Allow)
    }
}

fn check_all(
    docs: impl IntoIterator<Item = (String, String)>,
) -> BenchResult<Vec<Arc<CheckedPolicy>>> {
    docs.into_iter()
        .map(|(origin, text)| {
            check_document(&origin, &text, None)
                .map(Arc::new)
                .map_err(|d| format!("{origin}: {d:?}").into())
        })
        .collect()
}

fn compile(policies: Vec<Arc<CheckedPolicy>>, fast_path: bool) -> BenchResult<Snapshot> {
    Ok(Snapshot::compile(
        SnapshotId(1),
        policies,
        None,
        Arc::new(EngineConfig {
            fast_path,
            ..EngineConfig::default()
        }),
        None,
    )?)
}

/// Decisions per second of `n` calls cycling through the requests.
fn throughput(
    n: usize,
    reqs: &[Vec<u8>],
    mut f: impl FnMut(&[u8]) -> BenchResult<bool>,
) -> BenchResult<f64> {
    let start = Instant::now();
    for i in 0..n {
        black_box(f(black_box(&reqs[i % reqs.len()]))?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Part 1: the same ten policies and the same JSON bytes through both paths, runs
/// alternating, median throughput of each.
fn ten_policies(mode: Mode) -> BenchResult<()> {
    let policies = check_all(
        fixtures::TEN_POLICIES
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("policy {i}"), (*t).to_owned())),
    )?;
    let raw = RawCedar::new(&policies)?;
    let snapshot = compile(policies, true)?;
    let controls = ControlState::default();
    let reqs = ten_policy_requests();

    // Sanity, not timing: both paths reach the same allow/deny on every request.
    let mut outcomes = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let d = dynscale_decide(r, &snapshot, &controls)?;
        let cedar = raw.decide(r)?;
        if d.outcome.is_allowed() != cedar {
            return Err(format!(
                "request {i}: dynscale says {} ({:?}), raw Cedar says allow={cedar}",
                d.outcome, d.reasons
            )
            .into());
        }
        outcomes.push(d.outcome.as_str());
    }
    println!(
        "part 1: {} Cedar policies in 10 documents; outcomes of the {} requests: {}",
        raw.set.policies().count(),
        reqs.len(),
        outcomes.join(", ")
    );

    let mut dyn_path = |b: &[u8]| {
        Ok(dynscale_decide(b, &snapshot, &controls)?
            .outcome
            .is_allowed())
    };
    let mut raw_path = |b: &[u8]| raw.decide(b);
    // Size the runs from a short warm-up so each lasts about `seconds`.
    let (seconds, rounds) = match mode {
        Mode::Full => (1.0, 7usize),
        Mode::Quick => (0.2, 5),
        Mode::Smoke => (0.01, 3),
    };
    let warm = mode.size(20_000, 200);
    let dyn_rate = throughput(warm, &reqs, &mut dyn_path)?;
    let raw_rate = throughput(warm, &reqs, &mut raw_path)?;
    let n_dyn = ((dyn_rate * seconds) as usize).max(100);
    let n_raw = ((raw_rate * seconds) as usize).max(100);
    let (mut dyn_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift of the machine hits both alike.
        if round.is_multiple_of(2) {
            dyn_rates.push(throughput(n_dyn, &reqs, &mut dyn_path)?);
            raw_rates.push(throughput(n_raw, &reqs, &mut raw_path)?);
        } else {
            raw_rates.push(throughput(n_raw, &reqs, &mut raw_path)?);
            dyn_rates.push(throughput(n_dyn, &reqs, &mut dyn_path)?);
        }
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{} – {}", fmt_rate(lo), fmt_rate(hi))
    };
    let (dyn_spread, raw_spread) = (spread(&dyn_rates), spread(&raw_rates));
    // The ratio within each round, whose two runs are seconds apart.
    let mut paired: Vec<f64> = dyn_rates
        .iter()
        .zip(&raw_rates)
        .map(|(d, r)| d / r)
        .collect();
    let paired = median(&mut paired);
    let d = median(&mut dyn_rates);
    let r = median(&mut raw_rates);
    let ratio = d / r;
    print_table(
        mode,
        &format!("decide part 1: 10 policies, {rounds} alternating runs of ~{seconds} s, medians"),
        &[
            Row {
                figure: "decisions/s, JSON → decision (dynscale vs raw Cedar)".into(),
                value: fmt_rate(d),
                baseline: fmt_rate(r),
                ratio: format!("{ratio:.2}"),
                target: format!("≥ {TEN_POLICY_RATIO_TARGET}"),
                met: Some(ratio >= TEN_POLICY_RATIO_TARGET),
            },
            Row::info("mean time per decision, dynscale", fmt_ns(1e9 / d)),
            Row::info("mean time per decision, raw Cedar", fmt_ns(1e9 / r)),
            Row::info("median of the per-round ratios", format!("{paired:.2}")),
            Row::info("range over runs, dynscale", dyn_spread),
            Row::info("range over runs, raw Cedar", raw_spread),
        ],
    );
    Ok(())
}

/// Part 2: 10 000 active policies over 1 000 namespaces; latency of each decision.
fn fleet(mode: Mode) -> BenchResult<()> {
    let count = mode.size(10_000, 100);
    let namespaces = mode.size(1_000, 10);
    let fleet = fleet_policies(count, namespaces);
    let started = Instant::now();
    let policies = check_all(fleet.iter().map(|p| (p.name.clone(), p.yaml("1.0.0", 0))))?;
    let checked_in = started.elapsed();
    let raw = RawCedar::new(&policies)?;
    let started = Instant::now();
    let snapshot = compile(policies.clone(), true)?;
    let compiled_in = started.elapsed();
    // The same policies with every decision through Cedar's evaluator.
    let cedar_only = compile(policies, false)?;
    let controls = ControlState::default();
    let reqs = fleet_requests(1_000.min(count), namespaces);
    println!(
        "part 2: {count} policies ({} Cedar policies) in {} scopes over {namespaces} \
         namespaces; checked in {checked_in:.2?}, compiled in {compiled_in:.2?}",
        raw.set.policies().count(),
        snapshot.scope_count(),
    );

    // Every request must decide (no unknown namespace); show the mix of outcomes.
    let mut mix = std::collections::BTreeMap::<&str, usize>::new();
    let (mut evaluated, mut on_fast_path) = (0usize, 0usize);
    for r in &reqs {
        let d = dynscale_decide(r, &snapshot, &controls)?;
        *mix.entry(d.outcome.as_str()).or_default() += 1;
        evaluated += d.policies.len();
        let e = snapshot.evaluate(&build(&serde_json::from_slice(r)?)?)?;
        on_fast_path += usize::from(e.evaluator == Evaluator::FastPath);
    }
    println!(
        "outcomes over {} distinct requests: {mix:?}; {:.1} policies evaluated per decision; \
         {on_fast_path} decided on the fast path",
        reqs.len(),
        evaluated as f64 / reqs.len() as f64
    );

    for r in reqs.iter().cycle().take(mode.size(20_000, 200)) {
        black_box(dynscale_decide(r, &snapshot, &controls)?);
    }
    let n = mode.size(200_000, 1_000);
    let mut full = histogram()?;
    // Each request's fastest time over its repetitions: its cost without the noise
    // of a shared machine.
    let mut best = vec![u64::MAX; reqs.len()];
    for (i, r) in reqs.iter().enumerate().cycle().take(n) {
        let start = Instant::now();
        let d = dynscale_decide(black_box(r), &snapshot, &controls)?;
        let took = start.elapsed();
        record(&mut full, took);
        best[i] = best[i].min(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        black_box(d);
    }
    let mut floor = histogram()?;
    for b in &best {
        floor.saturating_record(*b);
    }
    // The same decisions with the request already built: what evaluation alone costs.
    let built = reqs
        .iter()
        .map(|r| build(&serde_json::from_slice(r)?))
        .collect::<BenchResult<Vec<_>>>()?;
    let mut eval_only = histogram()?;
    for a in built.iter().cycle().take(n) {
        let start = Instant::now();
        let d = decision::decide(&snapshot, &controls, black_box(a))?;
        record(&mut eval_only, start.elapsed());
        black_box(d);
    }

    let mut cedar_hist = histogram()?;
    for r in reqs.iter().cycle().take(n / 4) {
        let start = Instant::now();
        let d = dynscale_decide(black_box(r), &cedar_only, &controls)?;
        record(&mut cedar_hist, start.elapsed());
        black_box(d);
    }

    let n_raw = mode.size(300, 10);
    let mut raw_hist = histogram()?;
    for r in reqs.iter().cycle().take(n_raw) {
        let start = Instant::now();
        let allowed = raw.decide(black_box(r))?;
        record(&mut raw_hist, start.elapsed());
        black_box(allowed);
    }

    let ratio = |q: f64| {
        format!(
            "{:.0}× faster",
            raw_hist.value_at_quantile(q) as f64 / full.value_at_quantile(q) as f64
        )
    };
    let p99 = full.value_at_quantile(0.99);
    print_table(
        mode,
        &format!(
            "decide part 2: {count} policies, {namespaces} namespaces, {n} timed decisions \
             (raw Cedar: {n_raw}, one PolicySet)"
        ),
        &[
            Row {
                figure: "p50, JSON → decision".into(),
                value: quantile(&full, 0.5),
                baseline: quantile(&raw_hist, 0.5),
                ratio: ratio(0.5),
                target: "—".into(),
                met: None,
            },
            Row {
                figure: "p99, JSON → decision".into(),
                value: quantile(&full, 0.99),
                baseline: quantile(&raw_hist, 0.99),
                ratio: ratio(0.99),
                target: format!("≤ {}", fmt_ns(FLEET_P99_TARGET_NS as f64)),
                met: Some(p99 <= FLEET_P99_TARGET_NS),
            },
            Row {
                figure: "p999, JSON → decision".into(),
                value: quantile(&full, 0.999),
                baseline: quantile(&raw_hist, 0.999),
                ratio: ratio(0.999),
                target: "—".into(),
                met: None,
            },
            Row::info("max, JSON → decision", fmt_ns(full.max() as f64)),
            Row {
                figure: "p50 / p99, JSON → decision, fast path off (every rule in Cedar)".into(),
                value: format!(
                    "{} / {}",
                    quantile(&cedar_hist, 0.5),
                    quantile(&cedar_hist, 0.99)
                ),
                baseline: "—".into(),
                ratio: format!(
                    "p99 {:.1}× the fast path's",
                    cedar_hist.value_at_quantile(0.99) as f64 / p99 as f64
                ),
                target: "—".into(),
                met: None,
            },
            Row::info(
                "p50 / p99 over requests of each request's fastest run",
                format!("{} / {}", quantile(&floor, 0.5), quantile(&floor, 0.99)),
            ),
            Row::info(
                "p50 / p99, decide() on a built request",
                format!(
                    "{} / {}",
                    quantile(&eval_only, 0.5),
                    quantile(&eval_only, 0.99)
                ),
            ),
            Row::info(
                "snapshot compile, all policies at once",
                format!("{compiled_in:.2?}"),
            ),
        ],
    );
    Ok(())
}
