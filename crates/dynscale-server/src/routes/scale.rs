//! The node's view of its own scale: Prometheus metrics at `/metrics`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::node::Node;

/// The metric text exposition (OpenMetrics text, which Prometheus scrapes).
#[utoipa::path(get, path = "/metrics", tag = "scale",
    responses((status = 200, content_type = "application/openmetrics-text", body = String,
        description = "Every metric, prefixed `dynscale_`")))]
pub async fn metrics(State(node): State<Node>) -> Response {
    let m = &node.metrics;
    let log = node.audit_log();
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.audit_queue_depth.set(to_i64(log.queue_depth() as u64));
    m.audit_entries.set(to_i64(log.size()));
    m.audit_bytes.set(to_i64(log.used_bytes()));
    let quotas = node.quotas.stats();
    m.quota_keys.set(to_i64(quotas.quota_keys as u64));
    m.leases_live.set(to_i64(quotas.live_leases as u64));
    m.policies_active.set(to_i64(
        node.published.snapshot.load().in_force().len() as u64
    ));
    let mut resp = m.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
