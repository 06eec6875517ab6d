//! Which counter a request charges: the key value a quota or concurrency rule counts
//! per (agent, pack, namespace or one global key), and its 64-bit hash.
//!
//! The limiter stores the hash, never the text, so a key costs the same few bytes
//! however long the agent id or namespace is.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::document::LimitKey;
use crate::ids::{AgentId, PackId, PolicyName, RuleId};
use crate::namespace::Namespace;
use crate::request::ActionRequest;

/// The value of a request that a rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKey<'a> {
    Agent(&'a AgentId),
    Pack(&'a PackId),
    Namespace(&'a Namespace),
    /// One counter shared by every request the rule applies to.
    Global,
}

impl<'a> QuotaKey<'a> {
    /// The key a rule keyed by `rule_key` charges for a request from `agent` (in
    /// `pack`, if it has one) in `namespace`. `None` when the rule does not apply:
    /// a pack-keyed rule has nothing to count for an agent outside any pack.
    pub fn for_request(
        rule_key: LimitKey,
        agent: &'a AgentId,
        pack: Option<&'a PackId>,
        namespace: &'a Namespace,
    ) -> Option<Self> {
        match rule_key {
            LimitKey::Agent => Some(QuotaKey::Agent(agent)),
            LimitKey::Pack => pack.map(QuotaKey::Pack),
            LimitKey::Namespace => Some(QuotaKey::Namespace(namespace)),
            LimitKey::Global => Some(QuotaKey::Global),
        }
    }

    /// [`QuotaKey::for_request`] for a built request.
    pub fn of_request(rule_key: LimitKey, request: &'a ActionRequest) -> Option<Self> {
        QuotaKey::for_request(
            rule_key,
            &request.agent,
            request.pack.as_ref(),
            &request.namespace,
        )
    }

    /// What the key counts per.
    pub fn kind(&self) -> LimitKey {
        match self {
            QuotaKey::Agent(_) => LimitKey::Agent,
            QuotaKey::Pack(_) => LimitKey::Pack,
            QuotaKey::Namespace(_) => LimitKey::Namespace,
            QuotaKey::Global => LimitKey::Global,
        }
    }

    /// The key value as text; empty for the global key.
    pub fn value(&self) -> &'a str {
        match self {
            QuotaKey::Agent(a) => a.as_str(),
            QuotaKey::Pack(p) => p.as_str(),
            QuotaKey::Namespace(n) => n.as_str(),
            QuotaKey::Global => "",
        }
    }
}

/// The 64-bit identity of one counter: a rule and a key value, hashed.
///
/// Two distinct counters share a hash with probability about `n² / 2⁶⁵` for `n` live
/// keys (under 10⁻⁵ for ten million); they would then share one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub u64);

/// Hashes (rule, key value) pairs into [`KeyHash`]es with a seed.
///
/// Key values come from callers, so the seed must be secret and random (the server
/// draws it at start; this crate draws nothing): with a known seed, someone could
/// choose agent ids that collide and share, or crowd, a budget. The hash is foldhash,
/// a few nanoseconds for short keys.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    state: foldhash::fast::FixedState,
}

impl KeyHasher {
    /// A hasher keyed by `seed`.
    pub fn new(seed: u64) -> Self {
        KeyHasher {
            state: foldhash::fast::FixedState::with_seed(seed),
        }
    }

    /// The counter of rule `rule` of policy `policy` for `key`.
    ///
    /// The policy version is deliberately not part of it: a new version of a policy
    /// that keeps a rule id keeps that rule's counters, so publishing a version does
    /// not hand every key a fresh burst.
    pub fn hash(&self, policy: &PolicyName, rule: &RuleId, key: &QuotaKey<'_>) -> KeyHash {
        let mut h = self.state.build_hasher();
        // `str` hashing appends a 0xff terminator (never valid UTF-8), so the parts
        // cannot run into one another: ("ab", "c") and ("a", "bc") differ.
        policy.as_str().hash(&mut h);
        rule.as_str().hash(&mut h);
        h.write_u8(key.kind() as u8);
        key.value().hash(&mut h);
        KeyHash(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pick_their_key_from_the_request() {
        let agent = AgentId::new("a-1");
        let pack = PackId::new("alpha");
        let ns = Namespace::parse("pay.proc.am.usa.fin").expect("valid namespace");
        let cases = [
            (LimitKey::Agent, Some(&pack), Some((LimitKey::Agent, "a-1"))),
            (LimitKey::Pack, Some(&pack), Some((LimitKey::Pack, "alpha"))),
            (LimitKey::Pack, None, None),
            (
                LimitKey::Namespace,
                None,
                Some((LimitKey::Namespace, "pay.proc.am.usa.fin")),
            ),
            (LimitKey::Global, Some(&pack), Some((LimitKey::Global, ""))),
        ];
        for (rule_key, pack, want) in cases {
            let got =
                QuotaKey::for_request(rule_key, &agent, pack, &ns).map(|k| (k.kind(), k.value()));
            assert_eq!(got, want, "{rule_key} with pack {pack:?}");
        }
    }

    #[test]
    fn hashes_separate_rules_kinds_values_and_seeds() {
        let hasher = KeyHasher::new(42);
        let (p, q) = (PolicyName::new("p"), PolicyName::new("q"));
        let (r1, r2) = (RuleId::new("r1"), RuleId::new("r2"));
        let x_agent = AgentId::new("x");
        let x_pack = PackId::new("x");
        let agent = QuotaKey::Agent(&x_agent);
        let base = hasher.hash(&p, &r1, &agent);
        assert_eq!(base, hasher.hash(&p, &r1, &agent), "deterministic");
        assert_ne!(
            base,
            hasher.hash(&q, &r1, &agent),
            "policy is part of the key"
        );
        assert_ne!(
            base,
            hasher.hash(&p, &r2, &agent),
            "rule is part of the key"
        );
        assert_ne!(
            base,
            hasher.hash(&p, &r1, &QuotaKey::Pack(&x_pack)),
            "kind is part of the key"
        );
        assert_ne!(
            base,
            KeyHasher::new(43).hash(&p, &r1, &agent),
            "seed changes every hash"
        );
        // Parts do not run into one another.
        let (ab, c) = (PolicyName::new("ab"), RuleId::new("c"));
        let (a, bc) = (PolicyName::new("a"), RuleId::new("bc"));
        assert_ne!(
            hasher.hash(&ab, &c, &QuotaKey::Global),
            hasher.hash(&a, &bc, &QuotaKey::Global)
        );
    }
}
