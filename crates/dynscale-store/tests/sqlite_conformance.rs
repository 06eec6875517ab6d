//! Runs the conformance suite against the SQLite store, then checks what is
//! SQLite's own: durability across reopening, data directory errors, and refusing
//! corrupt rows instead of panicking.

use std::path::Path;
use std::sync::Mutex;

use dynscale_core::controls::{EscalationStatus, KillScope};
use dynscale_core::ids::{AgentId, PolicyName};
use dynscale_store::{
    ControlChange, NewEvent, PolicyChange, SqliteStore, StateStore, StoreError, StoredVersion,
};
use time::OffsetDateTime;
use uuid::Uuid;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

#[tokio::test]
async fn conformance() {
    // Each store's directory must outlive the store, so the directories are kept
    // here until the suite is done.
    let dirs = Mutex::new(Vec::new());
    dynscale_store::conformance::run_all(|| {
        let dir = tempdir();
        let path = dir.path().to_owned();
        dirs.lock().expect("not poisoned").push(dir);
        async move { open(&path).await }
    })
    .await;
}

fn event(kind: &str) -> NewEvent {
    NewEvent {
        at: OffsetDateTime::from_unix_timestamp_nanos(1_735_689_600_123_456_789).expect("in range"),
        kind: kind.to_owned(),
        subject: String::from("test"),
        detail: serde_json::json!({ "why": "test" }),
    }
}

/// Fills a store with one of everything.
async fn fill(store: &SqliteStore) {
    let name = PolicyName::from("a");
    let version = semver::Version::new(1, 2, 3);
    store
        .apply_policy_change(PolicyChange {
            name: name.clone(),
            new_version: Some(StoredVersion {
                name: name.clone(),
                version: version.clone(),
                policy_id: Uuid::from_u128(9),
                format: String::from("yaml"),
                source: String::from("name: a\n"),
                pushed_at: OffsetDateTime::UNIX_EPOCH,
            }),
            active: vec![version],
            event: event("policy.pushed"),
        })
        .await
        .expect("push");
    for change in [
        ControlChange::Kill(KillScope::Global),
        ControlChange::Quarantine(dynscale_core::controls::Quarantine {
            agent: AgentId::from("x"),
            since: OffsetDateTime::UNIX_EPOCH,
            decision_id: Uuid::from_u128(1),
            reason: String::from("r"),
        }),
        ControlChange::OpenEscalation(dynscale_core::controls::Escalation {
            id: Uuid::from_u128(2),
            decision_id: Uuid::from_u128(3),
            fingerprint: dynscale_core::controls::Fingerprint(String::from("fp")),
            agent: AgentId::from("x"),
            action: String::from("delete"),
            resource: String::from("r"),
            namespace: String::from("n"),
            reason: String::from("r"),
            created_at: OffsetDateTime::UNIX_EPOCH,
            status: EscalationStatus::Pending,
            decided_at: None,
        }),
        ControlChange::PutAgent(dynscale_store::AgentRecord {
            id: AgentId::from("x"),
            pack: None,
            attributes: serde_json::Map::new(),
        }),
    ] {
        let applied = store
            .apply_control_change(change, event("control"))
            .await
            .expect("control change");
        assert!(applied.is_some());
    }
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempdir();
    let store = open(dir.path()).await;
    fill(&store).await;
    let before = store.load().await.expect("load");
    let events = store.events(0, 100).await.expect("events");
    store.close().await;

    let store = open(dir.path()).await;
    assert_eq!(store.load().await.expect("load after reopen"), before);
    assert_eq!(store.events(0, 100).await.expect("events"), events);
}

#[tokio::test]
async fn data_survives_drop_without_close() {
    let dir = tempdir();
    let store = open(dir.path()).await;
    fill(&store).await;
    let before = store.load().await.expect("load");
    drop(store);

    let store = open(dir.path()).await;
    assert_eq!(store.load().await.expect("load after reopen"), before);
    // New ids continue after the old ones.
    let last = store
        .events(0, 100)
        .await
        .expect("events")
        .last()
        .map(|e| e.id);
    let id = store
        .apply_control_change(
            ControlChange::ReleaseKill(KillScope::Global),
            event("kill.released"),
        )
        .await
        .expect("release");
    assert!(id > last, "{id:?} after {last:?}");
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempdir();
    let nested = dir.path().join("a").join("b");
    let store = open(&nested).await;
    assert_eq!(store.path(), nested.join("state.db"));
    assert!(store.path().is_file());
}

#[tokio::test]
async fn data_dir_that_is_a_file_is_refused_by_name() {
    let dir = tempdir();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write a file");
    match SqliteStore::open(&file).await {
        Err(e @ StoreError::DataDir { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&file.display().to_string()),
                "the error names the path: {message}"
            );
        }
        other => panic!("expected a DataDir error, got {other:?}"),
    }
}

#[tokio::test]
async fn database_path_that_is_a_directory_is_refused_by_name() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("state.db")).expect("make a directory");
    match SqliteStore::open(dir.path()).await {
        Err(e @ StoreError::Open { .. }) => {
            assert!(e.to_string().contains("state.db"), "{e}");
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
}

/// Writes straight into the database behind the store's back.
async fn tamper(dir: &Path, sql: &str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("state.db"))
        // The damage may break the references the store keeps.
        .foreign_keys(false)
        .connect()
        .await
        .expect("a raw connection");
    // The schema's CHECK constraints would refuse some of the damage.
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut conn)
        .await
        .expect("pragma");
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let cases = [
        (
            "UPDATE policy_versions SET version = 'one.two'",
            "policy_versions",
            "version",
            "one.two",
        ),
        (
            "UPDATE policy_versions SET policy_id = 'not-a-uuid'",
            "policy_versions",
            "policy_id",
            "not-a-uuid",
        ),
        (
            "UPDATE escalations SET decision_id = 'nope'",
            "escalations",
            "decision_id",
            "nope",
        ),
        (
            "UPDATE quarantines SET since = 'yesterday'",
            "quarantines",
            "since",
            "yesterday",
        ),
        (
            "UPDATE kill_switches SET scope = 'planet'",
            "kill_switches",
            "scope",
            "planet",
        ),
        (
            "UPDATE agents SET attributes = '[1]'",
            "agents",
            "attributes",
            "[1]",
        ),
        (
            "UPDATE agents SET pack = X'FF'",
            "agents",
            "pack",
            "(undecodable)",
        ),
    ];
    for (sql, table, column, value) in cases {
        let dir = tempdir();
        let store = open(dir.path()).await;
        fill(&store).await;
        tamper(dir.path(), sql).await;
        match store.load().await {
            Err(StoreError::Corrupt {
                table: t,
                column: c,
                value: v,
                row,
                ..
            }) => {
                assert_eq!((t, c, v.as_str()), (table, column, value), "{sql}");
                assert!(!row.is_empty(), "{sql}: the row is named");
            }
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn corrupt_event_is_reported_by_id() {
    let dir = tempdir();
    let store = open(dir.path()).await;
    fill(&store).await;
    tamper(dir.path(), "UPDATE events SET at = 'soon' WHERE id = 2").await;
    match store.events(0, 10).await {
        Err(StoreError::Corrupt {
            table, row, column, ..
        }) => {
            assert_eq!((table, row.as_str(), column), ("events", "2", "at"));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.events(2, 10).await.expect("later events").len(), 3);
}

#[tokio::test]
async fn corrupt_escalation_status_is_reported() {
    let dir = tempdir();
    let store = open(dir.path()).await;
    fill(&store).await;
    tamper(dir.path(), "UPDATE escalations SET status = 'maybe'").await;
    // Loading reads only open escalations, so the damaged row shows in the listing.
    match store.escalations(None, 10).await {
        Err(StoreError::Corrupt {
            table,
            row,
            column,
            value,
            ..
        }) => {
            assert_eq!(
                (table, row, column, value.as_str()),
                (
                    "escalations",
                    Uuid::from_u128(2).to_string(),
                    "status",
                    "maybe"
                )
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.escalation(Uuid::from_u128(2)).await,
        Err(StoreError::Corrupt { .. })
    ));
}
