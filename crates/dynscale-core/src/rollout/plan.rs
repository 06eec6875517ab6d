//! The rollout plan: a document's `activation` turned into checked, defaulted values.
//!
//! | strategy | fields | defaults |
//! |---|---|---|
//! | `immediate` | none | — |
//! | `shadow` | none | runs until `promote` or `abort` |
//! | `canary` | `steps`, `stepDuration`, `minSamples` | `[5, 25, 50, 100]`, `5m`, `1000` |
//! | `blue-green` | `minSamples` (shadow sample before the switch), `keepWarm` | `1000`, `10m` |
//!
//! A field given for a strategy that does not use it is an error, so a typo in the
//! strategy cannot silently drop the operator's steps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bucket::BasisPoints;
use crate::document::{Activation, Strategy};

/// Default canary steps, in percent.
pub const DEFAULT_STEPS: [u32; 4] = [5, 25, 50, 100];
/// Default minimum time per canary step.
pub const DEFAULT_STEP_DURATION: Duration = Duration::from_secs(5 * 60);
/// Default minimum sample per step (canary) or shadow sample (blue-green).
pub const DEFAULT_MIN_SAMPLES: u64 = 1000;
/// Default time the previous version stays warm after a blue-green switch.
pub const DEFAULT_KEEP_WARM: Duration = Duration::from_secs(10 * 60);

/// Why an `activation` block does not make a plan. `field` is the key under
/// `activation` at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A field the strategy does not use.
    #[error("`{field}` does not apply to strategy `{strategy}`")]
    NotApplicable {
        field: &'static str,
        strategy: Strategy,
    },
    /// Canary steps that are empty, not increasing or outside 1–100.
    #[error("steps {steps:?} must be strictly increasing percentages between 1 and 100")]
    BadSteps { steps: Vec<u32> },
}

impl PlanError {
    /// The `activation` key at fault.
    pub fn field(&self) -> &'static str {
        match self {
            PlanError::NotApplicable { field, .. } => field,
            PlanError::BadSteps { .. } => "steps",
        }
    }
}

/// How a rollout proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Plan {
    /// Swap at once.
    Immediate,
    /// Evaluate the candidate beside the active version on all traffic; report.
    Shadow,
    /// Raise the candidate's share step by step, analysing at every step.
    Canary {
        /// The candidate's share at each step; reaching the last step, or passing
        /// it, promotes.
        steps: Vec<BasisPoints>,
        /// The minimum time spent in each step.
        #[serde(with = "millis")]
        step_duration: Duration,
        /// The minimum decisions of each arm in each step before advancing.
        min_samples: u64,
    },
    /// Shadow sample, checks, switch everything, watch with the previous warm.
    BlueGreen {
        /// Decisions compared in the shadow before the switch.
        shadow_samples: u64,
        /// How long after the switch the previous version stays warm and the new
        /// one is watched.
        #[serde(with = "millis")]
        keep_warm: Duration,
    },
}

impl Plan {
    /// The plan for an `activation` block; every error at once.
    pub fn from_activation(a: &Activation) -> Result<Plan, Vec<PlanError>> {
        let mut errors = Vec::new();
        let strategy = a.strategy;
        let mut refuse = |present: bool, field: &'static str| {
            if present {
                errors.push(PlanError::NotApplicable { field, strategy });
            }
        };
        let uses = |fields: &[&str], f: &str| fields.contains(&f);
        let allowed: &[&str] = match strategy {
            Strategy::Immediate | Strategy::Shadow => &[],
            Strategy::Canary => &["steps", "stepDuration", "minSamples"],
            Strategy::BlueGreen => &["minSamples", "keepWarm"],
        };
        refuse(a.steps.is_some() && !uses(allowed, "steps"), "steps");
        refuse(
            a.step_duration.is_some() && !uses(allowed, "stepDuration"),
            "stepDuration",
        );
        refuse(
            a.min_samples.is_some() && !uses(allowed, "minSamples"),
            "minSamples",
        );
        refuse(
            a.keep_warm.is_some() && !uses(allowed, "keepWarm"),
            "keepWarm",
        );

        let steps = match &a.steps {
            Some(s) if strategy == Strategy::Canary => {
                let increasing = s.windows(2).all(|w| w[0] < w[1]);
                let in_range = s.iter().all(|p| (1..=100).contains(p));
                if s.is_empty() || !increasing || !in_range {
                    errors.push(PlanError::BadSteps { steps: s.clone() });
                }
                s.clone()
            }
            _ => DEFAULT_STEPS.to_vec(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let min_samples = a.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES);
        Ok(match strategy {
            Strategy::Immediate => Plan::Immediate,
            Strategy::Shadow => Plan::Shadow,
            Strategy::Canary => Plan::Canary {
                steps: steps
                    .iter()
                    .filter_map(|p| BasisPoints::from_percent(*p).ok())
                    .collect(),
                step_duration: a.step_duration.map_or(DEFAULT_STEP_DURATION, |d| d.0),
                min_samples,
            },
            Strategy::BlueGreen => Plan::BlueGreen {
                shadow_samples: min_samples,
                keep_warm: a.keep_warm.map_or(DEFAULT_KEEP_WARM, |d| d.0),
            },
        })
    }
}

/// Durations as whole milliseconds in stored plans.
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
    use super::*;

    fn activation(yaml: &str) -> Activation {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn bp(p: u32) -> BasisPoints {
        BasisPoints::from_percent(p).unwrap()
    }

    #[test]
    fn defaults_per_strategy() {
        assert_eq!(
            Plan::from_activation(&activation("{ strategy: canary }")),
            Ok(Plan::Canary {
                steps: vec![bp(5), bp(25), bp(50), bp(100)],
                step_duration: Duration::from_secs(300),
                min_samples: 1000,
            })
        );
        assert_eq!(
            Plan::from_activation(&activation("{ strategy: blue-green, keepWarm: 2m }")),
            Ok(Plan::BlueGreen {
                shadow_samples: 1000,
                keep_warm: Duration::from_secs(120),
            })
        );
        assert_eq!(
            Plan::from_activation(&activation("{ strategy: shadow }")),
            Ok(Plan::Shadow)
        );
    }

    #[test]
    fn fields_must_fit_the_strategy() {
        let errors = Plan::from_activation(&activation(
            "{ strategy: immediate, steps: [10, 5], keepWarm: 1m }",
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                PlanError::NotApplicable {
                    field: "steps",
                    strategy: Strategy::Immediate
                },
                PlanError::NotApplicable {
                    field: "keepWarm",
                    strategy: Strategy::Immediate
                },
            ]
        );
        let errors =
            Plan::from_activation(&activation("{ strategy: canary, steps: [10, 5, 200] }"))
                .unwrap_err();
        assert_eq!(errors[0].field(), "steps");
        assert_eq!(
            errors[0].to_string(),
            "steps [10, 5, 200] must be strictly increasing percentages between 1 and 100"
        );
        assert!(
            Plan::from_activation(&activation(
                "{ strategy: canary, stepDuration: 1m, keepWarm: 1m }"
            ))
            .is_err()
        );
    }

    #[test]
    fn plans_round_trip_through_json() {
        let plan = Plan::from_activation(&activation(
            "{ strategy: canary, steps: [1, 10], stepDuration: 90s, minSamples: 5 }",
        ))
        .unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }
}
