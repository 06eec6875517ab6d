//! Policy administration: push (YAML or JSON), validate against the node, list, show,
//! versions, rollback, and the change history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dynscale_core::ids::PolicyName;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::node::Node;
use crate::owner::{Activated, Command, PolicySummary};
use crate::wire::{Body, Params, decode};

/// Query of push and validate.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    /// Allow a major upgrade with `immediate` activation.
    #[serde(default)]
    pub force: bool,
    /// Names the document in findings (e.g. its file path); defaults to `request`.
    pub origin: Option<String>,
}

fn document_text(body: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|e| {
        ApiError::invalid(
            "body",
            format!(
                "the policy document is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Validates, stores and activates a policy document (`activation.strategy: immediate`).
/// Nothing is stored unless every check passes.
#[utoipa::path(
    post, path = "/v1/policies", tag = "policies", params(PushQuery),
    request_body(content = String, content_type = "application/yaml", description = "A policy document, YAML or JSON"),
    responses(
        (status = 201, body = Activated),
        (status = 413, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem, description = "Every validation finding, with file, line, column and field"),
    )
)]
pub async fn push(
    State(node): State<Node>,
    Params(q): Params<PushQuery>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Activated>), ApiError> {
    let text = document_text(&body)?;
    let origin = q.origin.unwrap_or_else(|| "request".into());
    let force = q.force;
    let done = node
        .owner
        .call(|reply| Command::Push {
            origin,
            text,
            force,
            reply,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Runs every check a push would run, against this node's policies, and stores nothing.
#[utoipa::path(
    post, path = "/v1/policies/validate", tag = "policies", params(PushQuery),
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, body = Activated, description = "What a push would activate"), (status = 422, body = crate::error::Problem))
)]
pub async fn validate(
    State(node): State<Node>,
    Params(q): Params<PushQuery>,
    Body(body): Body,
) -> Result<Json<Activated>, ApiError> {
    let text = document_text(&body)?;
    let origin = q.origin.unwrap_or_else(|| "request".into());
    let force = q.force;
    let done = node
        .owner
        .call(|reply| Command::Validate {
            origin,
            text,
            force,
            reply,
        })
        .await?;
    Ok(Json(done))
}

/// Policy listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicySummary>,
}

/// Lists every policy name with its versions and active versions.
#[utoipa::path(get, path = "/v1/policies", tag = "policies", responses((status = 200, body = PolicyList)))]
pub async fn list(State(node): State<Node>) -> Result<Json<PolicyList>, ApiError> {
    let policies = node
        .owner
        .call(|reply| Command::ListPolicies { reply })
        .await?;
    Ok(Json(PolicyList { policies }))
}

/// Query of `show`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// The version to show; default the newest active version (else the newest pushed).
    pub version: Option<String>,
}

/// One stored version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersion {
    pub name: String,
    pub version: String,
    pub policy_id: uuid::Uuid,
    pub active: bool,
    /// `yaml` or `json`.
    pub format: String,
    /// RFC 3339.
    pub pushed_at: String,
    /// The document exactly as pushed.
    pub source: String,
}

async fn summary(node: &Node, name: &str) -> Result<PolicySummary, ApiError> {
    node.owner
        .call(|reply| Command::ListPolicies { reply })
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("policy {name}"),
        })
}

/// Shows one version of a policy, with its source.
#[utoipa::path(
    get, path = "/v1/policies/{name}", tag = "policies", params(("name" = String, Path), ShowQuery),
    responses((status = 200, body = PolicyVersion), (status = 404, body = crate::error::Problem))
)]
pub async fn show(
    State(node): State<Node>,
    Path(name): Path<String>,
    Params(q): Params<ShowQuery>,
) -> Result<Json<PolicyVersion>, ApiError> {
    let info = summary(&node, &name).await?;
    let wanted = match q.version {
        Some(v) => semver::Version::parse(&v).map_err(|e| {
            ApiError::invalid("version", format!("`{v}` is not a semver version: {e}"))
        })?,
        None => {
            let newest = info.active.last().or(info.versions.last());
            newest
                .and_then(|v| semver::Version::parse(v).ok())
                .ok_or_else(|| ApiError::NotFound {
                    what: format!("a version of policy {name}"),
                })?
        }
    };
    let stored = node
        .store
        .versions(&PolicyName::new(name.as_str()))
        .await?
        .into_iter()
        .find(|v| v.version == wanted)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("version {wanted} of policy {name}"),
        })?;
    Ok(Json(PolicyVersion {
        active: info.active.contains(&stored.version.to_string()),
        name: stored.name.to_string(),
        version: stored.version.to_string(),
        policy_id: stored.policy_id,
        format: stored.format,
        pushed_at: stored
            .pushed_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        source: stored.source,
    }))
}

/// Rollback target.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to return to; default the active version's `rollbackPoint`.
    pub to: Option<String>,
}

/// Makes a stored version the active one again (at most 2 major versions back).
#[utoipa::path(
    post, path = "/v1/policies/{name}/rollback", tag = "policies", params(("name" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, body = Activated), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem))
)]
pub async fn rollback(
    State(node): State<Node>,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Json<Activated>, ApiError> {
    let req: RollbackRequest = if body.is_empty() {
        RollbackRequest::default()
    } else {
        decode(&body)?
    };
    let to = req
        .to
        .map(|v| {
            semver::Version::parse(&v)
                .map_err(|e| ApiError::invalid("to", format!("`{v}` is not a semver version: {e}")))
        })
        .transpose()?;
    summary(&node, &name).await?;
    let name = PolicyName::new(name);
    let done = node
        .owner
        .call(|reply| Command::Rollback { name, to, reply })
        .await?;
    Ok(Json(done))
}

/// Query of the change history.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a larger id.
    #[serde(default)]
    pub after: u64,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Change history page.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<dynscale_store::StoredEvent>,
}

/// The change history: policy, kill-switch, quarantine, escalation and agent events.
#[utoipa::path(get, path = "/v1/events", tag = "policies", params(EventsQuery), responses((status = 200, body = EventList)))]
pub async fn events(
    State(node): State<Node>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(EventList {
        events: node.store.events(q.after, limit).await?,
    }))
}

/// Where a policy can be upgraded: the range its dependents accept, the pushed
/// versions above the standing one (majors need a rollout strategy or `--force`),
/// and how far back a rollback may go (two major versions).
#[utoipa::path(
    get, path = "/v1/policies/{name}/upgrade-path", tag = "policies", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem))
)]
pub async fn upgrade_path(
    State(node): State<Node>,
    Path(name): Path<String>,
) -> Result<Json<dynscale_core::catalog::UpgradePath>, ApiError> {
    let name = PolicyName::new(name);
    let path = node
        .owner
        .call(|reply| Command::UpgradePath { name, reply })
        .await?;
    Ok(Json(path))
}
