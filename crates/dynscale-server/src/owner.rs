//! The control-plane owner: one task that owns every piece of mutable state (the
//! policy catalog, control state, registered agents), applies changes to the store
//! first and then publishes new immutable values for the decision path to read.
//! Commands arrive over a bounded channel, so changes are ordered and never race.

mod rollout;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::Schema;
use dynscale_core::catalog::{ActivationPlan, Catalog, PushOptions, UpgradePath};
use dynscale_core::controls::{ControlState, Escalation, EscalationStatus, KillScope, Quarantine};
use dynscale_core::ids::{AgentId, PolicyName, SnapshotId};
use dynscale_core::policy::{CheckedPolicy, check_document};
use dynscale_core::request::AgentProfile;
use dynscale_core::rollout::{Admission, BasisPoints, Command as RolloutCommand, UnixMillis};
use dynscale_core::snapshot::{EngineConfig, Snapshot};
use dynscale_store::{
    AgentRecord, ControlChange, NewEvent, PolicyChange, StateStore, StoredVersion,
};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;
use crate::recorder::Audit;
use crate::rollouts::{RolloutSettings, Routes};

pub use self::rollout::RolloutStatus;

/// The values the decision path reads, each swapped whole.
#[derive(Debug)]
pub struct Published {
    pub snapshot: ArcSwap<Snapshot>,
    pub controls: ArcSwap<ControlState>,
    pub agents: ArcSwap<HashMap<AgentId, AgentProfile>>,
    /// The running rollouts with their arms' snapshots.
    pub rollouts: ArcSwap<Routes>,
}

/// What a push or rollback did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Activated {
    pub name: String,
    pub version: String,
    /// Versions of the name active now.
    pub active: Vec<String>,
    /// Versions of the name this change deactivated.
    pub removed: Vec<String>,
    /// The snapshot that enforces the change.
    pub snapshot: u64,
    /// Something the operator should know about how the push was carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rollout the push started, when its strategy was progressive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStarted>,
}

/// A rollout begun by a push.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RolloutStarted {
    /// The rollout's id.
    pub id: u64,
    /// `shadow`, `canary` or `blue-green`.
    pub strategy: String,
    /// The standing version the candidate is compared with; it stays active.
    pub control: String,
    /// The first routing (e.g. `{"mode": "split", "candidate_share": 500}`).
    #[schema(value_type = Object)]
    pub routing: serde_json::Value,
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A change for the owner to apply.
#[derive(Debug)]
pub enum Command {
    Push {
        origin: String,
        text: String,
        force: bool,
        reply: Reply<Activated>,
    },
    Validate {
        origin: String,
        text: String,
        force: bool,
        reply: Reply<Activated>,
    },
    Rollback {
        name: PolicyName,
        to: Option<semver::Version>,
        reply: Reply<Activated>,
    },
    Kill {
        scope: KillScope,
        set: bool,
        reply: Reply<bool>,
    },
    Quarantine {
        quarantine: Quarantine,
        reply: Reply<()>,
    },
    Release {
        agent: AgentId,
        reply: Reply<bool>,
    },
    OpenEscalation {
        escalation: Escalation,
        reply: Reply<()>,
    },
    SetEscalation {
        id: Uuid,
        from: EscalationStatus,
        to: EscalationStatus,
        reply: Reply<bool>,
    },
    PutAgent {
        record: AgentRecord,
        reply: Reply<()>,
    },
    ListPolicies {
        reply: Reply<Vec<PolicySummary>>,
    },
    /// Records an event that changes no state (an alert transition, a scale report).
    Record {
        event: NewEvent,
        reply: Reply<u64>,
    },
    /// Drains the rollouts' measurements and steps them at `now`.
    RolloutTick {
        now: UnixMillis,
        utilization: Option<BasisPoints>,
        reply: Reply<()>,
    },
    /// An operator's command for a rollout.
    SteerRollout {
        name: PolicyName,
        command: RolloutCommand,
        now: UnixMillis,
        reply: Reply<RolloutStatus>,
    },
    /// The status of one rollout, or of every known one.
    RolloutStatus {
        name: Option<PolicyName>,
        now: UnixMillis,
        reply: Reply<Vec<RolloutStatus>>,
    },
    /// Where a policy name can be upgraded or rolled back to.
    UpgradePath {
        name: PolicyName,
        reply: Reply<UpgradePath>,
    },
}

/// A policy name as listings show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PolicySummary {
    pub name: String,
    /// Stable across versions (from the newest active version).
    pub policy_id: Option<Uuid>,
    /// Every pushed version, ascending.
    pub versions: Vec<String>,
    /// The active versions (the standing one and any scheduled ones).
    pub active: Vec<String>,
    /// The scope of the newest active version.
    pub namespace: Option<String>,
}

/// The handle the rest of the server uses to send changes.
#[derive(Debug, Clone)]
pub struct OwnerHandle {
    tx: mpsc::Sender<Command>,
}

impl OwnerHandle {
    /// Sends a command and waits for its result.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ApiError::Unavailable {
                detail: "the node is shutting down".into(),
            })?;
        rx.await.map_err(|_| ApiError::Unavailable {
            detail: "the node is shutting down".into(),
        })?
    }

    /// A handle that does not keep the owner running (for background loops).
    pub fn downgrade(&self) -> WeakOwnerHandle {
        WeakOwnerHandle {
            tx: self.tx.downgrade(),
        }
    }
}

/// An [`OwnerHandle`] that lets the owner stop once every strong handle is gone.
#[derive(Debug, Clone)]
pub struct WeakOwnerHandle {
    tx: mpsc::WeakSender<Command>,
}

impl WeakOwnerHandle {
    /// The strong handle, while the owner runs.
    pub fn upgrade(&self) -> Option<OwnerHandle> {
        self.tx.upgrade().map(|tx| OwnerHandle { tx })
    }
}

/// The owner task's state.
#[derive(Debug)]
pub struct Owner {
    store: Arc<dyn StateStore>,
    audit: Audit,
    catalog: Catalog,
    controls: ControlState,
    agents: HashMap<AgentId, AgentProfile>,
    engine: Arc<EngineConfig>,
    schema: Option<Arc<Schema>>,
    published: Arc<Published>,
    snapshot_id: SnapshotId,
    book: rollout::Book,
    rollout_settings: RolloutSettings,
}

impl Owner {
    /// Rebuilds the state from the store and publishes the first snapshot.
    pub async fn load(
        store: Arc<dyn StateStore>,
        audit: Audit,
        engine: EngineConfig,
        schema: Option<Arc<Schema>>,
        rollout_settings: RolloutSettings,
    ) -> Result<(Self, Arc<Published>), ApiError> {
        let state = store.load().await?;
        let mut catalog = Catalog::new();
        let mut by_key: HashMap<(PolicyName, semver::Version), &StoredVersion> = HashMap::new();
        for v in &state.versions {
            catalog.record_pushed(&v.name, v.policy_id, &v.version);
            by_key.insert((v.name.clone(), v.version.clone()), v);
        }
        let mut active: HashMap<PolicyName, Vec<Arc<CheckedPolicy>>> = HashMap::new();
        for (name, version) in &state.active {
            let stored = by_key
                .get(&(name.clone(), version.clone()))
                .ok_or_else(|| {
                    ApiError::Internal(format!("active version {name}@{version} is not stored"))
                })?;
            active
                .entry(name.clone())
                .or_default()
                .push(parse_stored(stored)?);
        }
        for (name, versions) in active {
            catalog.set_active(&name, versions);
        }
        let mut controls = ControlState::default();
        controls.kill_switches.extend(state.kill_switches);
        for q in state.quarantines {
            controls.quarantined.insert(q.agent.clone(), q);
        }
        for e in state.open_escalations {
            if e.status == EscalationStatus::Approved {
                controls.approved.insert(e.fingerprint.clone(), e.id);
            }
        }
        let agents: HashMap<AgentId, AgentProfile> = state
            .agents
            .into_iter()
            .map(|a| {
                (
                    a.id,
                    AgentProfile {
                        pack: a.pack,
                        attributes: a.attributes,
                    },
                )
            })
            .collect();
        let engine = Arc::new(engine);
        let snapshot_id = SnapshotId(state.last_policy_event);
        // The first report of the catalog names every version in force; later ones
        // name only what changed, which `recompile` patches into the snapshot.
        let (changes, next) = catalog.take_in_force_changes(OffsetDateTime::now_utc());
        let in_force = changes.into_iter().filter_map(|c| c.after).collect();
        let snapshot = Snapshot::compile(snapshot_id, in_force, next, Arc::clone(&engine), None)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let published = Arc::new(Published {
            snapshot: ArcSwap::from_pointee(snapshot),
            controls: ArcSwap::from_pointee(controls.clone()),
            agents: ArcSwap::from_pointee(agents.clone()),
            rollouts: ArcSwap::from_pointee(Routes::default()),
        });
        let mut owner = Owner {
            store,
            audit,
            catalog,
            controls,
            agents,
            engine,
            schema,
            published: Arc::clone(&published),
            snapshot_id,
            book: rollout::Book::default(),
            rollout_settings,
        };
        owner.load_rollouts().await?;
        Ok((owner, published))
    }

    /// Starts the owner task; it ends when every handle is dropped.
    pub fn spawn(self, capacity: usize) -> OwnerHandle {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(self.run(rx));
        OwnerHandle { tx }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            // Recompile when a validity window opens or closes.
            let next = self.published.snapshot.load().next_change_at();
            let wait = next.map(|at| {
                let secs = (at - OffsetDateTime::now_utc()).as_seconds_f64().max(0.0);
                std::time::Duration::from_secs_f64(secs)
            });
            let cmd = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return,
                },
                () = sleep_for(wait) => {
                    if let Err(e) = self.recompile() {
                        tracing::error!(error = %e, "recompiling at a validity boundary");
                    }
                    continue;
                }
            };
            self.handle(cmd).await;
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Push {
                origin,
                text,
                force,
                reply,
            } => {
                let _ = reply.send(self.push(&origin, &text, force, true).await);
            }
            Command::Validate {
                origin,
                text,
                force,
                reply,
            } => {
                let _ = reply.send(self.push(&origin, &text, force, false).await);
            }
            Command::Rollback { name, to, reply } => {
                let _ = reply.send(self.rollback(&name, to).await);
            }
            Command::Kill { scope, set, reply } => {
                let _ = reply.send(self.kill(scope, set).await);
            }
            Command::Quarantine { quarantine, reply } => {
                let _ = reply.send(self.quarantine(quarantine).await);
            }
            Command::Release { agent, reply } => {
                let _ = reply.send(self.release(agent).await);
            }
            Command::OpenEscalation { escalation, reply } => {
                let _ = reply.send(self.open_escalation(escalation).await);
            }
            Command::SetEscalation {
                id,
                from,
                to,
                reply,
            } => {
                let _ = reply.send(self.set_escalation(id, from, to).await);
            }
            Command::PutAgent { record, reply } => {
                let _ = reply.send(self.put_agent(record).await);
            }
            Command::ListPolicies { reply } => {
                let _ = reply.send(Ok(self.list()));
            }
            Command::Record { event, reply } => {
                let _ = reply.send(self.record(event).await);
            }
            Command::RolloutTick {
                now,
                utilization,
                reply,
            } => {
                self.tick_rollouts(now, utilization).await;
                let _ = reply.send(Ok(()));
            }
            Command::SteerRollout {
                name,
                command,
                now,
                reply,
            } => {
                let _ = reply.send(self.command_rollout(&name, command, now).await);
            }
            Command::RolloutStatus { name, now, reply } => {
                let _ = reply.send(self.rollout_status(name.as_ref(), now));
            }
            Command::UpgradePath { name, reply } => {
                let _ = reply.send(self.catalog.upgrade_path(&name).ok_or_else(|| {
                    ApiError::NotFound {
                        what: format!("policy {name}"),
                    }
                }));
            }
        }
    }

    async fn push(
        &mut self,
        origin: &str,
        text: &str,
        force: bool,
        store: bool,
    ) -> Result<Activated, ApiError> {
        let policy = Arc::new(
            check_document(origin, text, self.schema.as_deref())
                .map_err(|errors| ApiError::Validation { errors })?,
        );
        let now = OffsetDateTime::now_utc();
        let opts = PushOptions { now, force };
        let plan =
            self.catalog
                .plan_push(&policy, &opts)
                .map_err(|errors| ApiError::Validation {
                    errors: errors
                        .into_iter()
                        .map(|mut d| {
                            d.file.get_or_insert_with(|| origin.to_owned());
                            d
                        })
                        .collect(),
                })?;
        let doc = &policy.doc;
        let standing = self.catalog.standing_version(&doc.name).cloned();
        let mut scopes = vec![&doc.namespace];
        scopes.extend(standing.as_ref().map(|s| &s.doc.namespace));
        let running = self.running_rollouts();
        let admission = dynscale_core::rollout::admit(
            &doc.name,
            doc.activation.strategy,
            standing.is_some(),
            &scopes,
            rollout::as_running(&running),
        )
        .map_err(|e| ApiError::Conflict {
            detail: e.to_string(),
        })?;
        let note = match admission {
            Admission::Immediate {
                first_version: true,
            } => Some(format!(
                "{} has no standing version to compare with, so this first version was \
                 activated immediately instead of by `{}`",
                doc.name, doc.activation.strategy
            )),
            _ => None,
        };
        if !store {
            let mut done = self.activated(&plan);
            if admission == Admission::Rollout {
                done.active = standing.iter().map(|s| s.doc.version.to_string()).collect();
                done.removed.clear();
                done.note = Some(format!(
                    "a push would start a `{}` rollout against the standing version",
                    doc.activation.strategy
                ));
            } else {
                done.note = note;
            }
            return Ok(done);
        }
        let version = StoredVersion {
            name: doc.name.clone(),
            version: doc.version.clone(),
            policy_id: doc.policy_id,
            format: serde_json::to_value(policy.format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "yaml".into()),
            source: text.to_owned(),
            pushed_at: now,
        };
        if let (Admission::Rollout, Some(control)) = (admission, standing)
            && let Some(done) = self
                .start_rollout(&policy, control, version.clone(), now)
                .await?
        {
            return Ok(done);
        }
        let detail = json!({
            "strategy": doc.activation.strategy.to_string(),
            "force": force,
        });
        let event = self
            .store_change(&plan, Some(version), "policy.pushed", detail, now)
            .await?;
        self.catalog
            .record_pushed(&doc.name, doc.policy_id, &doc.version);
        let mut done = self.commit(&plan, event)?;
        done.note = note;
        Ok(done)
    }

    /// Audits, then stores, a change of one name's active versions; returns the event id.
    async fn store_change(
        &self,
        plan: &ActivationPlan,
        new_version: Option<StoredVersion>,
        kind: &str,
        mut detail: serde_json::Value,
        at: OffsetDateTime,
    ) -> Result<u64, ApiError> {
        detail["removed"] = json!(
            plan.removed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        let event = NewEvent {
            at,
            kind: kind.to_owned(),
            subject: plan.policy.version_ref().to_string(),
            detail,
        };
        let change = policy_change(plan, new_version, self.audited(event).await?);
        Ok(self.store.apply_policy_change(change).await?)
    }

    async fn rollback(
        &mut self,
        name: &PolicyName,
        to: Option<semver::Version>,
    ) -> Result<Activated, ApiError> {
        self.check_not_rolling_out(name)?;
        let current = self.catalog.active_versions(name);
        let to = match to {
            Some(v) => v,
            None => current
                .iter()
                .filter(|p| p.doc.validity.is_none())
                .find_map(|p| p.doc.rollback_point.clone())
                .ok_or_else(|| ApiError::Conflict {
                    detail: format!(
                        "policy {name} has no rollbackPoint; name the version with --to"
                    ),
                })?,
        };
        let stored = self
            .store
            .versions(name)
            .await?
            .into_iter()
            .find(|v| v.version == to)
            .ok_or_else(|| ApiError::NotFound {
                what: format!("version {to} of policy {name}"),
            })?;
        let target = parse_stored(&stored)?;
        let now = OffsetDateTime::now_utc();
        let plan = self
            .catalog
            .plan_rollback(&target, now)
            .map_err(|errors| ApiError::Validation { errors })?;
        let event = self
            .store_change(&plan, None, "policy.rolled_back", json!({}), now)
            .await?;
        self.commit(&plan, event)
    }

    fn list(&self) -> Vec<PolicySummary> {
        self.catalog
            .names()
            .map(|name| {
                let active = self.catalog.active_versions(name);
                PolicySummary {
                    name: name.to_string(),
                    policy_id: active.last().map(|p| p.doc.policy_id),
                    versions: self
                        .catalog
                        .pushed_versions(name)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    active: active.iter().map(|p| p.doc.version.to_string()).collect(),
                    namespace: active.last().map(|p| p.doc.namespace.to_string()),
                }
            })
            .collect()
    }

    fn activated(&self, plan: &ActivationPlan) -> Activated {
        Activated {
            name: plan.name.to_string(),
            version: plan.version.to_string(),
            active: plan
                .active_after
                .iter()
                .map(|p| p.doc.version.to_string())
                .collect(),
            removed: plan.removed.iter().map(ToString::to_string).collect(),
            snapshot: self.snapshot_id.0,
            note: None,
            rollout: None,
        }
    }

    /// Applies a stored plan to the catalog and publishes the new snapshot.
    fn commit(&mut self, plan: &ActivationPlan, event: u64) -> Result<Activated, ApiError> {
        self.catalog.apply(plan);
        self.snapshot_id = SnapshotId(event);
        self.recompile()?;
        Ok(self.activated(plan))
    }

    /// Publishes a snapshot patched with what changed in force since the last one:
    /// the pushed name, and names whose validity window opened or closed.
    fn recompile(&mut self) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let (changes, next) = self.catalog.take_in_force_changes(now);
        let previous = self.published.snapshot.load();
        let snapshot = match previous.patch(self.snapshot_id, &changes, next) {
            Ok(s) => s,
            // A patch fails only if the snapshot and the catalog disagree about what
            // was in force; compiling the catalog's whole set puts them back in step.
            Err(e) => {
                tracing::error!(error = %e, "patching the snapshot; compiling it whole");
                let (in_force, next) = self.catalog.in_force(now);
                Snapshot::compile(
                    self.snapshot_id,
                    in_force,
                    next,
                    Arc::clone(&self.engine),
                    Some(&previous),
                )
                .map_err(|e| ApiError::Internal(e.to_string()))?
            }
        };
        self.published.snapshot.store(Arc::new(snapshot));
        // The candidates of running rollouts are the new set with their version.
        self.publish_routes();
        Ok(())
    }

    fn publish_controls(&self) {
        self.published
            .controls
            .store(Arc::new(self.controls.clone()));
    }

    async fn kill(&mut self, scope: KillScope, set: bool) -> Result<bool, ApiError> {
        let (change, kind) = if set {
            (ControlChange::Kill(scope.clone()), "kill.set")
        } else {
            (ControlChange::ReleaseKill(scope.clone()), "kill.released")
        };
        let event = event(kind, scope.to_string(), json!({}));
        let event = self.audited(event).await?;
        let applied = self
            .store
            .apply_control_change(change, event)
            .await?
            .is_some();
        if set {
            self.controls.kill_switches.insert(scope);
        } else {
            self.controls.kill_switches.remove(&scope);
        }
        self.publish_controls();
        Ok(applied)
    }

    async fn quarantine(&mut self, q: Quarantine) -> Result<(), ApiError> {
        if self.controls.quarantined.contains_key(&q.agent) {
            return Ok(());
        }
        let event = event(
            "agent.quarantined",
            format!("agent {}", q.agent),
            json!({"decision_id": q.decision_id, "reason": q.reason}),
        );
        let event = self.audited(event).await?;
        self.store
            .apply_control_change(ControlChange::Quarantine(q.clone()), event)
            .await?;
        self.controls.quarantined.insert(q.agent.clone(), q);
        self.publish_controls();
        Ok(())
    }

    async fn release(&mut self, agent: AgentId) -> Result<bool, ApiError> {
        let event = event("agent.released", format!("agent {agent}"), json!({}));
        let event = self.audited(event).await?;
        let applied = self
            .store
            .apply_control_change(ControlChange::ReleaseQuarantine(agent.clone()), event)
            .await?
            .is_some();
        self.controls.quarantined.remove(&agent);
        self.publish_controls();
        Ok(applied)
    }

    async fn open_escalation(&mut self, e: Escalation) -> Result<(), ApiError> {
        let event = event(
            "escalation.opened",
            format!("escalation {}", e.id),
            json!({"decision_id": e.decision_id, "agent": e.agent, "reason": e.reason}),
        );
        let event = self.audited(event).await?;
        self.store
            .apply_control_change(ControlChange::OpenEscalation(e), event)
            .await?;
        Ok(())
    }

    async fn set_escalation(
        &mut self,
        id: Uuid,
        from: EscalationStatus,
        to: EscalationStatus,
    ) -> Result<bool, ApiError> {
        let at = OffsetDateTime::now_utc();
        let event = event(
            &format!("escalation.{}", to.as_str()),
            format!("escalation {id}"),
            json!({"from": from.as_str()}),
        );
        let event = self.audited(event).await?;
        let change = ControlChange::SetEscalationStatus { id, from, to, at };
        let applied = self
            .store
            .apply_control_change(change, event)
            .await?
            .is_some();
        if applied {
            if to == EscalationStatus::Approved {
                if let Some(e) = self.store.escalation(id).await? {
                    self.controls.approved.insert(e.fingerprint, id);
                }
            } else {
                self.controls.approved.retain(|_, v| *v != id);
            }
            self.publish_controls();
        }
        Ok(applied)
    }

    async fn put_agent(&mut self, record: AgentRecord) -> Result<(), ApiError> {
        let event = event(
            "agent.registered",
            format!("agent {}", record.id),
            json!({"pack": record.pack}),
        );
        let event = self.audited(event).await?;
        self.store
            .apply_control_change(ControlChange::PutAgent(record.clone()), event)
            .await?;
        self.agents.insert(
            record.id,
            AgentProfile {
                pack: record.pack,
                attributes: record.attributes,
            },
        );
        self.published.agents.store(Arc::new(self.agents.clone()));
        Ok(())
    }
}

impl Owner {
    /// Appends the event to the audit log before the change is stored, and notes the
    /// entry's index in the stored event. If the store then fails, the log holds the
    /// attempt; a change is never stored without its audit entry.
    /// Stores an event that changes no state, audited first. When the audit log
    /// cannot take it (full), the event is still stored, marked unaudited: an alert
    /// about a full log must not be lost because the log is full.
    async fn record(&self, event: NewEvent) -> Result<u64, ApiError> {
        let event = self.audited_or_marked(event).await?;
        Ok(self.store.record_event(event).await?)
    }

    /// Audits an event that must be kept even when the log is full (an alert, a
    /// rollout transition: a rollback must not wait for disk space); such an event
    /// is marked unaudited instead.
    async fn audited_or_marked(&self, event: NewEvent) -> Result<NewEvent, ApiError> {
        Ok(match self.audited(event.clone()).await {
            Ok(audited) => audited,
            Err(ApiError::Unavailable { detail }) => {
                let mut event = event;
                if let serde_json::Value::Object(map) = &mut event.detail {
                    map.insert("unaudited".into(), json!(detail));
                }
                event
            }
            Err(e) => return Err(e),
        })
    }

    async fn audited(&self, mut event: NewEvent) -> Result<NewEvent, ApiError> {
        let index = self
            .audit
            .event(&event.kind, &event.subject, event.detail.clone())
            .await?;
        if let serde_json::Value::Object(map) = &mut event.detail {
            map.insert("audit_index".into(), json!(index));
        }
        Ok(event)
    }
}

fn event(kind: &str, subject: String, detail: serde_json::Value) -> NewEvent {
    NewEvent {
        at: OffsetDateTime::now_utc(),
        kind: kind.to_owned(),
        subject,
        detail,
    }
}

async fn sleep_for(wait: Option<std::time::Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Parses a stored version. It passed validation when pushed, so the configured Cedar
/// schema is not applied again: a schema change must not make the node unbootable.
fn parse_stored(v: &StoredVersion) -> Result<Arc<CheckedPolicy>, ApiError> {
    check_document(&format!("stored {}@{}", v.name, v.version), &v.source, None)
        .map(Arc::new)
        .map_err(|errors| {
            ApiError::Internal(format!(
                "stored policy {}@{} no longer parses: {}",
                v.name,
                v.version,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })
}

/// The store's record of carrying out `plan`: the versions of its name active after it.
fn policy_change(
    plan: &ActivationPlan,
    new_version: Option<StoredVersion>,
    event: NewEvent,
) -> PolicyChange {
    PolicyChange {
        name: plan.name.clone(),
        new_version,
        active: plan
            .active_after
            .iter()
            .map(|p| p.doc.version.clone())
            .collect(),
        event,
    }
}
