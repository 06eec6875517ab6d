//! A decision: operator controls first (kill switches, quarantine), then the
//! policies, then escalation approvals. Pure: the effects a decision asks for
//! (quarantine the agent, open or consume an escalation) are returned for the
//! server to carry out before it answers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controls::ControlState;
use crate::ids::SnapshotId;
use crate::policy::RuleEffect;
use crate::request::ActionRequest;
use crate::snapshot::{DefaultDecision, EvalError, Evaluator, PolicyVerdict, RuleHit, Snapshot};

/// The outcome of a decision (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    /// Allowed, with warnings.
    Warn,
    Deny,
    /// Denied, and the agent is quarantined until released.
    Quarantine,
    /// Denied until a human approves.
    Escalate,
    /// Allowed by the policies but over a quota or concurrency limit; ask again after
    /// the decision's `retry_after`.
    Throttle,
}

impl Outcome {
    /// Whether the action may proceed.
    pub fn is_allowed(self) -> bool {
        matches!(self, Outcome::Allow | Outcome::Warn)
    }

    /// The outcome as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
            Outcome::Quarantine => "quarantine",
            Outcome::Escalate => "escalate",
            Outcome::Throttle => "throttle",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the server must carry out before acknowledging the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionEffect {
    /// Put the agent in quarantine.
    QuarantineAgent { reason: String },
    /// Record a pending escalation.
    OpenEscalation { reason: String },
    /// Mark this approved escalation used; if that fails (already used), the action
    /// escalates again.
    ConsumeApproval { escalation: Uuid },
}

/// The outcome for one action, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Why: the determining rules (`name@version#rule`) or the control that decided.
    pub reasons: Vec<String>,
    /// Warnings attached to an allowed action.
    pub warnings: Vec<String>,
    /// Policies skipped because their evaluation failed.
    pub errors: Vec<String>,
    /// `name@version` of every policy evaluated.
    pub policies: Vec<Arc<str>>,
    pub snapshot: SnapshotId,
    pub effect: Option<DecisionEffect>,
    /// Which evaluator decided the policies' part; `None` when a control decided
    /// without evaluating them.
    pub evaluator: Option<Evaluator>,
}

/// Decides one action under the given controls and snapshot.
pub fn decide(
    snapshot: &Snapshot,
    controls: &ControlState,
    req: &ActionRequest,
) -> Result<Decision, EvalError> {
    let plain = |outcome, reason: String| Decision {
        outcome,
        reasons: vec![reason],
        warnings: Vec::new(),
        errors: Vec::new(),
        policies: Vec::new(),
        snapshot: snapshot.id(),
        effect: None,
        evaluator: None,
    };
    if let Some(scope) = controls.kill_switch_for(&req.agent, req.pack.as_ref()) {
        return Ok(plain(Outcome::Deny, format!("kill switch: {scope}")));
    }
    if let Some(q) = controls.quarantined.get(&req.agent) {
        return Ok(plain(
            Outcome::Deny,
            format!(
                "agent {} is quarantined (decision {}: {})",
                q.agent, q.decision_id, q.reason
            ),
        ));
    }
    let eval = snapshot.evaluate(req)?;
    let mut warnings: Vec<String> = eval
        .advisories
        .iter()
        .map(|h| format!("advisory {}", h.label()))
        .collect();
    let labels = |hits: &[RuleHit]| hits.iter().map(RuleHit::label).collect::<Vec<_>>();
    let (outcome, reasons, effect) = match &eval.verdict {
        PolicyVerdict::Forbid(hits) => {
            let has = |e| hits.iter().any(|h| h.effect == e);
            let reasons = labels(hits);
            let reason = reasons.join(", ");
            if has(RuleEffect::Quarantine) {
                let effect = DecisionEffect::QuarantineAgent { reason };
                (Outcome::Quarantine, reasons, Some(effect))
            } else if hits.iter().all(|h| h.effect == RuleEffect::Escalate) {
                // Only when every determining forbid asks for a human may a human's
                // approval let the action through; a plain forbid still denies.
                match controls.approved.get(&req.fingerprint) {
                    Some(id) => (
                        Outcome::Allow,
                        vec![format!("escalation {id} approved ({reason})")],
                        Some(DecisionEffect::ConsumeApproval { escalation: *id }),
                    ),
                    None => (
                        Outcome::Escalate,
                        reasons,
                        Some(DecisionEffect::OpenEscalation { reason }),
                    ),
                }
            } else {
                (Outcome::Deny, reasons, None)
            }
        }
        PolicyVerdict::Permit(hits) => {
            warnings.extend(
                hits.iter()
                    .filter(|h| h.effect == RuleEffect::Warn)
                    .map(|h| format!("warn {}", h.label())),
            );
            let outcome = if warnings.is_empty() {
                Outcome::Allow
            } else {
                Outcome::Warn
            };
            (outcome, labels(hits), None)
        }
        PolicyVerdict::Default(d) => {
            let root = req.namespace.root();
            match d {
                DefaultDecision::Deny => (
                    Outcome::Deny,
                    vec![format!(
                        "no policy permits this action; default of `{root}` is deny"
                    )],
                    None,
                ),
                DefaultDecision::Allow => {
                    let outcome = if warnings.is_empty() {
                        Outcome::Allow
                    } else {
                        Outcome::Warn
                    };
                    let reason = format!("no policy applies; default of `{root}` is allow");
                    (outcome, vec![reason], None)
                }
            }
        }
    };
    if !outcome.is_allowed() {
        // Warnings accompany allowed actions only; a denied one has its reasons.
        warnings.clear();
    }
    Ok(Decision {
        outcome,
        reasons,
        warnings,
        errors: eval.errors,
        policies: eval.policies,
        snapshot: snapshot.id(),
        effect,
        evaluator: Some(eval.evaluator),
    })
}
