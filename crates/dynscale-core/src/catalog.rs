//! The policy catalog: what was pushed under each name, what is active, and the
//! checks of SPEC §3 that need the other policies (versions, ids, dependencies,
//! conflicts, validity windows, rollback limits), returned as plans to store and apply.
//!
//! A name's active set holds at most one *standing* version (no `validity`) and any
//! number of *scheduled* versions (with `validity`) whose windows do not overlap; a
//! scheduled version is in force during its window instead of the standing one.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::iter;
use std::sync::Arc;

use petgraph::graphmap::DiGraphMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::document::{ConcurrencyRule, PolicyDocument, QuotaRule, Rate, Rule, Strategy, Validity};
use crate::ids::PolicyName;
use crate::namespace::Scope;
use crate::policy::CheckedPolicy;
use crate::snapshot::InForceChange;

/// How many major versions a rollback may go back (SPEC §3).
const ROLLBACK_MAJOR_LIMIT: u64 = 2;

/// How many existing versions a missing-dependency message lists before eliding.
const LISTED_VERSIONS: usize = 10;

/// What was ever stored under one name. Only versions are kept, not documents, so the
/// catalog stays small however long the history grows.
#[derive(Debug, Clone)]
struct History {
    policy_id: Uuid,
    versions: BTreeSet<semver::Version>,
}

/// Pushed history and active versions of every policy name.
///
/// Besides the active versions the catalog keeps indexes of them, updated by
/// [`Catalog::set_active`] (the one place the active set changes), so that checking a
/// push and finding what it changes in force cost what the push concerns, not the
/// size of the active set.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pushed: BTreeMap<PolicyName, History>,
    /// Which name each policy id was first stored under.
    owners: BTreeMap<Uuid, PolicyName>,
    active: BTreeMap<PolicyName, BTreeMap<semver::Version, Arc<CheckedPolicy>>>,
    index: ActiveIndex,
    tracker: InForceTracker,
}

/// Indexes of the active versions, by what the checks of a push look up.
#[derive(Debug, Clone, Default)]
struct ActiveIndex {
    /// Names with an active version in each scope.
    by_scope: HashMap<Scope, BTreeSet<PolicyName>>,
    /// For each name, the names with an active version that declares a conflict with it.
    declared_against: HashMap<PolicyName, BTreeSet<PolicyName>>,
    /// Names with an active version of each policy id.
    by_policy_id: HashMap<Uuid, BTreeSet<PolicyName>>,
    /// Window boundaries (`from`, `until`) of active scheduled versions, with the names
    /// whose version in force can change there.
    boundaries: BTreeMap<OffsetDateTime, BTreeSet<PolicyName>>,
}

impl ActiveIndex {
    fn update(&mut self, name: &PolicyName, versions: &[&Arc<CheckedPolicy>], add: bool) {
        fn edit<K: Eq + std::hash::Hash + Clone>(
            map: &mut HashMap<K, BTreeSet<PolicyName>>,
            key: &K,
            name: &PolicyName,
            add: bool,
        ) {
            if add {
                map.entry(key.clone()).or_default().insert(name.clone());
            } else if let Some(set) = map.get_mut(key) {
                set.remove(name);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        for p in versions {
            let doc = &p.doc;
            edit(&mut self.by_scope, &doc.namespace, name, add);
            edit(&mut self.by_policy_id, &doc.policy_id, name, add);
            for c in &doc.conflicts {
                edit(&mut self.declared_against, &c.policy, name, add);
            }
            for t in doc
                .validity
                .iter()
                .flat_map(|w| [w.from, w.until])
                .flatten()
            {
                if add {
                    self.boundaries.entry(t).or_default().insert(name.clone());
                } else if let Some(set) = self.boundaries.get_mut(&t) {
                    set.remove(name);
                    if set.is_empty() {
                        self.boundaries.remove(&t);
                    }
                }
            }
        }
    }
}

/// The version in force of each name as last reported by
/// [`Catalog::take_in_force_changes`], and which names may have changed since.
#[derive(Debug, Clone, Default)]
struct InForceTracker {
    current: HashMap<PolicyName, Arc<CheckedPolicy>>,
    /// Names whose active set changed since the last report.
    dirty: BTreeSet<PolicyName>,
    /// The instant of the last report; `None` before the first, which reports every name.
    at: Option<OffsetDateTime>,
}

/// How a push is checked.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// The instant of the push, for validity windows.
    pub now: OffsetDateTime,
    /// Allows a major upgrade with `immediate` activation.
    pub force: bool,
}

/// What a push or rollback does to one name, once it is stored.
#[derive(Debug, Clone)]
pub struct ActivationPlan {
    pub name: PolicyName,
    pub version: semver::Version,
    pub policy: Arc<CheckedPolicy>,
    /// The name's whole active set afterwards, in ascending version order.
    pub active_after: Vec<Arc<CheckedPolicy>>,
    /// Versions of the name that leave the active set, ascending.
    pub removed: Vec<semver::Version>,
    /// Whether `version` is stored for the first time (a push, not a rollback).
    pub is_new_version: bool,
}

/// How a version differs from the one before it on an upgrade path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionChange {
    /// The name has no standing version to compare with.
    First,
    Patch,
    Minor,
    Major,
}

/// An active policy that depends on a name, and the versions it accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dependent {
    /// `name@version` of the dependent.
    pub policy: String,
    pub requires: semver::VersionReq,
}

/// One pushed version on the way up from the standing version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpgradeStep {
    pub version: semver::Version,
    /// Against the step before (the standing version for the first step).
    pub change: VersionChange,
    /// A major upgrade: `immediate` activation needs `--force`; a rollout
    /// strategy (shadow, canary, blue-green) does not.
    pub needs_rollout_or_force: bool,
    /// Every active dependent accepts it.
    pub compatible: bool,
    /// The dependents (`name@version`) whose range it is outside.
    pub breaks: Vec<String>,
}

/// Where a policy name can move (`dynscale policy upgrade-path`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpgradePath {
    pub name: PolicyName,
    /// The standing version.
    pub current: Option<semver::Version>,
    /// Active policies that depend on the name; together their ranges are the
    /// compatible range.
    pub dependents: Vec<Dependent>,
    /// Pushed versions inside every dependent's range, ascending.
    pub compatible: Vec<semver::Version>,
    /// Pushed versions above the standing one, ascending.
    pub path: Vec<UpgradeStep>,
    /// How many major versions a rollback may go back.
    pub rollback_limit_majors: u64,
    /// The lowest major version a rollback may reach.
    pub rollback_floor_major: Option<u64>,
    /// Pushed versions below the standing one that a rollback may reach, ascending.
    pub rollback_targets: Vec<semver::Version>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a stored version (at load time, and after a push is stored).
    ///
    /// The first policy id recorded for a name stays its id: pushes are checked
    /// against it, so a later different id can only come from a store written by
    /// something else, and the first one is the one operators have seen.
    pub fn record_pushed(&mut self, name: &PolicyName, policy_id: Uuid, version: &semver::Version) {
        self.pushed
            .entry(name.clone())
            .or_insert_with(|| History {
                policy_id,
                versions: BTreeSet::new(),
            })
            .versions
            .insert(version.clone());
        self.owners.entry(policy_id).or_insert_with(|| name.clone());
    }

    /// Replaces the active versions of a name (empty removes it).
    pub fn set_active(&mut self, name: &PolicyName, versions: Vec<Arc<CheckedPolicy>>) {
        let old = if versions.is_empty() {
            self.active.remove(name)
        } else {
            let map = versions
                .into_iter()
                .map(|p| (p.doc.version.clone(), p))
                .collect();
            self.active.insert(name.clone(), map)
        };
        if let Some(old) = old {
            self.index
                .update(name, &old.values().collect::<Vec<_>>(), false);
        }
        if let Some(new) = self.active.get(name) {
            self.index
                .update(name, &new.values().collect::<Vec<_>>(), true);
        }
        self.tracker.dirty.insert(name.clone());
    }

    /// What changed in force since the last call: for every name whose version in
    /// force at `now` differs from the one last reported, the version before and
    /// after. Only names whose active set changed, or that have a window boundary
    /// between the last call and `now`, are looked at; the first call reports every
    /// name. Also returns the next instant after `now` at which the set changes.
    ///
    /// The versions reported equal [`Catalog::in_force`] at `now`.
    pub fn take_in_force_changes(
        &mut self,
        now: OffsetDateTime,
    ) -> (Vec<InForceChange>, Option<OffsetDateTime>) {
        let mut names = std::mem::take(&mut self.tracker.dirty);
        match self.tracker.at {
            None => names.extend(self.active.keys().cloned()),
            Some(at) => {
                let (lo, hi) = if at <= now { (at, now) } else { (now, at) };
                for crossed in self.index.boundaries.range(lo..=hi).map(|(_, n)| n) {
                    names.extend(crossed.iter().cloned());
                }
            }
        }
        self.tracker.at = Some(now);
        let mut changes = Vec::new();
        for name in names {
            let after = self
                .active
                .get(&name)
                .and_then(|versions| in_force_of(versions, now, &mut None));
            let before = match &after {
                Some(a) => self.tracker.current.insert(name, Arc::clone(a)),
                None => self.tracker.current.remove(&name),
            };
            let same = match (&before, &after) {
                (Some(b), Some(a)) => Arc::ptr_eq(b, a),
                (None, None) => true,
                _ => false,
            };
            if !same {
                changes.push(InForceChange { before, after });
            }
        }
        let next = self
            .index
            .boundaries
            .range((std::ops::Bound::Excluded(now), std::ops::Bound::Unbounded))
            .next()
            .map(|(t, _)| *t);
        (changes, next)
    }

    /// Every active version of every name.
    pub fn active(&self) -> impl Iterator<Item = &Arc<CheckedPolicy>> {
        self.active.values().flat_map(BTreeMap::values)
    }

    /// The active versions of one name, ascending.
    pub fn active_versions(&self, name: &PolicyName) -> Vec<&Arc<CheckedPolicy>> {
        self.active
            .get(name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// The stored versions of one name, ascending.
    pub fn pushed_versions(&self, name: &PolicyName) -> Vec<semver::Version> {
        self.pushed
            .get(name)
            .map(|h| h.versions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every name that has a stored or active version, in order.
    pub fn names(&self) -> impl Iterator<Item = &PolicyName> {
        self.pushed
            .keys()
            .chain(self.active.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// Checks pushing `candidate` and says what the name's active set becomes. All
    /// findings are returned at once.
    pub fn plan_push(
        &self,
        candidate: &Arc<CheckedPolicy>,
        opts: &PushOptions,
    ) -> Result<ActivationPlan, Vec<Diagnostic>> {
        let mut findings = Vec::new();
        self.check_version(candidate, &mut findings);
        self.check_policy_id(candidate, &mut findings);
        self.check_strategy(candidate, opts.now, &mut findings);
        self.check_major_upgrade(candidate, opts, &mut findings);
        self.check_dependencies(candidate, &mut findings);
        self.check_cycle(candidate, &mut findings);
        self.check_windows(candidate, opts.now, &mut findings);
        self.check_declared_conflicts(candidate, opts.now, &mut findings);
        self.check_resource_conflicts(candidate, opts.now, &mut findings);
        if !findings.is_empty() {
            return Err(findings);
        }

        let doc = &candidate.doc;
        let standing = doc.validity.is_none();
        let mut active_after = vec![Arc::clone(candidate)];
        let mut removed = Vec::new();
        for (version, p) in self.active.get(&doc.name).into_iter().flatten() {
            let replaced = standing && p.doc.validity.is_none();
            if replaced || has_ended(p, opts.now) {
                removed.push(version.clone());
            } else {
                active_after.push(Arc::clone(p));
            }
        }
        active_after.sort_by(|a, b| a.doc.version.cmp(&b.doc.version));
        Ok(ActivationPlan {
            name: doc.name.clone(),
            version: doc.version.clone(),
            policy: Arc::clone(candidate),
            active_after,
            removed,
            is_new_version: true,
        })
    }

    /// Checks rolling `name` back to `target` (a stored version, parsed by the caller).
    /// The name's active set becomes the target alone.
    pub fn plan_rollback(
        &self,
        target: &Arc<CheckedPolicy>,
        now: OffsetDateTime,
    ) -> Result<ActivationPlan, Vec<Diagnostic>> {
        let doc = &target.doc;
        let text = &target.source;
        let at_version = |d: Diagnostic| place(d.field("version"), key_position(text, "version"));
        let mut findings = Vec::new();

        let stored = self
            .pushed
            .get(&doc.name)
            .is_some_and(|h| h.versions.contains(&doc.version))
            || self.active_version(&doc.name, &doc.version).is_some();
        if !stored {
            findings.push(at_version(Diagnostic::new(
                DiagnosticCode::RollbackLimit,
                format!(
                    "cannot roll back to {}@{}: that version was never pushed",
                    doc.name, doc.version
                ),
            )));
        }
        // Without a standing version the highest active one is what a rollback leaves.
        let current = self
            .standing(&doc.name)
            .or_else(|| self.active.get(&doc.name)?.values().next_back());
        if let Some(current) = current {
            let from = &current.doc.version;
            if self.standing(&doc.name).is_some() && *from == doc.version {
                findings.push(at_version(Diagnostic::new(
                    DiagnosticCode::RollbackLimit,
                    format!(
                        "{}@{} is already the standing version; nothing to roll back",
                        doc.name, doc.version
                    ),
                )));
            }
            let back = from.major.saturating_sub(doc.version.major);
            if back > ROLLBACK_MAJOR_LIMIT {
                findings.push(at_version(Diagnostic::new(
                    DiagnosticCode::RollbackLimit,
                    format!(
                        "rollback from {from} to {} goes back {back} major versions; the limit \
                         is {ROLLBACK_MAJOR_LIMIT}",
                        doc.version
                    ),
                )));
            }
        }
        check_not_ended(target, now, &mut findings);
        self.check_declared_conflicts(target, now, &mut findings);
        self.check_resource_conflicts(target, now, &mut findings);
        if !findings.is_empty() {
            return Err(findings);
        }

        let removed = self.other_active_versions(doc);
        Ok(ActivationPlan {
            name: doc.name.clone(),
            version: doc.version.clone(),
            policy: Arc::clone(target),
            active_after: vec![Arc::clone(target)],
            removed,
            is_new_version: false,
        })
    }

    /// The active versions of `doc`'s name other than `doc`'s own: those its
    /// activation removes.
    fn other_active_versions(&self, doc: &PolicyDocument) -> Vec<semver::Version> {
        self.active
            .get(&doc.name)
            .into_iter()
            .flat_map(BTreeMap::keys)
            .filter(|v| **v != doc.version)
            .cloned()
            .collect()
    }

    /// The plan that makes `candidate`, a stored version rolled out beside the
    /// name's standing version, the only active version of its name. Its checks ran
    /// when it was pushed, and the name cannot change while its rollout runs.
    pub fn plan_promotion(&self, candidate: &Arc<CheckedPolicy>) -> ActivationPlan {
        let doc = &candidate.doc;
        let removed = self.other_active_versions(doc);
        ActivationPlan {
            name: doc.name.clone(),
            version: doc.version.clone(),
            policy: Arc::clone(candidate),
            active_after: vec![Arc::clone(candidate)],
            removed,
            is_new_version: false,
        }
    }

    /// The standing version of a name (the one a rollout compares against).
    pub fn standing_version(&self, name: &PolicyName) -> Option<&Arc<CheckedPolicy>> {
        self.standing(name)
    }

    /// Where a name can go from its standing version: the versions its dependents
    /// accept, the pushed versions above it in order (majors marked), and how far
    /// back a rollback may go. `None` when nothing was ever pushed under the name.
    pub fn upgrade_path(&self, name: &PolicyName) -> Option<UpgradePath> {
        let pushed = self.known_versions(name);
        if pushed.is_empty() {
            return None;
        }
        let current = self.standing(name).map(|p| p.doc.version.clone());
        let mut dependents = Vec::new();
        for p in self.active() {
            for dep in &p.doc.dependencies {
                if dep.policy == *name {
                    dependents.push(Dependent {
                        policy: p.version_ref().to_string(),
                        requires: dep.version.clone(),
                    });
                }
            }
        }
        let accepted = |v: &semver::Version| dependents.iter().all(|d| d.requires.matches(v));
        let compatible = pushed
            .iter()
            .filter(|v| accepted(v))
            .map(|v| (*v).clone())
            .collect();
        let mut path = Vec::new();
        let mut from = current.clone();
        for v in pushed
            .iter()
            .filter(|v| current.as_ref().is_none_or(|c| **v > c))
        {
            let change = match &from {
                Some(f) if v.major > f.major => VersionChange::Major,
                Some(f) if v.major == f.major && v.minor > f.minor => VersionChange::Minor,
                Some(_) => VersionChange::Patch,
                None => VersionChange::First,
            };
            path.push(UpgradeStep {
                version: (*v).clone(),
                change,
                needs_rollout_or_force: change == VersionChange::Major,
                compatible: accepted(v),
                breaks: dependents
                    .iter()
                    .filter(|d| !d.requires.matches(v))
                    .map(|d| d.policy.clone())
                    .collect(),
            });
            from = Some((*v).clone());
        }
        let rollback_floor_major = current
            .as_ref()
            .map(|c| c.major.saturating_sub(ROLLBACK_MAJOR_LIMIT));
        let rollback_targets = match (&current, rollback_floor_major) {
            (Some(c), Some(floor)) => pushed
                .iter()
                .filter(|v| **v < c && v.major >= floor)
                .map(|v| (*v).clone())
                .collect(),
            _ => Vec::new(),
        };
        Some(UpgradePath {
            name: name.clone(),
            current,
            dependents,
            compatible,
            path,
            rollback_limit_majors: ROLLBACK_MAJOR_LIMIT,
            rollback_floor_major,
            rollback_targets,
        })
    }

    /// Applies a plan that has been stored. A new version is also recorded as pushed,
    /// so the next push is checked against it even if the caller forgets to.
    pub fn apply(&mut self, plan: &ActivationPlan) {
        if plan.is_new_version {
            self.record_pushed(&plan.name, plan.policy.doc.policy_id, &plan.version);
        }
        self.set_active(&plan.name, plan.active_after.clone());
    }

    /// The versions in force at `now` (at most one per name: the scheduled version whose
    /// window contains `now`, else the standing version) and the next instant after
    /// `now` at which that set changes.
    pub fn in_force(
        &self,
        now: OffsetDateTime,
    ) -> (Vec<Arc<CheckedPolicy>>, Option<OffsetDateTime>) {
        let mut out = Vec::new();
        let mut next: Option<OffsetDateTime> = None;
        for versions in self.active.values() {
            if let Some(p) = in_force_of(versions, now, &mut next) {
                out.push(p);
            }
        }
        (out, next)
    }

    fn active_version(
        &self,
        name: &PolicyName,
        version: &semver::Version,
    ) -> Option<&Arc<CheckedPolicy>> {
        self.active.get(name)?.get(version)
    }

    /// The name's active version without a validity window.
    fn standing(&self, name: &PolicyName) -> Option<&Arc<CheckedPolicy>> {
        self.active
            .get(name)?
            .values()
            .rev()
            .find(|p| p.doc.validity.is_none())
    }

    /// Pushed and active versions of a name. Active ones are included so a caller
    /// that activates without recording still gets correct checks.
    fn known_versions(&self, name: &PolicyName) -> BTreeSet<&semver::Version> {
        let pushed = self.pushed.get(name).into_iter().flat_map(|h| &h.versions);
        let active = self.active.get(name).into_iter().flat_map(BTreeMap::keys);
        pushed.chain(active).collect()
    }

    /// Active versions of other names that can be in force together with `policy`:
    /// not ended, and with a window overlapping its window.
    ///
    /// Only the names in `among` are looked at, in their order.
    fn neighbours<'a>(
        &'a self,
        policy: &'a CheckedPolicy,
        now: OffsetDateTime,
        among: impl IntoIterator<Item = &'a PolicyName> + 'a,
    ) -> impl Iterator<Item = &'a Arc<CheckedPolicy>> + 'a {
        let window = window_of(policy);
        among
            .into_iter()
            .filter(move |name| **name != policy.doc.name)
            .filter_map(|name| self.active.get(name))
            .flat_map(BTreeMap::values)
            .filter(move |p| !has_ended(p, now) && window.overlaps(&window_of(p)))
    }

    /// A progressive strategy (shadow, canary, blue-green) compares the candidate with
    /// the standing version it replaces, so it applies to standing versions only, and
    /// only while the name has no scheduled version that could be in force instead.
    fn check_strategy(
        &self,
        candidate: &CheckedPolicy,
        now: OffsetDateTime,
        findings: &mut Vec<Diagnostic>,
    ) {
        let doc = &candidate.doc;
        let strategy = doc.activation.strategy;
        if strategy == Strategy::Immediate {
            return;
        }
        let why = if doc.validity.is_some() {
            format!(
                "activation strategy `{strategy}` does not apply to a scheduled version (one \
                 with `validity`): it is in force by its window; use `immediate`"
            )
        } else if let Some(s) = self
            .active
            .get(&doc.name)
            .into_iter()
            .flat_map(BTreeMap::values)
            .find(|p| p.doc.validity.is_some() && !has_ended(p, now))
        {
            format!(
                "activation strategy `{strategy}` compares {} with its standing version, but \
                 the scheduled {}@{} can be in force instead; push with `immediate`, or after \
                 its window",
                doc.name, s.doc.name, s.doc.version
            )
        } else {
            return;
        };
        let pos = key_position(&candidate.source, "strategy")
            .or_else(|| key_position(&candidate.source, "activation"));
        findings.push(place(
            Diagnostic::new(DiagnosticCode::StrategyUnavailable, why).field("activation.strategy"),
            pos,
        ));
    }

    fn check_version(&self, candidate: &CheckedPolicy, findings: &mut Vec<Diagnostic>) {
        let doc = &candidate.doc;
        if let Some(last) = self.known_versions(&doc.name).last()
            && doc.version <= **last
        {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::VersionNotIncreasing,
                    format!(
                        "version {} of {} is not above {last}, its last pushed version",
                        doc.version, doc.name
                    ),
                )
                .field("version"),
                key_position(&candidate.source, "version"),
            ));
        }
    }

    fn check_policy_id(&self, candidate: &CheckedPolicy, findings: &mut Vec<Diagnostic>) {
        let doc = &candidate.doc;
        let pos = key_position(&candidate.source, "policyId");
        let own = self.pushed.get(&doc.name).map(|h| h.policy_id).or_else(|| {
            let first = self.active.get(&doc.name)?.values().next()?;
            Some(first.doc.policy_id)
        });
        if let Some(own) = own
            && own != doc.policy_id
        {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::PolicyIdMismatch,
                    format!(
                        "policyId {} differs from {own}, the policyId of the earlier versions \
                         of {}",
                        doc.policy_id, doc.name
                    ),
                )
                .field("policyId"),
                pos,
            ));
        }
        let owner = self.owners.get(&doc.policy_id).or_else(|| {
            // The first name in order with an active version of the id.
            self.index.by_policy_id.get(&doc.policy_id)?.first()
        });
        if let Some(owner) = owner
            && *owner != doc.name
        {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::PolicyIdMismatch,
                    format!(
                        "policyId {} already belongs to the policy `{owner}`; every policy \
                         needs its own id",
                        doc.policy_id
                    ),
                )
                .field("policyId"),
                pos,
            ));
        }
    }

    fn check_major_upgrade(
        &self,
        candidate: &CheckedPolicy,
        opts: &PushOptions,
        findings: &mut Vec<Diagnostic>,
    ) {
        let doc = &candidate.doc;
        if opts.force || doc.activation.strategy != Strategy::Immediate {
            return;
        }
        if let Some(standing) = self.standing(&doc.name)
            && doc.version.major > standing.doc.version.major
        {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::MajorUpgradeNeedsForce,
                    format!(
                        "a major upgrade ({} → {}) with immediate activation needs --force",
                        standing.doc.version, doc.version
                    ),
                )
                .field("version"),
                key_position(&candidate.source, "version"),
            ));
        }
    }

    fn check_dependencies(&self, candidate: &CheckedPolicy, findings: &mut Vec<Diagnostic>) {
        let doc = &candidate.doc;
        for (i, dep) in doc.dependencies.iter().enumerate() {
            let versions = self.known_versions(&dep.policy);
            if versions.iter().any(|v| dep.version.matches(v)) {
                continue;
            }
            let (why, field) = if versions.is_empty() {
                (
                    format!("no version of `{}` is pushed", dep.policy),
                    "policy",
                )
            } else {
                let mut listed: Vec<String> = versions
                    .iter()
                    .rev()
                    .take(LISTED_VERSIONS)
                    .map(ToString::to_string)
                    .collect();
                if versions.len() > LISTED_VERSIONS {
                    listed.push("…".to_owned());
                }
                listed.reverse();
                (
                    format!(
                        "none of the versions that exist is in range: {}",
                        listed.join(", ")
                    ),
                    "version",
                )
            };
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::MissingDependency,
                    format!(
                        "dependency `{}` {} cannot be resolved: {why}",
                        dep.policy, dep.version
                    ),
                )
                .field(format!("dependencies[{i}].{field}")),
                item_position(&candidate.source, "dependencies", i),
            ));
        }
    }

    /// Finds the shortest dependency cycle through the candidate's name, in the name
    /// graph of the active set with the candidate standing in for its own name.
    fn check_cycle(&self, candidate: &CheckedPolicy, findings: &mut Vec<Diagnostic>) {
        let doc = &candidate.doc;
        let own = doc.name.as_str();
        // Only names reachable from the candidate's dependencies can close a cycle, so
        // the graph holds just those. Edges are added in the order a graph of the whole
        // active set would add them (by name, then version, then dependency), so the
        // search visits neighbours in the same order and reports the same cycle.
        let mut reachable: BTreeSet<&PolicyName> = BTreeSet::new();
        let mut queue: VecDeque<&PolicyName> = doc.dependencies.iter().map(|d| &d.policy).collect();
        while let Some(name) = queue.pop_front() {
            if *name == doc.name || !reachable.insert(name) {
                continue;
            }
            for p in self.active.get(name).into_iter().flat_map(BTreeMap::values) {
                queue.extend(p.doc.dependencies.iter().map(|d| &d.policy));
            }
        }
        let mut graph: DiGraphMap<&str, ()> = DiGraphMap::new();
        for name in reachable {
            for p in self.active.get(name).into_iter().flat_map(BTreeMap::values) {
                for dep in &p.doc.dependencies {
                    graph.add_edge(name.as_str(), dep.policy.as_str(), ());
                }
            }
        }
        for dep in &doc.dependencies {
            graph.add_edge(own, dep.policy.as_str(), ());
        }

        let mut shortest: Option<(usize, Vec<&str>)> = None;
        for (i, dep) in doc.dependencies.iter().enumerate() {
            let path =
                petgraph::algo::astar(&graph, dep.policy.as_str(), |n| n == own, |_| 1usize, |_| 0);
            if let Some((_, path)) = path
                && shortest.as_ref().is_none_or(|(_, s)| path.len() < s.len())
            {
                shortest = Some((i, path));
            }
        }
        if let Some((i, path)) = shortest {
            let cycle: Vec<&str> = iter::once(own).chain(path).collect();
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::DependencyCycle,
                    format!("dependencies form a cycle: {}", cycle.join(" → ")),
                )
                .field(format!("dependencies[{i}].policy")),
                item_position(&candidate.source, "dependencies", i),
            ));
        }
    }

    /// A scheduled candidate must not have ended and must not overlap the windows of
    /// the name's other scheduled versions that stay active.
    fn check_windows(
        &self,
        candidate: &CheckedPolicy,
        now: OffsetDateTime,
        findings: &mut Vec<Diagnostic>,
    ) {
        let doc = &candidate.doc;
        let Some(window) = &doc.validity else {
            return;
        };
        check_not_ended(candidate, now, findings);
        for p in self
            .active
            .get(&doc.name)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            let Some(other) = &p.doc.validity else {
                continue;
            };
            if has_ended(p, now) || !window.overlaps(other) {
                continue;
            }
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::TemporalConflict,
                    format!(
                        "the validity window of {}@{} ({}) overlaps that of the active \
                         {}@{} ({})",
                        doc.name,
                        doc.version,
                        fmt_window(window),
                        p.doc.name,
                        p.doc.version,
                        fmt_window(other)
                    ),
                )
                .field("validity"),
                key_position(&candidate.source, "validity"),
            ));
        }
    }

    /// Conflicts the candidate declares against active versions, and conflicts active
    /// versions declare against the candidate.
    fn check_declared_conflicts(
        &self,
        candidate: &CheckedPolicy,
        now: OffsetDateTime,
        findings: &mut Vec<Diagnostic>,
    ) {
        let doc = &candidate.doc;
        for (i, c) in doc.conflicts.iter().enumerate() {
            for p in self.neighbours(candidate, now, [&c.policy]) {
                if !c.version.matches(&p.doc.version) {
                    continue;
                }
                findings.push(place(
                    Diagnostic::new(
                        DiagnosticCode::DeclaredConflict,
                        format!(
                            "{}@{} declares a conflict with `{} {}`, and {}@{} is active",
                            doc.name, doc.version, c.policy, c.version, p.doc.name, p.doc.version
                        ),
                    )
                    .field(format!("conflicts[{i}]")),
                    item_position(&candidate.source, "conflicts", i),
                ));
            }
        }
        let declarers = self
            .index
            .declared_against
            .get(&doc.name)
            .into_iter()
            .flatten();
        for p in self.neighbours(candidate, now, declarers) {
            for (j, c) in p.doc.conflicts.iter().enumerate() {
                if c.policy != doc.name || !c.version.matches(&doc.version) {
                    continue;
                }
                findings.push(place(
                    Diagnostic::new(
                        DiagnosticCode::DeclaredConflict,
                        format!(
                            "the active {}@{} declares a conflict with `{} {}` (its \
                             conflicts[{j}]), which {}@{} matches",
                            p.doc.name, p.doc.version, c.policy, c.version, doc.name, doc.version
                        ),
                    )
                    .field("version"),
                    key_position(&candidate.source, "version"),
                ));
            }
        }
    }

    /// Quota and concurrency rules of other names on the same key and exactly the same
    /// scope must agree, or the enforced limit would depend on evaluation order.
    fn check_resource_conflicts(
        &self,
        candidate: &CheckedPolicy,
        now: OffsetDateTime,
        findings: &mut Vec<Diagnostic>,
    ) {
        let doc = &candidate.doc;
        // Only a quota or concurrency rule can conflict, and only within its own scope.
        if !doc
            .rules
            .iter()
            .any(|r| r.quota.is_some() || r.concurrency.is_some())
        {
            return;
        }
        let ours = |rule: &Rule| format!("{}@{}#{}", doc.name, doc.version, rule.id);
        let same_scope = self.index.by_scope.get(&doc.namespace);
        for (i, rule) in doc.rules.iter().enumerate() {
            for p in self.neighbours(candidate, now, same_scope.into_iter().flatten()) {
                if p.doc.namespace != doc.namespace {
                    continue;
                }
                for other in &p.doc.rules {
                    let theirs = format!("{}@{}#{}", p.doc.name, p.doc.version, other.id);
                    if let (Some(a), Some(b)) = (&rule.quota, &other.quota)
                        && a.key == b.key
                        && !same_quota(a, b)
                    {
                        findings.push(place(
                            Diagnostic::new(
                                DiagnosticCode::ResourceConflict,
                                format!(
                                    "quota {} ({}) and the active {theirs} ({}) limit key `{}` \
                                     in scope `{}` differently",
                                    ours(rule),
                                    fmt_quota(a),
                                    fmt_quota(b),
                                    a.key,
                                    doc.namespace
                                ),
                            )
                            .field(format!("rules[{i}].quota")),
                            item_position(&candidate.source, "rules", i),
                        ));
                    }
                    if let (Some(a), Some(b)) = (&rule.concurrency, &other.concurrency)
                        && a.key == b.key
                        && (a.limit != b.limit || a.ttl != b.ttl)
                    {
                        findings.push(place(
                            Diagnostic::new(
                                DiagnosticCode::ResourceConflict,
                                format!(
                                    "concurrency {} ({}) and the active {theirs} ({}) limit \
                                     key `{}` in scope `{}` differently",
                                    ours(rule),
                                    fmt_concurrency(a),
                                    fmt_concurrency(b),
                                    a.key,
                                    doc.namespace
                                ),
                            )
                            .field(format!("rules[{i}].concurrency")),
                            item_position(&candidate.source, "rules", i),
                        ));
                    }
                }
            }
        }
    }
}

/// The version of one name in force at `now`: the scheduled version whose window
/// contains `now`, else the standing version. Lowers `next` to the name's first window
/// boundary after `now`.
fn in_force_of(
    versions: &BTreeMap<semver::Version, Arc<CheckedPolicy>>,
    now: OffsetDateTime,
    next: &mut Option<OffsetDateTime>,
) -> Option<Arc<CheckedPolicy>> {
    let mut scheduled = None;
    let mut standing = None;
    // Ascending order: should a name hold two candidates anyway (set_active does not
    // check), the highest version wins and the result stays one.
    for p in versions.values() {
        match &p.doc.validity {
            None => standing = Some(p),
            Some(w) => {
                if w.contains(now) {
                    scheduled = Some(p);
                }
                for t in [w.from, w.until].into_iter().flatten() {
                    if t > now && next.is_none_or(|n| t < n) {
                        *next = Some(t);
                    }
                }
            }
        }
    }
    scheduled.or(standing).map(Arc::clone)
}

/// A version whose window has already ended would never be in force again.
fn check_not_ended(policy: &CheckedPolicy, now: OffsetDateTime, findings: &mut Vec<Diagnostic>) {
    let doc = &policy.doc;
    if let Some(until) = doc.validity.and_then(|w| w.until)
        && until <= now
    {
        let pos = key_position(&policy.source, "until")
            .or_else(|| key_position(&policy.source, "validity"));
        findings.push(place(
            Diagnostic::new(
                DiagnosticCode::TemporalConflict,
                format!(
                    "the validity window of {}@{} ended at {} (now is {})",
                    doc.name,
                    doc.version,
                    fmt_time(until),
                    fmt_time(now)
                ),
            )
            .field("validity.until"),
            pos,
        ));
    }
}

/// Whether a scheduled version's window is over at `now`.
fn has_ended(policy: &CheckedPolicy, now: OffsetDateTime) -> bool {
    policy
        .doc
        .validity
        .and_then(|w| w.until)
        .is_some_and(|until| until <= now)
}

/// The window a version can be in force in; a standing version's is unbounded.
fn window_of(policy: &CheckedPolicy) -> Validity {
    policy.doc.validity.unwrap_or(Validity {
        from: None,
        until: None,
    })
}

/// Rates are compared as rates, so `60/min` agrees with `1/s`.
fn same_rate(a: &Rate, b: &Rate) -> bool {
    u128::from(a.count) * b.per.as_nanos() == u128::from(b.count) * a.per.as_nanos()
}

fn same_quota(a: &QuotaRule, b: &QuotaRule) -> bool {
    same_rate(&a.rate, &b.rate) && a.burst == b.burst && a.cost == b.cost
}

fn fmt_quota(q: &QuotaRule) -> String {
    let mut s = format!("{}, burst {}", q.rate, q.burst);
    if let Some(cost) = &q.cost {
        s.push_str(&format!(", cost from `{cost}`"));
    }
    s
}

fn fmt_concurrency(c: &ConcurrencyRule) -> String {
    match &c.ttl {
        Some(ttl) => format!("limit {}, ttl {ttl}", c.limit),
        None => format!("limit {}", c.limit),
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn fmt_window(w: &Validity) -> String {
    match (w.from, w.until) {
        (Some(f), Some(u)) => format!("from {} until {}", fmt_time(f), fmt_time(u)),
        (Some(f), None) => format!("from {} on", fmt_time(f)),
        (None, Some(u)) => format!("until {}", fmt_time(u)),
        (None, None) => "always".to_owned(),
    }
}

fn place(d: Diagnostic, pos: Option<(usize, usize)>) -> Diagnostic {
    match pos {
        Some((line, column)) => d.at(line, column),
        None => d,
    }
}

/// The 1-based line and column of `key:` (YAML) or `"key"` (JSON). Unlike
/// `policy::find_key_line`, which takes the first match, this takes the least indented
/// one, so the document's `version:` wins over a dependency's `version:` above it.
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let yaml = format!("{key}:");
    let json = format!("\"{key}\"");
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let mut t = line.trim_start();
        if let Some(rest) = t.strip_prefix("- ") {
            t = rest.trim_start();
        }
        if !(t.starts_with(&yaml) || t.starts_with(&json)) {
            continue;
        }
        let column = line.len() - t.len() + 1;
        if best.is_none_or(|(_, c)| column < c) {
            best = Some((i + 1, column));
        }
    }
    best
}

/// The position of the `index`-th item of the list under `key`. A block list points
/// at the item; a flow list or JSON points at the key, since items share its line.
fn item_position(text: &str, key: &str, index: usize) -> Option<(usize, usize)> {
    let (line, column) = key_position(text, key)?;
    let lines: Vec<&str> = text.lines().collect();
    let head = lines.get(line - 1)?.get(column - 1..)?;
    let after_key = head.split_once(':').map_or("", |(_, rest)| rest.trim());
    if !after_key.is_empty() && !after_key.starts_with('#') {
        return Some((line, column));
    }
    let key_indent = column - 1;
    let mut item_indent = None;
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate().skip(line) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        // YAML lets a block list sit at its key's indentation, so only a non-item line
        // at that depth ends the list.
        if indent < key_indent || (indent == key_indent && !t.starts_with('-')) {
            break;
        }
        if !t.starts_with('-') || item_indent.is_some_and(|ii| ii != indent) {
            continue;
        }
        item_indent = Some(indent);
        if seen == index {
            let content = t[1..].trim_start();
            return Some((i + 1, l.len() - content.len() + 1));
        }
        seen += 1;
    }
    Some((line, column))
}
