//! Operator controls that override policies: kill switches, quarantines and
//! escalations awaiting a human. The state is an immutable value the server swaps
//! whole, so the decision path reads it without locks.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::{AgentId, PackId};

/// What a kill switch covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "id", rename_all = "lowercase")]
pub enum KillScope {
    Global,
    Pack(PackId),
    Agent(AgentId),
}

impl fmt::Display for KillScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillScope::Global => f.write_str("global"),
            KillScope::Pack(p) => write!(f, "pack {p}"),
            KillScope::Agent(a) => write!(f, "agent {a}"),
        }
    }
}

/// An agent held in quarantine until an operator releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub agent: AgentId,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The decision that quarantined the agent.
    pub decision_id: Uuid,
    /// The policy rule(s) that asked for it.
    pub reason: String,
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscalationStatus {
    /// Waiting for a human.
    Pending,
    /// Approved: the same action, retried, is let through once.
    Approved,
    /// Closed without approval.
    Denied,
    /// Approved and consumed by the retried action.
    Used,
}

impl EscalationStatus {
    /// The status as stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationStatus::Pending => "pending",
            EscalationStatus::Approved => "approved",
            EscalationStatus::Denied => "denied",
            EscalationStatus::Used => "used",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EscalationStatus::Pending,
            "approved" => EscalationStatus::Approved,
            "denied" => EscalationStatus::Denied,
            "used" => EscalationStatus::Used,
            _ => return None,
        })
    }
}

/// An action held for a human's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub id: Uuid,
    /// The decision that escalated.
    pub decision_id: Uuid,
    /// Identifies "the same action" when it is retried (see [`Fingerprint`]).
    pub fingerprint: Fingerprint,
    pub agent: AgentId,
    pub action: String,
    pub resource: String,
    pub namespace: String,
    /// The policy rule(s) that asked for it.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: EscalationStatus,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
}

/// A stable digest of an action request (subject, action, resource, namespace and
/// context), so an approved escalation lets exactly that action through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

/// The controls in force, read by every decision.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    pub kill_switches: HashSet<KillScope>,
    pub quarantined: HashMap<AgentId, Quarantine>,
    /// Approved, unused escalations by the fingerprint of the action they approve.
    pub approved: HashMap<Fingerprint, Uuid>,
}

impl ControlState {
    /// The kill switch that covers this agent, most general first.
    pub fn kill_switch_for(&self, agent: &AgentId, pack: Option<&PackId>) -> Option<KillScope> {
        if self.kill_switches.is_empty() {
            return None;
        }
        if self.kill_switches.contains(&KillScope::Global) {
            return Some(KillScope::Global);
        }
        if let Some(pack) = pack {
            let scope = KillScope::Pack(pack.clone());
            if self.kill_switches.contains(&scope) {
                return Some(scope);
            }
        }
        let scope = KillScope::Agent(agent.clone());
        self.kill_switches.contains(&scope).then_some(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_switch_precedence() {
        let mut s = ControlState::default();
        let a = AgentId::from("a1");
        let p = PackId::from("alpha");
        assert_eq!(s.kill_switch_for(&a, Some(&p)), None);
        s.kill_switches.insert(KillScope::Agent(a.clone()));
        assert_eq!(
            s.kill_switch_for(&a, None),
            Some(KillScope::Agent(a.clone()))
        );
        s.kill_switches.insert(KillScope::Pack(p.clone()));
        assert_eq!(
            s.kill_switch_for(&a, Some(&p)),
            Some(KillScope::Pack(p.clone()))
        );
        assert_eq!(
            s.kill_switch_for(&AgentId::from("b"), None),
            None,
            "other agents outside the pack are untouched"
        );
        s.kill_switches.insert(KillScope::Global);
        assert_eq!(
            s.kill_switch_for(&AgentId::from("b"), None),
            Some(KillScope::Global)
        );
    }
}
