//! Operator controls: kill switches, quarantine release, escalation approval, and
//! agent registration (pack and attributes, which become Cedar entity data).

use axum::Json;
use axum::extract::{Path, State};
use dynscale_core::controls::{Escalation, EscalationStatus, KillScope, Quarantine};
use dynscale_core::ids::{AgentId, PackId};
use dynscale_core::quota::Leases;
use dynscale_store::AgentRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::node::Node;
use crate::owner::Command;
use crate::wire::{Body, Params, decode};

/// A kill switch: `{"scope": "global"}`, `{"scope": "pack", "id": "alpha"}` or
/// `{"scope": "agent", "id": "a1"}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitch {
    /// global, pack or agent.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl KillSwitch {
    fn parse(&self) -> Result<KillScope, ApiError> {
        let id = |what: &str| {
            self.id.clone().filter(|i| !i.is_empty()).ok_or_else(|| {
                ApiError::invalid("id", format!("a {what} kill switch needs the {what} id"))
            })
        };
        match self.scope.as_str() {
            "global" if self.id.is_none() => Ok(KillScope::Global),
            "global" => Err(ApiError::invalid(
                "id",
                "the global kill switch takes no id",
            )),
            "pack" => Ok(KillScope::Pack(PackId::new(id("pack")?))),
            "agent" => Ok(KillScope::Agent(AgentId::new(id("agent")?))),
            other => Err(ApiError::invalid(
                "scope",
                format!("`{other}` is not one of global, pack, agent"),
            )),
        }
    }

    fn from_scope(scope: &KillScope) -> Self {
        match scope {
            KillScope::Global => KillSwitch {
                scope: "global".into(),
                id: None,
            },
            KillScope::Pack(p) => KillSwitch {
                scope: "pack".into(),
                id: Some(p.to_string()),
            },
            KillScope::Agent(a) => KillSwitch {
                scope: "agent".into(),
                id: Some(a.to_string()),
            },
        }
    }
}

/// The kill switches in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct KillSwitches {
    pub kill_switches: Vec<KillSwitch>,
}

/// Whether a change applied (false when it was already so).
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    pub changed: bool,
}

/// Lists the kill switches in force.
#[utoipa::path(get, path = "/v1/kill", tag = "controls", responses((status = 200, body = KillSwitches)))]
pub async fn kill_list(State(node): State<Node>) -> Json<KillSwitches> {
    let controls = node.published.controls.load();
    let mut scopes: Vec<&KillScope> = controls.kill_switches.iter().collect();
    scopes.sort();
    Json(KillSwitches {
        kill_switches: scopes.into_iter().map(KillSwitch::from_scope).collect(),
    })
}

async fn kill_change(node: &Node, body: &[u8], set: bool) -> Result<Json<Changed>, ApiError> {
    let scope = decode::<KillSwitch>(body)?.parse()?;
    let changed = node
        .owner
        .call(|reply| Command::Kill { scope, set, reply })
        .await?;
    Ok(Json(Changed { changed }))
}

/// Sets a kill switch: everything under it is denied from the next decision on.
#[utoipa::path(post, path = "/v1/kill", tag = "controls", request_body = KillSwitch,
    responses((status = 200, body = Changed), (status = 422, body = crate::error::Problem)))]
pub async fn kill(State(node): State<Node>, Body(body): Body) -> Result<Json<Changed>, ApiError> {
    kill_change(&node, &body, true).await
}

/// Releases a kill switch.
#[utoipa::path(post, path = "/v1/kill/release", tag = "controls", request_body = KillSwitch,
    responses((status = 200, body = Changed), (status = 422, body = crate::error::Problem)))]
pub async fn kill_release(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<Changed>, ApiError> {
    kill_change(&node, &body, false).await
}

/// An agent as the node knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentState {
    pub id: String,
    /// The registered pack, if registered.
    pub pack: Option<String>,
    /// Registered attributes.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// The quarantine in force, if any.
    #[schema(value_type = Option<Object>)]
    pub quarantine: Option<Quarantine>,
    /// The kill switch covering the agent (with its registered pack), if any.
    pub kill_switch: Option<KillSwitch>,
}

/// Shows an agent: registration, quarantine and kill switch.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "controls", params(("id" = String, Path)),
    responses((status = 200, body = AgentState)))]
pub async fn agent_show(State(node): State<Node>, Path(id): Path<String>) -> Json<AgentState> {
    let agent = AgentId::new(id.as_str());
    let agents = node.published.agents.load();
    let profile = agents.get(&agent);
    let controls = node.published.controls.load();
    let pack = profile.and_then(|p| p.pack.clone());
    Json(AgentState {
        id,
        pack: pack.as_ref().map(ToString::to_string),
        attributes: profile.map(|p| p.attributes.clone()).unwrap_or_default(),
        quarantine: controls.quarantined.get(&agent).cloned(),
        kill_switch: controls
            .kill_switch_for(&agent, pack.as_ref())
            .map(|s| KillSwitch::from_scope(&s)),
    })
}

/// Registration of an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    /// The agent's pack: `principal in Pack::"<pack>"` holds for it.
    pub pack: Option<String>,
    /// Attributes of the agent's Cedar entity (e.g. `credit_score`, `roles`); they
    /// override what requests claim.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// Registers (or re-registers) an agent.
#[utoipa::path(put, path = "/v1/agents/{id}", tag = "controls", params(("id" = String, Path)),
    request_body = AgentRegistration,
    responses((status = 200, body = Changed), (status = 422, body = crate::error::Problem)))]
pub async fn agent_register(
    State(node): State<Node>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Changed>, ApiError> {
    let reg: AgentRegistration = decode(&body)?;
    let record = AgentRecord {
        id: AgentId::new(id),
        pack: reg.pack.map(PackId::new),
        attributes: reg.attributes,
    };
    node.owner
        .call(|reply| Command::PutAgent { record, reply })
        .await?;
    Ok(Json(Changed { changed: true }))
}

/// Releases an agent from quarantine.
#[utoipa::path(post, path = "/v1/agents/{id}/release", tag = "controls", params(("id" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = crate::error::Problem, description = "The agent is not quarantined")))]
pub async fn agent_release(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let agent = AgentId::new(id.as_str());
    let released = node
        .owner
        .call(|reply| Command::Release { agent, reply })
        .await?;
    if released {
        Ok(Json(Changed { changed: true }))
    } else {
        Err(ApiError::NotFound {
            what: format!("a quarantine of agent {id}"),
        })
    }
}

/// How many leases a release freed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    pub released: usize,
}

/// Frees the concurrency leases of an allowed action (its `lease_id`), so the next
/// action under the same limit may start. Leases also expire after their TTL.
#[utoipa::path(post, path = "/v1/leases/{id}/release", tag = "quotas", params(("id" = String, Path, description = "The decision's lease_id")),
    responses((status = 200, body = Released), (status = 404, body = crate::error::Problem, description = "No lease of this id is live (released or expired)"),
        (status = 422, body = crate::error::Problem, description = "Not a lease id")))]
pub async fn lease_release(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Released>, ApiError> {
    let leases = Leases::parse(&id).ok_or_else(|| {
        ApiError::invalid(
            "id",
            format!(
                "`{id}` is not a lease id (hex numbers joined by `.`, as in a decision's lease_id)"
            ),
        )
    })?;
    match node.quotas.release(&leases) {
        0 => Err(ApiError::NotFound {
            what: format!("a live lease {id} (it was released or has expired)"),
        }),
        released => Ok(Json(Released { released })),
    }
}

/// Agents in quarantine.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineList {
    #[schema(value_type = Vec<Object>)]
    pub quarantines: Vec<Quarantine>,
}

/// Lists the agents in quarantine.
#[utoipa::path(get, path = "/v1/quarantines", tag = "controls", responses((status = 200, body = QuarantineList)))]
pub async fn quarantines(State(node): State<Node>) -> Json<QuarantineList> {
    let controls = node.published.controls.load();
    let mut quarantines: Vec<Quarantine> = controls.quarantined.values().cloned().collect();
    quarantines.sort_by_key(|a| a.since);
    Json(QuarantineList { quarantines })
}

/// Query of the escalation list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EscalationQuery {
    /// pending, approved, denied or used.
    pub status: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Escalations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationList {
    #[schema(value_type = Vec<Object>)]
    pub escalations: Vec<Escalation>,
}

/// Lists escalations.
#[utoipa::path(get, path = "/v1/escalations", tag = "controls", params(EscalationQuery),
    responses((status = 200, body = EscalationList), (status = 422, body = crate::error::Problem)))]
pub async fn escalations(
    State(node): State<Node>,
    Params(q): Params<EscalationQuery>,
) -> Result<Json<EscalationList>, ApiError> {
    let status = q
        .status
        .map(|s| {
            EscalationStatus::parse(&s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("`{s}` is not one of pending, approved, denied, used"),
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(EscalationList {
        escalations: node.store.escalations(status, limit).await?,
    }))
}

fn parse_escalation_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id)
        .map_err(|e| ApiError::invalid("id", format!("`{id}` is not an escalation id: {e}")))
}

async fn find_escalation(node: &Node, id: Uuid) -> Result<Escalation, ApiError> {
    node.store
        .escalation(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("escalation {id}"),
        })
}

/// Shows one escalation.
#[utoipa::path(get, path = "/v1/escalations/{id}", tag = "controls", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem)))]
pub async fn escalation(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Escalation>, ApiError> {
    Ok(Json(
        find_escalation(&node, parse_escalation_id(&id)?).await?,
    ))
}

async fn decide_escalation(
    node: &Node,
    id: Uuid,
    to: EscalationStatus,
) -> Result<Json<Escalation>, ApiError> {
    let current = find_escalation(node, id).await?;
    let applied = node
        .owner
        .call(|reply| Command::SetEscalation {
            id,
            from: EscalationStatus::Pending,
            to,
            reply,
        })
        .await?;
    if !applied {
        return Err(ApiError::Conflict {
            detail: format!(
                "escalation {id} is {}, not pending",
                current.status.as_str()
            ),
        });
    }
    Ok(Json(find_escalation(node, id).await?))
}

/// Approves a pending escalation: the same action, retried, is let through once.
#[utoipa::path(post, path = "/v1/escalations/{id}/approve", tag = "controls", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn escalation_approve(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Escalation>, ApiError> {
    decide_escalation(&node, parse_escalation_id(&id)?, EscalationStatus::Approved).await
}

/// Denies a pending escalation and closes it.
#[utoipa::path(post, path = "/v1/escalations/{id}/deny", tag = "controls", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn escalation_deny(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<Escalation>, ApiError> {
    decide_escalation(&node, parse_escalation_id(&id)?, EscalationStatus::Denied).await
}
