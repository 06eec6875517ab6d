//! The conformance suite: what every [`StateStore`] backend must do, written once
//! against the trait. A backend's tests call [`run_all`] with a function that makes
//! a fresh, empty store; each case may also be called alone.
//!
//! The cases panic on failure, as tests do, with a message naming what broke.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use dynscale_core::controls::{Escalation, EscalationStatus, Fingerprint, KillScope, Quarantine};
use dynscale_core::ids::{AgentId, PackId, PolicyName};
use serde_json::json;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

mod model;

pub use self::model::model_based;
use crate::state::{
    AgentRecord, ControlChange, NewEvent, NewRollout, PolicyChange, RolloutFinish, RolloutStep,
    StateStore, StoreError, StoredEvent, StoredState, StoredVersion,
};
use dynscale_core::rollout::{
    AnalysisConfig, Command, Event, Plan, RolloutSalt, Stamped, Start, UnixMillis,
};

/// Runs every case, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: StateStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    empty_store_loads_default(make().await).await;
    push_then_load(make().await).await;
    duplicate_version_rejected(make().await).await;
    unknown_active_version_rejected(make().await).await;
    rollback_records_event(make().await).await;
    versions_sorted_by_semver(make().await).await;
    events_paging(make().await).await;
    recorded_events(make().await).await;
    last_policy_event_ignores_other_events(make().await).await;
    kill_switches(make().await).await;
    quarantines(make().await).await;
    escalation_lifecycle(make().await).await;
    open_escalations_exclude_closed(make().await).await;
    agent_upsert(make().await).await;
    timestamps_round_trip(make().await).await;
    concurrent_writes(make().await).await;
    rollout_lifecycle(make().await).await;
    rollout_refusals(make().await).await;
    for seed in [1, 2, 3, 0x0d15_ca1e] {
        model_based(make().await, seed, 150).await;
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

/// A fixed base time plus `seconds` and `nanos`, so stored values are reproducible.
fn at(seconds: i64, nanos: u32) -> OffsetDateTime {
    let base: i128 = 1_735_689_600 * 1_000_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(
        base + i128::from(seconds) * 1_000_000_000 + i128::from(nanos),
    )
    .expect("test times are in range")
}

fn name(s: &str) -> PolicyName {
    PolicyName::from(s)
}

fn ver(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("test versions are valid")
}

fn stored(policy: &str, version: &str, n: u64) -> StoredVersion {
    StoredVersion {
        name: name(policy),
        version: ver(version),
        policy_id: Uuid::from_u128(u128::from(n) + 1),
        format: String::from("yaml"),
        source: format!("name: {policy}\nversion: {version}\n# {n}\n"),
        pushed_at: at(i64::try_from(n).unwrap_or(0), 123_456_789),
    }
}

fn event(kind: &str, subject: &str, n: i64) -> NewEvent {
    NewEvent {
        at: at(n, 987_654_321),
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        detail: json!({ "n": n, "nested": { "list": [1, "two", null, true] } }),
    }
}

fn escalation(n: u128, created: i64) -> Escalation {
    Escalation {
        id: Uuid::from_u128(n),
        decision_id: Uuid::from_u128(1_000 + n),
        fingerprint: Fingerprint(format!("fp-{n}")),
        agent: AgentId::from("a1"),
        action: String::from("delete"),
        resource: String::from("db/prod"),
        namespace: String::from("payments"),
        reason: String::from("rule r1"),
        created_at: at(created, 5),
        status: EscalationStatus::Pending,
        decided_at: None,
    }
}

fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: unexpected error: {e}"))
}

async fn push<S: StateStore>(store: &S, policy: &str, version: &str, active: &[&str]) -> u64 {
    let change = PolicyChange {
        name: name(policy),
        new_version: Some(stored(policy, version, 1)),
        active: active.iter().map(|v| ver(v)).collect(),
        event: event("policy.pushed", &format!("{policy}@{version}"), 1),
    };
    ok(
        store.apply_policy_change(change).await,
        &format!("pushing {policy}@{version}"),
    )
}

async fn set_active<S: StateStore>(
    store: &S,
    policy: &str,
    active: &[&str],
) -> Result<u64, StoreError> {
    store
        .apply_policy_change(PolicyChange {
            name: name(policy),
            new_version: None,
            active: active.iter().map(|v| ver(v)).collect(),
            event: event("policy.rolled_back", policy, 2),
        })
        .await
}

async fn control<S: StateStore>(store: &S, change: ControlChange, kind: &str) -> Option<u64> {
    let what = format!("{change:?}");
    ok(
        store
            .apply_control_change(change, event(kind, "control", 3))
            .await,
        &what,
    )
}

async fn all_events<S: StateStore>(store: &S) -> Vec<StoredEvent> {
    ok(store.events(0, u32::MAX).await, "reading every event")
}

async fn load<S: StateStore>(store: &S) -> StoredState {
    ok(store.load().await, "loading")
}

// ---------------------------------------------------------------------------
// Policies.

/// A new store holds nothing and no policy event.
pub async fn empty_store_loads_default<S: StateStore>(store: S) {
    assert_eq!(load(&store).await, StoredState::default());
    assert!(all_events(&store).await.is_empty());
    assert!(ok(store.versions(&name("a")).await, "versions").is_empty());
}

/// A pushed version is stored, active and recorded by its event.
pub async fn push_then_load<S: StateStore>(store: S) {
    let change = PolicyChange {
        name: name("payments-guard"),
        new_version: Some(stored("payments-guard", "1.0.0", 7)),
        active: vec![ver("1.0.0")],
        event: event("policy.pushed", "payments-guard@1.0.0", 7),
    };
    let id = ok(store.apply_policy_change(change.clone()).await, "push");

    let state = load(&store).await;
    assert_eq!(state.versions, vec![stored("payments-guard", "1.0.0", 7)]);
    assert_eq!(state.active, vec![(name("payments-guard"), ver("1.0.0"))]);
    assert_eq!(state.last_policy_event, id);
    assert_eq!(
        ok(store.versions(&name("payments-guard")).await, "versions"),
        vec![stored("payments-guard", "1.0.0", 7)]
    );
    assert!(
        ok(store.versions(&name("other")).await, "versions").is_empty(),
        "versions are per name"
    );
    let expected = StoredEvent {
        id,
        at: change.event.at,
        kind: change.event.kind,
        subject: change.event.subject,
        detail: change.event.detail,
    };
    assert_eq!(all_events(&store).await, vec![expected]);
}

/// Pushing a stored version again is refused and changes nothing, not even the
/// stored source.
pub async fn duplicate_version_rejected<S: StateStore>(store: S) {
    push(&store, "a", "1.0.0", &["1.0.0"]).await;
    let before = load(&store).await;
    let events_before = all_events(&store).await;

    let mut again = stored("a", "1.0.0", 99);
    again.source = String::from("a different document");
    let result = store
        .apply_policy_change(PolicyChange {
            name: name("a"),
            new_version: Some(again),
            active: vec![],
            event: event("policy.pushed", "a@1.0.0", 99),
        })
        .await;
    match result {
        Err(StoreError::DuplicateVersion {
            name: n,
            version: v,
        }) => {
            assert_eq!((n, v), (name("a"), ver("1.0.0")));
        }
        other => panic!("expected DuplicateVersion, got {other:?}"),
    }
    assert_eq!(load(&store).await, before, "nothing changed");
    assert_eq!(all_events(&store).await, events_before, "no event appended");
}

/// A change naming a version that is not stored is refused whole: the new version
/// is not inserted, the active set and the history are untouched.
pub async fn unknown_active_version_rejected<S: StateStore>(store: S) {
    push(&store, "a", "1.0.0", &["1.0.0"]).await;
    push(&store, "b", "2.0.0", &["2.0.0"]).await;
    let before = load(&store).await;
    let events_before = all_events(&store).await;

    let result = store
        .apply_policy_change(PolicyChange {
            name: name("a"),
            new_version: Some(stored("a", "1.1.0", 2)),
            active: vec![ver("1.1.0"), ver("0.9.0")],
            event: event("policy.pushed", "a@1.1.0", 2),
        })
        .await;
    match result {
        Err(StoreError::UnknownVersion {
            name: n,
            version: v,
        }) => {
            assert_eq!((n, v), (name("a"), ver("0.9.0")));
        }
        other => panic!("expected UnknownVersion, got {other:?}"),
    }
    assert_eq!(load(&store).await, before, "1.1.0 was not stored");

    // Without a new version, and with a version that exists only under another name.
    for active in [&["3.0.0"][..], &["1.0.0", "2.0.0"][..]] {
        match set_active(&store, "a", active).await {
            Err(StoreError::UnknownVersion { name: n, .. }) => assert_eq!(n, name("a")),
            other => panic!("activating {active:?}: expected UnknownVersion, got {other:?}"),
        }
    }
    assert_eq!(load(&store).await, before, "nothing changed");
    assert_eq!(all_events(&store).await, events_before, "no event appended");
}

/// A change without a new version moves the active set and records its event;
/// other names are untouched; an empty active list disables the name.
pub async fn rollback_records_event<S: StateStore>(store: S) {
    push(&store, "a", "1.0.0", &["1.0.0"]).await;
    push(&store, "b", "1.0.0", &["1.0.0"]).await;
    let pushed = push(&store, "a", "1.1.0", &["1.1.0"]).await;

    let rolled = ok(set_active(&store, "a", &["1.0.0"]).await, "rollback");
    assert!(rolled > pushed, "event ids grow: {rolled} after {pushed}");
    let state = load(&store).await;
    assert_eq!(
        state.active,
        vec![(name("a"), ver("1.0.0")), (name("b"), ver("1.0.0"))]
    );
    assert_eq!(state.versions.len(), 3, "rolling back deletes no version");
    assert_eq!(state.last_policy_event, rolled);
    let events = all_events(&store).await;
    let last = events.last().expect("the rollback's event");
    assert_eq!(
        (last.id, last.kind.as_str()),
        (rolled, "policy.rolled_back")
    );

    // A canary: two versions active at once.
    ok(set_active(&store, "a", &["1.0.0", "1.1.0"]).await, "canary");
    assert_eq!(
        load(&store).await.active,
        vec![
            (name("a"), ver("1.0.0")),
            (name("a"), ver("1.1.0")),
            (name("b"), ver("1.0.0"))
        ]
    );

    let disabled = ok(set_active(&store, "a", &[]).await, "disable");
    let state = load(&store).await;
    assert_eq!(state.active, vec![(name("b"), ver("1.0.0"))]);
    assert_eq!(state.last_policy_event, disabled);
}

/// Versions come back in semver order, not push order or text order.
pub async fn versions_sorted_by_semver<S: StateStore>(store: S) {
    let pushed = [
        "1.10.0",
        "1.9.0",
        "2.0.0",
        "2.0.0-rc.1",
        "2.0.0-rc.10",
        "2.0.0-alpha",
        "1.2.3",
        "2.0.0-rc.2",
    ];
    for v in pushed {
        push(&store, "a", v, &[]).await;
    }
    let sorted = [
        "1.2.3",
        "1.9.0",
        "1.10.0",
        "2.0.0-alpha",
        "2.0.0-rc.1",
        "2.0.0-rc.2",
        "2.0.0-rc.10",
        "2.0.0",
    ];
    let expected: Vec<semver::Version> = sorted.iter().map(|v| ver(v)).collect();
    let got: Vec<semver::Version> = ok(store.versions(&name("a")).await, "versions")
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(got, expected);
    let loaded: Vec<semver::Version> = load(&store)
        .await
        .versions
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(loaded, expected);

    ok(
        set_active(&store, "a", &["2.0.0", "1.10.0", "1.9.0"]).await,
        "activate",
    );
    let active: Vec<semver::Version> = load(&store)
        .await
        .active
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(active, vec![ver("1.9.0"), ver("1.10.0"), ver("2.0.0")]);
}

// ---------------------------------------------------------------------------
// Events.

/// Ids grow strictly across both kinds of change; `events` pages by id.
pub async fn events_paging<S: StateStore>(store: S) {
    let mut ids = vec![push(&store, "a", "1.0.0", &["1.0.0"]).await];
    for agent in ["x", "y", "z"] {
        let id = control(
            &store,
            ControlChange::Kill(KillScope::Agent(AgentId::from(agent))),
            "kill.set",
        )
        .await;
        ids.push(id.expect("a new kill switch records an event"));
    }
    ids.push(push(&store, "a", "1.1.0", &["1.1.0"]).await);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increase: {ids:?}"
    );

    let all = all_events(&store).await;
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(all[1].detail, event("kill.set", "control", 3).detail);

    assert_eq!(ok(store.events(0, 2).await, "page 1"), all[..2].to_vec());
    assert_eq!(
        ok(store.events(ids[1], 2).await, "page 2"),
        all[2..4].to_vec()
    );
    assert_eq!(
        ok(store.events(ids[3], 2).await, "page 3"),
        all[4..].to_vec()
    );
    assert!(ok(store.events(ids[4], 10).await, "past the end").is_empty());
    assert!(ok(store.events(0, 0).await, "limit 0").is_empty());
    assert!(ok(store.events(u64::MAX, 10).await, "after the largest id").is_empty());
    // `after` need not be an existing id.
    assert_eq!(
        ok(store.events(ids[2] - 1, 1).await, "between ids"),
        all[2..3].to_vec()
    );
}

/// Events that change nothing else are numbered with the rest and found by kind
/// prefix, newest first; they never move the snapshot number.
pub async fn recorded_events<S: StateStore>(store: S) {
    let pushed = push(&store, "a", "1.0.0", &["1.0.0"]).await;
    let mut ids = Vec::new();
    for kind in [
        "alert.firing",
        "scale.certified",
        "alert.resolved",
        "alert_x.firing",
    ] {
        let id = ok(store.record_event(event(kind, "disk", 1)).await, "record");
        ids.push(id);
    }
    assert!(ids[0] > pushed && ids.windows(2).all(|w| w[0] < w[1]));
    let alerts = ok(store.recent_events("alert.", 10).await, "alerts");
    assert_eq!(
        alerts.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2], ids[0]],
        "newest first, and `alert.` does not match `alert_x.`"
    );
    assert_eq!(alerts[0].kind, "alert.resolved");
    assert_eq!(ok(store.recent_events("alert.", 1).await, "limit").len(), 1);
    assert!(ok(store.recent_events("nothing", 5).await, "none").is_empty());
    let state = ok(store.load().await, "load");
    assert_eq!(state.last_policy_event, pushed);
    assert_eq!(all_events(&store).await.len(), 5);
}

/// Only `policy.*` events move the snapshot number.
pub async fn last_policy_event_ignores_other_events<S: StateStore>(store: S) {
    let pushed = push(&store, "a", "1.0.0", &["1.0.0"]).await;
    let killed = control(&store, ControlChange::Kill(KillScope::Global), "kill.set").await;
    assert!(killed.is_some_and(|k| k > pushed));
    let lookalike = control(
        &store,
        ControlChange::Kill(KillScope::Pack(PackId::from("p"))),
        "policyish.set",
    )
    .await;
    assert!(lookalike.is_some());
    let upper = control(
        &store,
        ControlChange::Kill(KillScope::Pack(PackId::from("q"))),
        "Policy.set",
    )
    .await;
    assert!(upper.is_some());
    assert_eq!(load(&store).await.last_policy_event, pushed);
}

// ---------------------------------------------------------------------------
// Controls.

/// Setting a set switch or releasing an unset one changes nothing and records
/// nothing.
pub async fn kill_switches<S: StateStore>(store: S) {
    let agent = KillScope::Agent(AgentId::from("x"));
    let pack = KillScope::Pack(PackId::from("x"));
    assert!(
        control(&store, ControlChange::Kill(agent.clone()), "kill.set")
            .await
            .is_some()
    );
    assert!(
        control(&store, ControlChange::Kill(KillScope::Global), "kill.set")
            .await
            .is_some()
    );
    assert!(
        control(&store, ControlChange::Kill(pack.clone()), "kill.set")
            .await
            .is_some(),
        "a pack and an agent with the same id are different switches"
    );
    let events = all_events(&store).await.len();

    assert_eq!(
        control(&store, ControlChange::Kill(KillScope::Global), "kill.set").await,
        None,
        "already set"
    );
    assert_eq!(
        control(
            &store,
            ControlChange::ReleaseKill(KillScope::Agent(AgentId::from("y"))),
            "kill.released"
        )
        .await,
        None,
        "never set"
    );
    assert_eq!(
        all_events(&store).await.len(),
        events,
        "no event for a no-op"
    );
    assert_eq!(
        load(&store).await.kill_switches,
        vec![KillScope::Global, pack.clone(), agent.clone()]
    );

    assert!(
        control(
            &store,
            ControlChange::ReleaseKill(KillScope::Global),
            "kill.released"
        )
        .await
        .is_some()
    );
    assert_eq!(
        control(
            &store,
            ControlChange::ReleaseKill(KillScope::Global),
            "kill.released"
        )
        .await,
        None
    );
    assert_eq!(load(&store).await.kill_switches, vec![pack, agent]);
    assert_eq!(all_events(&store).await.len(), events + 1);
}

/// Quarantining replaces an agent's quarantine; releasing removes it once.
pub async fn quarantines<S: StateStore>(store: S) {
    let first = Quarantine {
        agent: AgentId::from("a1"),
        since: at(10, 1),
        decision_id: Uuid::from_u128(1),
        reason: String::from("rule r1"),
    };
    assert!(
        control(
            &store,
            ControlChange::Quarantine(first.clone()),
            "agent.quarantined"
        )
        .await
        .is_some()
    );
    assert_eq!(load(&store).await.quarantines, vec![first.clone()]);

    let second = Quarantine {
        since: at(20, 2),
        decision_id: Uuid::from_u128(2),
        reason: String::from("rule r2"),
        ..first
    };
    let other = Quarantine {
        agent: AgentId::from("a0"),
        ..second.clone()
    };
    for q in [&second, &other] {
        assert!(
            control(
                &store,
                ControlChange::Quarantine(q.clone()),
                "agent.quarantined"
            )
            .await
            .is_some()
        );
    }
    assert_eq!(
        load(&store).await.quarantines,
        vec![other.clone(), second.clone()]
    );

    let events = all_events(&store).await.len();
    assert_eq!(
        control(
            &store,
            ControlChange::ReleaseQuarantine(AgentId::from("nobody")),
            "agent.released"
        )
        .await,
        None
    );
    assert_eq!(all_events(&store).await.len(), events);
    assert!(
        control(
            &store,
            ControlChange::ReleaseQuarantine(AgentId::from("a1")),
            "agent.released"
        )
        .await
        .is_some()
    );
    assert_eq!(
        control(
            &store,
            ControlChange::ReleaseQuarantine(AgentId::from("a1")),
            "agent.released"
        )
        .await,
        None
    );
    assert_eq!(load(&store).await.quarantines, vec![other]);
}

fn set_status(
    id: Uuid,
    from: EscalationStatus,
    to: EscalationStatus,
    at: OffsetDateTime,
) -> ControlChange {
    ControlChange::SetEscalationStatus { id, from, to, at }
}

/// Open, approve once, refuse a second approval, use.
pub async fn escalation_lifecycle<S: StateStore>(store: S) {
    use EscalationStatus::{Approved, Pending, Used};

    let e = escalation(1, 0);
    assert!(
        control(
            &store,
            ControlChange::OpenEscalation(e.clone()),
            "escalation.opened"
        )
        .await
        .is_some()
    );
    assert_eq!(load(&store).await.open_escalations, vec![e.clone()]);
    assert_eq!(
        ok(store.escalation(e.id).await, "escalation"),
        Some(e.clone())
    );

    let approved_at = at(60, 7);
    let approved = control(
        &store,
        set_status(e.id, Pending, Approved, approved_at),
        "escalation.approved",
    )
    .await;
    assert!(approved.is_some());
    let expected = Escalation {
        status: Approved,
        decided_at: Some(approved_at),
        ..e.clone()
    };
    assert_eq!(
        ok(store.escalation(e.id).await, "escalation"),
        Some(expected.clone())
    );

    let events = all_events(&store).await.len();
    assert_eq!(
        control(
            &store,
            set_status(e.id, Pending, Approved, at(61, 0)),
            "escalation.approved"
        )
        .await,
        None,
        "a second approval does not apply"
    );
    assert_eq!(
        control(
            &store,
            set_status(Uuid::from_u128(404), Pending, Approved, at(61, 0)),
            "escalation.approved"
        )
        .await,
        None,
        "an unknown escalation does not apply"
    );
    assert_eq!(all_events(&store).await.len(), events, "no event appended");
    assert_eq!(
        ok(store.escalation(e.id).await, "escalation"),
        Some(expected.clone()),
        "unchanged"
    );
    assert_eq!(load(&store).await.open_escalations, vec![expected.clone()]);

    let used_at = at(90, 9);
    assert!(
        control(
            &store,
            set_status(e.id, Approved, Used, used_at),
            "escalation.used"
        )
        .await
        .is_some()
    );
    assert!(load(&store).await.open_escalations.is_empty());
    assert_eq!(
        ok(store.escalation(e.id).await, "escalation"),
        Some(Escalation {
            status: Used,
            decided_at: Some(used_at),
            ..e
        })
    );
    assert_eq!(
        ok(store.escalation(Uuid::from_u128(404)).await, "none"),
        None
    );
}

/// Load keeps pending and approved escalations only, oldest first; the listing
/// shows all, newest first, filtered and limited.
pub async fn open_escalations_exclude_closed<S: StateStore>(store: S) {
    use EscalationStatus::{Approved, Denied, Pending, Used};

    // e3 and e4 share a creation time, so the id breaks the tie.
    let opened = [
        escalation(1, 10),
        escalation(2, 20),
        escalation(4, 30),
        escalation(3, 30),
    ];
    for e in &opened {
        control(
            &store,
            ControlChange::OpenEscalation(e.clone()),
            "escalation.opened",
        )
        .await;
    }
    let [e1, e2, e4, e3] = opened;
    let decided = at(100, 0);
    for (id, from, to) in [
        (e2.id, Pending, Denied),
        (e3.id, Pending, Approved),
        (e4.id, Pending, Approved),
        (e4.id, Approved, Used),
    ] {
        assert!(
            control(
                &store,
                set_status(id, from, to, decided),
                "escalation.decided"
            )
            .await
            .is_some()
        );
    }
    let with = |e: &Escalation, status| Escalation {
        status,
        decided_at: Some(decided),
        ..e.clone()
    };
    let (e2, e3, e4) = (with(&e2, Denied), with(&e3, Approved), with(&e4, Used));

    assert_eq!(
        load(&store).await.open_escalations,
        vec![e1.clone(), e3.clone()]
    );
    assert_eq!(
        ok(store.escalations(None, 10).await, "all"),
        vec![e4.clone(), e3.clone(), e2.clone(), e1.clone()]
    );
    assert_eq!(
        ok(store.escalations(None, 2).await, "limited"),
        vec![e4.clone(), e3.clone()]
    );
    assert_eq!(
        ok(store.escalations(Some(Pending), 10).await, "pending"),
        vec![e1]
    );
    assert_eq!(
        ok(store.escalations(Some(Denied), 10).await, "denied"),
        vec![e2]
    );
    assert_eq!(
        ok(store.escalations(Some(Used), 10).await, "used"),
        vec![e4]
    );
    assert!(ok(store.escalations(Some(Approved), 0).await, "limit 0").is_empty());
}

/// Putting an agent again replaces its pack and attributes.
pub async fn agent_upsert<S: StateStore>(store: S) {
    let attributes = |v: serde_json::Value| match v {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let a1 = AgentRecord {
        id: AgentId::from("a1"),
        pack: Some(PackId::from("alpha")),
        attributes: attributes(json!({ "tier": "gold", "limits": { "rps": 10 } })),
    };
    let a0 = AgentRecord {
        id: AgentId::from("a0"),
        pack: None,
        attributes: serde_json::Map::new(),
    };
    let a1_moved = AgentRecord {
        pack: Some(PackId::from("beta")),
        attributes: attributes(json!({ "tier": "silver" })),
        ..a1.clone()
    };
    let a1_unpacked = AgentRecord {
        pack: None,
        ..a1_moved.clone()
    };
    for a in [&a1, &a0, &a1_moved] {
        assert!(
            control(&store, ControlChange::PutAgent(a.clone()), "agent.put")
                .await
                .is_some()
        );
    }
    assert_eq!(load(&store).await.agents, vec![a0.clone(), a1_moved]);
    control(
        &store,
        ControlChange::PutAgent(a1_unpacked.clone()),
        "agent.put",
    )
    .await;
    assert_eq!(load(&store).await.agents, vec![a0, a1_unpacked]);
}

/// Timestamps keep their instant to the nanosecond whatever offset they came
/// with. A backend may refuse a time it cannot represent, but then changes nothing.
pub async fn timestamps_round_trip<S: StateStore>(store: S) {
    let offset = UtcOffset::from_hms(5, 30, 0).expect("valid offset");
    let q = Quarantine {
        agent: AgentId::from("a1"),
        since: at(3, 999_999_999).to_offset(offset),
        decision_id: Uuid::from_u128(1),
        reason: String::new(),
    };
    control(
        &store,
        ControlChange::Quarantine(q.clone()),
        "agent.quarantined",
    )
    .await;
    let loaded = load(&store).await.quarantines;
    assert_eq!(loaded, vec![q]);
    assert_eq!(
        loaded[0].since.unix_timestamp_nanos(),
        at(3, 999_999_999).unix_timestamp_nanos()
    );

    let extremes = [
        OffsetDateTime::UNIX_EPOCH,
        time::Date::from_calendar_date(9999, time::Month::December, 31)
            .expect("valid date")
            .with_hms_nano(23, 59, 59, 999_999_999)
            .expect("valid time")
            .assume_utc(),
        time::Date::from_calendar_date(-1, time::Month::January, 1)
            .expect("valid date")
            .midnight()
            .assume_utc(),
    ];
    for (n, t) in extremes.into_iter().enumerate() {
        let before = load(&store).await;
        let q = Quarantine {
            agent: AgentId::new(format!("edge-{n}")),
            since: t,
            decision_id: Uuid::from_u128(2),
            reason: String::new(),
        };
        match store
            .apply_control_change(ControlChange::Quarantine(q.clone()), event("q", "q", 0))
            .await
        {
            Ok(Some(_)) => {
                let after = load(&store).await;
                assert!(after.quarantines.contains(&q), "{t} round-trips");
            }
            Err(StoreError::Unstorable { .. }) => {
                assert_eq!(load(&store).await, before, "{t} refused, nothing changed");
            }
            other => panic!("storing {t}: {other:?}"),
        }
    }
}

/// Writers racing each other all succeed, each with its own event id.
pub async fn concurrent_writes<S: StateStore>(store: S) {
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let (mut policy_ids, mut control_ids) = (Vec::new(), Vec::new());
            for round in 0..4 {
                let policy = format!("p{task}");
                let version = format!("1.{round}.0");
                policy_ids.push(push(&*store, &policy, &version, &[version.as_str()]).await);
                let scope = KillScope::Agent(AgentId::new(format!("{task}-{round}")));
                control_ids.extend(control(&*store, ControlChange::Kill(scope), "kill.set").await);
            }
            (policy_ids, control_ids)
        }));
    }
    let (mut ids, mut last_policy) = (BTreeSet::new(), 0);
    for task in tasks {
        let (policy_ids, control_ids) = task.await.expect("a writer task panicked");
        last_policy = policy_ids.iter().copied().fold(last_policy, u64::max);
        for id in policy_ids.into_iter().chain(control_ids) {
            assert!(ids.insert(id), "event id {id} given twice");
        }
    }
    assert_eq!(ids.len(), 64, "every write applied");
    let state = load(&*store).await;
    assert_eq!(state.kill_switches.len(), 32);
    assert_eq!(state.versions.len(), 32);
    assert_eq!(state.active.len(), 8);
    assert_eq!(state.last_policy_event, last_policy);
    assert_eq!(all_events(&*store).await.len(), 64);
}

// ---------------------------------------------------------------------------
// Rollouts.

fn rollout_start(salt: &str) -> Start {
    Start {
        salt: RolloutSalt::new(salt).expect("test salts have no NUL"),
        plan: Plan::Shadow,
        config: AnalysisConfig::default(),
    }
}

fn new_rollout(policy: &str, candidate: &str, control: &str, n: u64) -> NewRollout {
    NewRollout {
        candidate: stored(policy, candidate, n),
        control: ver(control),
        start: rollout_start(&format!("{policy}@{candidate}")),
        started_at: UnixMillis(1_000 + n),
        event: event("rollout.started", policy, i64::try_from(n).unwrap_or(0)),
    }
}

fn stamped(at: u64, event: Event) -> Stamped {
    Stamped {
        at: UnixMillis(at),
        event,
    }
}

/// Start, events in order, one running rollout per name, a promotion applied with
/// the last event, and no events after the finish.
pub async fn rollout_lifecycle<S: StateStore>(store: S) {
    push(&store, "p", "1.0.0", &["1.0.0"]).await;
    let started = ok(
        store
            .start_rollout(new_rollout("p", "1.1.0", "1.0.0", 5))
            .await,
        "start_rollout",
    );
    let state = load(&store).await;
    assert!(
        state.versions.iter().any(|v| v.version == ver("1.1.0")),
        "the candidate is stored"
    );
    assert_eq!(
        state.active,
        vec![(name("p"), ver("1.0.0"))],
        "the candidate is not active"
    );
    assert_eq!(
        all_events(&store)
            .await
            .last()
            .map(|e| (e.id, e.kind.clone())),
        Some((started.event, "rollout.started".into()))
    );
    match store
        .start_rollout(new_rollout("p", "1.2.0", "1.0.0", 6))
        .await
    {
        Err(StoreError::RolloutRunning { name: n, id }) => {
            assert_eq!((n, id), (name("p"), started.rollout));
        }
        other => panic!("a second running rollout of p was not refused: {other:?}"),
    }
    // A rollout of another name runs beside it.
    push(&store, "q", "1.0.0", &["1.0.0"]).await;
    let other = ok(
        store
            .start_rollout(new_rollout("q", "2.0.0", "1.0.0", 7))
            .await,
        "start_rollout of q",
    );

    let events = [
        stamped(2_000, Event::Tick),
        stamped(3_000, Event::Command(Command::Pause)),
    ];
    for e in &events {
        let (ids, activated) = ok(
            store
                .append_rollout_event(RolloutStep {
                    rollout: started.rollout,
                    event: e.clone(),
                    records: vec![event("rollout.paused", "p", 3)],
                    finish: None,
                })
                .await,
            "append_rollout_event",
        );
        assert_eq!((ids.len(), activated), (1, None));
    }
    let running = ok(store.rollouts(0).await, "rollouts");
    assert_eq!(
        running.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![started.rollout, other.rollout]
    );
    assert_eq!(running[0].events, events.to_vec());
    assert_eq!(running[0].start, rollout_start("p@1.1.0"));
    assert_eq!(running[0].started_at, UnixMillis(1_005));
    assert_eq!(
        (running[0].candidate.clone(), running[0].control.clone()),
        (ver("1.1.0"), ver("1.0.0"))
    );
    assert_eq!(running[0].finish, None);

    let promote = stamped(4_000, Event::Command(Command::Promote));
    let (_, activated) = ok(
        store
            .append_rollout_event(RolloutStep {
                rollout: started.rollout,
                event: promote.clone(),
                records: vec![event("rollout.promoted", "p", 4)],
                finish: Some(RolloutFinish {
                    summary: json!({"finish": "promoted"}),
                    activate: Some(PolicyChange {
                        name: name("p"),
                        new_version: None,
                        active: vec![ver("1.1.0")],
                        event: event("policy.promoted", "p@1.1.0", 4),
                    }),
                }),
            })
            .await,
        "promotion",
    );
    let state = load(&store).await;
    assert_eq!(
        state
            .active
            .iter()
            .filter(|(n, _)| *n == name("p"))
            .collect::<Vec<_>>(),
        vec![&(name("p"), ver("1.1.0"))]
    );
    assert_eq!(
        Some(state.last_policy_event),
        activated,
        "the promotion is a policy event"
    );
    match store
        .append_rollout_event(RolloutStep {
            rollout: started.rollout,
            event: stamped(5_000, Event::Tick),
            records: vec![],
            finish: None,
        })
        .await
    {
        Err(StoreError::RolloutFinished { id }) => assert_eq!(id, started.rollout),
        other => panic!("an event after the finish was not refused: {other:?}"),
    }
    let running = ok(store.rollouts(0).await, "rollouts");
    assert_eq!(
        running.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![other.rollout]
    );
    let with_finished = ok(store.rollouts(10).await, "rollouts with finished");
    assert_eq!(with_finished.len(), 2);
    assert_eq!(with_finished[0].finish, Some(json!({"finish": "promoted"})));
    assert_eq!(with_finished[0].events.last(), Some(&promote));
    // A new rollout of the name may start once the last one finished.
    ok(
        store
            .start_rollout(new_rollout("p", "1.2.0", "1.1.0", 8))
            .await,
        "a second rollout after the first finished",
    );
}

/// Refused starts and steps store nothing.
pub async fn rollout_refusals<S: StateStore>(store: S) {
    push(&store, "p", "1.0.0", &["1.0.0"]).await;
    let before = all_events(&store).await;
    match store
        .start_rollout(new_rollout("p", "1.1.0", "0.9.0", 1))
        .await
    {
        Err(StoreError::UnknownVersion { version, .. }) => assert_eq!(version, ver("0.9.0")),
        other => panic!("an unknown control was not refused: {other:?}"),
    }
    match store
        .start_rollout(new_rollout("p", "1.0.0", "1.0.0", 1))
        .await
    {
        Err(StoreError::DuplicateVersion { .. }) => {}
        other => panic!("a stored candidate was not refused: {other:?}"),
    }
    assert_eq!(
        all_events(&store).await,
        before,
        "refused starts store no event"
    );
    assert_eq!(
        load(&store).await.versions.len(),
        1,
        "refused starts store no version"
    );
    match store
        .append_rollout_event(RolloutStep {
            rollout: 99,
            event: stamped(1, Event::Tick),
            records: vec![],
            finish: None,
        })
        .await
    {
        Err(StoreError::UnknownRollout { id: 99 }) => {}
        other => panic!("an unknown rollout was not refused: {other:?}"),
    }
    let started = ok(
        store
            .start_rollout(new_rollout("p", "1.1.0", "1.0.0", 2))
            .await,
        "start_rollout",
    );
    let bad_promotion = RolloutStep {
        rollout: started.rollout,
        event: stamped(2, Event::Command(Command::Promote)),
        records: vec![event("rollout.promoted", "p", 2)],
        finish: Some(RolloutFinish {
            summary: json!({}),
            activate: Some(PolicyChange {
                name: name("other"),
                new_version: None,
                active: vec![ver("1.1.0")],
                event: event("policy.promoted", "p", 2),
            }),
        }),
    };
    let events = all_events(&store).await;
    assert!(matches!(
        store.append_rollout_event(bad_promotion).await,
        Err(StoreError::Unstorable { .. })
    ));
    assert_eq!(
        all_events(&store).await,
        events,
        "a refused step stores nothing"
    );
    let running = ok(store.rollouts(0).await, "rollouts");
    assert!(running[0].events.is_empty() && running[0].finish.is_none());
}
