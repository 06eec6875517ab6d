//! Per-arm measurement accumulators: what the node observed of each version.
//!
//! The decision path records into these plain, mergeable values (per thread or per
//! shard if it likes) and the server periodically drains them into one
//! [`Measurements`] batch, which it stores as a rollout event and feeds to
//! [`step`](super::step). Merging is addition, so batches can be cut anywhere.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::bucket::{Arm, BasisPoints};
use super::latency::LatencyHistogram;
use crate::decision::Outcome;

/// How many exemplar decision ids a shadow diff class keeps.
pub const EXEMPLARS: usize = 10;

/// What an agent reported about an action it took after a decision
/// (`POST /v1/feedback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackResult {
    /// The action did what it should.
    Success,
    /// The action ran and failed.
    Failure,
    /// The action could not run (an error on the agent's side).
    Error,
}

/// Agent feedback on one arm's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackStats {
    pub success: u64,
    pub failure: u64,
    pub error: u64,
    /// The action latency the agents reported (`latency_ms`).
    pub latency: LatencyHistogram,
}

impl FeedbackStats {
    /// Reports received.
    pub fn total(&self) -> u64 {
        self.success + self.failure + self.error
    }

    /// Reports that were not a success.
    pub fn unsuccessful(&self) -> u64 {
        self.failure + self.error
    }

    fn merge(&mut self, o: &FeedbackStats) {
        self.success += o.success;
        self.failure += o.failure;
        self.error += o.error;
        self.latency.merge(&o.latency);
    }
}

/// Everything measured of one arm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmStats {
    /// Decisions the arm made (evaluations that did not fail).
    pub decisions: u64,
    /// Of those, decisions that did not allow the action.
    pub denies: u64,
    /// Evaluations that failed.
    pub evaluation_errors: u64,
    /// Of those, errors the evaluator marked critical.
    pub critical_errors: u64,
    /// Evaluation latency.
    pub decision_latency: LatencyHistogram,
    /// Agent feedback on the arm's enforced decisions.
    pub feedback: FeedbackStats,
}

impl ArmStats {
    /// Records a decision the arm made.
    pub fn record_decision(&mut self, outcome: Outcome, latency: Duration) {
        self.decisions += 1;
        if !outcome.is_allowed() {
            self.denies += 1;
        }
        self.decision_latency.record(latency);
    }

    /// Records an evaluation that failed.
    pub fn record_error(&mut self, critical: bool) {
        self.evaluation_errors += 1;
        if critical {
            self.critical_errors += 1;
        }
    }

    /// Records agent feedback on one of the arm's decisions.
    pub fn record_feedback(&mut self, result: FeedbackResult, latency: Duration) {
        match result {
            FeedbackResult::Success => self.feedback.success += 1,
            FeedbackResult::Failure => self.feedback.failure += 1,
            FeedbackResult::Error => self.feedback.error += 1,
        }
        self.feedback.latency.record(latency);
    }

    /// Evaluations attempted (decisions plus errors).
    pub fn evaluations(&self) -> u64 {
        self.decisions + self.evaluation_errors
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, o: &ArmStats) {
        self.decisions += o.decisions;
        self.denies += o.denies;
        self.evaluation_errors += o.evaluation_errors;
        self.critical_errors += o.critical_errors;
        self.decision_latency.merge(&o.decision_latency);
        self.feedback.merge(&o.feedback);
    }
}

/// One class of shadow differences: a count and the first few decision ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffClass {
    pub count: u64,
    /// At most [`EXEMPLARS`] decision ids, the earliest seen.
    pub exemplars: Vec<Uuid>,
}

impl DiffClass {
    fn record(&mut self, decision: Uuid) {
        self.count += 1;
        if self.exemplars.len() < EXEMPLARS {
            self.exemplars.push(decision);
        }
    }

    fn merge(&mut self, o: &DiffClass) {
        self.count += o.count;
        let room = EXEMPLARS.saturating_sub(self.exemplars.len());
        self.exemplars
            .extend(o.exemplars.iter().take(room).copied());
    }
}

/// The class of a difference between the enforced and the shadow decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    /// Same outcome.
    Same,
    /// The active version allows, the candidate would deny.
    AllowToDeny,
    /// The active version denies, the candidate would allow.
    DenyToAllow,
    /// Both allow or both deny, with a different outcome (e.g. deny → escalate).
    Other,
}

/// Classifies a pair of outcomes.
pub fn diff_kind(active: Outcome, candidate: Outcome) -> DiffKind {
    match (active.is_allowed(), candidate.is_allowed()) {
        _ if active == candidate => DiffKind::Same,
        (true, false) => DiffKind::AllowToDeny,
        (false, true) => DiffKind::DenyToAllow,
        _ => DiffKind::Other,
    }
}

/// The decision diff of a candidate evaluated in the shadow of the active version
/// on the same requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowDiff {
    /// Requests both versions decided.
    pub compared: u64,
    pub allow_to_deny: DiffClass,
    pub deny_to_allow: DiffClass,
    pub other: DiffClass,
    /// Requests on which the candidate failed to evaluate (the active one decided).
    pub candidate_errors: DiffClass,
}

impl ShadowDiff {
    /// Records one request decided by both versions.
    pub fn record(&mut self, decision: Uuid, active: Outcome, candidate: Outcome) {
        self.compared += 1;
        match diff_kind(active, candidate) {
            DiffKind::Same => {}
            DiffKind::AllowToDeny => self.allow_to_deny.record(decision),
            DiffKind::DenyToAllow => self.deny_to_allow.record(decision),
            DiffKind::Other => self.other.record(decision),
        }
    }

    /// Records a request on which the shadow evaluation failed.
    pub fn record_candidate_error(&mut self, decision: Uuid) {
        self.candidate_errors.record(decision);
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, o: &ShadowDiff) {
        self.compared += o.compared;
        self.allow_to_deny.merge(&o.allow_to_deny);
        self.deny_to_allow.merge(&o.deny_to_allow);
        self.other.merge(&o.other);
        self.candidate_errors.merge(&o.candidate_errors);
    }
}

/// One batch of observations, as drained by the server and stored as an event.
///
/// In shadow mode the active version is the control arm (enforced, with feedback)
/// and the candidate arm holds the shadow evaluations (decisions, errors, latency,
/// no feedback); `shadow` holds the paired diff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    #[serde(default)]
    pub control: ArmStats,
    #[serde(default)]
    pub candidate: ArmStats,
    #[serde(default)]
    pub shadow: ShadowDiff,
    /// The node's utilization when the batch was cut (capacity in use), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<BasisPoints>,
}

impl Measurements {
    /// The stats of one arm.
    pub fn arm(&self, arm: Arm) -> &ArmStats {
        match arm {
            Arm::Control => &self.control,
            Arm::Candidate => &self.candidate,
        }
    }

    /// The stats of one arm, for recording.
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmStats {
        match arm {
            Arm::Control => &mut self.control,
            Arm::Candidate => &mut self.candidate,
        }
    }

    /// Adds every observation of `other`; the utilization becomes the later one.
    pub fn merge(&mut self, o: &Measurements) {
        self.control.merge(&o.control);
        self.candidate.merge(&o.candidate);
        self.shadow.merge(&o.shadow);
        if o.utilization.is_some() {
            self.utilization = o.utilization;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn diff_classes() {
        use Outcome::*;
        assert_eq!(diff_kind(Allow, Allow), DiffKind::Same);
        assert_eq!(diff_kind(Allow, Deny), DiffKind::AllowToDeny);
        assert_eq!(diff_kind(Warn, Escalate), DiffKind::AllowToDeny);
        assert_eq!(diff_kind(Quarantine, Allow), DiffKind::DenyToAllow);
        assert_eq!(diff_kind(Deny, Escalate), DiffKind::Other);
        assert_eq!(diff_kind(Allow, Warn), DiffKind::Other);
    }

    #[test]
    fn exemplars_are_bounded_and_earliest_first() {
        let mut a = ShadowDiff::default();
        let mut b = ShadowDiff::default();
        for n in 0..8 {
            a.record(id(n), Outcome::Allow, Outcome::Deny);
        }
        for n in 100..108 {
            b.record(id(n), Outcome::Allow, Outcome::Deny);
        }
        b.record(id(200), Outcome::Deny, Outcome::Allow);
        a.merge(&b);
        assert_eq!(a.compared, 17);
        assert_eq!(a.allow_to_deny.count, 16);
        let expected: Vec<Uuid> = (0..8).chain(100..102).map(id).collect();
        assert_eq!(a.allow_to_deny.exemplars, expected);
        assert_eq!(a.deny_to_allow.exemplars, vec![id(200)]);
    }

    #[test]
    fn arm_stats_merge_is_addition() {
        let mut a = ArmStats::default();
        a.record_decision(Outcome::Deny, Duration::from_micros(30));
        a.record_error(true);
        a.record_feedback(FeedbackResult::Failure, Duration::from_millis(120));
        let mut b = ArmStats::default();
        b.record_decision(Outcome::Allow, Duration::from_micros(20));
        b.record_feedback(FeedbackResult::Success, Duration::from_millis(80));
        let mut sum = a.clone();
        sum.merge(&b);
        assert_eq!(sum.decisions, 2);
        assert_eq!(sum.denies, 1);
        assert_eq!(sum.evaluations(), 3);
        assert_eq!(sum.critical_errors, 1);
        assert_eq!(sum.feedback.total(), 2);
        assert_eq!(sum.feedback.unsuccessful(), 1);
        assert_eq!(sum.feedback.latency.mean_micros(), Some(100_000.0));
        let json = serde_json::to_string(&sum).unwrap();
        assert_eq!(serde_json::from_str::<ArmStats>(&json).unwrap(), sum);
    }
}
