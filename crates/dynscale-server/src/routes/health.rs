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
    /// The audit log.
    pub audit: AuditHealth,
}

/// The audit log's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditHealth {
    /// Entries in the log.
    pub size: u64,
    /// Appends waiting for the writer.
    pub queue_depth: usize,
    /// Bytes the log uses on disk.
    pub used_bytes: u64,
    /// True while the log cannot take entries (byte cap or disk full): writes halt with
    /// 503 and the node is not ready.
    pub full: bool,
}

fn report(node: &Node, status: &'static str) -> Health {
    let snapshot = node.published.snapshot.load();
    let log = node.audit_log();
    Health {
        status,
        snapshot: snapshot.id().0,
        policies: snapshot.policy_count(),
        audit: AuditHealth {
            size: log.size(),
            queue_depth: log.queue_depth(),
            used_bytes: log.used_bytes(),
            full: node.audit.is_full(),
        },
    }
}

/// Answers 200 while the node serves decisions.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(State(node): State<Node>) -> Json<Health> {
    Json(report(&node, "ok"))
}

/// Answers 200 once the node's policies are loaded and its audit log takes entries,
/// 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(node): State<Node>) -> (StatusCode, Json<Health>) {
    if node.is_ready() && !node.audit.is_full() {
        (StatusCode::OK, Json(report(&node, "ready")))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(report(&node, "loading")),
        )
    }
}
