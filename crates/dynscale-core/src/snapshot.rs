//! The compiled snapshot: the immutable set of policies in force, indexed by scope
//! (a trie over namespace segments, org first) and by action, so a decision evaluates
//! only the Cedar policies that can apply to it.
//!
//! A change is applied with [`Snapshot::patch`]: only the scopes it touches are
//! rebuilt and only their trie paths copied, so a push costs the scopes it touches,
//! not the whole active set. A decision evaluates the rules of every matching scope
//! on the fast path ([`crate::fastpath`]) when all of them compiled to it; otherwise,
//! or when the fast path gives up on the request, it makes one Cedar call over the
//! rules of every matching scope merged into one set, built on first use and cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use cedar_policy::{ActionConstraint, AuthorizationError, Authorizer, Effect, PolicyId, PolicySet};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fastpath::{self, Program};
use crate::ids::{RuleId, SnapshotId};
use crate::namespace::Scope;
use crate::policy::{CedarRule, CheckedPolicy, RuleEffect};
use crate::request::ActionRequest;

/// The maps a decision reads (trie children, actions, rule metadata): keys are short
/// strings and ids, for which foldhash is several times cheaper than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The decision when no policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultDecision {
    Allow,
    Deny,
}

/// Engine settings that come from the node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Default for namespace roots without their own.
    pub default_decision: DefaultDecision,
    /// Default per namespace root (org). A configured root is known even without policies.
    pub namespace_defaults: BTreeMap<String, DefaultDecision>,
    /// Evaluate rules on the fast path where they compiled to it; `false` sends every
    /// decision through Cedar.
    pub fast_path: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_decision: DefaultDecision::Deny,
            namespace_defaults: BTreeMap::new(),
            fast_path: true,
        }
    }
}

/// Which evaluator decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluator {
    /// The fast path: every rule that applied compiled to it, and it did not give up.
    FastPath,
    /// Cedar's authorizer.
    Cedar,
}

/// A Cedar policy that determined a decision, or warned about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHit {
    /// `name@version` of the policy.
    pub policy: Arc<str>,
    pub rule: RuleId,
    pub effect: RuleEffect,
}

impl RuleHit {
    /// `name@version#rule`, the way reasons name a rule.
    pub fn label(&self) -> String {
        format!("{}#{}", self.policy, self.rule)
    }
}

/// What the policies say about a request, before operator controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Satisfied forbids (deny-overrides).
    Forbid(Vec<RuleHit>),
    /// Satisfied permits and no forbid.
    Permit(Vec<RuleHit>),
    /// Nothing applied; the namespace root's default.
    Default(DefaultDecision),
}

/// The full result of evaluating the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub verdict: PolicyVerdict,
    /// Advisory forbids (`@effect("warn")`) that were satisfied.
    pub advisories: Vec<RuleHit>,
    /// Policies skipped because their evaluation failed (e.g. a missing attribute).
    pub errors: Vec<String>,
    /// `name@version` of every policy evaluated.
    pub policies: Vec<Arc<str>>,
    pub evaluator: Evaluator,
}

/// Why a request cannot be evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(
        "namespace `{namespace}` is unknown: no active policy covers its root `{root}` and \
         no default is configured for it"
    )]
    UnknownNamespace { namespace: String, root: String },
    /// The request's values could not be given to Cedar.
    #[error("the request cannot be evaluated by Cedar: {0}")]
    Cedar(String),
}

/// How a rule's hit counts: every rule is evaluated as a permit (see [`Sets`]), so the
/// rule's own kind is kept here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Permit,
    Forbid,
    /// A forbid with `@effect("warn")`: a warning instead of a deny.
    Advisory,
}

#[derive(Debug)]
struct RuleMeta {
    /// The rule's id in its document (`name@version#rule`), which errors name.
    source: PolicyId,
    policy: Arc<str>,
    rule: RuleId,
    effect: RuleEffect,
    kind: Kind,
}

impl RuleMeta {
    /// The metadata of `rule` of the policy version `label`.
    fn of(rule: &CedarRule, label: &Arc<str>) -> Self {
        let kind = if rule.is_advisory() {
            Kind::Advisory
        } else if rule.policy.effect() == Effect::Forbid {
            Kind::Forbid
        } else {
            Kind::Permit
        };
        Self {
            source: rule.policy.id().clone(),
            policy: Arc::clone(label),
            rule: rule.rule.clone(),
            effect: rule.effect,
            kind,
        }
    }
}

/// The rules to evaluate for one action (or for any action) in one scope.
///
/// For Cedar, every rule is in one set, forbids rewritten as permits with the same
/// conditions, each under a short id (see [`as_evaluated`]): a single Cedar call then
/// reports every satisfied rule (Cedar reports only the deciding side's rules), and
/// [`RuleMeta`] says which were forbids, permits or advisories. The Cedar set is built
/// when a decision first needs it: a set whose rules are all on the fast path may
/// never need it, and holds no copy of its rules in Cedar's form until then.
#[derive(Debug, Default)]
struct Sets {
    rules: Box<[Arc<EvalRule>]>,
    /// Whether every rule has a fast-path program.
    fast: bool,
    cedar: OnceLock<Result<PolicySet, String>>,
    /// `name@version` of the policies the rules come from, sorted, no duplicates.
    policies: Vec<Arc<str>>,
}

impl Sets {
    /// The rules as one Cedar set, built on first use.
    fn cedar(&self) -> Result<&PolicySet, EvalError> {
        self.cedar
            .get_or_init(|| {
                let mut set = PolicySet::new();
                for rule in &self.rules {
                    set.add(rule.cedar()?.clone()).map_err(|e| e.to_string())?;
                }
                Ok(set)
            })
            .as_ref()
            .map_err(|e| EvalError::Cedar(e.clone()))
    }
}

/// A rule as decisions evaluate it: as a fast-path program when it is in the subset
/// the fast path implements, and in Cedar (see [`as_evaluated`]), rewritten on first
/// use.
#[derive(Debug)]
struct EvalRule {
    /// The policy version the rule belongs to, and the rule's place among its rules.
    member: Arc<CheckedPolicy>,
    index: usize,
    /// The short id the rule has in Cedar sets.
    id: PolicyId,
    meta: Arc<RuleMeta>,
    fast: Option<Program>,
    cedar: OnceLock<Result<cedar_policy::Policy, String>>,
}

impl EvalRule {
    /// The rule as Cedar evaluates it.
    fn cedar(&self) -> Result<&cedar_policy::Policy, String> {
        self.cedar
            .get_or_init(|| {
                let rule =
                    self.member.cedar.get(self.index).ok_or_else(|| {
                        format!("{} has no rule {}", self.meta.policy, self.index)
                    })?;
                as_evaluated(&rule.policy, self.id.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[derive(Debug)]
struct ScopeEntry {
    /// The policies compiled into this entry, by (name, version); compared by pointer
    /// to reuse the entry.
    members: Vec<Arc<CheckedPolicy>>,
    /// Each member's rules as evaluated, in member order, so a rebuild of the entry
    /// reuses the programs and rewrites of unchanged members.
    rewritten: Vec<Arc<[Arc<EvalRule>]>>,
    any: Sets,
    by_action: FastMap<String, Sets>,
    meta: FastMap<PolicyId, Arc<RuleMeta>>,
}

/// A node of the scope trie. Children are shared between snapshots (`Arc`), so a
/// patch copies only the nodes on the paths it changes.
#[derive(Debug, Default, Clone)]
struct Node {
    literal: FastMap<Box<str>, Arc<Node>>,
    wildcard: Option<Arc<Node>>,
    entry: Option<Arc<ScopeEntry>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.entry.is_none() && self.wildcard.is_none() && self.literal.is_empty()
    }

    /// The entry at exactly this scope pattern, if any.
    fn entry_at(&self, scope: &Scope) -> Option<&Arc<ScopeEntry>> {
        let mut node = self;
        for seg in scope.segments().rev() {
            node = match seg {
                Some(s) => node.literal.get(s)?,
                None => node.wildcard.as_ref()?,
            };
        }
        node.entry.as_ref()
    }

    fn entries<'a>(&'a self, out: &mut Vec<&'a Arc<ScopeEntry>>) {
        if let Some(e) = &self.entry {
            out.push(e);
        }
        for child in self.literal.values().chain(&self.wildcard) {
            child.entries(out);
        }
    }
}

/// Sets `entry` (or removes it, with `None`) at the path `segments` under `node`,
/// copying the shared nodes on the path and dropping nodes left empty.
fn set_entry(node: &mut Arc<Node>, segments: &[Option<&str>], entry: Option<Arc<ScopeEntry>>) {
    let n = Arc::make_mut(node);
    match segments.split_first() {
        None => n.entry = entry,
        Some((Some(seg), rest)) => {
            if !n.literal.contains_key(*seg) {
                if entry.is_none() {
                    return;
                }
                n.literal.insert(Box::from(*seg), Arc::default());
            }
            if let Some(child) = n.literal.get_mut(*seg) {
                set_entry(child, rest, entry);
                if child.is_empty() {
                    n.literal.remove(*seg);
                }
            }
        }
        Some((None, rest)) => {
            if n.wildcard.is_none() && entry.is_none() {
                return;
            }
            let child = n.wildcard.get_or_insert_with(Arc::default);
            set_entry(child, rest, entry);
            if child.is_empty() {
                n.wildcard = None;
            }
        }
    }
}

/// The rules of several scopes that match one namespace, merged into one Cedar set
/// so a decision makes one Cedar call. Keyed by the addresses of the [`Sets`] merged;
/// the entries are held so those addresses stay theirs while the item is cached.
#[derive(Debug)]
struct Merged {
    entries: Vec<Arc<ScopeEntry>>,
    rules: PolicySet,
    /// `name@version` of the policies the rules come from, sorted, no duplicates.
    policies: Vec<Arc<str>>,
}

/// Most merged sets a snapshot lineage keeps; past it the cache starts over. Bounds
/// the memory of items that a reader of an older snapshot inserted after a patch
/// pruned the entries they hold.
const MERGED_LIMIT: usize = 1 << 16;

/// Merged sets, built on first use and shared by the snapshots patched from one
/// another; a patch prunes the items holding entries it replaced.
#[derive(Debug, Default)]
struct MergedCache {
    map: RwLock<FastMap<Box<[usize]>, Arc<Merged>>>,
}

impl MergedCache {
    fn get_or_build(&self, chosen: &[(&Arc<ScopeEntry>, &Sets)]) -> Result<Arc<Merged>, EvalError> {
        let address = |(_, s): &(&Arc<ScopeEntry>, &Sets)| std::ptr::from_ref::<Sets>(s) as usize;
        // The key on the stack for the usual few scopes: a hit allocates nothing.
        let mut inline = [0usize; 8];
        let spilled: Vec<usize>;
        let key: &[usize] = if chosen.len() <= inline.len() {
            for (slot, c) in inline.iter_mut().zip(chosen) {
                *slot = address(c);
            }
            &inline[..chosen.len()]
        } else {
            spilled = chosen.iter().map(address).collect();
            &spilled
        };
        if let Some(m) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(Arc::clone(m));
        }
        let mut rules = PolicySet::new();
        let mut policies = Vec::new();
        for (_, sets) in chosen {
            for p in sets.cedar()?.policies() {
                rules
                    .add(p.clone())
                    .map_err(|e| EvalError::Cedar(e.to_string()))?;
            }
            policies.extend(sets.policies.iter().cloned());
        }
        policies.sort();
        policies.dedup();
        let merged = Arc::new(Merged {
            entries: chosen.iter().map(|(e, _)| Arc::clone(e)).collect(),
            rules,
            policies,
        });
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MERGED_LIMIT {
            map.clear();
        }
        map.insert(Box::from(key), Arc::clone(&merged));
        Ok(merged)
    }

    /// Drops the merged sets that hold one of `replaced`.
    fn prune(&self, replaced: &[Arc<ScopeEntry>]) {
        if replaced.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, m| {
            !m.entries
                .iter()
                .any(|e| replaced.iter().any(|r| Arc::ptr_eq(e, r)))
        });
    }
}

/// One name's change of the version in force: the version before (if any) leaves the
/// snapshot, the version after (if any) enters it.
#[derive(Debug, Clone, Default)]
pub struct InForceChange {
    pub before: Option<Arc<CheckedPolicy>>,
    pub after: Option<Arc<CheckedPolicy>>,
}

/// The compiled, immutable set of policies in force.
#[derive(Debug)]
pub struct Snapshot {
    id: SnapshotId,
    trie: Arc<Node>,
    scope_count: usize,
    policy_count: usize,
    config: Arc<EngineConfig>,
    next_change_at: Option<OffsetDateTime>,
    authorizer: Authorizer,
    merged: Arc<MergedCache>,
}

/// Why a compile failed. Checked policies always compile; this guards the invariant.
#[derive(Debug, thiserror::Error)]
#[error("compiling policy {policy}: {reason}")]
pub struct CompileError {
    pub policy: String,
    pub reason: String,
}

fn by_version(a: &Arc<CheckedPolicy>, b: &Arc<CheckedPolicy>) -> std::cmp::Ordering {
    (&a.doc.name, &a.doc.version).cmp(&(&b.doc.name, &b.doc.version))
}

fn same_members(a: &[Arc<CheckedPolicy>], b: &[Arc<CheckedPolicy>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl Snapshot {
    /// An empty snapshot: every namespace is unknown unless configured.
    pub fn empty(config: Arc<EngineConfig>) -> Self {
        Self {
            id: SnapshotId(0),
            trie: Arc::default(),
            scope_count: 0,
            policy_count: 0,
            config,
            next_change_at: None,
            authorizer: Authorizer::new(),
            merged: Arc::default(),
        }
    }

    /// Compiles the policies in force from scratch. Entries of `previous` whose
    /// policies are the same `Arc`s are reused as they are.
    pub fn compile(
        id: SnapshotId,
        in_force: Vec<Arc<CheckedPolicy>>,
        next_change_at: Option<OffsetDateTime>,
        config: Arc<EngineConfig>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, CompileError> {
        let mut groups: HashMap<&Scope, Vec<Arc<CheckedPolicy>>> = HashMap::new();
        for p in &in_force {
            groups
                .entry(&p.doc.namespace)
                .or_default()
                .push(Arc::clone(p));
        }
        let mut out = Self::empty(config);
        out.id = id;
        out.next_change_at = next_change_at;
        out.policy_count = in_force.len();
        for (scope, mut members) in groups {
            members.sort_by(by_version);
            let prev = previous.and_then(|s| s.trie.entry_at(scope));
            let entry = match prev {
                Some(e) if same_members(&e.members, &members) => Arc::clone(e),
                _ => Arc::new(build_entry(members, prev.map(|e| &**e))?),
            };
            let segments: Vec<Option<&str>> = scope.segments().rev().collect();
            set_entry(&mut out.trie, &segments, Some(entry));
            out.scope_count += 1;
        }
        Ok(out)
    }

    /// The snapshot after `changes`: only the scopes they touch are rebuilt, and only
    /// the trie paths to those scopes are copied; everything else is shared with
    /// `self`. Gives the same decisions as [`Snapshot::compile`] of the resulting set.
    pub fn patch(
        &self,
        id: SnapshotId,
        changes: &[InForceChange],
        next_change_at: Option<OffsetDateTime>,
    ) -> Result<Self, CompileError> {
        // Per touched scope: the versions leaving it and the versions entering it.
        type Touch = (Vec<Arc<CheckedPolicy>>, Vec<Arc<CheckedPolicy>>);
        let mut touched: BTreeMap<&Scope, Touch> = BTreeMap::new();
        for c in changes {
            if let (Some(b), Some(a)) = (&c.before, &c.after)
                && Arc::ptr_eq(b, a)
            {
                continue;
            }
            if let Some(b) = &c.before {
                touched
                    .entry(&b.doc.namespace)
                    .or_default()
                    .0
                    .push(Arc::clone(b));
            }
            if let Some(a) = &c.after {
                touched
                    .entry(&a.doc.namespace)
                    .or_default()
                    .1
                    .push(Arc::clone(a));
            }
        }
        let mut trie = Arc::clone(&self.trie);
        let mut scope_count = self.scope_count;
        let mut policy_count = self.policy_count;
        let mut replaced = Vec::new();
        for (scope, (leaving, entering)) in touched {
            let current = self.trie.entry_at(scope);
            let mut members: Vec<Arc<CheckedPolicy>> =
                current.map(|e| e.members.clone()).unwrap_or_default();
            for l in &leaving {
                let at = members
                    .iter()
                    .position(|m| Arc::ptr_eq(m, l))
                    .ok_or_else(|| CompileError {
                        policy: l.version_ref().to_string(),
                        reason: format!(
                            "it leaves scope `{scope}` but is not in force there in the \
                             previous snapshot"
                        ),
                    })?;
                members.remove(at);
            }
            members.extend(entering);
            members.sort_by(by_version);
            policy_count = policy_count + members.len() - current.map_or(0, |e| e.members.len());
            if let Some(e) = current
                && same_members(&e.members, &members)
            {
                continue;
            }
            let entry = if members.is_empty() {
                scope_count -= 1;
                None
            } else {
                if current.is_none() {
                    scope_count += 1;
                }
                Some(Arc::new(build_entry(members, current.map(|e| &**e))?))
            };
            let segments: Vec<Option<&str>> = scope.segments().rev().collect();
            set_entry(&mut trie, &segments, entry);
            if let Some(e) = current {
                replaced.push(Arc::clone(e));
            }
        }
        self.merged.prune(&replaced);
        Ok(Self {
            id,
            trie,
            scope_count,
            policy_count,
            config: Arc::clone(&self.config),
            next_change_at,
            authorizer: Authorizer::new(),
            merged: Arc::clone(&self.merged),
        })
    }

    /// The snapshot's number.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// The policy versions in force, collected from the index (by scope, then name and
    /// version within a scope).
    pub fn in_force(&self) -> Vec<Arc<CheckedPolicy>> {
        let mut entries = Vec::new();
        self.trie.entries(&mut entries);
        entries
            .into_iter()
            .flat_map(|e| e.members.iter().cloned())
            .collect()
    }

    /// How many policy versions are in force.
    pub fn policy_count(&self) -> usize {
        self.policy_count
    }

    /// When the set in force changes by itself (a validity window opens or closes).
    pub fn next_change_at(&self) -> Option<OffsetDateTime> {
        self.next_change_at
    }

    /// The engine settings this snapshot was compiled with.
    pub fn config(&self) -> &Arc<EngineConfig> {
        &self.config
    }

    /// Number of distinct scopes indexed.
    pub fn scope_count(&self) -> usize {
        self.scope_count
    }

    /// Evaluates the policies that can apply to the request, deny-overrides across
    /// every matching scope, in one Cedar call.
    pub fn evaluate(&self, req: &ActionRequest) -> Result<Evaluation, EvalError> {
        let mut matched: Vec<&Arc<ScopeEntry>> = Vec::new();
        let segments: Vec<&str> = req.namespace.segments().rev().collect();
        collect(&self.trie, &segments, &mut matched);

        let root = req.namespace.root();
        let configured = self.config.namespace_defaults.get(root).copied();
        if matched.is_empty()
            && configured.is_none()
            && self.trie.wildcard.is_none()
            && !self.trie.literal.contains_key(root)
        {
            return Err(EvalError::UnknownNamespace {
                namespace: req.namespace.to_string(),
                root: root.to_owned(),
            });
        }

        let chosen: Vec<(&Arc<ScopeEntry>, &Sets)> = matched
            .into_iter()
            .map(|e| (e, e.by_action.get(req.action.as_str()).unwrap_or(&e.any)))
            .filter(|(_, s)| !s.rules.is_empty())
            .collect();
        let default = configured.unwrap_or(self.config.default_decision);
        if self.config.fast_path
            && let Some(evaluation) = evaluate_fast(req, &chosen, default)
        {
            return Ok(evaluation);
        }
        let merged;
        let (rules, policies) = match chosen.as_slice() {
            [] => return Ok(Hits::default().finish(default, Evaluator::Cedar)),
            [(_, s)] => (s.cedar()?, &s.policies),
            _ => match self.merged.get_or_build(&chosen) {
                Ok(m) => {
                    merged = m;
                    (&merged.rules, &merged.policies)
                }
                // Rules of different policies have different ids, so merging cannot
                // fail; should it, evaluating scope by scope gives the same result.
                Err(_) => return self.evaluate_each(req, &chosen, default),
            },
        };
        let mut hits = Hits::default();
        hits.policies.extend(policies.iter().cloned());
        hits.add(&self.authorizer, req, rules, &chosen)?;
        Ok(hits.finish(default, Evaluator::Cedar))
    }

    /// One Cedar call per matching scope; the fallback of [`Snapshot::evaluate`].
    fn evaluate_each(
        &self,
        req: &ActionRequest,
        chosen: &[(&Arc<ScopeEntry>, &Sets)],
        default: DefaultDecision,
    ) -> Result<Evaluation, EvalError> {
        let mut hits = Hits::default();
        for (entry, sets) in chosen {
            hits.policies.extend(sets.policies.iter().cloned());
            hits.add(&self.authorizer, req, sets.cedar()?, &[(entry, sets)])?;
        }
        hits.policies.sort();
        hits.policies.dedup();
        Ok(hits.finish(default, Evaluator::Cedar))
    }
}

/// The evaluation on the fast path, or `None` when a matching rule is not on it or it
/// gives up on the request (Cedar then decides).
fn evaluate_fast(
    req: &ActionRequest,
    chosen: &[(&Arc<ScopeEntry>, &Sets)],
    default: DefaultDecision,
) -> Option<Evaluation> {
    if !chosen.iter().all(|(_, s)| s.fast) {
        return None;
    }
    let mut hits = Hits::default();
    for (_, sets) in chosen {
        for rule in &sets.rules {
            if rule.fast.as_ref()?.satisfied(&req.facts).ok()? {
                hits.push(&rule.meta);
            }
        }
        hits.policies.extend(sets.policies.iter().cloned());
    }
    if chosen.len() > 1 {
        hits.policies.sort();
        hits.policies.dedup();
    }
    Some(hits.finish(default, Evaluator::FastPath))
}

/// The satisfied rules of a request, sorted out by kind.
#[derive(Debug, Default)]
struct Hits {
    forbids: Vec<RuleHit>,
    permits: Vec<RuleHit>,
    advisories: Vec<RuleHit>,
    errors: Vec<String>,
    policies: Vec<Arc<str>>,
}

impl Hits {
    fn push(&mut self, m: &RuleMeta) {
        let hit = RuleHit {
            policy: Arc::clone(&m.policy),
            rule: m.rule.clone(),
            effect: m.effect,
        };
        match m.kind {
            Kind::Forbid => self.forbids.push(hit),
            Kind::Permit => self.permits.push(hit),
            Kind::Advisory => self.advisories.push(hit),
        }
    }

    fn add(
        &mut self,
        authorizer: &Authorizer,
        req: &ActionRequest,
        rules: &PolicySet,
        from: &[(&Arc<ScopeEntry>, &Sets)],
    ) -> Result<(), EvalError> {
        let cedar = req.cedar().map_err(EvalError::Cedar)?;
        let resp = authorizer.is_authorized(&cedar.request, rules, &cedar.entities);
        let diag = resp.diagnostics();
        for id in diag.reason() {
            if let Some(m) = from.iter().find_map(|(e, _)| e.meta.get(id)) {
                self.push(m);
            }
        }
        // Cedar skips a policy whose evaluation errors; report which (by its id in the
        // document) and why.
        self.errors.extend(diag.errors().map(|e| match e {
            AuthorizationError::PolicyEvaluationError(err) => {
                match from.iter().find_map(|(e, _)| e.meta.get(err.policy_id())) {
                    Some(m) => format!(
                        "error while evaluating policy `{}`: {}",
                        m.source,
                        err.inner()
                    ),
                    None => e.to_string(),
                }
            }
        }));
        Ok(())
    }

    fn finish(mut self, default: DefaultDecision, evaluator: Evaluator) -> Evaluation {
        // Cedar reports from a hash set; sorting makes reasons and warnings stable.
        for hits in [&mut self.forbids, &mut self.permits, &mut self.advisories] {
            hits.sort_by(|a, b| (&a.policy, &a.rule).cmp(&(&b.policy, &b.rule)));
        }
        let verdict = if !self.forbids.is_empty() {
            PolicyVerdict::Forbid(self.forbids)
        } else if !self.permits.is_empty() {
            PolicyVerdict::Permit(self.permits)
        } else {
            PolicyVerdict::Default(default)
        };
        Evaluation {
            verdict,
            advisories: self.advisories,
            errors: self.errors,
            policies: self.policies,
            evaluator,
        }
    }
}

fn collect<'a>(node: &'a Node, rest: &[&str], out: &mut Vec<&'a Arc<ScopeEntry>>) {
    match rest.split_first() {
        None => {
            if let Some(e) = &node.entry {
                out.push(e);
            }
        }
        Some((seg, tail)) => {
            if let Some(child) = node.literal.get(*seg) {
                collect(child, tail, out);
            }
            if let Some(child) = &node.wildcard {
                collect(child, tail, out);
            }
        }
    }
}

/// The action ids a Cedar policy's scope names, or `None` for any action.
fn action_keys(rule: &CedarRule) -> Option<Vec<String>> {
    match rule.policy.action_constraint() {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(uid) => Some(vec![uid.id().unescaped().to_owned()]),
        ActionConstraint::In(uids) => {
            let mut keys: Vec<String> =
                uids.iter().map(|u| u.id().unescaped().to_owned()).collect();
            // `action in [A, A]` names A once; adding the rule twice to A's set would fail.
            keys.sort();
            keys.dedup();
            Some(keys)
        }
    }
}

/// Builds the entry of one scope from its members, sorted by (name, version). The
/// rewrites and programs of members that were already in `previous` are reused.
fn build_entry(
    members: Vec<Arc<CheckedPolicy>>,
    previous: Option<&ScopeEntry>,
) -> Result<ScopeEntry, CompileError> {
    let mut meta = FastMap::default();
    let mut rewritten = Vec::with_capacity(members.len());
    let mut any: Vec<&Arc<EvalRule>> = Vec::new();
    let mut specific: HashMap<String, Vec<&Arc<EvalRule>>> = HashMap::new();
    for p in &members {
        let reused = previous.and_then(|prev| {
            let i = prev.members.iter().position(|m| Arc::ptr_eq(m, p))?;
            prev.rewritten.get(i).cloned()
        });
        let rules = match reused {
            Some(r) => r,
            None => {
                let label: Arc<str> = Arc::from(p.version_ref().to_string());
                p.cedar
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| {
                        let json = rule.policy.to_json().map_err(|e| CompileError {
                            policy: label.to_string(),
                            reason: e.to_string(),
                        })?;
                        Ok(Arc::new(EvalRule {
                            member: Arc::clone(p),
                            index,
                            id: PolicyId::new(format!(
                                "r{:x}",
                                NEXT_RULE_ID.fetch_add(1, Ordering::Relaxed)
                            )),
                            meta: Arc::new(RuleMeta::of(rule, &label)),
                            fast: fastpath::compile(&json),
                            cedar: OnceLock::new(),
                        }))
                    })
                    .collect::<Result<Arc<[_]>, _>>()?
            }
        };
        rewritten.push(rules);
    }
    for rules in &rewritten {
        for rule in rules.iter() {
            meta.insert(rule.id.clone(), Arc::clone(&rule.meta));
            match rule.member.cedar.get(rule.index).and_then(action_keys) {
                None => any.push(rule),
                Some(keys) => {
                    for k in keys {
                        specific.entry(k).or_default().push(rule);
                    }
                }
            }
        }
    }
    let build = |items: &mut dyn Iterator<Item = &&Arc<EvalRule>>| {
        let rules: Box<[Arc<EvalRule>]> = items.map(|r| Arc::clone(*r)).collect();
        let mut policies: Vec<Arc<str>> =
            rules.iter().map(|r| Arc::clone(&r.meta.policy)).collect();
        policies.sort();
        policies.dedup();
        Sets {
            fast: rules.iter().all(|r| r.fast.is_some()),
            rules,
            cedar: OnceLock::new(),
            policies,
        }
    };
    let by_action = specific
        .iter()
        .map(|(k, items)| (k.clone(), build(&mut any.iter().chain(items.iter()))))
        .collect();
    let any = build(&mut any.iter());
    Ok(ScopeEntry {
        rewritten,
        any,
        by_action,
        meta,
        members,
    })
}

/// The next short id of an evaluated rule; ids are never reused within the process,
/// so the rules of any scopes merged into one set have distinct ids.
static NEXT_RULE_ID: AtomicU64 = AtomicU64::new(0);

/// A rule as Cedar evaluates it: a permit (a forbid is rewritten as a permit with the
/// same conditions) under `id`, a short id unique in the process (see `NEXT_RULE_ID`).
/// Cedar clones and hashes each evaluated rule's id; up to 23 bytes it is stored
/// inline, where the documents' `name@version#rule` ids are usually longer and
/// reference-counted.
fn as_evaluated(
    policy: &cedar_policy::Policy,
    id: PolicyId,
) -> Result<cedar_policy::Policy, String> {
    if policy.effect() == Effect::Permit {
        return Ok(policy.new_id(id));
    }
    let mut json = policy.to_json().map_err(|e| e.to_string())?;
    if let Some(effect) = json.get_mut("effect") {
        *effect = serde_json::Value::String("permit".into());
    }
    cedar_policy::Policy::from_json(Some(id), json).map_err(|e| e.to_string())
}
