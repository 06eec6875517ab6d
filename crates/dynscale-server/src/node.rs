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
use dynscale_core::scale::{DecisionSample, UnixMs};
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
use crate::wire::{DecisionContext, EvaluationRequest};

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
            let mut d = decision::decide(&snapshot, &controls, &action)?;
            let mut lease_id = None;
            let mut retry_after = None;
            if d.outcome.is_allowed() {
                match self.quotas.enforce(&snapshot, &action, input.context)? {
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
