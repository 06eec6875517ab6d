//! The state store: the system of record for policy versions, the active set, control
//! state and the event history. Embedded SQLite now; PostgreSQL later, behind the
//! same trait.

use async_trait::async_trait;
use dynscale_core::controls::{Escalation, EscalationStatus, KillScope, Quarantine};
use dynscale_core::ids::{AgentId, PackId, PolicyName};
use dynscale_core::rollout::{Stamped, Start, UnixMillis};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// One pushed version of a policy, kept forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub name: PolicyName,
    pub version: semver::Version,
    pub policy_id: Uuid,
    /// `yaml` or `json`.
    pub format: String,
    /// The document exactly as pushed.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub pushed_at: OffsetDateTime,
}

/// An entry of the change history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Strictly increasing; the snapshot number is the id of the last policy event.
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// E.g. `policy.pushed`, `policy.rolled_back`, `kill.set`, `agent.quarantined`.
    pub kind: String,
    /// What the event is about, e.g. `payments-guard@2.1.0` or `agent a1`.
    pub subject: String,
    pub detail: serde_json::Value,
}

/// An event to append; the store assigns its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: String,
    pub subject: String,
    pub detail: serde_json::Value,
}

/// A change of one policy name, applied atomically: an optional new version, the
/// versions of that name active afterwards, and the event that records it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChange {
    pub name: PolicyName,
    /// A version to store (a push); `None` for a rollback to a stored version.
    pub new_version: Option<StoredVersion>,
    /// Every version of `name` active after the change (replaces the previous list).
    pub active: Vec<semver::Version>,
    pub event: NewEvent,
}

/// A registered agent: its pack and attributes (Cedar entity attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub pack: Option<PackId>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A change of control state, applied atomically with its event.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlChange {
    Kill(KillScope),
    ReleaseKill(KillScope),
    Quarantine(Quarantine),
    ReleaseQuarantine(AgentId),
    OpenEscalation(Escalation),
    /// Moves an escalation from `from` to `to`; not applied if it is not in `from`.
    SetEscalationStatus {
        id: Uuid,
        from: EscalationStatus,
        to: EscalationStatus,
        at: OffsetDateTime,
    },
    PutAgent(AgentRecord),
}

/// A rollout to begin: its candidate version (stored now, not made active), the
/// standing version it is compared with, the start of its state machine, and the
/// event that records both. Applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    pub candidate: StoredVersion,
    /// A stored version of the same name.
    pub control: semver::Version,
    pub start: Start,
    pub started_at: UnixMillis,
    pub event: NewEvent,
}

/// The ids a rollout start was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStarted {
    pub rollout: u64,
    pub event: u64,
}

/// An event the rollout's state machine accepted, with the audit records of the
/// transitions it caused, and how the rollout ended if it did. Applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStep {
    pub rollout: u64,
    pub event: Stamped,
    /// Stored as events (kind `rollout.*`), in order.
    pub records: Vec<NewEvent>,
    pub finish: Option<RolloutFinish>,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutFinish {
    /// A summary for listings (how it finished, timings).
    pub summary: serde_json::Value,
    /// A promotion: the change that makes the candidate active. Its `name` must be
    /// the rollout's and it may not store a new version.
    pub activate: Option<PolicyChange>,
}

/// A stored rollout: everything [`dynscale_core::rollout::replay`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    pub id: u64,
    pub name: PolicyName,
    pub candidate: semver::Version,
    pub control: semver::Version,
    pub start: Start,
    pub started_at: UnixMillis,
    /// Every accepted event, in the order applied.
    pub events: Vec<Stamped>,
    /// `None` while running.
    pub finish: Option<serde_json::Value>,
}

/// Everything a node needs to rebuild its in-memory state at start.
///
/// Every list has a defined order, so two loads of the same state compare equal
/// whatever the backend: names and ids in byte order, versions in semver order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredState {
    /// Sorted by name, then version.
    pub versions: Vec<StoredVersion>,
    /// `(name, version)` of every active version, sorted by name, then version.
    pub active: Vec<(PolicyName, semver::Version)>,
    /// Id of the last event of kind `policy.*` (0 when none).
    pub last_policy_event: u64,
    /// Sorted by [`KillScope`]'s order: global, then packs, then agents.
    pub kill_switches: Vec<KillScope>,
    /// Sorted by agent.
    pub quarantines: Vec<Quarantine>,
    /// Escalations still `pending` or `approved`, oldest first (by creation time,
    /// then id).
    pub open_escalations: Vec<Escalation>,
    /// Sorted by id.
    pub agents: Vec<AgentRecord>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migrating the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("version {version} of policy {name} is already stored")]
    DuplicateVersion {
        name: PolicyName,
        version: semver::Version,
    },
    #[error("version {version} of policy {name} is not stored")]
    UnknownVersion {
        name: PolicyName,
        version: semver::Version,
    },
    /// A stored value that cannot be decoded: the database was changed behind the
    /// store's back or damaged.
    #[error(
        "stored data is corrupt: table {table}, row {row}, column {column}, value {value:?}: {reason}"
    )]
    Corrupt {
        table: &'static str,
        /// The row's key as text.
        row: String,
        column: &'static str,
        value: String,
        reason: String,
    },
    /// A value the store cannot represent, e.g. a timestamp outside years 0 to 9999.
    #[error("{what} {value} cannot be stored: {reason}")]
    Unstorable {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("rollout {id} is not stored")]
    UnknownRollout { id: u64 },
    #[error("rollout {id} has finished; it takes no more events")]
    RolloutFinished { id: u64 },
    #[error("policy {name} already has a running rollout ({id})")]
    RolloutRunning { name: PolicyName, id: u64 },
    #[error("opening the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("opening the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
}

/// The system of record. Every method is atomic: it applies whole or not at all.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads everything needed to rebuild the node's state.
    async fn load(&self) -> Result<StoredState, StoreError>;

    /// Applies a policy change with its event; returns the event id.
    async fn apply_policy_change(&self, change: PolicyChange) -> Result<u64, StoreError>;

    /// Applies a control change with its event; returns the event id, or `None` when a
    /// conditional change (escalation status) did not apply. Releasing what is not
    /// set is a no-op that still returns `None`.
    async fn apply_control_change(
        &self,
        change: ControlChange,
        event: NewEvent,
    ) -> Result<Option<u64>, StoreError>;

    /// Every stored version of a name, lowest first in semver order.
    async fn versions(&self, name: &PolicyName) -> Result<Vec<StoredVersion>, StoreError>;

    /// Events with id greater than `after`, oldest first, at most `limit`.
    async fn events(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records an event that changes no other state (an alert transition, a scale
    /// report); returns its id.
    async fn record_event(&self, event: NewEvent) -> Result<u64, StoreError>;

    /// The newest events whose kind starts with `kind_prefix`, newest first, at most
    /// `limit`.
    async fn recent_events(
        &self,
        kind_prefix: &str,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Escalations, newest first (by creation time, then id), optionally only those in
    /// one status, at most `limit`.
    async fn escalations(
        &self,
        status: Option<EscalationStatus>,
        limit: u32,
    ) -> Result<Vec<Escalation>, StoreError>;

    /// One escalation by id.
    async fn escalation(&self, id: Uuid) -> Result<Option<Escalation>, StoreError>;

    /// Stores a rollout's candidate version (inactive), its start and its event;
    /// refuses a second running rollout of one name.
    async fn start_rollout(&self, rollout: NewRollout) -> Result<RolloutStarted, StoreError>;

    /// Appends an accepted event to a running rollout with its records; with
    /// `finish`, marks the rollout finished and applies the promotion, if any. Returns
    /// the ids of the records and of the promotion's event.
    async fn append_rollout_event(
        &self,
        step: RolloutStep,
    ) -> Result<(Vec<u64>, Option<u64>), StoreError>;

    /// Every running rollout and the newest `finished` finished ones, by id
    /// ascending, each with its events in order.
    async fn rollouts(&self, finished: u32) -> Result<Vec<StoredRollout>, StoreError>;
}
