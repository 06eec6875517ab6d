//! The scale report of `dynscale certify` (SPEC §6): the load steps measured against
//! a node, the service objective they were judged by, the limit found and the machine
//! it was found on. The binary measures and fills it in; the node stores and serves the
//! same type (`PUT`/`GET /v1/scale/limits`). Choosing the next step and finding the
//! limit are pure functions of the steps measured so far.

use serde::{Deserialize, Serialize};

/// The version of the report's JSON shape.
pub const REPORT_FORMAT: u32 = 1;

/// A step counts only if the load generator kept up with it: at least this share of
/// the offered rate was achieved. Below it the step measured the generator, not the
/// node, and it fails.
pub const MIN_ACHIEVED_SHARE: f64 = 0.9;

/// What a step must stay within to pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// The 99th percentile latency bound, in microseconds.
    pub p99_us: u64,
    /// The largest share of failed decisions, 0–1 (0.001 = 0.1 %).
    pub max_error_rate: f64,
}

/// One load step as measured: open-loop load at `target_rps` for `duration_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    /// The offered rate, decisions per second.
    pub target_rps: f64,
    /// The rate answered, decisions per second.
    pub achieved_rps: f64,
    pub duration_ms: u64,
    /// Decisions scheduled in the step.
    pub scheduled: u64,
    /// Decisions sent (`answered + errors`).
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    /// Share of scheduled decisions that failed or could not be sent, 0–1.
    pub error_rate: f64,
    /// Latency from the intended send time, microseconds.
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Why a step failed, or that it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// p99 above the objective.
    Latency,
    /// Error rate above the objective.
    Errors,
    /// The achieved rate fell below [`MIN_ACHIEVED_SHARE`] of the offered rate.
    Shortfall,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Latency => "p99 over objective",
            Verdict::Errors => "errors over objective",
            Verdict::Shortfall => "rate not achieved",
        }
    }
}

/// Judges one step against the objective. Errors are checked first: a step that
/// fails requests has no meaningful latency.
pub fn judge(step: &StepResult, slo: &Slo) -> Verdict {
    if step.error_rate > slo.max_error_rate {
        Verdict::Errors
    } else if step.p99_us > slo.p99_us {
        Verdict::Latency
    } else if step.achieved_rps < step.target_rps * MIN_ACHIEVED_SHARE {
        Verdict::Shortfall
    } else {
        Verdict::Pass
    }
}

/// The limit found: the highest passing step below the lowest failing one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Decisions per second answered within the objective.
    pub max_rps: f64,
    /// The p99 latency at that rate, microseconds.
    pub p99_us: u64,
    /// The offered rate of the lowest failing step, if any failed (the limit lies
    /// between `max_rps` and this).
    pub first_failing_rps: Option<f64>,
    /// Why that step failed.
    pub failed_on: Option<Verdict>,
}

/// The highest achieved rate among passing steps whose offered rate is below every
/// failing step's, so a lucky pass above a failure does not count. `None` when no
/// step passed.
pub fn find_limit(steps: &[StepResult], slo: &Slo) -> Option<Limit> {
    let failing = steps
        .iter()
        .filter_map(|s| match judge(s, slo) {
            Verdict::Pass => None,
            v => Some((s.target_rps, v)),
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let ceiling = failing.map_or(f64::INFINITY, |(rps, _)| rps);
    let best = steps
        .iter()
        .filter(|s| s.target_rps < ceiling && judge(s, slo) == Verdict::Pass)
        .max_by(|a, b| a.achieved_rps.total_cmp(&b.achieved_rps))?;
    Some(Limit {
        max_rps: best.achieved_rps,
        p99_us: best.p99_us,
        first_failing_rps: failing.map(|(rps, _)| rps),
        failed_on: failing.map(|(_, v)| v),
    })
}

/// How the steps rise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPlan {
    /// The first offered rate.
    pub start_rps: f64,
    /// Each step multiplies the rate by this until one fails.
    pub growth: f64,
    /// Once a step failed, steps bisect between the best pass and the lowest failure
    /// until they are within this share of each other (0.1 = 10 %).
    pub resolution: f64,
    /// No step offers more than this.
    pub max_rps: f64,
}

/// The next offered rate given the steps measured so far, or `None` when the limit
/// is known to the plan's resolution (or the plan's ceiling passed). Rates rise
/// geometrically until a step fails, then bisect between the highest passing and the
/// lowest failing rate.
pub fn next_step(plan: &StepPlan, steps: &[StepResult], slo: &Slo) -> Option<f64> {
    let Some(last) = steps.last() else {
        return Some(plan.start_rps.min(plan.max_rps));
    };
    let lowest_fail = steps
        .iter()
        .filter(|s| judge(s, slo) != Verdict::Pass)
        .map(|s| s.target_rps)
        .min_by(f64::total_cmp);
    let highest_pass = steps
        .iter()
        .filter(|s| judge(s, slo) == Verdict::Pass && lowest_fail.is_none_or(|f| s.target_rps < f))
        .map(|s| s.target_rps)
        .max_by(f64::total_cmp);
    match (highest_pass, lowest_fail) {
        (_, None) => {
            if last.target_rps >= plan.max_rps {
                return None;
            }
            Some((last.target_rps * plan.growth).min(plan.max_rps))
        }
        (None, Some(fail)) => {
            // Even the first step failed: go down until one passes, to a floor of one
            // decision per second.
            let lower = fail / plan.growth;
            (fail > 1.0).then_some(lower.max(1.0))
        }
        (Some(pass), Some(fail)) => {
            if (fail - pass) / pass <= plan.resolution {
                None
            } else {
                Some((pass + fail) / 2.0)
            }
        }
    }
}

/// The machine the report was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineInfo {
    /// Logical CPUs available to the process.
    pub cores: u32,
    /// Physical memory, bytes (0 when unknown).
    pub memory_bytes: u64,
    /// `linux/x86_64` and the like.
    pub os: String,
    /// The host name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// The scale report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleReport {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// When the measurement started (RFC 3339).
    pub measured_at: String,
    /// The node measured.
    pub node_url: String,
    /// The version of the tool that measured.
    pub tool_version: String,
    pub slo: Slo,
    pub plan: StepPlan,
    /// What each step sent: the request mix, batch size and connections.
    pub workload: String,
    pub machine: MachineInfo,
    /// Every step in the order measured.
    pub steps: Vec<StepResult>,
    /// `None` when no step met the objective.
    pub limit: Option<Limit>,
}

impl ScaleReport {
    /// The report as Markdown, for people.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        md.push_str("# dynscale scale report\n\n");
        md.push_str(&format!(
            "- node: {}\n- measured: {}\n- tool: dynscale {}\n",
            self.node_url, self.measured_at, self.tool_version
        ));
        md.push_str(&format!(
            "- machine: {} cores, {}, {}{}\n",
            self.machine.cores,
            fmt_bytes(self.machine.memory_bytes),
            self.machine.os,
            self.machine
                .hostname
                .as_deref()
                .map(|h| format!(", host {h}"))
                .unwrap_or_default()
        ));
        md.push_str(&format!(
            "- objective: p99 ≤ {}, errors ≤ {:.3} %\n- workload: {}\n\n",
            fmt_us(self.slo.p99_us),
            self.slo.max_error_rate * 100.0,
            self.workload
        ));
        md.push_str("## Limit\n\n");
        match &self.limit {
            Some(l) => {
                md.push_str(&format!(
                    "**{:.0} decisions/s** within the objective (p99 {}).",
                    l.max_rps,
                    fmt_us(l.p99_us)
                ));
                match (l.first_failing_rps, l.failed_on) {
                    (Some(rps), Some(why)) => md.push_str(&format!(
                        " The first failing step offered {rps:.0}/s ({}).\n\n",
                        why.as_str()
                    )),
                    _ => md.push_str(
                        " No step failed: the limit is at least this (the plan's ceiling).\n\n",
                    ),
                }
            }
            None => md.push_str("No step met the objective.\n\n"),
        }
        md.push_str("## Steps\n\n");
        md.push_str(
            "| offered /s | achieved /s | sent | errors | error rate | p50 | p95 | p99 | p99.9 | max | verdict |\n",
        );
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for s in &self.steps {
            md.push_str(&format!(
                "| {:.0} | {:.0} | {} | {} | {:.3} % | {} | {} | {} | {} | {} | {} |\n",
                s.target_rps,
                s.achieved_rps,
                s.sent,
                s.errors,
                s.error_rate * 100.0,
                fmt_us(s.p50_us),
                fmt_us(s.p95_us),
                fmt_us(s.p99_us),
                fmt_us(s.p999_us),
                fmt_us(s.max_us),
                judge(s, &self.slo).as_str()
            ));
        }
        md
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn fmt_bytes(bytes: u64) -> String {
    if bytes == 0 {
        "memory unknown".into()
    } else {
        format!("{:.1} GiB memory", bytes as f64 / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLO: Slo = Slo {
        p99_us: 200_000,
        max_error_rate: 0.001,
    };

    const PLAN: StepPlan = StepPlan {
        start_rps: 1000.0,
        growth: 2.0,
        resolution: 0.1,
        max_rps: 1e6,
    };

    fn step(target: f64, achieved: f64, p99_us: u64, error_rate: f64) -> StepResult {
        StepResult {
            target_rps: target,
            achieved_rps: achieved,
            duration_ms: 1000,
            scheduled: target as u64,
            sent: target as u64,
            answered: achieved as u64,
            errors: 0,
            error_rate,
            p50_us: p99_us / 2,
            p95_us: p99_us,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
        }
    }

    #[test]
    fn steps_are_judged_errors_then_latency_then_shortfall() {
        assert_eq!(judge(&step(1000.0, 1000.0, 1000, 0.0), &SLO), Verdict::Pass);
        assert_eq!(
            judge(&step(1000.0, 1000.0, 300_000, 0.0), &SLO),
            Verdict::Latency
        );
        assert_eq!(
            judge(&step(1000.0, 1000.0, 300_000, 0.5), &SLO),
            Verdict::Errors
        );
        assert_eq!(
            judge(&step(1000.0, 800.0, 1000, 0.0), &SLO),
            Verdict::Shortfall
        );
        // Exactly on the objective passes.
        assert_eq!(
            judge(&step(1000.0, 900.0, 200_000, 0.001), &SLO),
            Verdict::Pass
        );
    }

    #[test]
    fn the_limit_is_the_best_pass_below_the_first_failure() {
        let steps = [
            step(1000.0, 1000.0, 1_000, 0.0),
            step(2000.0, 1990.0, 2_000, 0.0),
            step(4000.0, 3000.0, 900_000, 0.0),
            // A lucky pass above a failure does not count.
            step(8000.0, 7950.0, 5_000, 0.0),
            step(3000.0, 2990.0, 10_000, 0.0),
        ];
        let limit = find_limit(&steps, &SLO).expect("a limit");
        assert_eq!(limit.max_rps, 2990.0);
        assert_eq!(limit.p99_us, 10_000);
        assert_eq!(limit.first_failing_rps, Some(4000.0));
        assert_eq!(limit.failed_on, Some(Verdict::Latency));
    }

    #[test]
    fn no_limit_when_nothing_passed_and_open_ended_when_nothing_failed() {
        assert_eq!(find_limit(&[], &SLO), None);
        assert_eq!(
            find_limit(&[step(1000.0, 1000.0, 900_000, 0.0)], &SLO),
            None
        );
        let limit = find_limit(&[step(1000.0, 1000.0, 10, 0.0)], &SLO).expect("a limit");
        assert_eq!((limit.max_rps, limit.first_failing_rps), (1000.0, None));
    }

    #[test]
    fn steps_grow_then_bisect_then_stop() {
        let mut steps = vec![];
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(1000.0));
        steps.push(step(1000.0, 1000.0, 10, 0.0));
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(2000.0));
        steps.push(step(2000.0, 2000.0, 10, 0.0));
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(4000.0));
        steps.push(step(4000.0, 4000.0, 900_000, 0.0));
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(3000.0));
        steps.push(step(3000.0, 3000.0, 10, 0.0));
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(3500.0));
        steps.push(step(3500.0, 3500.0, 900_000, 0.0));
        assert_eq!(next_step(&PLAN, &steps, &SLO), Some(3250.0));
        steps.push(step(3250.0, 3250.0, 10, 0.0));
        // 3250 passes, 3500 fails: within 10 %, done.
        assert_eq!(next_step(&PLAN, &steps, &SLO), None);
    }

    #[test]
    fn a_failing_first_step_goes_down_and_the_ceiling_stops_growth() {
        let failed = [step(1000.0, 1000.0, 900_000, 0.0)];
        assert_eq!(next_step(&PLAN, &failed, &SLO), Some(500.0));
        let floor = [step(1.0, 1.0, 900_000, 0.0)];
        assert_eq!(next_step(&PLAN, &floor, &SLO), None);
        let capped = StepPlan {
            max_rps: 1500.0,
            ..PLAN
        };
        let steps = [step(1000.0, 1000.0, 10, 0.0)];
        assert_eq!(next_step(&capped, &steps, &SLO), Some(1500.0));
        let steps = [step(1000.0, 1000.0, 10, 0.0), step(1500.0, 1500.0, 10, 0.0)];
        assert_eq!(next_step(&capped, &steps, &SLO), None);
    }

    #[test]
    fn the_report_round_trips_and_renders() {
        let steps = vec![
            step(1000.0, 1000.0, 1_500, 0.0),
            step(2000.0, 1500.0, 900_000, 0.0),
        ];
        let report = ScaleReport {
            format: REPORT_FORMAT,
            measured_at: "2026-11-22T21:00:00Z".into(),
            node_url: "http://127.0.0.1:8470/".into(),
            tool_version: "0.1.0".into(),
            slo: SLO,
            plan: PLAN,
            workload: "default mix".into(),
            machine: MachineInfo {
                cores: 2,
                memory_bytes: 8 << 30,
                os: "linux/x86_64".into(),
                hostname: None,
            },
            limit: find_limit(&steps, &SLO),
            steps,
        };
        let json = serde_json::to_string(&report).expect("json");
        let back: ScaleReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
        let md = report.to_markdown();
        assert!(md.contains("**1000 decisions/s**"), "{md}");
        assert!(md.contains("offered 2000/s (p99 over objective)"), "{md}");
        assert!(md.contains("| 2000 | 1500 |"), "{md}");
        assert!(md.contains("2 cores, 8.0 GiB memory"), "{md}");
    }
}
