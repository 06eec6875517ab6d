//! The node's side of progressive delivery: what the decision path reads (the
//! published routes of running rollouts, each with its control and candidate
//! snapshots), where it records per-arm measurements and in-rollout decision ids,
//! and the `[rollouts]` settings. The rollouts themselves are owned and stepped by the
//! owner task (`owner.rs`); a ticker drives them every `tick_every`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dynscale_core::decision::Outcome;
use dynscale_core::ids::PolicyName;
use dynscale_core::namespace::{Namespace, Scope};
use dynscale_core::rollout::{
    AnalysisConfig, Arm, ArmTag, FeedbackMiss, FeedbackResult, Measurements, RecentDecisions,
    RolloutSalt, Routing, UnixMillis,
};
use dynscale_core::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Settings of rollouts (`[rollouts]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSettings {
    /// How often the decision path's measurements are drained into the running
    /// rollouts, whose timers and analysis then run.
    #[serde(with = "human")]
    pub tick_every: Duration,
    /// The most recent in-rollout decisions that can still take feedback.
    pub feedback_capacity: usize,
    /// How long after a decision its feedback counts.
    #[serde(with = "human")]
    pub feedback_ttl: Duration,
    /// Finished rollouts loaded at start, for their status.
    pub keep_finished: u32,
    /// How every rollout started on this node is analysed: `alpha`,
    /// `min_analysis_samples`, `deny_rate`, `inconclusive_timeout` (ms) and the
    /// hard triggers under `[rollouts.analysis.hard]`.
    pub analysis: AnalysisConfig,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            tick_every: Duration::from_secs(5),
            feedback_capacity: 200_000,
            feedback_ttl: Duration::from_secs(3_600),
            keep_finished: 20,
            analysis: AnalysisConfig::default(),
        }
    }
}

mod human {
    use std::time::Duration;

    use dynscale_core::document::HumanDuration;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(*d).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// Why the rollout settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutStartError {
    #[error("[rollouts.analysis]: {0}")]
    Analysis(#[from] dynscale_core::rollout::analysis::ConfigError),
    #[error("[rollouts] tick_every must be positive")]
    TickEvery,
}

impl RolloutSettings {
    /// Checks the values a file could get wrong.
    pub fn check(&self) -> Result<(), RolloutStartError> {
        self.analysis.check()?;
        if self.tick_every.is_zero() {
            return Err(RolloutStartError::TickEvery);
        }
        Ok(())
    }
}

/// Shards of the per-arm accumulators; decisions pick one by their id.
const SHARDS: usize = 8;

/// Per-arm measurements of one rollout, recorded by the decision path and the
/// feedback route, drained by the owner. Sharded so concurrent decisions rarely
/// share a lock; each lock is held for one addition.
#[derive(Debug)]
pub struct Meter {
    shards: Box<[Mutex<Measurements>]>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Measurements::default()))
                .collect(),
        }
    }
}

impl Meter {
    fn with(&self, id: Uuid, f: impl FnOnce(&mut Measurements)) {
        // The low bits of a v7 uuid are random.
        let i = (id.as_u128() % SHARDS as u128) as usize;
        f(&mut self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    /// A decision the arm made: its outcome and evaluation time, or a failed
    /// evaluation when Cedar reported errors.
    pub fn decided(&self, id: Uuid, arm: Arm, outcome: Outcome, errors: bool, took: Duration) {
        self.with(id, |m| {
            if errors {
                m.arm_mut(arm).record_error(false);
            } else {
                m.arm_mut(arm).record_decision(outcome, took);
            }
        });
    }

    /// An evaluation that could not decide at all (e.g. an unknown namespace for one
    /// version): a critical error of the arm.
    pub fn failed(&self, id: Uuid, arm: Arm) {
        self.with(id, |m| m.arm_mut(arm).record_error(true));
    }

    /// A shadow comparison: the control enforced `control`; the candidate would
    /// have decided `candidate` (`None`: its evaluation failed).
    pub fn compared(&self, id: Uuid, control: Outcome, candidate: Option<Outcome>) {
        self.with(id, |m| match candidate {
            Some(c) => m.shadow.record(id, control, c),
            None => m.shadow.record_candidate_error(id),
        });
    }

    /// Agent feedback on a decision of `arm`.
    pub fn feedback(&self, id: Uuid, arm: Arm, result: FeedbackResult, latency: Duration) {
        self.with(id, |m| m.arm_mut(arm).record_feedback(result, latency));
    }

    /// Everything recorded since the last drain.
    pub fn drain(&self) -> Measurements {
        let mut out = Measurements::default();
        for shard in &*self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            out.merge(&taken);
        }
        out
    }
}

/// Recent in-rollout decisions, sharded like [`Meter`], for feedback.
#[derive(Debug)]
pub struct FeedbackIndex {
    shards: Box<[Mutex<RecentDecisions>]>,
}

impl FeedbackIndex {
    /// An index holding about `capacity` decisions for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(RecentDecisions::new(per_shard, ttl)))
                .collect(),
        }
    }

    fn shard(&self, id: Uuid) -> std::sync::MutexGuard<'_, RecentDecisions> {
        let i = (id.as_u128() % SHARDS as u128) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers which rollout and arm made decision `id`.
    pub fn insert(&self, id: Uuid, tag: ArmTag, at: UnixMillis) {
        self.shard(id).insert(id, tag, at);
    }

    /// The rollout and arm of decision `id`, once.
    pub fn take(&self, id: Uuid, now: UnixMillis) -> Result<ArmTag, FeedbackMiss> {
        self.shard(id).take(id, now)
    }
}

/// One running rollout as the decision path sees it.
#[derive(Debug)]
pub struct Route {
    pub id: u64,
    pub name: PolicyName,
    /// The scopes of the control and the candidate: requests in them are in the
    /// rollout.
    pub scopes: Vec<Scope>,
    pub salt: RolloutSalt,
    pub routing: Routing,
    /// The set in force (with the control version).
    pub control: Arc<Snapshot>,
    /// The same set with the candidate in place of the control.
    pub candidate: Arc<Snapshot>,
    pub meter: Arc<Meter>,
}

impl Route {
    /// The snapshot of an arm.
    pub fn snapshot(&self, arm: Arm) -> &Arc<Snapshot> {
        match arm {
            Arm::Control => &self.control,
            Arm::Candidate => &self.candidate,
        }
    }
}

/// The routes of every running rollout; their scopes never share a namespace.
#[derive(Debug, Default)]
pub struct Routes {
    pub routes: Vec<Route>,
}

impl Routes {
    /// The rollout a request in `namespace` belongs to. With no rollout running this
    /// is one length check.
    pub fn find(&self, namespace: &Namespace) -> Option<&Route> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes
            .iter()
            .find(|r| r.scopes.iter().any(|s| s.matches(namespace)))
    }

    /// The rollout with this id, if it is running.
    pub fn by_id(&self, id: u64) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }
}

/// Wall-clock time as the rollout core takes it.
pub fn now_millis() -> UnixMillis {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    UnixMillis(u64::try_from(nanos / 1_000_000).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_drains_everything_once() {
        let m = Meter::default();
        for n in 0..100u128 {
            let id = Uuid::from_u128(n);
            m.decided(
                id,
                Arm::Candidate,
                Outcome::Deny,
                false,
                Duration::from_micros(5),
            );
            m.decided(
                id,
                Arm::Control,
                Outcome::Allow,
                n % 10 == 0,
                Duration::from_micros(5),
            );
            m.compared(id, Outcome::Allow, Some(Outcome::Deny));
            m.feedback(
                id,
                Arm::Candidate,
                FeedbackResult::Failure,
                Duration::from_millis(3),
            );
        }
        m.failed(Uuid::from_u128(7), Arm::Candidate);
        let d = m.drain();
        assert_eq!(d.candidate.decisions, 100);
        assert_eq!(d.candidate.denies, 100);
        assert_eq!(d.candidate.critical_errors, 1);
        assert_eq!(d.control.decisions, 90);
        assert_eq!(d.control.evaluation_errors, 10);
        assert_eq!(d.shadow.allow_to_deny.count, 100);
        assert_eq!(d.candidate.feedback.failure, 100);
        assert_eq!(m.drain(), Measurements::default());
    }

    #[test]
    fn settings_are_checked() {
        assert!(RolloutSettings::default().check().is_ok());
        let zero = RolloutSettings {
            tick_every: Duration::ZERO,
            ..RolloutSettings::default()
        };
        assert!(zero.check().is_err());
        let parsed: RolloutSettings =
            toml::from_str("tick_every = \"2s\"\n[analysis]\nalpha = 0.05\n").unwrap();
        assert_eq!(parsed.tick_every, Duration::from_secs(2));
        assert_eq!(parsed.analysis.alpha, 0.05);
    }
}
