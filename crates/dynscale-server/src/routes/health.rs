//! Liveness and readiness: `/healthz` once the node serves decisions, `/readyz` once
//! its policies are loaded.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::node::Node;

/// Health and readiness report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// The snapshot in force.
    pub snapshot: u64,
    /// Policy versions in force.
    pub policies: usize,
}

fn report(node: &Node, status: &'static str) -> Health {
    let snapshot = node.published.snapshot.load();
    Health {
        status,
        snapshot: snapshot.id().0,
        policies: snapshot.in_force().len(),
    }
}

/// Answers 200 while the node serves decisions.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(State(node): State<Node>) -> Json<Health> {
    Json(report(&node, "ok"))
}

/// Answers 200 once the node's policies are loaded, 503 before.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(node): State<Node>) -> (StatusCode, Json<Health>) {
    if node.is_ready() {
        (StatusCode::OK, Json(report(&node, "ready")))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(report(&node, "loading")),
        )
    }
}
