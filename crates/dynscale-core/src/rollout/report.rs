//! What an operator reads about a rollout: arm sizes and samples, each statistic
//! against its threshold, each hard trigger against its limit, the next step and
//! when it can come, and for shadow comparisons the decision diff.
//!
//! Built from a [`Rollout`] and `now` without changing it; the server adds names,
//! versions and its own timings.

use serde::{Deserialize, Serialize};

use super::analysis::{Finding, Metric, TriggerReading, trigger_readings};
use super::bucket::BasisPoints;
use super::instant::UnixMillis;
use super::machine::{Pause, Phase, Rollout, Routing, Verdict};
use super::measure::{ArmStats, DiffClass, Measurements, ShadowDiff};
use super::plan::Plan;

/// The figures of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    pub decisions: u64,
    pub denies: u64,
    pub deny_rate: Option<f64>,
    pub evaluation_errors: u64,
    pub feedback: u64,
    /// Feedback `failure` or `error`.
    pub failures: u64,
    pub failure_rate: Option<f64>,
    /// Mean action latency the agents reported.
    pub feedback_latency_mean_ms: Option<f64>,
    /// Mean evaluation time.
    pub decision_latency_mean_us: Option<f64>,
}

impl ArmFigures {
    fn of(a: &ArmStats) -> Self {
        let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        Self {
            decisions: a.decisions,
            denies: a.denies,
            deny_rate: rate(a.denies, a.decisions),
            evaluation_errors: a.evaluation_errors,
            feedback: a.feedback.total(),
            failures: a.feedback.unsuccessful(),
            failure_rate: rate(a.feedback.unsuccessful(), a.feedback.total()),
            feedback_latency_mean_ms: a.feedback.latency.mean_micros().map(|m| m / 1000.0),
            decision_latency_mean_us: a.decision_latency.mean_micros(),
        }
    }
}

/// Both arms' figures over some span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub control: ArmFigures,
    pub candidate: ArmFigures,
}

impl Samples {
    fn of(m: &Measurements) -> Self {
        Self {
            control: ArmFigures::of(&m.control),
            candidate: ArmFigures::of(&m.candidate),
        }
    }
}

/// One sequential test against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistic {
    pub metric: Metric,
    /// The e-value so far (the product over the windows).
    pub e_value: f64,
    /// Crossing it rolls back (`1/α` of the metric).
    pub threshold: f64,
    /// Observations of the smaller side.
    pub sample: u64,
    /// Observations needed before a crossing counts.
    pub min_sample: u64,
}

impl Statistic {
    fn of(f: &Finding, min_sample: u64) -> Self {
        Self {
            metric: f.metric,
            e_value: f.e_value(),
            threshold: f.ln_threshold.exp(),
            sample: f.sample,
            min_sample,
        }
    }
}

/// What the rollout does next if the evidence stays clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum NextStep {
    /// Raise the candidate to `share`.
    Advance {
        share: BasisPoints,
        /// Not before this time (the step's minimum duration).
        not_before: UnixMillis,
        /// Decisions each arm needs in the current step.
        min_samples: u64,
    },
    /// Blue-green: switch all traffic once the shadow sample is complete.
    Switch { shadow_samples: u64, compared: u64 },
    /// Make the candidate final.
    Promote { not_before: UnixMillis },
    /// Shadow: only an operator ends it (`promote` or `abort`).
    Operator,
}

/// One class of the shadow diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffFigures {
    pub count: u64,
    /// The first decision ids of the class.
    pub exemplars: Vec<uuid::Uuid>,
}

impl DiffFigures {
    fn of(d: &DiffClass) -> Self {
        Self {
            count: d.count,
            exemplars: d.exemplars.clone(),
        }
    }
}

/// The decisions of the candidate evaluated in the shadow of the control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowFigures {
    pub compared: u64,
    pub allow_to_deny: DiffFigures,
    pub deny_to_allow: DiffFigures,
    /// Both allowed or both denied, with a different outcome.
    pub other: DiffFigures,
    pub candidate_errors: DiffFigures,
}

impl ShadowFigures {
    fn of(s: &ShadowDiff) -> Self {
        Self {
            compared: s.compared,
            allow_to_deny: DiffFigures::of(&s.allow_to_deny),
            deny_to_allow: DiffFigures::of(&s.deny_to_allow),
            other: DiffFigures::of(&s.other),
            candidate_errors: DiffFigures::of(&s.candidate_errors),
        }
    }
}

/// A rollout as an operator reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub plan: Plan,
    pub phase: Phase,
    pub routing: Routing,
    /// The share of agents whose decisions the candidate enforces.
    pub candidate_share: BasisPoints,
    pub paused: Option<Pause>,
    pub verdict: Verdict,
    pub started_at: UnixMillis,
    /// The time of the last event.
    pub updated_at: UnixMillis,
    /// Since the current step (window) began.
    pub window: Samples,
    pub window_started_at: UnixMillis,
    /// Since the rollout began.
    pub totals: Samples,
    pub statistics: Vec<Statistic>,
    pub triggers: Vec<TriggerReading>,
    pub next: Option<NextStep>,
    /// The shadow diff, when the candidate was evaluated in the shadow.
    pub shadow: Option<ShadowFigures>,
}

/// The share of agents the candidate enforces for under `routing`.
pub fn enforced_share(routing: Routing) -> BasisPoints {
    match routing {
        Routing::Previous | Routing::Shadow => BasisPoints::ZERO,
        Routing::Split { candidate_share } => candidate_share,
        Routing::Switched | Routing::Promoted => BasisPoints::ALL,
    }
}

/// Reads a rollout at `now`.
pub fn report(r: &Rollout, now: UnixMillis) -> Report {
    let status = r.status(now);
    let (candidate, control) = r.trigger_arms();
    let min = r.config.min_analysis_samples;
    Report {
        plan: r.plan.clone(),
        phase: r.phase,
        routing: status.routing,
        candidate_share: enforced_share(status.routing),
        paused: r.paused,
        verdict: status.verdict,
        started_at: r.started_at,
        updated_at: r.updated_at,
        window: Samples::of(&r.window),
        window_started_at: r.window_started_at,
        totals: Samples::of(&r.totals),
        statistics: status
            .findings
            .iter()
            .map(|f| Statistic::of(f, min))
            .collect(),
        triggers: trigger_readings(
            &r.config.hard,
            candidate,
            control,
            r.critical_last_minute(),
            r.utilization,
        ),
        next: next_step(r),
        shadow: (r.totals.shadow.compared > 0 || r.plan == Plan::Shadow)
            .then(|| ShadowFigures::of(&r.totals.shadow)),
    }
}

fn next_step(r: &Rollout) -> Option<NextStep> {
    match (&r.plan, r.phase) {
        (_, Phase::Done { .. }) => None,
        (_, Phase::Shadow) => Some(NextStep::Operator),
        (
            Plan::Canary {
                steps,
                step_duration,
                min_samples,
            },
            Phase::Canary { step },
        ) => {
            let not_before = r.window_started_at.saturating_add(*step_duration);
            Some(match steps.get(step + 1) {
                Some(share) if *share < BasisPoints::ALL => NextStep::Advance {
                    share: *share,
                    not_before,
                    min_samples: *min_samples,
                },
                _ => NextStep::Promote { not_before },
            })
        }
        (Plan::BlueGreen { shadow_samples, .. }, Phase::PrePromotion) => Some(NextStep::Switch {
            shadow_samples: *shadow_samples,
            compared: r.window.shadow.compared,
        }),
        (Plan::BlueGreen { keep_warm, .. }, Phase::Switched { at }) => Some(NextStep::Promote {
            not_before: at.saturating_add(*keep_warm),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decision::Outcome;
    use crate::rollout::bucket::RolloutSalt;
    use crate::rollout::machine::{Event, Start, start, step};
    use crate::rollout::measure::FeedbackResult;
    use crate::rollout::{AnalysisConfig, Trigger};

    fn bp(p: u32) -> BasisPoints {
        BasisPoints::from_percent(p).unwrap()
    }

    #[test]
    fn a_canary_reports_its_next_step_samples_and_triggers() {
        let begin = Start {
            salt: RolloutSalt::new("r").unwrap(),
            plan: Plan::Canary {
                steps: vec![bp(10), bp(50), bp(100)],
                step_duration: Duration::from_secs(60),
                min_samples: 100,
            },
            config: AnalysisConfig::default(),
        };
        let (r, _) = start(&begin, UnixMillis(1_000)).unwrap();
        let mut m = Measurements::default();
        for i in 0..300 {
            m.control
                .record_decision(Outcome::Allow, Duration::from_micros(50));
            m.candidate.record_decision(
                if i % 10 == 0 {
                    Outcome::Deny
                } else {
                    Outcome::Allow
                },
                Duration::from_micros(70),
            );
            m.control
                .record_feedback(FeedbackResult::Success, Duration::from_millis(100));
            m.candidate
                .record_feedback(FeedbackResult::Failure, Duration::from_millis(150));
        }
        let (r2, _) = step(&r, &Event::Measured(Box::new(m)), UnixMillis(2_000)).unwrap();
        let rep = report(&r2, UnixMillis(2_000));
        assert_eq!(rep.candidate_share, BasisPoints::ZERO, "rolled back");
        assert_eq!(rep.totals.candidate.decisions, 300);
        assert_eq!(rep.totals.candidate.denies, 30);
        assert_eq!(rep.totals.candidate.failure_rate, Some(1.0));
        assert_eq!(rep.statistics.len(), 4);
        assert!(
            rep.statistics
                .iter()
                .all(|s| (s.threshold - 400.0).abs() < 1e-6)
        );
        let failure = rep
            .triggers
            .iter()
            .find(|t| t.trigger == Trigger::FailureRate)
            .unwrap();
        assert_eq!(failure.observed, Some(1.0));
        assert_eq!(failure.limit, 0.05);
        let latency = rep
            .triggers
            .iter()
            .find(|t| t.trigger == Trigger::FeedbackLatency)
            .unwrap();
        assert!(
            (latency.observed.unwrap() - 50.0).abs() < 2.0,
            "{latency:?}"
        );
        // A failure rate of 100 % against 0 % rolled it back.
        assert!(r2.is_finished());
        assert_eq!(rep.next, None);

        let rep0 = report(&r, UnixMillis(1_500));
        assert_eq!(rep0.candidate_share, bp(10));
        assert_eq!(
            rep0.next,
            Some(NextStep::Advance {
                share: bp(50),
                not_before: UnixMillis(61_000),
                min_samples: 100
            })
        );
        assert_eq!(rep0.shadow, None);
        assert!(
            rep0.triggers
                .iter()
                .all(|t| t.observed.is_none() || matches!(t.trigger, Trigger::CriticalErrors))
        );
    }
}
