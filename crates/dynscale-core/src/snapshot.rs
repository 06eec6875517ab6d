//! The compiled snapshot: the immutable set of policies in force, indexed by scope
//! (a trie over namespace segments, org first) and by action, so a decision evaluates
//! only the Cedar policies that can apply to it.
//!
//! Compiling reuses every scope entry whose policies did not change, so a push costs
//! the scopes it touches, not the whole active set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{ActionConstraint, Authorizer, Effect, PolicyId, PolicySet};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{RuleId, SnapshotId};
use crate::namespace::Scope;
use crate::policy::{CedarRule, CheckedPolicy, RuleEffect};
use crate::request::ActionRequest;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_decision: DefaultDecision::Deny,
            namespace_defaults: BTreeMap::new(),
        }
    }
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
}

/// Why a request cannot be evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(
        "namespace `{namespace}` is unknown: no active policy covers its root `{root}` and \
         no default is configured for it"
    )]
    UnknownNamespace { namespace: String, root: String },
}

#[derive(Debug)]
struct RuleMeta {
    policy: Arc<str>,
    rule: RuleId,
    effect: RuleEffect,
    forbid: bool,
}

/// The Cedar sets to evaluate for one action (or for any action) in one scope.
#[derive(Debug, Default)]
struct Sets {
    /// Permits and enforcing forbids.
    enforce: PolicySet,
    /// Advisory forbids, rewritten as permits so a satisfied one shows as a reason
    /// without denying.
    advisory: Option<PolicySet>,
    policies: Vec<Arc<str>>,
}

#[derive(Debug)]
struct ScopeEntry {
    /// The policies compiled into this entry; compared by pointer to reuse the entry.
    members: Vec<Arc<CheckedPolicy>>,
    any: Sets,
    by_action: HashMap<String, Sets>,
    meta: HashMap<PolicyId, RuleMeta>,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    wildcard: Option<Box<Node>>,
    entry: Option<Arc<ScopeEntry>>,
}

/// The compiled, immutable set of policies in force.
#[derive(Debug)]
pub struct Snapshot {
    id: SnapshotId,
    entries: HashMap<Scope, Arc<ScopeEntry>>,
    trie: Node,
    config: Arc<EngineConfig>,
    roots: HashSet<String>,
    any_root: bool,
    in_force: Vec<Arc<CheckedPolicy>>,
    next_change_at: Option<OffsetDateTime>,
    authorizer: Authorizer,
}

/// Why a compile failed. Checked policies always compile; this guards the invariant.
#[derive(Debug, thiserror::Error)]
#[error("compiling policy {policy}: {reason}")]
pub struct CompileError {
    pub policy: String,
    pub reason: String,
}

impl Snapshot {
    /// An empty snapshot: every namespace is unknown unless configured.
    pub fn empty(config: Arc<EngineConfig>) -> Self {
        Self::assemble(SnapshotId(0), HashMap::new(), config, Vec::new(), None)
    }

    /// Compiles the policies in force. Entries of `previous` whose policies are the same
    /// `Arc`s are reused as they are.
    pub fn compile(
        id: SnapshotId,
        in_force: Vec<Arc<CheckedPolicy>>,
        next_change_at: Option<OffsetDateTime>,
        config: Arc<EngineConfig>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, CompileError> {
        let mut groups: HashMap<&Scope, Vec<&Arc<CheckedPolicy>>> = HashMap::new();
        for p in &in_force {
            groups.entry(&p.doc.namespace).or_default().push(p);
        }
        let mut entries = HashMap::with_capacity(groups.len());
        for (scope, mut members) in groups {
            members
                .sort_by(|a, b| (&a.doc.name, &a.doc.version).cmp(&(&b.doc.name, &b.doc.version)));
            let reused = previous
                .and_then(|prev| prev.entries.get(scope))
                .filter(|e| {
                    e.members.len() == members.len()
                        && e.members
                            .iter()
                            .zip(&members)
                            .all(|(a, b)| Arc::ptr_eq(a, b))
                });
            let entry = match reused {
                Some(e) => Arc::clone(e),
                None => Arc::new(build_entry(&members)?),
            };
            entries.insert(scope.clone(), entry);
        }
        Ok(Self::assemble(
            id,
            entries,
            config,
            in_force,
            next_change_at,
        ))
    }

    fn assemble(
        id: SnapshotId,
        entries: HashMap<Scope, Arc<ScopeEntry>>,
        config: Arc<EngineConfig>,
        in_force: Vec<Arc<CheckedPolicy>>,
        next_change_at: Option<OffsetDateTime>,
    ) -> Self {
        let mut trie = Node::default();
        let mut roots = HashSet::new();
        let mut any_root = false;
        for (scope, entry) in &entries {
            match scope.root() {
                Some(r) => {
                    roots.insert(r.to_owned());
                }
                None => any_root = true,
            }
            let mut node = &mut trie;
            for seg in scope.segments().rev() {
                node = match seg {
                    Some(s) => node.literal.entry(s.into()).or_default(),
                    None => node.wildcard.get_or_insert_with(Default::default),
                };
            }
            node.entry = Some(Arc::clone(entry));
        }
        Self {
            id,
            entries,
            trie,
            config,
            roots,
            any_root,
            in_force,
            next_change_at,
            authorizer: Authorizer::new(),
        }
    }

    /// The snapshot's number.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// The policy versions in force.
    pub fn in_force(&self) -> &[Arc<CheckedPolicy>] {
        &self.in_force
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
        self.entries.len()
    }

    /// Evaluates the policies that can apply to the request, deny-overrides across
    /// every matching scope.
    pub fn evaluate(&self, req: &ActionRequest) -> Result<Evaluation, EvalError> {
        let mut matched: Vec<&ScopeEntry> = Vec::new();
        let segments: Vec<&str> = req.namespace.segments().rev().collect();
        collect(&self.trie, &segments, &mut matched);

        let root = req.namespace.root();
        let configured = self.config.namespace_defaults.get(root).copied();
        if matched.is_empty()
            && configured.is_none()
            && !self.any_root
            && !self.roots.contains(root)
        {
            return Err(EvalError::UnknownNamespace {
                namespace: req.namespace.to_string(),
                root: root.to_owned(),
            });
        }

        let mut forbids = Vec::new();
        let mut permits = Vec::new();
        let mut advisories = Vec::new();
        let mut errors = Vec::new();
        let mut policies: Vec<Arc<str>> = Vec::new();
        for entry in matched {
            let sets = entry
                .by_action
                .get(req.action.as_str())
                .unwrap_or(&entry.any);
            if sets.enforce.is_empty() && sets.advisory.is_none() {
                continue;
            }
            policies.extend(sets.policies.iter().cloned());
            if !sets.enforce.is_empty() {
                let resp = self
                    .authorizer
                    .is_authorized(&req.cedar, &sets.enforce, &req.entities);
                let diag = resp.diagnostics();
                for id in diag.reason() {
                    if let Some(m) = entry.meta.get(id) {
                        let hit = RuleHit {
                            policy: Arc::clone(&m.policy),
                            rule: m.rule.clone(),
                            effect: m.effect,
                        };
                        if m.forbid {
                            forbids.push(hit);
                        } else {
                            permits.push(hit);
                        }
                    }
                }
                // Cedar skips a policy whose evaluation errors; report which and why.
                errors.extend(diag.errors().map(|e| e.to_string()));
            }
            if let Some(adv) = &sets.advisory {
                let resp = self
                    .authorizer
                    .is_authorized(&req.cedar, adv, &req.entities);
                for id in resp.diagnostics().reason() {
                    if let Some(m) = entry.meta.get(id) {
                        advisories.push(RuleHit {
                            policy: Arc::clone(&m.policy),
                            rule: m.rule.clone(),
                            effect: m.effect,
                        });
                    }
                }
                errors.extend(resp.diagnostics().errors().map(|e| e.to_string()));
            }
        }
        policies.sort();
        policies.dedup();
        let verdict = if !forbids.is_empty() {
            PolicyVerdict::Forbid(forbids)
        } else if !permits.is_empty() {
            PolicyVerdict::Permit(permits)
        } else {
            PolicyVerdict::Default(configured.unwrap_or(self.config.default_decision))
        };
        Ok(Evaluation {
            verdict,
            advisories,
            errors,
            policies,
        })
    }
}

fn collect<'a>(node: &'a Node, rest: &[&str], out: &mut Vec<&'a ScopeEntry>) {
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

fn build_entry(members: &[&Arc<CheckedPolicy>]) -> Result<ScopeEntry, CompileError> {
    let mut meta = HashMap::new();
    // (rule, policy label, advisory form) for any-action and per-action rules.
    let mut any: Vec<(cedar_policy::Policy, bool, Arc<str>)> = Vec::new();
    let mut specific: HashMap<String, Vec<(cedar_policy::Policy, bool, Arc<str>)>> = HashMap::new();
    for p in members {
        let label: Arc<str> = Arc::from(p.version_ref().to_string());
        for rule in &p.cedar {
            let advisory = rule.is_advisory();
            let policy = if advisory {
                as_permit(&rule.policy).map_err(|reason| CompileError {
                    policy: label.to_string(),
                    reason,
                })?
            } else {
                rule.policy.clone()
            };
            meta.insert(
                rule.policy.id().clone(),
                RuleMeta {
                    policy: Arc::clone(&label),
                    rule: rule.rule.clone(),
                    effect: rule.effect,
                    forbid: rule.policy.effect() == Effect::Forbid,
                },
            );
            let item = (policy, advisory, Arc::clone(&label));
            match action_keys(rule) {
                None => any.push(item),
                Some(keys) => {
                    for k in keys {
                        specific.entry(k).or_default().push(item.clone());
                    }
                }
            }
        }
    }
    let build = |items: &mut dyn Iterator<Item = &(cedar_policy::Policy, bool, Arc<str>)>| {
        let mut sets = Sets::default();
        let mut advisory = PolicySet::new();
        for (policy, is_advisory, label) in items {
            let target = if *is_advisory {
                &mut advisory
            } else {
                &mut sets.enforce
            };
            target.add(policy.clone()).map_err(|e| CompileError {
                policy: label.to_string(),
                reason: e.to_string(),
            })?;
            sets.policies.push(Arc::clone(label));
        }
        sets.policies.sort();
        sets.policies.dedup();
        if !advisory.is_empty() {
            sets.advisory = Some(advisory);
        }
        Ok::<_, CompileError>(sets)
    };
    let by_action = specific
        .iter()
        .map(|(k, items)| Ok((k.clone(), build(&mut any.iter().chain(items.iter()))?)))
        .collect::<Result<HashMap<_, _>, CompileError>>()?;
    Ok(ScopeEntry {
        members: members.iter().map(|p| Arc::clone(p)).collect(),
        any: build(&mut any.iter())?,
        by_action,
        meta,
    })
}

/// Rewrites a forbid as a permit with the same id and conditions.
fn as_permit(policy: &cedar_policy::Policy) -> Result<cedar_policy::Policy, String> {
    let mut json = policy.to_json().map_err(|e| e.to_string())?;
    if let Some(effect) = json.get_mut("effect") {
        *effect = serde_json::Value::String("permit".into());
    }
    cedar_policy::Policy::from_json(Some(policy.id().clone()), json).map_err(|e| e.to_string())
}
