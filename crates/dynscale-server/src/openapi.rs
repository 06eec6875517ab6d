//! The OpenAPI document served at `/openapi.json`, covering every route.

use utoipa::OpenApi;

use crate::routes::{audit, authzen, controls, decide, health, policies, rollouts, scale};

/// dynscale's HTTP API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "dynscale",
        description = "Real-time policy and scale control plane for fleets of AI agents. \
            Decisions follow OpenID AuthZEN 1.0: the namespace is read from \
            `context.namespace` (five segments, service.operation.division.country.org) \
            and the pack from `subject.properties.pack`; dynscale's outcome, reasons, \
            decision id, policy versions and snapshot are in the response `context`. \
            Errors are application/problem+json."
    ),
    paths(
        authzen::evaluation, authzen::evaluations,
        decide::decide, decide::decide_batch,
        policies::push, policies::validate, policies::list, policies::show,
        policies::rollback, policies::upgrade_path, policies::events,
        rollouts::list, rollouts::show, rollouts::command, rollouts::feedback,
        controls::kill_list, controls::kill, controls::kill_release,
        controls::agent_show, controls::agent_register, controls::agent_release, controls::lease_release,
        controls::quarantines, controls::escalations, controls::escalation,
        controls::escalation_approve, controls::escalation_deny,
        audit::checkpoint, audit::pubkey, audit::entries, audit::decision,
        audit::inclusion, audit::consistency,
        scale::metrics, scale::status, scale::alerts, scale::alert_history,
        scale::limits, scale::record_limits,
        health::healthz, health::readyz, openapi_json,
    ),
    tags(
        (name = "authzen", description = "OpenID AuthZEN 1.0 Authorization API"),
        (name = "decisions", description = "dynscale's own decision API"),
        (name = "policies", description = "Policy documents and their history"),
        (name = "controls", description = "Kill switches, quarantine, escalations, agents"),
        (name = "rollouts", description = "Progressive delivery: status, promote/pause/resume/abort, agent feedback"),
        (name = "quotas", description = "Concurrency leases taken by allowed actions"),
        (name = "audit", description = "The verifiable (RFC 9162 Merkle) audit log"),
        (name = "scale", description = "Metrics, scale levels and alerts"),
        (name = "health", description = "Liveness, readiness and this document"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, body = Object, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
