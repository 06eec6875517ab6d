//! dynscale's own decision API: `POST /v1/decide` and `POST /v1/decide/batch`, the
//! same requests as AuthZEN, answered with the full decision directly.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use crate::error::ApiError;
use crate::node::{Node, allowed};
use crate::wire::{
    Body, DecideBatchItem, DecideBatchRequest, DecideBatchResponse, DecideResponse,
    EvaluationRequest, decode,
};

/// Decides one action.
#[utoipa::path(
    post, path = "/v1/decide", tag = "decisions",
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = DecideResponse),
        (status = 400, body = crate::error::Problem), (status = 413, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
    )
)]
pub async fn decide(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<DecideResponse>, ApiError> {
    let req: EvaluationRequest = decode(&body)?;
    let context = node.decide(&req).await?;
    Ok(Json(DecideResponse {
        allowed: allowed(&context.outcome),
        context,
    }))
}

/// Decides many actions; a failing request answers `{"error": problem}` in its place.
#[utoipa::path(
    post, path = "/v1/decide/batch", tag = "decisions",
    request_body = DecideBatchRequest,
    responses(
        (status = 200, body = DecideBatchResponse),
        (status = 400, body = crate::error::Problem), (status = 413, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
    )
)]
pub async fn decide_batch(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<DecideBatchResponse>, ApiError> {
    let batch: DecideBatchRequest = decode(&body)?;
    if batch.requests.len() > node.config.max_batch {
        return Err(ApiError::invalid(
            "requests",
            format!(
                "{} requests exceed the batch limit of {}",
                batch.requests.len(),
                node.config.max_batch
            ),
        ));
    }
    // Decide every request, then append all their entries in one group commit.
    let mut decided = Vec::with_capacity(batch.requests.len());
    let mut pending = Vec::with_capacity(batch.requests.len());
    let mut slots = Vec::with_capacity(batch.requests.len());
    for req in &batch.requests {
        match node.decide_unlogged(req).await {
            Ok((ctx, p)) => {
                slots.push(Ok(decided.len()));
                decided.push(ctx);
                pending.push(p);
            }
            Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail)),
            Err(e) => slots.push(Err(json!(e.problem()))),
        }
    }
    if !pending.is_empty() {
        node.log(&mut decided, pending).await?;
    }
    let results = slots
        .into_iter()
        .map(|slot| match slot {
            Ok(i) => {
                let context = decided[i].clone();
                DecideBatchItem::Decision(Box::new(DecideResponse {
                    allowed: allowed(&context.outcome),
                    context,
                }))
            }
            Err(error) => DecideBatchItem::Error { error },
        })
        .collect();
    Ok(Json(DecideBatchResponse { results }))
}
