//! The model-based case of the conformance suite: random operations applied both
//! to a store and to a plain in-memory model, which must agree after every step.

use std::collections::{BTreeMap, BTreeSet};

use dynscale_core::controls::{Escalation, EscalationStatus, Fingerprint, KillScope, Quarantine};
use dynscale_core::ids::{AgentId, PackId, PolicyName};
use serde_json::json;
use uuid::Uuid;

use super::{all_events, at, escalation, load, name, ok, set_status, stored, ver};
use crate::state::{
    AgentRecord, ControlChange, NewEvent, PolicyChange, StateStore, StoreError, StoredEvent,
    StoredState, StoredVersion,
};

/// A small deterministic PRNG (SplitMix64), so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // The tiny bias of `%` does not matter for picking test operations.
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// What the store should hold, kept in the simplest structures that can.
#[derive(Debug, Default)]
struct Model {
    versions: BTreeMap<(PolicyName, semver::Version), StoredVersion>,
    active: BTreeSet<(PolicyName, semver::Version)>,
    last_policy_event: u64,
    kill_switches: BTreeSet<KillScope>,
    quarantines: BTreeMap<AgentId, Quarantine>,
    escalations: BTreeMap<Uuid, Escalation>,
    agents: BTreeMap<AgentId, AgentRecord>,
    events: Vec<StoredEvent>,
}

/// How an operation should end, compared by kind.
#[derive(Debug, PartialEq)]
enum Outcome {
    Applied,
    NotApplied,
    Duplicate,
    Unknown,
}

#[derive(Debug)]
enum Op {
    Policy(PolicyChange),
    Control(ControlChange, NewEvent),
}

impl Model {
    fn state(&self) -> StoredState {
        let mut open: Vec<Escalation> = self
            .escalations
            .values()
            .filter(|e| {
                matches!(
                    e.status,
                    EscalationStatus::Pending | EscalationStatus::Approved
                )
            })
            .cloned()
            .collect();
        open.sort_by_key(|e| (e.created_at, e.id));
        StoredState {
            versions: self.versions.values().cloned().collect(),
            active: self.active.iter().cloned().collect(),
            last_policy_event: self.last_policy_event,
            kill_switches: self.kill_switches.iter().cloned().collect(),
            quarantines: self.quarantines.values().cloned().collect(),
            open_escalations: open,
            agents: self.agents.values().cloned().collect(),
        }
    }

    /// Escalations as the listing orders them: newest first.
    fn listing(&self, status: Option<EscalationStatus>) -> Vec<Escalation> {
        let mut all: Vec<Escalation> = self
            .escalations
            .values()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .cloned()
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
        all
    }

    /// Applies `op` if it should apply; says how it should end.
    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Policy(change) => {
                if let Some(v) = &change.new_version
                    && self
                        .versions
                        .contains_key(&(v.name.clone(), v.version.clone()))
                {
                    return Outcome::Duplicate;
                }
                let known = |version: &semver::Version| {
                    self.versions
                        .contains_key(&(change.name.clone(), version.clone()))
                        || change
                            .new_version
                            .as_ref()
                            .is_some_and(|v| &v.version == version)
                };
                if !change.active.iter().all(known) {
                    return Outcome::Unknown;
                }
                if let Some(v) = &change.new_version {
                    self.versions
                        .insert((v.name.clone(), v.version.clone()), v.clone());
                }
                self.active.retain(|(n, _)| n != &change.name);
                for v in &change.active {
                    self.active.insert((change.name.clone(), v.clone()));
                }
                Outcome::Applied
            }
            Op::Control(change, _) => {
                let applied = match change {
                    ControlChange::Kill(scope) => self.kill_switches.insert(scope.clone()),
                    ControlChange::ReleaseKill(scope) => self.kill_switches.remove(scope),
                    ControlChange::Quarantine(q) => {
                        self.quarantines.insert(q.agent.clone(), q.clone());
                        true
                    }
                    ControlChange::ReleaseQuarantine(agent) => {
                        self.quarantines.remove(agent).is_some()
                    }
                    ControlChange::OpenEscalation(e) => {
                        self.escalations.insert(e.id, e.clone());
                        true
                    }
                    ControlChange::SetEscalationStatus { id, from, to, at } => {
                        match self.escalations.get_mut(id) {
                            Some(e) if e.status == *from => {
                                e.status = *to;
                                e.decided_at = Some(*at);
                                true
                            }
                            _ => false,
                        }
                    }
                    ControlChange::PutAgent(agent) => {
                        self.agents.insert(agent.id.clone(), agent.clone());
                        true
                    }
                };
                if applied {
                    Outcome::Applied
                } else {
                    Outcome::NotApplied
                }
            }
        }
    }

    /// Records the event the store appended for an applied operation.
    fn record(&mut self, id: u64, event: &NewEvent) {
        if let Some(last) = self.events.last() {
            assert!(id > last.id, "event id {id} after {}", last.id);
        }
        if event.kind.starts_with("policy.") {
            self.last_policy_event = id;
        }
        self.events.push(StoredEvent {
            id,
            at: event.at,
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            detail: event.detail.clone(),
        });
    }
}

const NAMES: [&str; 2] = ["a", "b"];
const VERSIONS: [&str; 6] = [
    "0.1.0",
    "1.0.0-rc.1",
    "1.0.0",
    "1.9.0",
    "1.10.0",
    "2.0.0+build.5",
];
const AGENTS: [&str; 3] = ["x", "y", "z"];
const PACKS: [&str; 2] = ["p", "q"];
const STATUSES: [EscalationStatus; 4] = [
    EscalationStatus::Pending,
    EscalationStatus::Approved,
    EscalationStatus::Denied,
    EscalationStatus::Used,
];

fn random_op(rng: &mut Rng, step: u64, model: &Model) -> Op {
    let step_i = i64::try_from(step).unwrap_or(i64::MAX);
    // Coarse times, so escalations often share a creation time and the id decides.
    let time = |rng: &mut Rng| at(rng.below(20) as i64, rng.below(3) as u32 * 500_000_000);
    let new_event = |kind: &str| NewEvent {
        at: at(step_i, 1),
        kind: kind.to_owned(),
        subject: format!("step {step}"),
        detail: json!({ "step": step }),
    };
    let scope = |rng: &mut Rng| match rng.below(3) {
        0 => KillScope::Global,
        1 => KillScope::Pack(PackId::from(*rng.pick(&PACKS))),
        _ => KillScope::Agent(AgentId::from(*rng.pick(&AGENTS))),
    };
    let active = |rng: &mut Rng| -> Vec<semver::Version> {
        VERSIONS
            .iter()
            .filter(|_| rng.chance(4))
            .map(|v| ver(v))
            .collect()
    };
    match rng.below(10) {
        0 | 1 => {
            let policy = *rng.pick(&NAMES);
            let version = *rng.pick(&VERSIONS);
            let mut active = active(rng);
            if !rng.chance(4) {
                active.push(ver(version));
            }
            Op::Policy(PolicyChange {
                name: name(policy),
                new_version: Some(stored(policy, version, step)),
                active,
                event: new_event("policy.pushed"),
            })
        }
        2 => Op::Policy(PolicyChange {
            name: name(rng.pick::<&str>(&NAMES)),
            new_version: None,
            active: active(rng),
            event: new_event("policy.rolled_back"),
        }),
        3 => Op::Control(ControlChange::Kill(scope(rng)), new_event("kill.set")),
        4 => Op::Control(
            ControlChange::ReleaseKill(scope(rng)),
            new_event("kill.released"),
        ),
        5 => Op::Control(
            ControlChange::Quarantine(Quarantine {
                agent: AgentId::from(*rng.pick(&AGENTS)),
                since: time(rng),
                decision_id: Uuid::from_u128(u128::from(rng.next())),
                reason: format!("reason {}", rng.below(3)),
            }),
            new_event("agent.quarantined"),
        ),
        6 => Op::Control(
            ControlChange::ReleaseQuarantine(AgentId::from(*rng.pick(&AGENTS))),
            new_event("agent.released"),
        ),
        7 => {
            let mut e = escalation(u128::from(rng.next()), 0);
            e.created_at = time(rng);
            e.status = *rng.pick(&STATUSES);
            e.decided_at = rng.chance(2).then(|| time(rng));
            e.fingerprint = Fingerprint(format!("fp-{}", rng.below(3)));
            Op::Control(
                ControlChange::OpenEscalation(e),
                new_event("escalation.opened"),
            )
        }
        8 => {
            let ids: Vec<Uuid> = model.escalations.keys().copied().collect();
            let id = if ids.is_empty() || rng.chance(8) {
                Uuid::from_u128(u128::from(rng.next()))
            } else {
                *rng.pick(&ids)
            };
            Op::Control(
                set_status(id, *rng.pick(&STATUSES), *rng.pick(&STATUSES), time(rng)),
                new_event("escalation.decided"),
            )
        }
        _ => {
            let mut attributes = serde_json::Map::new();
            attributes.insert(String::from("tier"), json!(rng.below(3)));
            if rng.chance(2) {
                attributes.insert(String::from("tags"), json!(["a", { "b": null }]));
            }
            Op::Control(
                ControlChange::PutAgent(AgentRecord {
                    id: AgentId::from(*rng.pick(&AGENTS)),
                    pack: rng.chance(2).then(|| PackId::from(*rng.pick(&PACKS))),
                    attributes,
                }),
                new_event("agent.put"),
            )
        }
    }
}

/// Applies `steps` random operations to `store` and to the model, comparing the
/// outcome and the loaded state after each, and the read methods at the end.
pub async fn model_based<S: StateStore>(store: S, seed: u64, steps: u64) {
    let mut rng = Rng(seed);
    let mut model = Model::default();
    for step in 0..steps {
        let op = random_op(&mut rng, step, &model);
        let context = format!("seed {seed}, step {step}: {op:?}");
        let expected = model.apply(&op);
        let (outcome, id, event) = match &op {
            Op::Policy(change) => {
                let result = store.apply_policy_change(change.clone()).await;
                let outcome = match &result {
                    Ok(_) => Outcome::Applied,
                    Err(StoreError::DuplicateVersion { .. }) => Outcome::Duplicate,
                    Err(StoreError::UnknownVersion { name: n, .. }) if n == &change.name => {
                        Outcome::Unknown
                    }
                    Err(e) => panic!("{context}: unexpected error: {e}"),
                };
                (outcome, result.ok(), &change.event)
            }
            Op::Control(change, event) => {
                let result = store
                    .apply_control_change(change.clone(), event.clone())
                    .await;
                match result {
                    Ok(Some(id)) => (Outcome::Applied, Some(id), event),
                    Ok(None) => (Outcome::NotApplied, None, event),
                    Err(e) => panic!("{context}: unexpected error: {e}"),
                }
            }
        };
        assert_eq!(outcome, expected, "{context}");
        if let Some(id) = id {
            model.record(id, event);
        }
        assert_eq!(load(&store).await, model.state(), "{context}");
    }

    let context = format!("seed {seed}, after {steps} steps");
    assert_eq!(all_events(&store).await, model.events, "{context}");
    for (k, e) in model.events.iter().enumerate().step_by(7) {
        let page = ok(store.events(e.id, 3).await, &context);
        let expected: Vec<StoredEvent> = model.events.iter().skip(k + 1).take(3).cloned().collect();
        assert_eq!(page, expected, "{context}: page after {}", e.id);
    }
    for policy in NAMES {
        let expected: Vec<StoredVersion> = model
            .versions
            .values()
            .filter(|v| v.name == name(policy))
            .cloned()
            .collect();
        assert_eq!(
            ok(store.versions(&name(policy)).await, &context),
            expected,
            "{context}: versions of {policy}"
        );
    }
    for status in [
        None,
        Some(EscalationStatus::Pending),
        Some(EscalationStatus::Used),
    ] {
        assert_eq!(
            ok(store.escalations(status, u32::MAX).await, &context),
            model.listing(status),
            "{context}: escalations {status:?}"
        );
    }
    assert_eq!(
        ok(store.escalations(None, 5).await, &context),
        model.listing(None).into_iter().take(5).collect::<Vec<_>>(),
        "{context}: five newest escalations"
    );
    for (id, e) in &model.escalations {
        assert_eq!(
            ok(store.escalation(*id).await, &context).as_ref(),
            Some(e),
            "{context}"
        );
    }
}
