//! The owner's rollouts: starting one on a push, stepping each with drained
//! measurements, operator commands or the passing of time, storing every accepted
//! event, and carrying out the effects (publish routes, promote, roll back, audit).
//!
//! Order per step: the state machine decides (`step`); a rollback is enforced at
//! once (it returns to the stored active set, so publishing it first never shows
//! a state the store cannot rebuild) and its trigger-to-enforced time measured;
//! then the transition records are audited; then the event, its records and any
//! promotion are stored in one transaction; only then are routes and a promoted
//! snapshot published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use dynscale_core::catalog::ActivationPlan;
use dynscale_core::ids::{PolicyName, SnapshotId};
use dynscale_core::namespace::Scope;
use dynscale_core::policy::CheckedPolicy;
use dynscale_core::rollout::{
    self, BasisPoints, Cause, Command as RolloutCommand, Effect, Event, Finish, Measurements,
    Phase, Plan, Record, Report, Rollout, Running, Stamped, Start, UnixMillis, Verdict,
};
use dynscale_core::snapshot::{InForceChange, Snapshot};
use dynscale_store::{NewEvent, NewRollout, RolloutFinish, RolloutStep, StoredVersion};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{Activated, Owner, RolloutStarted, parse_stored};
use crate::error::ApiError;
use crate::rollouts::{Meter, Route, Routes};

/// One rollout the owner knows: running, or the latest finished of its name.
#[derive(Debug)]
pub(super) struct Tracked {
    id: u64,
    candidate: Arc<CheckedPolicy>,
    control: Arc<CheckedPolicy>,
    state: Rollout,
    meter: Arc<Meter>,
    /// The candidate snapshot and the control snapshot it was built from.
    candidate_snapshot: Option<(Arc<Snapshot>, Arc<Snapshot>)>,
    /// How long the last rollback took from the verdict to enforcement.
    rollback_enforced_us: Option<u64>,
}

impl Tracked {
    fn scopes(&self) -> Vec<Scope> {
        let mut s = vec![self.control.doc.namespace.clone()];
        if self.candidate.doc.namespace != self.control.doc.namespace {
            s.push(self.candidate.doc.namespace.clone());
        }
        s
    }
}

/// The rollouts of a node.
#[derive(Debug, Default)]
pub(super) struct Book {
    running: BTreeMap<PolicyName, Tracked>,
    finished: BTreeMap<PolicyName, Tracked>,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutStatus {
    /// The rollout's id.
    pub id: u64,
    pub name: String,
    /// The version rolled out.
    pub candidate: String,
    /// The standing version it is compared with.
    pub control: String,
    /// `shadow`, `canary` or `blue-green`.
    pub strategy: String,
    /// `running`, `paused`, `promoted`, `rolled-back` or `aborted`.
    pub state: String,
    /// How long the rollback took from the verdict to enforcement, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_enforced_us: Option<u64>,
    /// Phase, routing, candidate share, verdict, samples per arm (window and totals),
    /// each statistic against its threshold, each hard trigger against its limit,
    /// the next step and when, and the shadow diff (`allow_to_deny`,
    /// `deny_to_allow`, `other`, each with `count` and `exemplars`).
    #[schema(value_type = Object)]
    pub report: Report,
}

fn strategy_name(plan: &Plan) -> &'static str {
    match plan {
        Plan::Immediate => "immediate",
        Plan::Shadow => "shadow",
        Plan::Canary { .. } => "canary",
        Plan::BlueGreen { .. } => "blue-green",
    }
}

fn state_name(r: &Rollout) -> &'static str {
    match r.phase {
        Phase::Done {
            finish: Finish::Promoted,
            ..
        } => "promoted",
        Phase::Done {
            finish: Finish::RolledBack,
            ..
        } => "rolled-back",
        Phase::Done {
            finish: Finish::Aborted,
            ..
        } => "aborted",
        _ if r.paused.is_some() => "paused",
        _ => "running",
    }
}

/// The event kind of a transition record.
fn record_kind(r: &Record) -> &'static str {
    match (&r.verdict, r.command) {
        (Verdict::Advance { share }, _) if *share == BasisPoints::ALL => "rollout.switched",
        (Verdict::Advance { .. }, _) => "rollout.advanced",
        (Verdict::Promote { .. }, _) => "rollout.promoted",
        (Verdict::Rollback { .. }, Some(RolloutCommand::Abort)) => "rollout.aborted",
        (Verdict::Rollback { .. }, _) => "rollout.rolled_back",
        (_, Some(RolloutCommand::Pause)) => "rollout.paused",
        (_, Some(RolloutCommand::Resume)) => "rollout.resumed",
        (Verdict::Hold { .. }, _) => "rollout.paused",
        (Verdict::Inconclusive { .. }, _) => "rollout.inconclusive",
    }
}

fn to_millis(t: OffsetDateTime) -> UnixMillis {
    UnixMillis(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

fn from_millis(t: UnixMillis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Owner {
    /// The running rollouts as the admission checks see them.
    pub(super) fn running_rollouts(&self) -> Vec<(PolicyName, semver::Version, Vec<Scope>)> {
        self.book
            .running
            .iter()
            .map(|(n, t)| (n.clone(), t.candidate.doc.version.clone(), t.scopes()))
            .collect()
    }

    /// Refuses a change of a name that is rolling out.
    pub(super) fn check_not_rolling_out(&self, name: &PolicyName) -> Result<(), ApiError> {
        let running = self.running_rollouts();
        rollout::check_name_free(name, as_running(&running)).map_err(|e| ApiError::Conflict {
            detail: e.to_string(),
        })
    }

    /// Rebuilds the rollouts from the store after a restart and publishes their
    /// routes.
    pub(super) async fn load_rollouts(&mut self) -> Result<(), ApiError> {
        let stored = self
            .store
            .rollouts(self.rollout_settings.keep_finished)
            .await?;
        for r in stored {
            let versions = self.store.versions(&r.name).await?;
            let find = |v: &semver::Version| {
                versions
                    .iter()
                    .find(|s| s.version == *v)
                    .ok_or_else(|| {
                        ApiError::Internal(format!(
                            "rollout {} names {}@{v}, which is not stored",
                            r.id, r.name
                        ))
                    })
                    .and_then(parse_stored)
            };
            let candidate = find(&r.candidate)?;
            let control = self
                .catalog
                .standing_version(&r.name)
                .filter(|p| p.doc.version == r.control)
                .cloned()
                .map_or_else(|| find(&r.control), Ok)?;
            let state = rollout::replay(&r.start, r.started_at, &r.events).map_err(|e| {
                ApiError::Internal(format!(
                    "rollout {} of {} does not replay: {e}",
                    r.id, r.name
                ))
            })?;
            let rollback_enforced_us = r
                .finish
                .as_ref()
                .and_then(|f| f["rollback_enforced_us"].as_u64());
            let tracked = Tracked {
                id: r.id,
                candidate,
                control,
                state,
                meter: Arc::default(),
                candidate_snapshot: None,
                rollback_enforced_us,
            };
            let book = if r.finish.is_none() {
                if tracked.state.is_finished() {
                    // A rollback was enforced but its event not stored before a
                    // stop; the stored events say it still runs, and so it does.
                    tracing::warn!(rollout = r.id, "stored rollout replays as finished");
                }
                &mut self.book.running
            } else {
                &mut self.book.finished
            };
            book.insert(r.name.clone(), tracked);
        }
        self.publish_routes();
        Ok(())
    }

    /// Starts a rollout of `candidate` against the standing `control`: stores the
    /// candidate (inactive) with the start, then publishes its first routing.
    /// Returns `None` when the plan finishes at once (a single 100 % step), which
    /// the caller activates immediately instead.
    pub(super) async fn start_rollout(
        &mut self,
        candidate: &Arc<CheckedPolicy>,
        control: Arc<CheckedPolicy>,
        version: StoredVersion,
        now: OffsetDateTime,
    ) -> Result<Option<Activated>, ApiError> {
        let doc = &candidate.doc;
        let plan = Plan::from_activation(&doc.activation).map_err(|errors| {
            ApiError::invalid(
                "activation",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let start = Start {
            salt: rollout::salt_for(&doc.name, &doc.version),
            plan,
            config: self.rollout_settings.analysis.clone(),
        };
        let at = to_millis(now);
        let (state, _) =
            rollout::start(&start, at).map_err(|e| ApiError::Internal(e.to_string()))?;
        if state.is_finished() {
            return Ok(None);
        }
        let strategy = strategy_name(&start.plan);
        let event = NewEvent {
            at: now,
            kind: "rollout.started".into(),
            subject: candidate.version_ref().to_string(),
            detail: json!({
                "strategy": strategy,
                "candidate": doc.version.to_string(),
                "control": control.doc.version.to_string(),
                "salt": start.salt.as_str(),
                "plan": start.plan,
            }),
        };
        let event = self.audited(event).await?;
        let started = self
            .store
            .start_rollout(NewRollout {
                candidate: version,
                control: control.doc.version.clone(),
                start,
                started_at: at,
                event,
            })
            .await?;
        self.catalog
            .record_pushed(&doc.name, doc.policy_id, &doc.version);
        let routing = state.routing();
        self.book.running.insert(
            doc.name.clone(),
            Tracked {
                id: started.rollout,
                candidate: Arc::clone(candidate),
                control: Arc::clone(&control),
                state,
                meter: Arc::default(),
                candidate_snapshot: None,
                rollback_enforced_us: None,
            },
        );
        self.publish_routes();
        Ok(Some(Activated {
            name: doc.name.to_string(),
            version: doc.version.to_string(),
            active: vec![control.doc.version.to_string()],
            removed: Vec::new(),
            snapshot: self.snapshot_id.0,
            note: None,
            rollout: Some(RolloutStarted {
                id: started.rollout,
                strategy: strategy.into(),
                control: control.doc.version.to_string(),
                routing: serde_json::to_value(routing).unwrap_or_default(),
            }),
        }))
    }

    /// Drains every running rollout's measurements and steps it at `now`.
    pub(super) async fn tick_rollouts(
        &mut self,
        now: UnixMillis,
        utilization: Option<BasisPoints>,
    ) {
        let names: Vec<PolicyName> = self.book.running.keys().cloned().collect();
        for name in names {
            let Some(t) = self.book.running.get(&name) else {
                continue;
            };
            let mut m = t.meter.drain();
            let observed = m != Measurements::default();
            m.utilization = utilization;
            let event = if observed || utilization.is_some() {
                Event::Measured(Box::new(m))
            } else {
                Event::Tick
            };
            if let Err(e) = self.step_rollout(&name, event, now).await {
                tracing::error!(rollout = %name, error = %e, "stepping a rollout");
            }
        }
    }

    /// An operator's command for the rollout of `name`.
    pub(super) async fn command_rollout(
        &mut self,
        name: &PolicyName,
        command: RolloutCommand,
        now: UnixMillis,
    ) -> Result<RolloutStatus, ApiError> {
        if !self.book.running.contains_key(name) {
            return match self.book.finished.get(name) {
                Some(t) => Err(ApiError::Conflict {
                    detail: format!(
                        "the rollout of {}@{} has finished ({}); `{}` does not apply",
                        name,
                        t.candidate.doc.version,
                        state_name(&t.state),
                        command_name(command)
                    ),
                }),
                None => Err(no_rollout(name)),
            };
        }
        self.step_rollout(name, Event::Command(command), now)
            .await?;
        self.rollout_status(Some(name), now)
            .map(|mut v| v.remove(0))
    }

    /// Every known rollout (running first, by name), or the one of `name`.
    pub(super) fn rollout_status(
        &self,
        name: Option<&PolicyName>,
        now: UnixMillis,
    ) -> Result<Vec<RolloutStatus>, ApiError> {
        let status = |t: &Tracked| RolloutStatus {
            id: t.id,
            name: t.candidate.doc.name.to_string(),
            candidate: t.candidate.doc.version.to_string(),
            control: t.control.doc.version.to_string(),
            strategy: strategy_name(&t.state.plan).into(),
            state: state_name(&t.state).into(),
            rollback_enforced_us: t.rollback_enforced_us,
            report: rollout::report(&t.state, now),
        };
        match name {
            Some(n) => self
                .book
                .running
                .get(n)
                .or_else(|| self.book.finished.get(n))
                .map(|t| vec![status(t)])
                .ok_or_else(|| no_rollout(n)),
            None => Ok(self
                .book
                .running
                .values()
                .chain(self.book.finished.values())
                .map(status)
                .collect()),
        }
    }

    /// Applies one event to a running rollout and carries out its effects.
    async fn step_rollout(
        &mut self,
        name: &PolicyName,
        event: Event,
        now: UnixMillis,
    ) -> Result<(), ApiError> {
        let begun = Instant::now();
        let t = self
            .book
            .running
            .get(name)
            .ok_or_else(|| no_rollout(name))?;
        let (next, effects) =
            rollout::step(&t.state, &event, now).map_err(|e| ApiError::Conflict {
                detail: format!("rollout of {name}: {e}"),
            })?;
        if effects.is_empty() && !next.changed_since(&t.state) {
            if let Some(t) = self.book.running.get_mut(name) {
                t.state = next;
            }
            return Ok(());
        }
        let (id, candidate, control) = (t.id, Arc::clone(&t.candidate), Arc::clone(&t.control));
        let rolls_back = effects.iter().any(|e| matches!(e, Effect::Rollback));
        let promotes = effects.iter().any(|e| matches!(e, Effect::Promote));

        // A rollback first: the routes without this rollout are the stored state.
        let mut enforced_us = None;
        if rolls_back {
            if let Some(t) = self.book.running.get_mut(name) {
                t.state = next.clone();
            }
            self.publish_routes();
            let us = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
            enforced_us = Some(us);
            if let Some(t) = self.book.running.get_mut(name) {
                t.rollback_enforced_us = Some(us);
            }
        }

        let at = from_millis(now.max(next.updated_at));
        let subject = candidate.version_ref().to_string();
        let report = rollout::report(&next, now);
        let mut records = Vec::new();
        for e in &effects {
            if let Effect::Record(r) = e {
                let mut detail = json!({
                    "rollout": id,
                    "candidate": candidate.doc.version.to_string(),
                    "control": control.doc.version.to_string(),
                    "record": r,
                    "totals": report.totals,
                    "triggers": report.triggers,
                });
                if matches!(r.verdict, Verdict::Rollback { .. }) {
                    detail["rollback_enforced_us"] = json!(enforced_us);
                }
                let event = NewEvent {
                    at,
                    kind: record_kind(r).into(),
                    subject: subject.clone(),
                    detail,
                };
                records.push(self.audited_or_marked(event).await?);
            }
        }

        let mut promotion: Option<ActivationPlan> = None;
        let finish = if next.is_finished() {
            let activate = if promotes {
                let plan = self.catalog.plan_promotion(&candidate);
                let event = NewEvent {
                    at,
                    kind: "policy.promoted".into(),
                    subject: subject.clone(),
                    detail: json!({
                        "rollout": id,
                        "removed": plan.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    }),
                };
                let change = super::policy_change(&plan, None, self.audited(event).await?);
                promotion = Some(plan);
                Some(change)
            } else {
                None
            };
            Some(RolloutFinish {
                summary: json!({
                    "finish": state_name(&next),
                    "at": next.updated_at,
                    "rollback_enforced_us": enforced_us,
                }),
                activate,
            })
        } else {
            None
        };
        let stored = self
            .store
            .append_rollout_event(RolloutStep {
                rollout: id,
                event: Stamped { at: now, event },
                records,
                finish,
            })
            .await;
        let activation_event = match stored {
            Ok((_, activated)) => activated,
            Err(e) if rolls_back => {
                // Enforced already; the store still has the rollout running, so a
                // restart resumes it and the analysis decides again.
                tracing::error!(rollout = id, error = %e, "storing a rollback");
                None
            }
            Err(e) => return Err(e.into()),
        };

        if let Some(t) = self.book.running.get_mut(name) {
            t.state = next;
        }
        if let (Some(plan), Some(event)) = (&promotion, activation_event) {
            self.catalog.apply(plan);
            self.snapshot_id = SnapshotId(event);
        }
        let finished = self
            .book
            .running
            .get(name)
            .is_some_and(|t| t.state.is_finished());
        if finished && let Some(t) = self.book.running.remove(name) {
            self.book.finished.insert(name.clone(), t);
        }
        if promotion.is_some() {
            // Publishes the promoted set, and the routes without this rollout.
            self.recompile()?;
        } else {
            self.publish_routes();
        }
        if let Some(Verdict::Rollback { cause }) = effects.iter().find_map(|e| match e {
            Effect::Record(r) => Some(&r.verdict),
            _ => None,
        }) {
            tracing::warn!(rollout = %name, cause = ?cause_name(cause), enforced_us, "rollout rolled back");
        }
        Ok(())
    }

    /// Publishes the routes of the running rollouts over the current snapshot,
    /// rebuilding a candidate snapshot only when the set in force changed.
    pub(super) fn publish_routes(&mut self) {
        let control = self.published.snapshot.load_full();
        let mut routes = Vec::new();
        for (name, t) in &mut self.book.running {
            if t.state.is_finished() {
                continue;
            }
            let candidate = match &t.candidate_snapshot {
                Some((base, built)) if Arc::ptr_eq(base, &control) => Arc::clone(built),
                _ => {
                    let change = InForceChange {
                        before: Some(Arc::clone(&t.control)),
                        after: Some(Arc::clone(&t.candidate)),
                    };
                    match control.patch(control.id(), &[change], control.next_change_at()) {
                        Ok(s) => {
                            let s = Arc::new(s);
                            t.candidate_snapshot = Some((Arc::clone(&control), Arc::clone(&s)));
                            s
                        }
                        Err(e) => {
                            tracing::error!(rollout = %name, error = %e, "building the candidate snapshot; its decisions use the control");
                            continue;
                        }
                    }
                }
            };
            routes.push(Route {
                id: t.id,
                name: name.clone(),
                scopes: t.scopes(),
                salt: t.state.salt.clone(),
                routing: t.state.routing(),
                control: Arc::clone(&control),
                candidate,
                meter: Arc::clone(&t.meter),
            });
        }
        self.published.rollouts.store(Arc::new(Routes { routes }));
    }
}

/// The admission checks' view of the running rollouts.
pub(super) fn as_running(
    running: &[(PolicyName, semver::Version, Vec<Scope>)],
) -> impl Iterator<Item = Running<'_>> + Clone {
    running.iter().map(|(name, candidate, scopes)| Running {
        name,
        candidate,
        scopes,
    })
}

fn no_rollout(name: &PolicyName) -> ApiError {
    ApiError::NotFound {
        what: format!("rollout of policy {name}"),
    }
}

fn command_name(c: RolloutCommand) -> &'static str {
    match c {
        RolloutCommand::Promote => "promote",
        RolloutCommand::Pause => "pause",
        RolloutCommand::Resume => "resume",
        RolloutCommand::Abort => "abort",
    }
}

fn cause_name(c: &Cause) -> String {
    match c {
        Cause::Statistic { finding } => format!("statistic {:?}", finding.metric),
        Cause::Trigger { hit } => format!("trigger {:?}", hit.trigger),
        Cause::Operator => "operator".into(),
    }
}
