//! A running node's shared handle: the published state the decision path reads, the
//! owner that applies changes, and the decision service that joins them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dynscale_core::audit_entry::DecisionRecord;
use dynscale_core::controls::{Escalation, EscalationStatus, Quarantine};
use dynscale_core::decision::{self, DecisionEffect, Outcome};
use dynscale_core::ids::{AgentId, PackId};
use dynscale_core::quota::{Leases, QuotaOutcome};
use dynscale_core::request::ActionRequest;
use dynscale_core::rollout::{Arm, ArmTag, BasisPoints, FeedbackResult, Routing, UnixMillis};
use dynscale_core::scale::{DecisionSample, UnixMs};
use dynscale_core::snapshot::Snapshot;
use dynscale_store::StateStore;
use serde_json::Map;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::monitor::Scale;
use crate::owner::{Command, OwnerHandle, Published};
use crate::quotas::Quotas;
use crate::recorder::Audit;
use crate::rollouts::{FeedbackIndex, now_millis};
use crate::wire::{
    DecisionContext, EvaluationRequest, FeedbackOutcome, FeedbackRecorded, FeedbackRequest,
    RolloutArm,
};

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) published: Arc<Published>,
    pub(crate) owner: OwnerHandle,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) audit: Audit,
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) scale: Arc<Scale>,
    pub(crate) feedback: Arc<FeedbackIndex>,
}

impl Node {
    /// The node's audit log.
    pub fn audit_log(&self) -> &dynscale_store::audit::AuditLog {
        self.audit.log()
    }

    /// Whether the node's policies are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Decides one request, carries out its effects and appends it to the audit log;
    /// the answer carries the entry's `audit_index`.
    pub async fn decide(&self, req: &EvaluationRequest) -> Result<DecisionContext, ApiError> {
        let (mut ctx, pending) = self.decide_unlogged(req).await?;
        self.log(std::slice::from_mut(&mut ctx), vec![pending])
            .await?;
        Ok(ctx)
    }

    /// Appends the entries of decided requests and fills in their audit indexes. When
    /// the log cannot take them, decisions fail closed (503) unless configured open,
    /// in which case they are answered unaudited, with a warning.
    pub async fn log(
        &self,
        decided: &mut [DecisionContext],
        pending: Vec<Pending>,
    ) -> Result<(), ApiError> {
        let (entries, tallies): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|p| (p.entry, p.tally)).unzip();
        match self.audit.append(entries).await {
            Ok(indexes) => {
                for (ctx, index) in decided.iter_mut().zip(indexes) {
                    ctx.audit_index = Some(index);
                }
                self.count(decided, &tallies, false);
                Ok(())
            }
            Err(ApiError::Unavailable { .. }) if self.audit.fails_open() => {
                for ctx in decided.iter_mut() {
                    ctx.warnings
                        .push("not audited: the audit log is full (fail-open)".into());
                }
                self.count(decided, &tallies, false);
                Ok(())
            }
            Err(e) => {
                // Not acknowledged: the leases these decisions took are given back.
                for ctx in decided.iter() {
                    if let Some(leases) = ctx.lease_id.as_deref().and_then(Leases::parse) {
                        self.quotas.release(&leases);
                    }
                }
                self.count(decided, &tallies, true);
                Err(e)
            }
        }
    }

    /// Counts decisions in the metrics (answered ones) and in the scale recorder
    /// (every one, failed ones as errors against the SLO).
    fn count(&self, decided: &[DecisionContext], tallies: &[Tally], failed: bool) {
        let now = UnixMs::from_datetime(OffsetDateTime::now_utc());
        for (ctx, tally) in decided.iter().zip(tallies) {
            if !failed {
                self.metrics.decision(&ctx.outcome);
            }
            let denied = !allowed(&ctx.outcome) && ctx.outcome != Outcome::Throttle.as_str();
            self.scale.recorder.record(
                now,
                &DecisionSample {
                    latency: tally.started.elapsed(),
                    error: failed,
                    denied,
                    pack: tally.pack.as_ref(),
                },
            );
        }
    }

    /// Decides one request and carries out what the decision asks for (quarantine,
    /// escalation) before returning, so the answer never runs ahead of the state.
    /// Returns the answer and what [`Node::log`] still has to append and count.
    pub async fn decide_unlogged(
        &self,
        req: &EvaluationRequest,
    ) -> Result<(DecisionContext, Pending), ApiError> {
        let started = Instant::now();
        let agents = self.published.agents.load();
        let input = req.action_input(self.config.default_namespace.as_deref());
        let action =
            ActionRequest::build(&input, agents.get(&AgentId::new(req.subject.id.as_str())))?;
        let decision_id = Uuid::now_v7();
        // At most two rounds: an approval consumed by a concurrent retry makes this
        // one decide again under the updated controls.
        for _ in 0..2 {
            let snapshot = self.published.snapshot.load();
            let controls = self.published.controls.load();
            // A request in a rollout's scope is decided by its arm's snapshot; any
            // other by the set in force, as before.
            let routes = self.published.rollouts.load();
            let route = routes
                .find(&action.namespace)
                .map(|r| (r, r.routing.enforced_arm(&r.salt, &action.agent)));
            let enforced: &Arc<Snapshot> = match route {
                Some((r, arm)) => r.snapshot(arm),
                None => &snapshot,
            };
            let evaluating = Instant::now();
            let mut d = match decision::decide(enforced, &controls, &action) {
                Ok(d) => d,
                Err(e) => {
                    if let Some((r, arm)) = route {
                        r.meter.failed(decision_id, arm);
                    }
                    return Err(e.into());
                }
            };
            let took = evaluating.elapsed();
            if let Some(evaluator) = d.evaluator {
                self.metrics.evaluated(evaluator);
            }
            let policy_outcome = d.outcome;
            let mut lease_id = None;
            let mut retry_after = None;
            if d.outcome.is_allowed() {
                match self.quotas.enforce(enforced, &action, input.context)? {
                    QuotaOutcome::Pass { leases } => {
                        lease_id = (!leases.is_empty()).then(|| leases.to_string());
                    }
                    QuotaOutcome::Throttle(t) => {
                        self.metrics.throttled(&t.rule);
                        // A throttled action has not happened: it consumes no
                        // approval and asks for no other effect.
                        d.outcome = Outcome::Throttle;
                        d.reasons = vec![t.reason];
                        d.effect = None;
                        retry_after = t.retry_after.map(|r| r.as_secs_f64());
                    }
                }
            }
            let mut escalation_id = None;
            match &d.effect {
                None => {}
                Some(DecisionEffect::QuarantineAgent { reason }) => {
                    let quarantine = Quarantine {
                        agent: action.agent.clone(),
                        since: OffsetDateTime::now_utc(),
                        decision_id,
                        reason: reason.clone(),
                    };
                    self.owner
                        .call(|reply| Command::Quarantine { quarantine, reply })
                        .await?;
                }
                Some(DecisionEffect::OpenEscalation { reason }) => {
                    let escalation = Escalation {
                        id: Uuid::now_v7(),
                        decision_id,
                        fingerprint: action.fingerprint.clone(),
                        agent: action.agent.clone(),
                        action: action.action.clone(),
                        resource: action.resource.clone(),
                        namespace: action.namespace.to_string(),
                        reason: reason.clone(),
                        created_at: OffsetDateTime::now_utc(),
                        status: EscalationStatus::Pending,
                        decided_at: None,
                    };
                    escalation_id = Some(escalation.id);
                    self.owner
                        .call(|reply| Command::OpenEscalation { escalation, reply })
                        .await?;
                }
                Some(DecisionEffect::ConsumeApproval { escalation }) => {
                    let consumed = self
                        .owner
                        .call(|reply| Command::SetEscalation {
                            id: *escalation,
                            from: EscalationStatus::Approved,
                            to: EscalationStatus::Used,
                            reply,
                        })
                        .await?;
                    if !consumed {
                        continue;
                    }
                }
            }
            let at = OffsetDateTime::now_utc();
            let policies: Vec<String> = d.policies.iter().map(ToString::to_string).collect();
            let entry = self.audit.decision_entry(
                DecisionRecord {
                    decision_id,
                    at,
                    outcome: d.outcome,
                    snapshot: d.snapshot.0,
                    agent: action.agent.to_string(),
                    pack: action.pack.as_ref().map(ToString::to_string),
                    action: action.action.clone(),
                    resource: action.resource.clone(),
                    namespace: action.namespace.to_string(),
                    policies: policies.clone(),
                    reasons: d.reasons.clone(),
                    warnings: d.warnings.clone(),
                    context: Map::new(),
                    escalation_id,
                },
                &req.context,
                &action.namespace,
            );
            let rollout = route.map(|(r, arm)| {
                self.measure(
                    r,
                    arm,
                    decision_id,
                    &d,
                    policy_outcome,
                    took,
                    &controls,
                    &action,
                );
                RolloutArm {
                    name: r.name.to_string(),
                    arm: arm_name(arm).to_owned(),
                }
            });
            let ctx = DecisionContext {
                outcome: d.outcome.as_str().to_owned(),
                decision_id,
                reasons: d.reasons,
                warnings: d.warnings,
                errors: d.errors,
                policies,
                snapshot: d.snapshot.0,
                escalation_id,
                retry_after,
                lease_id,
                audit_index: None,
                rollout,
            };
            let tally = Tally {
                started,
                pack: action.pack.clone(),
            };
            return Ok((ctx, Pending { entry, tally }));
        }
        Err(ApiError::Conflict {
            detail: "the approval for this action was used concurrently; retry".into(),
        })
    }
}

impl Node {
    /// Records an in-rollout decision for its arm, remembers its id for feedback,
    /// and in a shadow comparison evaluates the candidate beside the enforced control
    /// (nothing of the candidate's decision is enforced or carried out).
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        route: &crate::rollouts::Route,
        arm: Arm,
        id: Uuid,
        d: &decision::Decision,
        policy_outcome: Outcome,
        took: std::time::Duration,
        controls: &dynscale_core::controls::ControlState,
        action: &ActionRequest,
    ) {
        route
            .meter
            .decided(id, arm, d.outcome, !d.errors.is_empty(), took);
        if route.routing == Routing::Shadow {
            let evaluating = Instant::now();
            match decision::decide(&route.candidate, controls, action) {
                Ok(c) => {
                    let errors = !c.errors.is_empty();
                    route.meter.decided(
                        id,
                        Arm::Candidate,
                        c.outcome,
                        errors,
                        evaluating.elapsed(),
                    );
                    route
                        .meter
                        .compared(id, policy_outcome, (!errors).then_some(c.outcome));
                }
                Err(_) => {
                    route.meter.failed(id, Arm::Candidate);
                    route.meter.compared(id, policy_outcome, None);
                }
            }
        }
        self.feedback.insert(
            id,
            ArmTag {
                rollout: route.id,
                arm,
            },
            now_millis(),
        );
    }

    /// Counts an agent's report on an in-rollout decision for the arm that made it.
    pub async fn feedback(&self, req: &FeedbackRequest) -> Result<FeedbackRecorded, ApiError> {
        if !(req.latency_ms.is_finite() && req.latency_ms >= 0.0) {
            return Err(ApiError::invalid(
                "latency_ms",
                format!(
                    "{} is not a non-negative number of milliseconds",
                    req.latency_ms
                ),
            ));
        }
        let tag = self
            .feedback
            .take(req.decision_id, now_millis())
            .map_err(|e| ApiError::Missing {
                detail: e.to_string(),
            })?;
        let routes = self.published.rollouts.load();
        let route = routes.by_id(tag.rollout).ok_or_else(|| ApiError::Missing {
            detail: format!(
                "decision {} was made in rollout {}, which has finished; feedback is \
                 counted only while a rollout runs",
                req.decision_id, tag.rollout
            ),
        })?;
        let result = match req.outcome {
            FeedbackOutcome::Success => FeedbackResult::Success,
            FeedbackOutcome::Failure => FeedbackResult::Failure,
            FeedbackOutcome::Error => FeedbackResult::Error,
        };
        route.meter.feedback(
            req.decision_id,
            tag.arm,
            result,
            std::time::Duration::from_secs_f64(req.latency_ms / 1000.0),
        );
        Ok(FeedbackRecorded {
            rollout: route.name.to_string(),
            arm: arm_name(tag.arm).to_owned(),
        })
    }

    /// Runs the rollout loop once at `now`: drains every running rollout's
    /// measurements into it and steps it (timers, analysis, effects). The node's
    /// ticker calls this every `[rollouts] tick_every` with the wall clock; tests
    /// and simulations call it with their own `now`.
    pub async fn rollout_tick(&self, now: UnixMillis) -> Result<(), ApiError> {
        let utilization = self.utilization();
        self.owner
            .call(|reply| Command::RolloutTick {
                now,
                utilization,
                reply,
            })
            .await
    }

    /// Admission's share of its limit in use, in whole percent so that small
    /// changes do not make every tick a stored event.
    fn utilization(&self) -> Option<BasisPoints> {
        utilization(&self.admission)
    }

    /// Steps the rollouts every `tick_every` for as long as the node's owner runs.
    pub(crate) fn spawn_rollout_ticker(&self) {
        let owner = self.owner.downgrade();
        let admission = Arc::clone(&self.admission);
        let every = self.config.rollouts.tick_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(owner) = owner.upgrade() else { break };
                let utilization = utilization(&admission);
                let now = now_millis();
                let done = owner
                    .call(|reply| Command::RolloutTick {
                        now,
                        utilization,
                        reply,
                    })
                    .await;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "rollout tick");
                }
            }
        });
    }
}

/// Admission's share of its limit in use, in whole percent.
fn utilization(admission: &Admission) -> Option<BasisPoints> {
    let limit = admission.limit();
    if limit == 0 {
        return None;
    }
    let percent = (admission.in_flight() * 100 / limit).min(100);
    BasisPoints::from_percent(u32::try_from(percent).unwrap_or(100)).ok()
}

fn arm_name(arm: Arm) -> &'static str {
    match arm {
        Arm::Control => "control",
        Arm::Candidate => "candidate",
    }
}

/// A decided request not yet appended to the audit log.
#[derive(Debug)]
pub struct Pending {
    entry: Vec<u8>,
    tally: Tally,
}

/// What the scale recorder needs of a decision besides its answer.
#[derive(Debug)]
struct Tally {
    started: Instant,
    pack: Option<PackId>,
}

/// Whether an outcome lets the action proceed.
pub fn allowed(outcome: &str) -> bool {
    [Outcome::Allow, Outcome::Warn]
        .iter()
        .any(|o| o.as_str() == outcome)
}
