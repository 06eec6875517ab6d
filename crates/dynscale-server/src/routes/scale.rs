//! The node's view of its own scale: Prometheus metrics at `/metrics`, signal
//! levels at `/v1/scale/status`, alerts and their history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use dynscale_core::certify::{REPORT_FORMAT, ScaleReport};
use dynscale_core::scale::ScaleStatus;
use dynscale_store::{NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::monitor::AlertView;
use crate::node::Node;
use crate::owner::Command;
use crate::wire::{Body, Params, decode};

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
    m.policies_active
        .set(to_i64(node.published.snapshot.load().policy_count() as u64));
    let mut resp = m.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// The node's scale: every signal with its value and level, decision windows, SLO
/// burn rates, the storage forecast and admission.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    /// The last evaluation (every `scale.evaluate_every`).
    #[schema(value_type = Object)]
    pub status: Arc<ScaleStatus>,
    pub admission: AdmissionReport,
}

/// Admission control now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdmissionReport {
    pub in_flight: usize,
    pub limit: usize,
    /// True while new decisions are refused with 429.
    pub shedding: bool,
}

/// The scale status of this node.
#[utoipa::path(get, path = "/v1/scale/status", tag = "scale",
    responses((status = 200, body = StatusReport),
        (status = 503, body = crate::error::Problem, description = "No evaluation has run yet")))]
pub async fn status(State(node): State<Node>) -> Result<Json<StatusReport>, ApiError> {
    let status = node.scale.status().ok_or_else(|| ApiError::Unavailable {
        detail: "the first scale evaluation has not run yet".into(),
    })?;
    Ok(Json(StatusReport {
        status,
        admission: AdmissionReport {
            in_flight: node.admission.in_flight(),
            limit: node.admission.limit(),
            shedding: node.admission.shedding(),
        },
    }))
}

/// Alerts pending, firing or just resolved.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertList {
    #[schema(value_type = Vec<AlertView>)]
    pub alerts: Arc<Vec<AlertView>>,
}

/// The alerts that are not inactive.
#[utoipa::path(get, path = "/v1/scale/alerts", tag = "scale", responses((status = 200, body = AlertList)))]
pub async fn alerts(State(node): State<Node>) -> Json<AlertList> {
    Json(AlertList {
        alerts: node.scale.alerts(),
    })
}

/// `?limit=` of the history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many transitions, newest first (default 100, at most 10 000).
    pub limit: Option<u32>,
}

/// Alert transitions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertHistory {
    #[schema(value_type = Vec<Object>)]
    pub transitions: Vec<StoredEvent>,
}

/// The persisted history of alert transitions (pending, firing, resolved).
#[utoipa::path(get, path = "/v1/scale/alerts/history", tag = "scale", params(HistoryQuery),
    responses((status = 200, body = AlertHistory), (status = 422, body = crate::error::Problem)))]
pub async fn alert_history(
    State(node): State<Node>,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<AlertHistory>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit > 10_000 {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is above the maximum of 10000"),
        ));
    }
    let transitions = node.store.recent_events("alert.", limit).await?;
    Ok(Json(AlertHistory { transitions }))
}

/// The latest scale report (`dynscale certify`): the measured limits of this node.
#[utoipa::path(get, path = "/v1/scale/limits", tag = "scale",
    responses((status = 200, body = Object, description = "The scale report"),
        (status = 404, body = crate::error::Problem, description = "Never certified")))]
pub async fn limits(State(node): State<Node>) -> Result<Json<ScaleReport>, ApiError> {
    crate::monitor::latest_report(node.store.as_ref())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound {
            what: "a scale report (run `dynscale certify --url …` against this node)".into(),
        })
}

/// What recording a report did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recorded {
    /// The event that holds the report.
    pub event: u64,
}

/// Records a scale report measured by `dynscale certify`; the throughput signal's
/// capacity is its limit from now on.
#[utoipa::path(put, path = "/v1/scale/limits", tag = "scale", request_body = Object,
    responses((status = 200, body = Recorded), (status = 422, body = crate::error::Problem)))]
pub async fn record_limits(
    State(node): State<Node>,
    Body(body): Body,
) -> Result<Json<Recorded>, ApiError> {
    let report: ScaleReport = decode(&body)?;
    if report.format != REPORT_FORMAT {
        return Err(ApiError::invalid(
            "format",
            format!(
                "report format {} is not the one this node reads ({REPORT_FORMAT})",
                report.format
            ),
        ));
    }
    let detail = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    let event = NewEvent {
        at: OffsetDateTime::now_utc(),
        kind: crate::monitor::CERTIFIED.into(),
        subject: report.node_url.clone(),
        detail,
    };
    let id = node
        .owner
        .call(|reply| Command::Record { event, reply })
        .await?;
    node.scale
        .set_certified_rps(report.limit.as_ref().map(|l| l.max_rps));
    Ok(Json(Recorded { event: id }))
}
