//! dynscale-server: the running node. Wires the pure core and the store together
//! behind axum routers (AuthZEN, decisions, policy administration, controls, health).
//! Only this crate knows HTTP and the JSON wire types.

mod admission;
pub mod config;
mod error;
mod metrics;
mod monitor;
mod node;
mod openapi;
mod owner;
mod quotas;
pub mod recorder;
mod rollouts;
mod routes;
pub mod wire;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use cedar_policy::Schema;
use dynscale_store::{SqliteStore, StateStore};
use tokio::net::TcpListener;

pub use config::ServerConfig;
pub use error::{ApiError, Problem};
pub use node::Node;
pub use openapi::ApiDoc;

use crate::admission::Admission;
use crate::metrics::Metrics;
use crate::owner::Owner;
use crate::recorder::{Audit, AuditStartError};
use crate::routes::{
    audit, authzen, controls, decide, health, policies, rollouts as rollout_routes, scale,
};
use crate::wire::BodyLimit;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0}: development mode has no authentication and serves \
         loopback addresses only (use 127.0.0.1 or ::1)"
    )]
    NotLoopback(std::net::SocketAddr),
    #[error("reading the Cedar schema {path}: {reason}")]
    Schema { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] dynscale_store::StoreError),
    #[error("opening the audit log: {0}")]
    Audit(#[from] AuditStartError),
    #[error(transparent)]
    Admission(#[from] crate::admission::AdmissionError),
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorStartError),
    #[error(transparent)]
    Quotas(#[from] crate::quotas::QuotaStartError),
    #[error(transparent)]
    Rollouts(#[from] crate::rollouts::RolloutStartError),
    #[error("loading the node state: {0}")]
    Load(ApiError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Reads a Cedar schema in the human (`.cedarschema`) or JSON format.
pub fn load_schema(path: &Path) -> Result<Schema, StartError> {
    let fail = |reason: String| StartError::Schema {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    if text.trim_start().starts_with('{') {
        Schema::from_json_str(&text).map_err(|e| fail(e.to_string()))
    } else {
        Schema::from_cedarschema_str(&text)
            .map(|(schema, _warnings)| schema)
            .map_err(|e| fail(e.to_string()))
    }
}

impl Node {
    /// Opens the embedded store in the configured data directory and loads the state.
    pub async fn open(config: ServerConfig) -> Result<Self, StartError> {
        let store = SqliteStore::open(&config.data_dir).await?;
        Self::with_store(config, Arc::new(store)).await
    }

    /// Builds a node over any state store.
    pub async fn with_store(
        config: ServerConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, StartError> {
        let schema = match &config.cedar_schema {
            Some(path) => Some(Arc::new(load_schema(path)?)),
            None => None,
        };
        config.rollouts.check()?;
        let config = Arc::new(config);
        let audit = Audit::open(Arc::clone(&config))?;
        let (owner, published) = Owner::load(
            Arc::clone(&store),
            audit.clone(),
            config.engine(),
            schema,
            config.rollouts.clone(),
        )
        .await
        .map_err(StartError::Load)?;
        let owner = owner.spawn(1024);
        let quotas = Arc::new(crate::quotas::Quotas::new(&config.quotas)?);
        quotas.spawn_sweeper();
        let metrics = Arc::new(Metrics::new());
        let admission = Arc::new(Admission::new(&config.admission, Arc::clone(&metrics))?);
        let (scale, monitor) = crate::monitor::Scale::new(&config.scale)?;
        crate::monitor::start(
            &scale,
            monitor,
            crate::monitor::LoopParts {
                admission: Arc::clone(&admission),
                audit: audit.clone(),
                owner: owner.clone(),
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
                data_dir: config.data_dir.clone(),
                alerting: config.alerting.clone(),
            },
        )
        .await?;
        let feedback = Arc::new(crate::rollouts::FeedbackIndex::new(
            config.rollouts.feedback_capacity,
            config.rollouts.feedback_ttl,
        ));
        let node = Node {
            published,
            owner,
            store,
            config,
            ready: Arc::new(AtomicBool::new(false)),
            audit,
            quotas,
            metrics,
            admission,
            scale,
            feedback,
        };
        node.spawn_rollout_ticker();
        node.ready.store(true, Ordering::Release);
        Ok(node)
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        let limit = self.config.max_body_bytes;
        Router::new()
            .route("/access/v1/evaluation", post(authzen::evaluation))
            .route("/access/v1/evaluations", post(authzen::evaluations))
            .route("/v1/decide", post(decide::decide))
            .route("/v1/decide/batch", post(decide::decide_batch))
            .route("/v1/policies", post(policies::push).get(policies::list))
            .route("/v1/policies/validate", post(policies::validate))
            .route("/v1/policies/{name}", get(policies::show))
            .route("/v1/policies/{name}/rollback", post(policies::rollback))
            .route(
                "/v1/policies/{name}/upgrade-path",
                get(policies::upgrade_path),
            )
            .route("/v1/events", get(policies::events))
            .route("/v1/rollouts", get(rollout_routes::list))
            .route("/v1/rollouts/{name}", get(rollout_routes::show))
            .route(
                "/v1/rollouts/{name}/{command}",
                post(rollout_routes::command),
            )
            .route("/v1/feedback", post(rollout_routes::feedback))
            .route("/v1/kill", get(controls::kill_list).post(controls::kill))
            .route("/v1/kill/release", post(controls::kill_release))
            .route(
                "/v1/agents/{id}",
                get(controls::agent_show).put(controls::agent_register),
            )
            .route("/v1/agents/{id}/release", post(controls::agent_release))
            .route("/v1/leases/{id}/release", post(controls::lease_release))
            .route("/v1/quarantines", get(controls::quarantines))
            .route("/v1/escalations", get(controls::escalations))
            .route("/v1/escalations/{id}", get(controls::escalation))
            .route(
                "/v1/escalations/{id}/approve",
                post(controls::escalation_approve),
            )
            .route("/v1/escalations/{id}/deny", post(controls::escalation_deny))
            .route("/v1/audit/checkpoint", get(audit::checkpoint))
            .route("/v1/audit/pubkey", get(audit::pubkey))
            .route("/v1/audit/entries", get(audit::entries))
            .route("/v1/audit/decisions/{id}", get(audit::decision))
            .route("/v1/audit/proof/inclusion", get(audit::inclusion))
            .route("/v1/audit/proof/consistency", get(audit::consistency))
            .route("/metrics", get(scale::metrics))
            .route("/v1/scale/status", get(scale::status))
            .route("/v1/scale/alerts", get(scale::alerts))
            .route("/v1/scale/alerts/history", get(scale::alert_history))
            .route(
                "/v1/scale/limits",
                get(scale::limits).put(scale::record_limits),
            )
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/openapi.json", get(openapi::openapi_json))
            .fallback(|| async {
                ApiError::NotFound {
                    what: "route".into(),
                }
            })
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&self.admission),
                admission::admit,
            ))
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::Extension(BodyLimit(limit)))
            .with_state(self.clone())
    }
}

/// Serves the node until `shutdown` completes. Development mode (no authentication)
/// listens on loopback only.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if !config.listen.ip().is_loopback() {
        return Err(StartError::NotLoopback(config.listen));
    }
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    serve_on(listener, config, shutdown).await
}

/// Serves on an already-bound listener (tests bind `127.0.0.1:0`).
pub async fn serve_on(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let node = Node::open(config).await?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    tracing::warn!("development mode: no authentication; serving on loopback {local} only");
    tracing::info!(
        address = %local,
        data_dir = %node.config.data_dir.display(),
        snapshot = node.published.snapshot.load().id().0,
        policies = node.published.snapshot.load().policy_count(),
        "dynscale node ready"
    );
    let served = axum::serve(listener, node.router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve);
    node.close().await;
    served
}

impl Node {
    /// Closes the audit log: drains it, syncs, and signs a final checkpoint.
    pub async fn close(&self) {
        let log = self.audit.log().clone();
        match tokio::task::spawn_blocking(move || log.close()).await {
            Ok(Ok(())) => tracing::info!("audit log closed with a final checkpoint"),
            Ok(Err(e)) => tracing::error!(error = %e, "closing the audit log"),
            Err(e) => tracing::error!(error = %e, "closing the audit log"),
        }
    }
}
