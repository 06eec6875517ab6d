//! The embedded state store: one SQLite database, `state.db`, in the node's data
//! directory. Every trait method is one transaction.

mod codec;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use dynscale_core::controls::{Escalation, EscalationStatus, Fingerprint, Quarantine};
use dynscale_core::ids::{AgentId, PackId, PolicyName};
use dynscale_core::rollout::{Stamped, UnixMillis};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use self::codec::{RowReader, encode_json, encode_scope, encode_time, encode_uuid};
use crate::state::{
    AgentRecord, ControlChange, NewEvent, NewRollout, PolicyChange, RolloutStarted, RolloutStep,
    StateStore, StoreError, StoredEvent, StoredRollout, StoredState, StoredVersion,
};

/// The schema, embedded in the binary and brought up to date at open.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database file's name inside the data directory.
const DATABASE_FILE: &str = "state.db";

/// How long a statement waits for another connection's write lock before failing.
/// Writes are short, so reaching this means something is stuck, not busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers run beside the one writer WAL allows; a few are enough for a control plane.
const MAX_CONNECTIONS: u32 = 4;

/// Opens a write transaction that takes the write lock at once.
///
/// A deferred transaction that reads first and writes later can fail with
/// SQLITE_BUSY when another connection committed in between, and no busy timeout
/// helps; taking the lock up front makes concurrent writers wait their turn.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The state store kept in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and migrates its schema.
    ///
    /// The journal is a write-ahead log synced in full on every commit, so a change
    /// the store acknowledged survives a crash or power loss.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|source| StoreError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        let path = data_dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        tracing::debug!(path = %path.display(), "opened the state store");
        Ok(Self { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, waiting for them to finish. Dropping the store also
    /// closes them, but in the background.
    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with(BEGIN_WRITE).await?)
    }

    /// A read transaction, so that the reads of one method see one snapshot.
    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// An event encoded for its row.
struct EventRow {
    at: String,
    kind: String,
    subject: String,
    detail: String,
}

impl EventRow {
    fn encode(event: &NewEvent) -> Result<Self, StoreError> {
        Ok(Self {
            at: encode_time("event time", event.at)?,
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            detail: encode_json("event detail", &event.detail)?,
        })
    }

    /// Appends the event; returns its id.
    async fn insert(&self, tx: &mut Transaction<'static, Sqlite>) -> Result<u64, StoreError> {
        let done =
            sqlx::query("INSERT INTO events (at, kind, subject, detail) VALUES (?, ?, ?, ?)")
                .bind(&self.at)
                .bind(&self.kind)
                .bind(&self.subject)
                .bind(&self.detail)
                .execute(&mut **tx)
                .await?;
        let id = done.last_insert_rowid();
        u64::try_from(id).map_err(|e| StoreError::Corrupt {
            table: "events",
            row: id.to_string(),
            column: "id",
            value: id.to_string(),
            reason: e.to_string(),
        })
    }
}

async fn version_exists(
    tx: &mut Transaction<'static, Sqlite>,
    name: &PolicyName,
    version: &semver::Version,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM policy_versions WHERE name = ? AND version = ?")
        .bind(name.as_str())
        .bind(version.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// The active list of a change as a set; a version named twice is active once.
fn active_set(change: &PolicyChange) -> BTreeSet<&semver::Version> {
    change.active.iter().collect()
}

/// Makes `active` the versions of `name` in force; each must be stored.
async fn replace_active(
    tx: &mut Transaction<'static, Sqlite>,
    name: &PolicyName,
    active: &BTreeSet<&semver::Version>,
) -> Result<(), StoreError> {
    for version in active {
        if !version_exists(tx, name, version).await? {
            return Err(StoreError::UnknownVersion {
                name: name.clone(),
                version: (*version).clone(),
            });
        }
    }
    sqlx::query("DELETE FROM active_policies WHERE name = ?")
        .bind(name.as_str())
        .execute(&mut **tx)
        .await?;
    for version in active {
        sqlx::query("INSERT INTO active_policies (name, version) VALUES (?, ?)")
            .bind(name.as_str())
            .bind(version.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Stores a new version; refuses one already stored.
async fn insert_version(
    tx: &mut Transaction<'static, Sqlite>,
    v: &StoredVersion,
) -> Result<(), StoreError> {
    let pushed_at = encode_time("push time", v.pushed_at)?;
    // Checked explicitly so the caller gets a typed error, not a constraint
    // violation from the primary key.
    if version_exists(tx, &v.name, &v.version).await? {
        return Err(StoreError::DuplicateVersion {
            name: v.name.clone(),
            version: v.version.clone(),
        });
    }
    sqlx::query(
        "INSERT INTO policy_versions (name, version, policy_id, format, source, pushed_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(v.name.as_str())
    .bind(v.version.to_string())
    .bind(encode_uuid(v.policy_id))
    .bind(&v.format)
    .bind(&v.source)
    .bind(pushed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Unix milliseconds in an SQLite integer.
fn millis_to_sql(what: &'static str, t: UnixMillis) -> Result<i64, StoreError> {
    i64::try_from(t.0).map_err(|_| StoreError::Unstorable {
        what,
        value: t.0.to_string(),
        reason: "it is beyond the largest SQLite integer",
    })
}

fn decode_rollout(row: &SqliteRow) -> Result<StoredRollout, StoreError> {
    let r = RowReader::new(row, "rollouts", &["id"]);
    let id = r.id("id")?;
    let start = r.json("start")?;
    Ok(StoredRollout {
        id,
        name: PolicyName::new(r.text("name")?),
        candidate: r.version("candidate")?,
        control: r.version("control")?,
        start: r.decode_json("start", start)?,
        started_at: UnixMillis(r.id("started_at")?),
        events: Vec::new(),
        finish: r
            .optional_text("finish")?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    table: "rollouts",
                    row: id.to_string(),
                    column: "finish",
                    value: text.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()?,
    })
}

fn decode_version(row: &SqliteRow) -> Result<StoredVersion, StoreError> {
    let r = RowReader::new(row, "policy_versions", &["name", "version"]);
    Ok(StoredVersion {
        name: PolicyName::new(r.text("name")?),
        version: r.version("version")?,
        policy_id: r.uuid("policy_id")?,
        format: r.text("format")?,
        source: r.text("source")?,
        pushed_at: r.time("pushed_at")?,
    })
}

fn decode_escalation(row: &SqliteRow) -> Result<Escalation, StoreError> {
    let r = RowReader::new(row, "escalations", &["id"]);
    Ok(Escalation {
        id: r.uuid("id")?,
        decision_id: r.uuid("decision_id")?,
        fingerprint: Fingerprint(r.text("fingerprint")?),
        agent: AgentId::new(r.text("agent")?),
        action: r.text("action")?,
        resource: r.text("resource")?,
        namespace: r.text("namespace")?,
        reason: r.text("reason")?,
        created_at: r.time("created_at")?,
        status: r.status("status")?,
        decided_at: r.optional_time("decided_at")?,
    })
}

fn decode_event(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let r = RowReader::new(row, "events", &["id"]);
    Ok(StoredEvent {
        id: r.id("id")?,
        at: r.time("at")?,
        kind: r.text("kind")?,
        subject: r.text("subject")?,
        detail: r.json("detail")?,
    })
}

const VERSION_COLUMNS: &str = "name, version, policy_id, format, source, pushed_at";
const ESCALATION_COLUMNS: &str = "id, decision_id, fingerprint, agent, action, resource, \
     namespace, reason, created_at, status, decided_at";

/// Semver precedence is not a column order, so versions are sorted after reading.
fn sort_versions(versions: &mut [StoredVersion]) {
    versions.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
}

/// Event ids and limits are unsigned; SQLite integers are signed. An `after` past
/// the largest id simply matches nothing.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        let mut tx = self.begin_read().await?;

        let mut versions = sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM policy_versions"))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(decode_version)
            .collect::<Result<Vec<_>, _>>()?;
        sort_versions(&mut versions);

        let mut active = sqlx::query("SELECT name, version FROM active_policies")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                let r = RowReader::new(row, "active_policies", &["name", "version"]);
                Ok((PolicyName::new(r.text("name")?), r.version("version")?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        active.sort();

        // GLOB, unlike LIKE, is case-sensitive and has no `_` wildcard, so it
        // matches exactly the kinds that start with `policy.`.
        let row = sqlx::query(
            "SELECT COALESCE(MAX(id), 0) AS last FROM events WHERE kind GLOB 'policy.*'",
        )
        .fetch_one(&mut *tx)
        .await?;
        let last_policy_event = RowReader::new(&row, "events", &[]).id("last")?;

        let mut kill_switches = sqlx::query("SELECT scope, id FROM kill_switches")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| RowReader::new(row, "kill_switches", &["scope", "id"]).scope())
            .collect::<Result<Vec<_>, _>>()?;
        kill_switches.sort();

        let quarantines =
            sqlx::query("SELECT agent, since, decision_id, reason FROM quarantines ORDER BY agent")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    let r = RowReader::new(row, "quarantines", &["agent"]);
                    Ok(Quarantine {
                        agent: AgentId::new(r.text("agent")?),
                        since: r.time("since")?,
                        decision_id: r.uuid("decision_id")?,
                        reason: r.text("reason")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;

        let open_escalations = sqlx::query(&format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations \
             WHERE status IN ('pending', 'approved') ORDER BY created_at, id"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(decode_escalation)
        .collect::<Result<Vec<_>, _>>()?;

        let agents = sqlx::query("SELECT id, pack, attributes FROM agents ORDER BY id")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                let r = RowReader::new(row, "agents", &["id"]);
                Ok(AgentRecord {
                    id: AgentId::new(r.text("id")?),
                    pack: r.optional_text("pack")?.map(PackId::new),
                    attributes: r.json_object("attributes")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        tx.commit().await?;
        Ok(StoredState {
            versions,
            active,
            last_policy_event,
            kill_switches,
            quarantines,
            open_escalations,
            agents,
        })
    }

    async fn apply_policy_change(&self, change: PolicyChange) -> Result<u64, StoreError> {
        // Everything that can be refused without the database is checked before
        // the write lock is taken.
        let event = EventRow::encode(&change.event)?;
        let new_version = match &change.new_version {
            Some(v) if v.name != change.name => {
                return Err(StoreError::Unstorable {
                    what: "policy version",
                    value: format!("{}@{}", v.name, v.version),
                    reason: "its name is not the name the change is for",
                });
            }
            Some(v) => {
                encode_time("push time", v.pushed_at)?;
                Some(v)
            }
            None => None,
        };
        let active = active_set(&change);

        let mut tx = self.begin_write().await?;
        if let Some(v) = new_version
            && let Err(e) = insert_version(&mut tx, v).await
        {
            tx.rollback().await?;
            return Err(e);
        }
        if let Err(e) = replace_active(&mut tx, &change.name, &active).await {
            tx.rollback().await?;
            return Err(e);
        }
        let id = event.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn apply_control_change(
        &self,
        change: ControlChange,
        event: NewEvent,
    ) -> Result<Option<u64>, StoreError> {
        let event = EventRow::encode(&event)?;
        let mut tx = self.begin_write().await?;
        let changed = match &change {
            ControlChange::Kill(scope) => {
                let (scope, id) = encode_scope(scope);
                sqlx::query(
                    "INSERT INTO kill_switches (scope, id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(scope)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
            ControlChange::ReleaseKill(scope) => {
                let (scope, id) = encode_scope(scope);
                sqlx::query("DELETE FROM kill_switches WHERE scope = ? AND id = ?")
                    .bind(scope)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            ControlChange::Quarantine(q) => sqlx::query(
                "INSERT INTO quarantines (agent, since, decision_id, reason) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (agent) DO UPDATE SET since = excluded.since, \
                 decision_id = excluded.decision_id, reason = excluded.reason",
            )
            .bind(q.agent.as_str())
            .bind(encode_time("quarantine time", q.since)?)
            .bind(encode_uuid(q.decision_id))
            .bind(&q.reason)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            ControlChange::ReleaseQuarantine(agent) => {
                sqlx::query("DELETE FROM quarantines WHERE agent = ?")
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            ControlChange::OpenEscalation(e) => sqlx::query(
                "INSERT INTO escalations (id, decision_id, fingerprint, agent, action, resource, \
                 namespace, reason, created_at, status, decided_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(encode_uuid(e.id))
            .bind(encode_uuid(e.decision_id))
            .bind(&e.fingerprint.0)
            .bind(e.agent.as_str())
            .bind(&e.action)
            .bind(&e.resource)
            .bind(&e.namespace)
            .bind(&e.reason)
            .bind(encode_time("escalation time", e.created_at)?)
            .bind(e.status.as_str())
            .bind(
                e.decided_at
                    .map(|t| encode_time("escalation decision time", t))
                    .transpose()?,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            ControlChange::SetEscalationStatus { id, from, to, at } => {
                // Conditional on the current status, so two operators deciding at
                // once (or an approval used twice) cannot both win.
                sqlx::query(
                    "UPDATE escalations SET status = ?, decided_at = ? WHERE id = ? AND status = ?",
                )
                .bind(to.as_str())
                .bind(encode_time("escalation decision time", *at)?)
                .bind(encode_uuid(*id))
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
            ControlChange::PutAgent(agent) => sqlx::query(
                "INSERT INTO agents (id, pack, attributes) VALUES (?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET pack = excluded.pack, \
                 attributes = excluded.attributes",
            )
            .bind(agent.id.as_str())
            .bind(agent.pack.as_ref().map(PackId::as_str))
            .bind(encode_json("agent attributes", &agent.attributes)?)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if changed == 0 {
            // Nothing changed, so there is nothing to record.
            tx.rollback().await?;
            return Ok(None);
        }
        let id = event.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn versions(&self, name: &PolicyName) -> Result<Vec<StoredVersion>, StoreError> {
        let mut versions = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM policy_versions WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_version)
        .collect::<Result<Vec<_>, _>>()?;
        sort_versions(&mut versions);
        Ok(versions)
    }

    async fn events(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(
            "SELECT id, at, kind, subject, detail FROM events WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(to_sql_int(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
    }

    async fn record_event(&self, event: NewEvent) -> Result<u64, StoreError> {
        let event = EventRow::encode(&event)?;
        let mut tx = self.begin_write().await?;
        let id = event.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn recent_events(
        &self,
        kind_prefix: &str,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // `substr` rather than LIKE, so `_` and `%` in the prefix mean themselves.
        sqlx::query(
            "SELECT id, at, kind, subject, detail FROM events \
             WHERE substr(kind, 1, length(?1)) = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(kind_prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_event)
        .collect()
    }

    async fn escalations(
        &self,
        status: Option<EscalationStatus>,
        limit: u32,
    ) -> Result<Vec<Escalation>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        ))
        .bind(status.map(EscalationStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_escalation)
        .collect()
    }

    async fn escalation(&self, id: Uuid) -> Result<Option<Escalation>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE id = ?"
        ))
        .bind(encode_uuid(id))
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(decode_escalation)
        .transpose()
    }

    async fn start_rollout(&self, rollout: NewRollout) -> Result<RolloutStarted, StoreError> {
        let event = EventRow::encode(&rollout.event)?;
        let start = encode_json("rollout start", &rollout.start)?;
        let started_at = millis_to_sql("rollout start time", rollout.started_at)?;
        let name = rollout.candidate.name.clone();
        let mut tx = self.begin_write().await?;
        let running = sqlx::query("SELECT id FROM rollouts WHERE name = ? AND finish IS NULL")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = running {
            let id = RowReader::new(&row, "rollouts", &["id"]).id("id")?;
            tx.rollback().await?;
            return Err(StoreError::RolloutRunning { name, id });
        }
        if let Err(e) = insert_version(&mut tx, &rollout.candidate).await {
            tx.rollback().await?;
            return Err(e);
        }
        if !version_exists(&mut tx, &name, &rollout.control).await? {
            tx.rollback().await?;
            return Err(StoreError::UnknownVersion {
                name,
                version: rollout.control,
            });
        }
        let done = sqlx::query(
            "INSERT INTO rollouts (name, candidate, control, start, started_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name.as_str())
        .bind(rollout.candidate.version.to_string())
        .bind(rollout.control.to_string())
        .bind(start)
        .bind(started_at)
        .execute(&mut *tx)
        .await?;
        let id = done.last_insert_rowid();
        let rollout_id = u64::try_from(id).map_err(|e| StoreError::Corrupt {
            table: "rollouts",
            row: id.to_string(),
            column: "id",
            value: id.to_string(),
            reason: e.to_string(),
        })?;
        let event = event.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(RolloutStarted {
            rollout: rollout_id,
            event,
        })
    }

    async fn append_rollout_event(
        &self,
        step: RolloutStep,
    ) -> Result<(Vec<u64>, Option<u64>), StoreError> {
        let event = encode_json("rollout event", &step.event.event)?;
        let at = millis_to_sql("rollout event time", step.event.at)?;
        let records = step
            .records
            .iter()
            .map(EventRow::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let finish = match &step.finish {
            Some(f) => Some((
                encode_json("rollout summary", &f.summary)?,
                f.activate
                    .as_ref()
                    .map(|c| Ok::<_, StoreError>((c, EventRow::encode(&c.event)?)))
                    .transpose()?,
            )),
            None => None,
        };
        let id = to_sql_int(step.rollout);
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT name, finish FROM rollouts WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::UnknownRollout { id: step.rollout });
        };
        let r = RowReader::new(&row, "rollouts", &["name"]);
        let name = PolicyName::new(r.text("name")?);
        if r.optional_text("finish")?.is_some() {
            tx.rollback().await?;
            return Err(StoreError::RolloutFinished { id: step.rollout });
        }
        sqlx::query(
            "INSERT INTO rollout_events (rollout, seq, at, event) \
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3 FROM rollout_events WHERE rollout = ?1",
        )
        .bind(id)
        .bind(at)
        .bind(event)
        .execute(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(records.len());
        for r in &records {
            ids.push(r.insert(&mut tx).await?);
        }
        let mut activated = None;
        if let Some((summary, activate)) = finish {
            if let Some((change, row)) = activate {
                let refusal = if change.name != name {
                    Some("its name is not the rollout's")
                } else if change.new_version.is_some() {
                    Some("a promotion stores no new version")
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    tx.rollback().await?;
                    return Err(StoreError::Unstorable {
                        what: "promotion of policy",
                        value: change.name.to_string(),
                        reason,
                    });
                }
                if let Err(e) = replace_active(&mut tx, &name, &active_set(change)).await {
                    tx.rollback().await?;
                    return Err(e);
                }
                activated = Some(row.insert(&mut tx).await?);
            }
            sqlx::query("UPDATE rollouts SET finish = ? WHERE id = ?")
                .bind(summary)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((ids, activated))
    }

    async fn rollouts(&self, finished: u32) -> Result<Vec<StoredRollout>, StoreError> {
        let mut tx = self.begin_read().await?;
        let columns = "id, name, candidate, control, start, started_at, finish";
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM rollouts WHERE finish IS NULL \
             UNION ALL SELECT * FROM (SELECT {columns} FROM rollouts \
             WHERE finish IS NOT NULL ORDER BY id DESC LIMIT ?) ORDER BY id"
        ))
        .bind(i64::from(finished))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = rows
            .iter()
            .map(decode_rollout)
            .collect::<Result<Vec<_>, _>>()?;
        for rollout in &mut out {
            let rows = sqlx::query(
                "SELECT seq, at, event FROM rollout_events WHERE rollout = ? ORDER BY seq",
            )
            .bind(to_sql_int(rollout.id))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let r = RowReader::new(row, "rollout_events", &["seq"]);
                let event = r.json("event")?;
                rollout.events.push(Stamped {
                    at: UnixMillis(r.id("at")?),
                    event: r.decode_json("event", event)?,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}
