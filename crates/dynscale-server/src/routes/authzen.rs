//! OpenID AuthZEN 1.0 Authorization API: `POST /access/v1/evaluation` and the batch
//! `POST /access/v1/evaluations`. dynscale's outcome and reasons go in `context`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::node::{Node, allowed};
use crate::wire::{
    Body, DecisionContext, EvaluationItem, EvaluationRequest, EvaluationResponse,
    EvaluationsRequest, EvaluationsResponse, EvaluationsSemantic, decode,
};

/// Evaluates one access request.
#[utoipa::path(
    post, path = "/access/v1/evaluation", tag = "authzen",
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = EvaluationResponse, description = "The decision; `context` holds outcome, decision_id, reasons, policies, snapshot"),
        (status = 400, body = crate::error::Problem, description = "Malformed JSON"),
        (status = 413, body = crate::error::Problem, description = "Body too large"),
        (status = 422, body = crate::error::Problem, description = "Invalid field or unknown namespace"),
    )
)]
pub async fn evaluation(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<EvaluationResponse>, ApiError> {
    let req: EvaluationRequest = decode(&body)?;
    Ok(Json(evaluate(&node, &req).await?))
}

async fn evaluate(node: &Node, req: &EvaluationRequest) -> Result<EvaluationResponse, ApiError> {
    response(&node.decide(req).await?)
}

fn response(ctx: &DecisionContext) -> Result<EvaluationResponse, ApiError> {
    Ok(EvaluationResponse {
        decision: allowed(&ctx.outcome),
        context: serde_json::to_value(ctx).map_err(|e| ApiError::Internal(e.to_string()))?,
    })
}

/// Evaluates a batch. Each item inherits the top-level subject, action, resource and
/// context it does not set. A failing item answers `decision: false` with
/// `context.error` and does not fail the batch.
#[utoipa::path(
    post, path = "/access/v1/evaluations", tag = "authzen",
    request_body = EvaluationsRequest,
    responses(
        (status = 200, body = EvaluationsResponse, description = "One result per evaluation, in order (a single result when `evaluations` is absent)"),
        (status = 400, body = crate::error::Problem), (status = 413, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
    )
)]
pub async fn evaluations(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let batch: EvaluationsRequest = decode(&body)?;
    if batch.evaluations.is_empty() {
        // AuthZEN: without `evaluations` the request is a single evaluation.
        let req = merge(&batch, &EvaluationItem::default())?;
        let resp = evaluate(&node, &req).await?;
        return serde_json::to_value(resp)
            .map(Json)
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    if batch.evaluations.len() > node.config.max_batch {
        return Err(ApiError::invalid(
            "evaluations",
            format!(
                "{} evaluations exceed the batch limit of {}",
                batch.evaluations.len(),
                node.config.max_batch
            ),
        ));
    }
    let semantic = batch.options.evaluations_semantic;
    // Decide in order (stopping early per the semantic), then append every decision's
    // entry in one group commit before answering.
    let mut decided = Vec::with_capacity(batch.evaluations.len());
    let mut pending = Vec::new();
    let mut slots = Vec::with_capacity(batch.evaluations.len());
    for item in &batch.evaluations {
        let result = match merge(&batch, item) {
            Ok(req) => node.decide_unlogged(&req).await,
            Err(e) => Err(e),
        };
        let allowed_now = match result {
            Ok((ctx, p)) => {
                let ok = allowed(&ctx.outcome);
                slots.push(Ok(decided.len()));
                decided.push(ctx);
                pending.push(p);
                ok
            }
            Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail)),
            Err(e) => {
                slots.push(Err(e.problem()));
                false
            }
        };
        let stop = match semantic {
            EvaluationsSemantic::ExecuteAll => false,
            EvaluationsSemantic::DenyOnFirstDeny => !allowed_now,
            EvaluationsSemantic::PermitOnFirstPermit => allowed_now,
        };
        if stop {
            break;
        }
    }
    if !pending.is_empty() {
        node.log(&mut decided, pending).await?;
    }
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        out.push(match slot {
            Ok(i) => response(&decided[i])?,
            Err(problem) => EvaluationResponse {
                decision: false,
                context: json!({ "error": problem }),
            },
        });
    }
    serde_json::to_value(EvaluationsResponse { evaluations: out })
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn merge(batch: &EvaluationsRequest, item: &EvaluationItem) -> Result<EvaluationRequest, ApiError> {
    let missing = |field: &str| {
        ApiError::invalid(
            field,
            format!("missing field `{field}` (neither in the evaluation nor at the top level)"),
        )
    };
    Ok(EvaluationRequest {
        subject: item
            .subject
            .clone()
            .or_else(|| batch.subject.clone())
            .ok_or_else(|| missing("subject"))?,
        action: item
            .action
            .clone()
            .or_else(|| batch.action.clone())
            .ok_or_else(|| missing("action"))?,
        resource: item
            .resource
            .clone()
            .or_else(|| batch.resource.clone())
            .ok_or_else(|| missing("resource"))?,
        context: item
            .context
            .clone()
            .or_else(|| batch.context.clone())
            .unwrap_or_default(),
    })
}
