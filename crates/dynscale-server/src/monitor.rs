//! The scale loop: every `evaluate_every` it gathers the node's gauges and the
//! decision recorder's windows, runs the pure [`ScaleMonitor`], publishes the status
//! and the alerts for `/v1/scale/*` and `/metrics`, records alert transitions as
//! events (audited, in the store: the alert history) and posts notifications to the
//! configured webhook.
//!
//! After a restart, the latest recorded transition of each alert puts it back in its
//! state, so an alert that was firing does not notify a second time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use dynscale_core::certify::ScaleReport;
use dynscale_core::scale::{
    AlertKey, AlertState, Effect, Gauges, Level, Notification, Phase, RecorderConfig, ScaleConfig,
    ScaleConfigError, ScaleMonitor, ScaleStatus, ShardedRecorder, Transition, UnixMs,
};
use dynscale_store::audit::AuditConfig;
use dynscale_store::{NewEvent, StateStore};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::admission::Admission;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::owner::{Command, OwnerHandle};
use crate::recorder::Audit;

/// Where alert notifications go (`[alerting]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingSettings {
    /// Every notification (firing, repeat, resolved) is POSTed here as JSON.
    pub webhook_url: Option<String>,
    /// How long one webhook call may take.
    pub webhook_timeout_ms: u64,
}

impl Default for AlertingSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_timeout_ms: 5_000,
        }
    }
}

/// Why scale monitoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorStartError {
    #[error(transparent)]
    Config(#[from] ScaleConfigError),
    #[error("[alerting] webhook_url `{url}`: {reason}")]
    Webhook { url: String, reason: String },
    #[error("drawing the scale hash seed: {0}")]
    Seed(getrandom::Error),
}

/// An alert as `/v1/scale/alerts` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub alert: String,
    /// The pack of a per-pack alert.
    pub instance: Option<String>,
    /// pending, firing or resolved.
    #[schema(value_type = String)]
    pub state: Phase,
    /// Since when (RFC 3339).
    pub since: Option<String>,
    #[schema(value_type = String)]
    pub level: Level,
    pub owner: String,
    /// What the rule watches, in words.
    pub condition: String,
    /// Seconds the owner has to respond once it fires.
    pub respond_within_secs: u64,
}

/// The shared side of scale monitoring: the recorder every decision writes to, and
/// what the last evaluation published.
#[derive(Debug)]
pub struct Scale {
    pub(crate) recorder: ShardedRecorder,
    status: ArcSwapOption<ScaleStatus>,
    alerts: ArcSwap<Vec<AlertView>>,
    evaluate_every: Duration,
    /// The certified throughput (`f64` bits; 0 when never certified).
    certified_rps: AtomicU64,
    /// What the loop reads and writes; held here, not by the loop, so that dropping
    /// the node releases the audit log and the store.
    parts: std::sync::OnceLock<LoopParts>,
}

impl Scale {
    /// The recorder and an idle monitor for `config`.
    pub fn new(config: &ScaleConfig) -> Result<(Arc<Scale>, ScaleMonitor), MonitorStartError> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(MonitorStartError::Seed)?;
        let seed = u64::from_le_bytes(seed);
        let monitor = ScaleMonitor::new(config.clone(), seed)?;
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let recorder =
            ShardedRecorder::new(RecorderConfig::from_scale(config, seed), shards, unix_now());
        let scale = Scale {
            recorder,
            status: ArcSwapOption::empty(),
            alerts: ArcSwap::from_pointee(Vec::new()),
            evaluate_every: config.evaluate_every,
            certified_rps: AtomicU64::new(0),
            parts: std::sync::OnceLock::new(),
        };
        Ok((Arc::new(scale), monitor))
    }

    /// The last evaluation, if one has run.
    pub fn status(&self) -> Option<Arc<ScaleStatus>> {
        self.status.load_full()
    }

    /// Sets the throughput this node was certified for (the throughput signal's
    /// capacity).
    pub fn set_certified_rps(&self, rps: Option<f64>) {
        let bits = rps
            .filter(|r| r.is_finite() && *r > 0.0)
            .map_or(0, f64::to_bits);
        self.certified_rps.store(bits, Ordering::Relaxed);
    }

    fn certified_rps(&self) -> Option<f64> {
        match self.certified_rps.load(Ordering::Relaxed) {
            0 => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// Alerts pending, firing or just resolved at the last evaluation.
    pub fn alerts(&self) -> Arc<Vec<AlertView>> {
        self.alerts.load_full()
    }
}

/// What the loop reads and writes besides the [`Scale`] it serves.
#[derive(Debug)]
pub(crate) struct LoopParts {
    pub admission: Arc<Admission>,
    pub audit: Audit,
    pub owner: OwnerHandle,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    pub data_dir: std::path::PathBuf,
    pub alerting: AlertingSettings,
}

/// Restores the alert states, runs the first evaluation (so `/v1/scale/status` has
/// an answer as soon as the node serves), then starts the loop; it ends when the
/// node's [`Scale`] is dropped.
pub(crate) async fn start(
    scale: &Arc<Scale>,
    mut monitor: ScaleMonitor,
    parts: LoopParts,
) -> Result<(), MonitorStartError> {
    let webhook = match &parts.alerting.webhook_url {
        Some(url) => {
            let fail = |reason: String| MonitorStartError::Webhook {
                url: url.clone(),
                reason,
            };
            let parsed = reqwest::Url::parse(url).map_err(|e| fail(e.to_string()))?;
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(parts.alerting.webhook_timeout_ms))
                .build()
                .map_err(|e| fail(e.to_string()))?;
            Some((client, parsed))
        }
        None => None,
    };
    restore(&mut monitor, parts.store.as_ref()).await;
    match latest_report(parts.store.as_ref()).await {
        Ok(report) => scale.set_certified_rps(report.and_then(|r| r.limit).map(|l| l.max_rps)),
        Err(e) => tracing::error!(error = %e, "reading the latest scale report"),
    }
    // `start` runs once per node, so the cell is empty.
    let _ = scale.parts.set(parts);
    evaluate(scale, &mut monitor, webhook.as_ref()).await;
    let weak = Arc::downgrade(scale);
    let every = scale.evaluate_every;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(scale) = weak.upgrade() else { break };
            evaluate(&scale, &mut monitor, webhook.as_ref()).await;
        }
    });
    Ok(())
}

/// One evaluation: publish the status and alerts, then record the transitions and
/// send the notifications.
async fn evaluate(
    scale: &Scale,
    monitor: &mut ScaleMonitor,
    webhook: Option<&(reqwest::Client, reqwest::Url)>,
) {
    let Some(parts) = scale.parts.get() else {
        return;
    };
    let now = unix_now();
    let gauges = gauges(parts, scale.certified_rps());
    let stats = scale.recorder.stats(now);
    let packs = scale.recorder.drain_packs();
    let eval = monitor.evaluate(now, &gauges, &stats, &packs);
    scale.alerts.store(Arc::new(views(monitor)));
    parts.metrics.set_alerts(monitor);
    scale.status.store(Some(Arc::new(eval.status)));
    for effect in eval.effects {
        match effect {
            Effect::Record(t) => record(&parts.owner, t).await,
            Effect::Notify(n) => notify(webhook, n),
        }
    }
}

/// The event kind that records a scale report.
pub(crate) const CERTIFIED: &str = "scale.certified";

/// The latest scale report recorded on this node, if any.
pub(crate) async fn latest_report(store: &dyn StateStore) -> Result<Option<ScaleReport>, ApiError> {
    let Some(event) = store.recent_events(CERTIFIED, 1).await?.pop() else {
        return Ok(None);
    };
    let mut detail = event.detail;
    if let Some(map) = detail.as_object_mut() {
        // Added when the event was recorded; not part of the report.
        map.remove("audit_index");
        map.remove("unaudited");
    }
    serde_json::from_value(detail)
        .map(Some)
        .map_err(|e| ApiError::Internal(format!("stored scale report {}: {e}", event.id)))
}

fn unix_now() -> UnixMs {
    UnixMs::from_datetime(OffsetDateTime::now_utc())
}

fn gauges(parts: &LoopParts, certified_rps: Option<f64>) -> Gauges {
    let log = parts.audit.log();
    let (used, capacity) = match log.max_bytes() {
        Some(cap) => (log.used_bytes(), Some(cap)),
        None => match dynscale_store::volume::volume_usage(&parts.data_dir) {
            Ok(v) => (v.used_bytes, Some(v.total_bytes)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the data volume's usage");
                (log.used_bytes(), None)
            }
        },
    };
    Gauges {
        in_flight: parts.admission.in_flight() as u64,
        in_flight_limit: Some(parts.admission.limit() as u64),
        throughput_capacity_per_s: certified_rps,
        audit_queue_depth: log.queue_depth() as u64,
        audit_queue_capacity: Some(AuditConfig::new("", "").queue as u64),
        storage_used_bytes: used,
        storage_capacity_bytes: capacity,
    }
}

fn views(monitor: &ScaleMonitor) -> Vec<AlertView> {
    let rfc3339 = |ms: UnixMs| {
        ms.to_datetime().and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    monitor
        .alerts()
        .map(|(key, state, rule)| {
            let since = match state {
                AlertState::Inactive => None,
                AlertState::Pending { since } | AlertState::Firing { since, .. } => rfc3339(*since),
                AlertState::Resolved { at } => rfc3339(*at),
            };
            AlertView {
                alert: key.rule.clone(),
                instance: key.instance.clone(),
                state: state.phase(),
                since,
                level: rule.level,
                owner: rule.route.owner.clone(),
                condition: rule.condition.to_string(),
                respond_within_secs: rule.route.respond_within.as_secs(),
            }
        })
        .collect()
}

/// The event kind of a transition: `alert.pending`, `alert.firing`, ….
fn kind_of(to: Phase) -> &'static str {
    match to {
        Phase::Inactive => "alert.inactive",
        Phase::Pending => "alert.pending",
        Phase::Firing => "alert.firing",
        Phase::Resolved => "alert.resolved",
    }
}

async fn record(owner: &OwnerHandle, t: Transition) {
    let subject = match &t.instance {
        Some(pack) => format!("{} pack {pack}", t.alert),
        None => t.alert.clone(),
    };
    tracing::warn!(alert = %t.alert, instance = ?t.instance, from = ?t.from, to = ?t.to,
        level = t.level.as_str(), value = ?t.value, "alert transition");
    let detail = match serde_json::to_value(&t) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "encoding an alert transition");
            return;
        }
    };
    let event = NewEvent {
        at: t.at.to_datetime().unwrap_or_else(OffsetDateTime::now_utc),
        kind: kind_of(t.to).to_owned(),
        subject,
        detail,
    };
    if let Err(e) = owner.call(|reply| Command::Record { event, reply }).await {
        tracing::error!(error = %e, alert = %t.alert, "recording an alert transition");
    }
}

fn notify(webhook: Option<&(reqwest::Client, reqwest::Url)>, n: Notification) {
    tracing::warn!(alert = %n.alert, kind = ?n.kind, level = n.level.as_str(), owner = %n.owner,
        "alert notification");
    let Some((client, url)) = webhook else { return };
    let (client, url) = (client.clone(), url.clone());
    // Delivery must not hold up the next evaluation; a failed call is logged, and a
    // firing alert is delivered again at its repeat interval.
    tokio::spawn(async move {
        match client.post(url).json(&n).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::error!(status = %r.status(), alert = %n.alert, "alert webhook refused")
            }
            Err(e) => tracing::error!(error = %e, alert = %n.alert, "alert webhook failed"),
        }
    });
}

/// Puts every alert back in the state its latest recorded transition left it in.
async fn restore(monitor: &mut ScaleMonitor, store: &dyn StateStore) {
    let events = match store.recent_events("alert.", 10_000).await {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = %e, "reading the alert history; alerts start inactive");
            return;
        }
    };
    let mut latest: BTreeMap<AlertKey, Transition> = BTreeMap::new();
    // Newest first: the first seen per alert is its latest.
    for e in events {
        let Ok(t) = serde_json::from_value::<Transition>(e.detail) else {
            continue;
        };
        let key = AlertKey {
            rule: t.alert.clone(),
            instance: t.instance.clone(),
        };
        latest.entry(key).or_insert(t);
    }
    for (key, t) in latest {
        let state = match t.to {
            Phase::Pending => AlertState::Pending { since: t.at },
            Phase::Firing => AlertState::Firing {
                since: t.at,
                clear_since: None,
                notified_at: t.at,
            },
            Phase::Inactive | Phase::Resolved => continue,
        };
        monitor.restore(key, state);
    }
}
