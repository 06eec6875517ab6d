//! Rollout analysis in simulation: the false-rollback rate of A/A canaries and, for
//! candidates whose actions fail 1, 2 and 5 points more often, the detection rate
//! and the time to detection in samples and simulated time.
//!
//! `cargo bench -p dynscale-core --bench rollout_sim` (200 rollouts per row;
//! `DYNSCALE_BENCH_QUICK=1` for 50; without `--bench`, as under `cargo test
//! --benches`, a smoke run of 5).
//!
//! Every rollout is the default canary (steps 5/25/50/100 %, 5 min per step, 1 000
//! decisions per arm per step, α = 0.01) under 100 requests/s from 5 000 agents,
//! 10 s batches, baseline 5 % failed actions, 10 % denies, 0.1 % evaluation
//! errors, latency 80 ms + Exp(40 ms). Seeds are fixed, so the table is
//! reproducible.

#[path = "../tests/support/rollout_sim.rs"]
mod sim;

use std::time::{Duration, Instant};

use dynscale_core::rollout::{Finish, UnixMillis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sim::{ArmModel, Scenario, SimResult, canary, run};

const STEP: Duration = Duration::from_secs(300);

struct Row {
    label: String,
    runs: usize,
    rolled_back: usize,
    by_statistic: usize,
    by_trigger: usize,
    promoted: usize,
    /// Simulated seconds to rollback, and candidate feedback reports by then.
    times: Vec<f64>,
    samples: Vec<u64>,
    /// Rolled back at or below a 5 % / 25 % share.
    at_5: usize,
    at_25: usize,
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> Option<T> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    s.get(s.len() / 2).copied()
}

fn simulate(label: &str, candidate: ArmModel, runs: usize, seed: u64) -> Row {
    let scenario = Scenario {
        candidate,
        ..Scenario::aa()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut row = Row {
        label: label.to_owned(),
        runs,
        rolled_back: 0,
        by_statistic: 0,
        by_trigger: 0,
        promoted: 0,
        times: Vec::new(),
        samples: Vec::new(),
        at_5: 0,
        at_25: 0,
    };
    for i in 0..runs {
        let r: SimResult = run(
            &canary(&format!("{label}-{i}"), STEP, 1000),
            &scenario,
            UnixMillis(1_800_000_000_000),
            &mut rng,
        );
        match r.finish {
            Some(Finish::RolledBack) => {
                row.rolled_back += 1;
                row.by_statistic += usize::from(r.rolled_back_by_statistic());
                row.by_trigger += usize::from(r.rolled_back_by_trigger());
                row.times.push(r.elapsed.as_secs_f64());
                row.samples.push(r.candidate_feedback);
                let share = r.max_share.get();
                row.at_5 += usize::from(share <= 500);
                row.at_25 += usize::from(share <= 2_500);
            }
            Some(Finish::Promoted) => row.promoted += 1,
            _ => {}
        }
    }
    row
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var_os("DYNSCALE_BENCH_QUICK").is_some();
    let runs = match (benchmarking, quick) {
        (false, _) => 5,
        (true, true) => 50,
        (true, false) => 200,
    };
    let aa_runs = runs * 5;
    let base = ArmModel::BASELINE;
    let began = Instant::now();
    let rows = [
        simulate("A/A", base, aa_runs, 1),
        simulate(
            "+1 point",
            ArmModel {
                failure: base.failure + 0.01,
                ..base
            },
            runs,
            2,
        ),
        simulate(
            "+2 points",
            ArmModel {
                failure: base.failure + 0.02,
                ..base
            },
            runs,
            3,
        ),
        simulate(
            "+5 points",
            ArmModel {
                failure: base.failure + 0.05,
                ..base
            },
            runs,
            4,
        ),
    ];
    println!("rollout analysis: default canary, 100 req/s, baseline failure 5 %, alpha 0.01");
    println!();
    println!(
        "| candidate | rollouts | rolled back | by statistic / trigger | at 5 % / ≤ 25 % share | median time to rollback | median candidate feedback at rollback |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let rate = r.rolled_back as f64 / r.runs as f64;
        let time = median(&r.times).map_or("—".into(), |s| {
            format!("{:.0} s ({:.1} min)", s, s / 60.0)
        });
        let samples = median(&r.samples).map_or("—".into(), |n| n.to_string());
        println!(
            "| {} | {} | {} ({:.1} %) | {} / {} | {} / {} | {} | {} |",
            r.label,
            r.runs,
            r.rolled_back,
            rate * 100.0,
            r.by_statistic,
            r.by_trigger,
            r.at_5,
            r.at_25,
            time,
            samples
        );
    }
    let aa = &rows[0];
    println!();
    println!(
        "A/A false-rollback rate: {:.4} (bound alpha = 0.01); promoted {} of {}",
        aa.rolled_back as f64 / aa.runs as f64,
        aa.promoted,
        aa.runs
    );
    println!("wall time {:.1} s", began.elapsed().as_secs_f64());
}
