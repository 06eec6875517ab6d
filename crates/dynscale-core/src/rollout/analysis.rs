//! Analysis of a rollout: anytime-valid tests per metric, hard triggers, and the
//! verdict vocabulary recorded in the audit log.
//!
//! Metrics compared between the candidate and the concurrent control arm, each with
//! the Beta-Binomial mixture e-value of [`evalue`](super::evalue) and an equal share
//! of α (Bonferroni over e-values, so the chance that *any* metric ever crosses its
//! threshold in an A/A rollout is at most α):
//!
//! | metric | event / trial | direction |
//! |---|---|---|
//! | [`Metric::EvaluationErrors`] | failed evaluation / evaluation | candidate higher |
//! | [`Metric::Failures`] | feedback `failure` or `error` / feedback | candidate higher |
//! | [`Metric::DenyRate`] | deny / decision | configurable ([`DenyRateTest`]) |
//! | [`Metric::Latency`] | action latency above the control's median / feedback | candidate higher |
//!
//! Latency is tested as the rate of slow actions: the threshold is the control's
//! median (a fixed histogram bucket edge) taken from data *before* the window it is
//! used in, so within the window the slow/not-slow observations are binary and the
//! same e-value applies. Windows are rollout steps; evidence multiplies across them.
//!
//! Before the blue-green switch, deny rate is compared on the paired shadow sample
//! (a sign test on allow→deny versus deny→allow), since both versions decided the
//! same requests.
//!
//! Hard triggers (SPEC §3) act on cumulative figures once both arms have
//! [`HardTriggers::min_samples`] observations of the metric: error rate +5 points,
//! latency +200 ms, utilization above 80 %, more than 10 critical errors in a
//! minute. They are guards for gross regressions, not part of the α budget; the
//! minimum sample keeps their false-fire rate small (measured together with the
//! tests by the A/A simulation).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bucket::BasisPoints;
use super::evalue::{Alternative, BetaPrior, Counts, ln_e_value, ln_e_value_paired};
use super::latency::LatencyHistogram;
use super::measure::{ArmStats, ShadowDiff};

/// Why an analysis configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("alpha {alpha} must lie strictly between 0 and 1")]
    Alpha { alpha: f64 },
    #[error("the Beta prior ({a}, {b}) must have finite positive parameters")]
    Prior { a: f64, b: f64 },
    #[error("hard trigger error_rate_increase {value} must lie in (0, 1]")]
    ErrorRateIncrease { value: f64 },
}

/// Which change in deny rate counts as a regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyRateTest {
    /// The candidate denies more (the default: agents get blocked). A rollout that
    /// tightens a policy on purpose sets `off` or is promoted by hand.
    #[default]
    Increase,
    /// The candidate denies more or less.
    Either,
    /// Deny rate is reported, never tested.
    Off,
}

/// The hard triggers of SPEC §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardTriggers {
    /// Roll back when the candidate's error or failure rate is this much higher
    /// (a fraction: 0.05 = 5 points).
    pub error_rate_increase: f64,
    /// Roll back when the candidate's mean latency is this much higher.
    #[serde(with = "millis")]
    pub latency_increase: Duration,
    /// Roll back when the node's utilization is above this.
    pub max_utilization: BasisPoints,
    /// Roll back when the candidate has more critical errors than this in a minute.
    pub critical_errors_per_minute: u64,
    /// Observations each arm needs before a rate or latency trigger can fire.
    pub min_samples: u64,
}

impl Default for HardTriggers {
    fn default() -> Self {
        Self {
            error_rate_increase: 0.05,
            latency_increase: Duration::from_millis(200),
            max_utilization: BasisPoints::from_percent(80).unwrap_or(BasisPoints::ALL),
            critical_errors_per_minute: 10,
            min_samples: 200,
        }
    }
}

/// How a rollout is analysed. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// The bound on the probability that the statistical tests ever roll back a
    /// candidate that is no worse (split equally across the tested metrics).
    pub alpha: f64,
    pub deny_rate: DenyRateTest,
    /// Observations each arm needs of a metric before its test may roll back;
    /// below it the verdict is "not enough data" (hold).
    pub min_analysis_samples: u64,
    /// The mixture prior of the e-values.
    pub prior: BetaPrior,
    pub hard: HardTriggers,
    /// A step whose evidence stays inconclusive this long after it could have
    /// advanced pauses for an operator.
    #[serde(with = "millis")]
    pub inconclusive_timeout: Duration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            deny_rate: DenyRateTest::default(),
            min_analysis_samples: 300,
            prior: BetaPrior::default(),
            hard: HardTriggers::default(),
            inconclusive_timeout: Duration::from_secs(15 * 60),
        }
    }
}

impl AnalysisConfig {
    /// Checks the values a file or request could get wrong.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(ConfigError::Alpha { alpha: self.alpha });
        }
        let BetaPrior { a, b } = self.prior;
        if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
            return Err(ConfigError::Prior { a, b });
        }
        let e = self.hard.error_rate_increase;
        if !(e > 0.0 && e <= 1.0) {
            return Err(ConfigError::ErrorRateIncrease { value: e });
        }
        Ok(())
    }

    /// The metrics whose tests can roll back.
    pub fn tested_metrics(&self) -> Vec<Metric> {
        let mut m = vec![Metric::EvaluationErrors, Metric::Failures, Metric::Latency];
        if self.deny_rate != DenyRateTest::Off {
            m.push(Metric::DenyRate);
        }
        m
    }

    /// `ln(1/α_m)`: the evidence threshold of each tested metric.
    pub fn ln_threshold(&self) -> f64 {
        let per_metric = self.alpha / self.tested_metrics().len() as f64;
        -per_metric.ln()
    }

    fn alternative(&self, metric: Metric) -> Alternative {
        match (metric, self.deny_rate) {
            (Metric::DenyRate, DenyRateTest::Either) => Alternative::TwoSided,
            _ => Alternative::Greater,
        }
    }
}

/// A metric with a sequential test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    EvaluationErrors,
    Failures,
    DenyRate,
    Latency,
}

/// A hard trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    EvaluationErrorRate,
    FailureRate,
    FeedbackLatency,
    DecisionLatency,
    Utilization,
    CriticalErrors,
}

/// A hard trigger that fired: the observed figure and the limit it passed
/// (rates as fractions, latencies in milliseconds, utilization as a fraction,
/// critical errors as a count per minute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerHit {
    pub trigger: Trigger,
    pub observed: f64,
    pub limit: f64,
}

/// How one window compares a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Comparison {
    /// Two independent samples.
    TwoSample { candidate: Counts, control: Counts },
    /// Paired decisions: discordant pairs, `events` of them the candidate's way.
    Paired { discordant: Counts },
}

impl Comparison {
    fn ln_e(self, alternative: Alternative, prior: BetaPrior) -> f64 {
        match self {
            Comparison::TwoSample { candidate, control } => {
                ln_e_value(candidate, control, alternative, prior)
            }
            Comparison::Paired { discordant } => ln_e_value_paired(discordant, alternative, prior),
        }
    }

    /// Observations of the smaller side, for the minimum-sample rule.
    fn sample(self) -> u64 {
        match self {
            Comparison::TwoSample { candidate, control } => candidate.trials.min(control.trials),
            Comparison::Paired { discordant } => discordant.trials,
        }
    }
}

/// The latency threshold of a window and the counts at the moment it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyWindow {
    /// Histogram bucket index; "slow" means a bucket above it.
    pub threshold: u16,
    pub base_candidate: Counts,
    pub base_control: Counts,
}

impl LatencyWindow {
    /// A window whose threshold is the median of `reference`, counting from the
    /// current histograms of both arms. `None` without reference data.
    pub fn starting_now(
        reference: &LatencyHistogram,
        candidate: &LatencyHistogram,
        control: &LatencyHistogram,
    ) -> Option<Self> {
        let threshold = reference.quantile_bucket(0.5)?;
        Some(Self {
            threshold,
            base_candidate: slow_counts(candidate, threshold),
            base_control: slow_counts(control, threshold),
        })
    }
}

fn slow_counts(h: &LatencyHistogram, threshold: u16) -> Counts {
    Counts::new(h.count_above(threshold), h.count())
}

/// The comparisons of one window, per metric (absent: no data of that kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowCounts {
    pub evaluation_errors: Option<Comparison>,
    pub failures: Option<Comparison>,
    pub deny_rate: Option<Comparison>,
    pub latency: Option<Comparison>,
}

impl WindowCounts {
    /// The window of two independently sampled arms.
    pub fn unpaired(
        candidate: &ArmStats,
        control: &ArmStats,
        latency: Option<&LatencyWindow>,
    ) -> Self {
        let two = |c: Counts, k: Counts| {
            Some(Comparison::TwoSample {
                candidate: c,
                control: k,
            })
        };
        Self {
            evaluation_errors: two(
                Counts::new(candidate.evaluation_errors, candidate.evaluations()),
                Counts::new(control.evaluation_errors, control.evaluations()),
            ),
            failures: two(
                Counts::new(
                    candidate.feedback.unsuccessful(),
                    candidate.feedback.total(),
                ),
                Counts::new(control.feedback.unsuccessful(), control.feedback.total()),
            ),
            deny_rate: two(
                Counts::new(candidate.denies, candidate.decisions),
                Counts::new(control.denies, control.decisions),
            ),
            latency: latency.and_then(|w| {
                two(
                    slow_counts(&candidate.feedback.latency, w.threshold).since(w.base_candidate),
                    slow_counts(&control.feedback.latency, w.threshold).since(w.base_control),
                )
            }),
        }
    }

    /// The window of a shadow sample: errors unpaired, deny rate paired, no
    /// feedback (the candidate enforced nothing).
    pub fn shadow(candidate: &ArmStats, control: &ArmStats, diff: &ShadowDiff) -> Self {
        let (toward, away) = (diff.allow_to_deny.count, diff.deny_to_allow.count);
        Self {
            evaluation_errors: Some(Comparison::TwoSample {
                candidate: Counts::new(candidate.evaluation_errors, candidate.evaluations()),
                control: Counts::new(control.evaluation_errors, control.evaluations()),
            }),
            failures: None,
            deny_rate: Some(Comparison::Paired {
                discordant: Counts::new(toward, toward + away),
            }),
            latency: None,
        }
    }

    fn get(&self, metric: Metric) -> Option<Comparison> {
        match metric {
            Metric::EvaluationErrors => self.evaluation_errors,
            Metric::Failures => self.failures,
            Metric::DenyRate => self.deny_rate,
            Metric::Latency => self.latency,
        }
    }
}

/// The evidence on one metric over all windows so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub metric: Metric,
    /// `ln E`, the product of the windows' e-values.
    pub ln_e: f64,
    /// `ln(1/α_m)`: crossing it rolls back.
    pub ln_threshold: f64,
    /// The current window's comparison, for the record.
    pub current: Option<Comparison>,
    /// Observations of the smaller side over all windows.
    pub sample: u64,
}

impl Finding {
    /// The e-value itself.
    pub fn e_value(&self) -> f64 {
        self.ln_e.exp()
    }
}

/// Evidence per tested metric over the closed windows and the current one.
pub fn findings(
    config: &AnalysisConfig,
    closed: &[WindowCounts],
    current: &WindowCounts,
) -> Vec<Finding> {
    let ln_threshold = config.ln_threshold();
    config
        .tested_metrics()
        .into_iter()
        .map(|metric| {
            let alternative = config.alternative(metric);
            let mut ln_e = 0.0;
            let mut sample = 0;
            for c in closed.iter().chain([current]).filter_map(|w| w.get(metric)) {
                ln_e += c.ln_e(alternative, config.prior);
                sample += c.sample();
            }
            Finding {
                metric,
                ln_e,
                ln_threshold,
                current: current.get(metric),
                sample,
            }
        })
        .collect()
}

/// What the findings say, before the phase's timing rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// A metric crossed its threshold with enough data: roll back.
    Regression(Finding),
    /// No crossing, but a metric's evidence is above the square root of its
    /// threshold: do not advance yet.
    Suspicious(Finding),
    /// Nothing against the candidate.
    Clear,
}

/// Reads findings: a crossing counts only with `min_analysis_samples`.
pub fn weigh(config: &AnalysisConfig, findings: &[Finding]) -> Evidence {
    let strongest = |pred: &dyn Fn(&Finding) -> bool| {
        findings
            .iter()
            .filter(|f| pred(f))
            .max_by(|a, b| (a.ln_e - a.ln_threshold).total_cmp(&(b.ln_e - b.ln_threshold)))
            .cloned()
    };
    if let Some(f) =
        strongest(&|f| f.ln_e >= f.ln_threshold && f.sample >= config.min_analysis_samples)
    {
        return Evidence::Regression(f);
    }
    match strongest(&|f| f.ln_e >= f.ln_threshold / 2.0) {
        Some(f) => Evidence::Suspicious(f),
        None => Evidence::Clear,
    }
}

/// The first hard trigger that fires on cumulative figures, if any.
pub fn hard_trigger(
    hard: &HardTriggers,
    candidate: &ArmStats,
    control: &ArmStats,
    critical_last_minute: u64,
    utilization: Option<BasisPoints>,
) -> Option<TriggerHit> {
    if let Some(u) = utilization
        && u > hard.max_utilization
    {
        return Some(TriggerHit {
            trigger: Trigger::Utilization,
            observed: u.fraction(),
            limit: hard.max_utilization.fraction(),
        });
    }
    if critical_last_minute > hard.critical_errors_per_minute {
        return Some(TriggerHit {
            trigger: Trigger::CriticalErrors,
            observed: critical_last_minute as f64,
            limit: hard.critical_errors_per_minute as f64,
        });
    }
    let min = hard.min_samples;
    let rate_rise = |trigger, c: Counts, k: Counts| {
        let (cr, kr) = (c.rate()?, k.rate()?);
        (c.trials >= min && k.trials >= min && cr - kr >= hard.error_rate_increase).then_some(
            TriggerHit {
                trigger,
                observed: cr - kr,
                limit: hard.error_rate_increase,
            },
        )
    };
    let latency_rise = |trigger, c: &LatencyHistogram, k: &LatencyHistogram| {
        if c.count() < min || k.count() < min {
            return None;
        }
        let rise_ms = (c.mean_micros()? - k.mean_micros()?) / 1000.0;
        let limit_ms = hard.latency_increase.as_secs_f64() * 1000.0;
        (rise_ms >= limit_ms).then_some(TriggerHit {
            trigger,
            observed: rise_ms,
            limit: limit_ms,
        })
    };
    rate_rise(
        Trigger::EvaluationErrorRate,
        Counts::new(candidate.evaluation_errors, candidate.evaluations()),
        Counts::new(control.evaluation_errors, control.evaluations()),
    )
    .or_else(|| {
        rate_rise(
            Trigger::FailureRate,
            Counts::new(
                candidate.feedback.unsuccessful(),
                candidate.feedback.total(),
            ),
            Counts::new(control.feedback.unsuccessful(), control.feedback.total()),
        )
    })
    .or_else(|| {
        latency_rise(
            Trigger::FeedbackLatency,
            &candidate.feedback.latency,
            &control.feedback.latency,
        )
    })
    .or_else(|| {
        latency_rise(
            Trigger::DecisionLatency,
            &candidate.decision_latency,
            &control.decision_latency,
        )
    })
}

/// Where one hard trigger stands: the observed figure (absent until both arms have
/// the minimum sample), the limit, and the smaller arm's sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerReading {
    pub trigger: Trigger,
    pub observed: Option<f64>,
    pub limit: f64,
    pub sample: u64,
    pub min_sample: u64,
}

/// Every hard trigger's reading, in the units of [`TriggerHit`]; for status pages.
/// [`hard_trigger`] fires exactly when one of these has `observed >= limit` (above,
/// for utilization and critical errors).
pub fn trigger_readings(
    hard: &HardTriggers,
    candidate: &ArmStats,
    control: &ArmStats,
    critical_last_minute: u64,
    utilization: Option<BasisPoints>,
) -> Vec<TriggerReading> {
    let min = hard.min_samples;
    let rate = |trigger, c: Counts, k: Counts| {
        let sample = c.trials.min(k.trials);
        let observed = match (c.rate(), k.rate()) {
            (Some(cr), Some(kr)) if sample >= min => Some(cr - kr),
            _ => None,
        };
        TriggerReading {
            trigger,
            observed,
            limit: hard.error_rate_increase,
            sample,
            min_sample: min,
        }
    };
    let latency = |trigger, c: &LatencyHistogram, k: &LatencyHistogram| {
        let sample = c.count().min(k.count());
        let observed = match (c.mean_micros(), k.mean_micros()) {
            (Some(cm), Some(km)) if sample >= min => Some((cm - km) / 1000.0),
            _ => None,
        };
        TriggerReading {
            trigger,
            observed,
            limit: hard.latency_increase.as_secs_f64() * 1000.0,
            sample,
            min_sample: min,
        }
    };
    vec![
        rate(
            Trigger::EvaluationErrorRate,
            Counts::new(candidate.evaluation_errors, candidate.evaluations()),
            Counts::new(control.evaluation_errors, control.evaluations()),
        ),
        rate(
            Trigger::FailureRate,
            Counts::new(
                candidate.feedback.unsuccessful(),
                candidate.feedback.total(),
            ),
            Counts::new(control.feedback.unsuccessful(), control.feedback.total()),
        ),
        latency(
            Trigger::FeedbackLatency,
            &candidate.feedback.latency,
            &control.feedback.latency,
        ),
        latency(
            Trigger::DecisionLatency,
            &candidate.decision_latency,
            &control.decision_latency,
        ),
        TriggerReading {
            trigger: Trigger::Utilization,
            observed: utilization.map(BasisPoints::fraction),
            limit: hard.max_utilization.fraction(),
            sample: 0,
            min_sample: 0,
        },
        TriggerReading {
            trigger: Trigger::CriticalErrors,
            observed: Some(critical_last_minute as f64),
            limit: hard.critical_errors_per_minute as f64,
            sample: 0,
            min_sample: 0,
        },
    ]
}

/// Durations as whole milliseconds in stored configuration.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decision::Outcome;
    use crate::rollout::measure::FeedbackResult;

    fn arm(decisions: u64, denies: u64, feedback: u64, failures: u64, latency_ms: u64) -> ArmStats {
        let mut a = ArmStats::default();
        for i in 0..decisions {
            let o = if i < denies {
                Outcome::Deny
            } else {
                Outcome::Allow
            };
            a.record_decision(o, Duration::from_micros(40));
        }
        for i in 0..feedback {
            let r = if i < failures {
                FeedbackResult::Failure
            } else {
                FeedbackResult::Success
            };
            a.record_feedback(r, Duration::from_millis(latency_ms));
        }
        a
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(AnalysisConfig::default().check(), Ok(()));
        let bad = AnalysisConfig {
            alpha: 1.5,
            ..AnalysisConfig::default()
        };
        assert_eq!(bad.check(), Err(ConfigError::Alpha { alpha: 1.5 }));
        let json = r#"{ "alpha": 0.05, "hard": { "min_samples": 10 } }"#;
        let c: AnalysisConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.alpha, 0.05);
        assert_eq!(c.hard.min_samples, 10);
        assert_eq!(c.hard.critical_errors_per_minute, 10);
        assert!(serde_json::from_str::<AnalysisConfig>(r#"{ "alpah": 0.05 }"#).is_err());
    }

    #[test]
    fn alpha_is_split_across_tested_metrics() {
        let c = AnalysisConfig::default();
        assert!((c.ln_threshold() - 400f64.ln()).abs() < 1e-12);
        let off = AnalysisConfig {
            deny_rate: DenyRateTest::Off,
            ..c
        };
        assert!((off.ln_threshold() - 300f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn regression_needs_evidence_and_samples() {
        let config = AnalysisConfig::default();
        let control = arm(20_000, 2_000, 20_000, 1_000, 100);
        let equal = WindowCounts::unpaired(&arm(2_000, 200, 2_000, 100, 100), &control, None);
        assert_eq!(
            weigh(&config, &findings(&config, &[], &equal)),
            Evidence::Clear
        );

        let worse = WindowCounts::unpaired(&arm(2_000, 200, 2_000, 300, 100), &control, None);
        match weigh(&config, &findings(&config, &[], &worse)) {
            Evidence::Regression(f) => {
                assert_eq!(f.metric, Metric::Failures);
                assert!(f.ln_e >= f.ln_threshold);
            }
            other => panic!("{other:?}"),
        }

        // The same strong rate difference on 50 samples is not enough data.
        let tiny = WindowCounts::unpaired(&arm(50, 5, 50, 50, 100), &control, None);
        let f = findings(&config, &[], &tiny);
        assert!(
            f.iter()
                .any(|f| f.metric == Metric::Failures && f.ln_e >= f.ln_threshold)
        );
        assert!(!matches!(weigh(&config, &f), Evidence::Regression(_)));
    }

    #[test]
    fn evidence_multiplies_across_windows() {
        let config = AnalysisConfig::default();
        let control = arm(10_000, 1_000, 10_000, 500, 100);
        let w = WindowCounts::unpaired(&arm(800, 80, 800, 64, 100), &control, None);
        let one = findings(&config, &[], &w);
        let two = findings(&config, std::slice::from_ref(&w), &w);
        let f = |v: &[Finding]| {
            v.iter()
                .find(|f| f.metric == Metric::Failures)
                .unwrap()
                .ln_e
        };
        assert!((f(&two) - 2.0 * f(&one)).abs() < 1e-9);
    }

    #[test]
    fn latency_is_tested_above_the_control_median() {
        let config = AnalysisConfig::default();
        let mut control_spread = ArmStats::default();
        for i in 0..2_000u64 {
            control_spread
                .record_feedback(FeedbackResult::Success, Duration::from_millis(50 + i % 100));
        }
        let window = LatencyWindow::starting_now(
            &control_spread.feedback.latency,
            &ArmStats::default().feedback.latency,
            &ArmStats::default().feedback.latency,
        )
        .unwrap();
        let slow = arm(0, 0, 300, 0, 200);
        let w = WindowCounts::unpaired(&slow, &control_spread, Some(&window));
        match w.latency {
            Some(Comparison::TwoSample { candidate, control }) => {
                assert_eq!(candidate, Counts::new(300, 300));
                assert!((900..=1_100).contains(&control.events), "{control:?}");
            }
            other => panic!("{other:?}"),
        }
        let f = findings(&config, &[], &w);
        assert!(
            matches!(weigh(&config, &f), Evidence::Regression(ref f) if f.metric == Metric::Latency)
        );
    }

    #[test]
    fn hard_triggers_fire_on_their_thresholds() {
        let hard = HardTriggers::default();
        let control = arm(1_000, 0, 1_000, 50, 100);
        assert_eq!(
            hard_trigger(
                &hard,
                &control,
                &control,
                10,
                Some(BasisPoints::from_percent(80).unwrap())
            ),
            None
        );
        let hit = hard_trigger(&hard, &control, &control, 11, None).unwrap();
        assert_eq!(hit.trigger, Trigger::CriticalErrors);
        let hit = hard_trigger(&hard, &control, &control, 0, BasisPoints::new(8_001).ok()).unwrap();
        assert_eq!(hit.trigger, Trigger::Utilization);
        let failing = arm(1_000, 0, 1_000, 100, 100);
        let hit = hard_trigger(&hard, &failing, &control, 0, None).unwrap();
        assert_eq!(hit.trigger, Trigger::FailureRate);
        assert!((hit.observed - 0.05).abs() < 1e-12);
        let slow = arm(1_000, 0, 1_000, 50, 301);
        let hit = hard_trigger(&hard, &slow, &control, 0, None).unwrap();
        assert_eq!(hit.trigger, Trigger::FeedbackLatency);
        assert!((hit.observed - 201.0).abs() < 1e-9);
        // Below the minimum sample, no rate or latency trigger.
        let few = arm(100, 0, 100, 100, 900);
        assert_eq!(hard_trigger(&hard, &few, &control, 0, None), None);
    }
}
