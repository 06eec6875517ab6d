//! Rollouts: their status, the operator's controls (`promote`, `pause`, `resume`,
//! `abort`) and agent feedback on in-rollout decisions.

use axum::Json;
use axum::extract::{Path, State};
use dynscale_core::ids::PolicyName;
use dynscale_core::rollout::Command as RolloutCommand;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::node::Node;
use crate::owner::{Command, RolloutStatus};
use crate::rollouts::now_millis;
use crate::wire::{Body, FeedbackRecorded, FeedbackRequest, decode};

/// Rollout listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutList {
    /// Running rollouts first (by policy name), then the latest finished rollout of
    /// each name.
    pub rollouts: Vec<RolloutStatus>,
}

/// Every running rollout and the latest finished one of each policy.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts", responses((status = 200, body = RolloutList)))]
pub async fn list(State(node): State<Node>) -> Result<Json<RolloutList>, ApiError> {
    let now = now_millis();
    let rollouts = node
        .owner
        .call(|reply| Command::RolloutStatus {
            name: None,
            now,
            reply,
        })
        .await?;
    Ok(Json(RolloutList { rollouts }))
}

/// The rollout of a policy (running, else its latest finished one).
#[utoipa::path(
    get, path = "/v1/rollouts/{name}", tag = "rollouts", params(("name" = String, Path, description = "The policy name")),
    responses((status = 200, body = RolloutStatus), (status = 404, body = crate::error::Problem))
)]
pub async fn show(
    State(node): State<Node>,
    Path(name): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let now = now_millis();
    let name = PolicyName::new(name);
    let mut found = node
        .owner
        .call(|reply| Command::RolloutStatus {
            name: Some(name),
            now,
            reply,
        })
        .await?;
    Ok(Json(found.remove(0)))
}

/// `promote` (make the candidate final now), `pause` (stop advancing; rollback on
/// regression still applies), `resume`, `abort` (return to the control now).
#[utoipa::path(
    post, path = "/v1/rollouts/{name}/{command}", tag = "rollouts",
    params(("name" = String, Path, description = "The policy name"), ("command" = String, Path, description = "promote, pause, resume or abort")),
    responses(
        (status = 200, body = RolloutStatus, description = "The rollout after the command"),
        (status = 404, body = crate::error::Problem, description = "No rollout of that policy, or an unknown command"),
        (status = 409, body = crate::error::Problem, description = "The command does not apply (finished, already paused, not paused)"),
    )
)]
pub async fn command(
    State(node): State<Node>,
    Path((name, command)): Path<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let command = match command.as_str() {
        "promote" => RolloutCommand::Promote,
        "pause" => RolloutCommand::Pause,
        "resume" => RolloutCommand::Resume,
        "abort" => RolloutCommand::Abort,
        other => {
            return Err(ApiError::Missing {
                detail: format!(
                    "`{other}` is not a rollout command; use promote, pause, resume or abort"
                ),
            });
        }
    };
    let now = now_millis();
    let name = PolicyName::new(name);
    let status = node
        .owner
        .call(|reply| Command::SteerRollout {
            name,
            command,
            now,
            reply,
        })
        .await?;
    Ok(Json(status))
}

/// Reports what came of an action decided inside a rollout, for the arm that
/// decided it. Each decision takes one report, within `[rollouts] feedback_ttl`.
#[utoipa::path(
    post, path = "/v1/feedback", tag = "rollouts",
    request_body = FeedbackRequest,
    responses(
        (status = 200, body = FeedbackRecorded),
        (status = 400, body = crate::error::Problem, description = "Malformed JSON"),
        (status = 404, body = crate::error::Problem, description = "Not a recent decision of a running rollout, or already reported"),
        (status = 422, body = crate::error::Problem, description = "A field is missing or invalid (named in `field`)"),
    )
)]
pub async fn feedback(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<FeedbackRecorded>, ApiError> {
    let req: FeedbackRequest = decode(&body)?;
    Ok(Json(node.feedback(&req).await?))
}
