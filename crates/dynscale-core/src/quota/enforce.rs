//! Enforcing the quota and concurrency rules of the policies in force on one request
//! that the policies allowed: which rules apply, which counters they charge, and the
//! `throttle` verdict with its exact `retry_after` when one does not pass.
//!
//! A rule applies to every request whose namespace its policy's scope matches, for
//! every action. Only allowed requests are charged: a denied action spends nothing.
//! Concurrency leases are taken first and the rate quotas charged second, all or
//! nothing, so a request throttled by either leaves every counter as it was.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::document::{LimitKey, Rate};
use crate::ids::{PolicyName, RuleId};
use crate::namespace::{Namespace, Scope};
use crate::policy::CheckedPolicy;
use crate::request::ActionRequest;

use super::cost::{CostError, cost_from_context};
use super::gcra::{Gcra, Verdict};
use super::key::{KeyHasher, QuotaKey};
use super::lease::{LeaseConfig, LeaseDenied, LeaseError, LeaseId, LeaseTable};
use super::limiter::{LimiterConfig, LimiterError, QuotaCharge, QuotaLimiter};
use super::time::Nanos;

/// The quota and concurrency rules of a set of policies, ready to match requests.
#[derive(Debug, Default)]
pub struct QuotaRules {
    rules: Vec<ScopedRule>,
}

#[derive(Debug)]
struct ScopedRule {
    scope: Scope,
    policy: PolicyName,
    /// `name@version#rule`, as decisions name rules.
    label: Arc<str>,
    rule: RuleId,
    key: LimitKey,
    limit: Limit,
}

#[derive(Debug)]
enum Limit {
    Rate {
        gcra: Gcra,
        rate: Rate,
        cost: Option<String>,
    },
    Concurrency {
        limit: u64,
        ttl: Option<Duration>,
    },
}

impl QuotaRules {
    /// The rules of `policies`. A quota rule whose rate and burst make no GCRA limit
    /// is refused by validation before it can be in force, so none is skipped here in
    /// practice; should one be, it is left out rather than enforced wrongly.
    pub fn build(policies: &[Arc<CheckedPolicy>]) -> Self {
        let mut rules = Vec::new();
        for p in policies {
            for r in &p.doc.rules {
                let limit = match (&r.quota, &r.concurrency) {
                    (Some(q), _) => match Gcra::from_rule(q) {
                        Ok(gcra) => (
                            q.key,
                            Limit::Rate {
                                gcra,
                                rate: q.rate,
                                cost: q.cost.clone(),
                            },
                        ),
                        Err(_) => continue,
                    },
                    (None, Some(c)) => (
                        c.key,
                        Limit::Concurrency {
                            limit: c.limit,
                            ttl: c.ttl.map(|t| t.0),
                        },
                    ),
                    (None, None) => continue,
                };
                rules.push(ScopedRule {
                    scope: p.doc.namespace.clone(),
                    policy: p.doc.name.clone(),
                    label: format!("{}@{}#{}", p.doc.name, p.doc.version, r.id).into(),
                    rule: r.id.clone(),
                    key: limit.0,
                    limit: limit.1,
                });
            }
        }
        QuotaRules { rules }
    }

    /// Whether there is no rule at all (the common fast path).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    fn applying<'a>(&'a self, namespace: &'a Namespace) -> impl Iterator<Item = &'a ScopedRule> {
        self.rules
            .iter()
            .filter(move |r| r.scope.matches(namespace))
    }
}

/// How an [`Enforcer`] is sized and seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforcerConfig {
    pub limiter: LimiterConfig,
    pub leases: LeaseConfig,
    /// The secret seed of the counter hash (drawn at random by the server).
    pub seed: u64,
    /// The lease TTL of a concurrency rule that names none.
    pub default_lease_ttl: Duration,
}

/// Why an enforcer cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnforcerError {
    #[error("quota limiter: {0}")]
    Limiter(#[from] LimiterError),
    #[error("lease table: {0}")]
    Leases(#[from] LeaseError),
    #[error("default lease TTL must be longer than zero")]
    ZeroTtl,
}

/// The counters of one node: GCRA state per quota key and live leases per
/// concurrency key.
#[derive(Debug)]
pub struct Enforcer {
    limiter: QuotaLimiter,
    leases: LeaseTable,
    hasher: KeyHasher,
    default_lease_ttl: Duration,
}

/// What the rules say about an allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// Every rule passes; the request holds these leases (one per concurrency rule).
    Pass { leases: Leases },
    /// A rule does not pass; nothing was charged and no lease is held.
    Throttle(Throttle),
}

/// Which rule throttled a request, and when asking again can pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// `name@version#rule`.
    pub rule: Arc<str>,
    /// `None` when waiting cannot help (a cost above the burst).
    pub retry_after: Option<Duration>,
    /// Why, in words, for the decision's reasons.
    pub reason: String,
}

/// The leases one request holds, released together. Its text form (the `lease_id`
/// of a decision) is the lease numbers in hex, joined by `.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases(Vec<LeaseId>);

impl Leases {
    /// Whether the request holds no lease.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let ids = text
            .split('.')
            .map(|part| {
                if part.is_empty() || part.len() > 16 {
                    return None;
                }
                u64::from_str_radix(part, 16)
                    .ok()
                    .filter(|&n| n != 0)
                    .map(LeaseId)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Leases(ids))
    }
}

impl fmt::Display for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{:x}", id.0)?;
        }
        Ok(())
    }
}

/// Counts kept by an enforcer, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnforcerStats {
    pub quota_keys: usize,
    pub live_leases: usize,
    pub expired_leases: u64,
    pub forced_evictions: u64,
    pub memory_bytes: usize,
}

impl Enforcer {
    /// An enforcer with no counters yet.
    pub fn new(config: EnforcerConfig) -> Result<Self, EnforcerError> {
        if config.default_lease_ttl.is_zero() {
            return Err(EnforcerError::ZeroTtl);
        }
        Ok(Enforcer {
            limiter: QuotaLimiter::new(config.limiter)?,
            leases: LeaseTable::new(config.leases)?,
            hasher: KeyHasher::new(config.seed),
            default_lease_ttl: config.default_lease_ttl,
        })
    }

    /// Applies `rules` to a request the policies allowed, at `now`. `context` is the
    /// request context, where a quota rule may name the field holding the cost.
    pub fn enforce(
        &self,
        rules: &QuotaRules,
        req: &ActionRequest,
        context: &Map<String, Value>,
        now: Nanos,
    ) -> Result<QuotaOutcome, CostError> {
        if rules.is_empty() {
            return Ok(QuotaOutcome::Pass {
                leases: Leases::default(),
            });
        }
        let mut charges = Vec::new();
        let mut charged = Vec::new();
        let mut leases = Vec::new();
        for rule in rules.applying(&req.namespace) {
            let Some(key) = QuotaKey::of_request(rule.key, req) else {
                continue;
            };
            let hash = self.hasher.hash(&rule.policy, &rule.rule, &key);
            match &rule.limit {
                Limit::Rate { gcra, rate, cost } => {
                    let cost = cost_from_context(cost.as_deref(), context)?;
                    charges.push(QuotaCharge {
                        limit: gcra,
                        key: hash,
                        cost,
                    });
                    charged.push((rule, key, *rate, gcra.burst()));
                }
                Limit::Concurrency { limit, ttl } => {
                    let ttl = ttl.unwrap_or(self.default_lease_ttl);
                    match self.leases.acquire(hash, *limit, ttl, now) {
                        Ok(id) => leases.push(id),
                        Err(denied) => {
                            self.release(&Leases(leases), now);
                            return Ok(QuotaOutcome::Throttle(lease_throttle(rule, &key, denied)));
                        }
                    }
                }
            }
        }
        let (verdict, culprit) = self.limiter.check_all_naming(&charges, now);
        match (verdict, culprit.and_then(|i| charged.get(i))) {
            (Verdict::Allow, _) | (_, None) => Ok(QuotaOutcome::Pass {
                leases: Leases(leases),
            }),
            (refused, Some((rule, key, rate, burst))) => {
                self.release(&Leases(leases), now);
                Ok(QuotaOutcome::Throttle(rate_throttle(
                    rule, key, *rate, *burst, refused,
                )))
            }
        }
    }

    /// Frees the leases; returns how many were still live.
    pub fn release(&self, leases: &Leases, now: Nanos) -> usize {
        leases
            .0
            .iter()
            .filter(|&&id| self.leases.release(id, now))
            .count()
    }

    /// Drops idle quota keys and expired leases; returns how many went.
    pub fn sweep(&self, now: Nanos) -> usize {
        self.limiter.sweep(now) + self.leases.sweep(now)
    }

    /// Current counts.
    pub fn stats(&self) -> EnforcerStats {
        let limiter = self.limiter.stats();
        EnforcerStats {
            quota_keys: limiter.keys,
            live_leases: self.leases.len(),
            expired_leases: self.leases.expired_total(),
            forced_evictions: limiter.forced_evictions,
            memory_bytes: limiter.memory_bytes + self.leases.memory_bytes(),
        }
    }
}

fn describe_key(key: &QuotaKey<'_>) -> String {
    match key {
        QuotaKey::Global => "all requests".to_owned(),
        other => format!("{} {}", other.kind(), other.value()),
    }
}

fn rate_throttle(
    rule: &ScopedRule,
    key: &QuotaKey<'_>,
    rate: Rate,
    burst: u64,
    verdict: Verdict,
) -> Throttle {
    let who = describe_key(key);
    let reason = match verdict {
        Verdict::OverBurst { cost, burst } => format!(
            "quota {}: cost {cost} exceeds the burst of {burst} for {who}; it can never pass",
            rule.label
        ),
        _ => format!(
            "quota {}: {rate}, burst {burst} exceeded for {who}",
            rule.label
        ),
    };
    Throttle {
        rule: rule.label.clone(),
        retry_after: verdict.retry_after(),
        reason,
    }
}

fn lease_throttle(rule: &ScopedRule, key: &QuotaKey<'_>, denied: LeaseDenied) -> Throttle {
    let who = describe_key(key);
    let reason = match denied {
        LeaseDenied::AtLimit { limit, .. } => format!(
            "concurrency {}: {limit} actions already in flight for {who}",
            rule.label
        ),
        LeaseDenied::ZeroLimit => format!("concurrency {}: the limit is 0", rule.label),
        LeaseDenied::TableFull { max_leases, .. } => format!(
            "concurrency {}: the node holds its maximum of {max_leases} leases",
            rule.label
        ),
    };
    Throttle {
        rule: rule.label.clone(),
        retry_after: denied.retry_after(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PackId;
    use crate::policy::check_document;
    use crate::request::{ActionInput, AgentProfile};
    use serde_json::json;

    fn policy(yaml: &str) -> Arc<CheckedPolicy> {
        Arc::new(check_document("test", yaml, None).expect("valid policy"))
    }

    const PAY: &str = r#"
policyId: 1f0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f
name: pay
version: 1.0.0
namespace: "payment.*.*.*.acme"
rules:
  - id: agent-rate
    quota: { key: agent, rate: 10/s, burst: 5, cost: units }
  - id: pack-inflight
    concurrency: { key: pack, limit: 2, ttl: 10s }
"#;

    fn enforcer() -> Enforcer {
        Enforcer::new(EnforcerConfig {
            limiter: LimiterConfig {
                max_keys: 1024,
                shards: 4,
            },
            leases: LeaseConfig {
                max_leases: 1024,
                shards: 4,
            },
            seed: 7,
            default_lease_ttl: Duration::from_secs(30),
        })
        .expect("valid config")
    }

    fn request(agent: &str, namespace: &str) -> (ActionRequest, Map<String, Value>) {
        let context = json!({ "namespace": namespace })
            .as_object()
            .cloned()
            .unwrap_or_default();
        let empty = Map::new();
        let profile = AgentProfile {
            pack: Some(PackId::new("treasury")),
            attributes: Map::new(),
        };
        let input = ActionInput {
            subject_type: "Agent",
            subject_id: agent,
            subject_properties: &empty,
            action: "transfer",
            resource_type: "Account",
            resource_id: "acct-1",
            resource_properties: &empty,
            context: &context,
            default_namespace: None,
        };
        let req = ActionRequest::build(&input, Some(&profile)).expect("valid request");
        (req, context)
    }

    #[test]
    fn rate_rule_throttles_with_exact_retry_after_and_names_the_rule() {
        let rules = QuotaRules::build(&[policy(PAY)]);
        assert_eq!(rules.len(), 2);
        let e = enforcer();
        let (req, ctx) = request("a-1", "payment.eu.x.fr.acme");
        let mut held = Vec::new();
        // Two leases pass (limit 2), the third request throttles on concurrency.
        for _ in 0..2 {
            match e.enforce(&rules, &req, &ctx, Nanos(0)).expect("cost ok") {
                QuotaOutcome::Pass { leases } => held.push(leases),
                other => panic!("expected a pass, got {other:?}"),
            }
        }
        let QuotaOutcome::Throttle(t) = e.enforce(&rules, &req, &ctx, Nanos(0)).expect("ok") else {
            panic!("third in flight must throttle")
        };
        assert_eq!(&*t.rule, "pay@1.0.0#pack-inflight");
        assert_eq!(t.retry_after, Some(Duration::from_secs(10)));
        // Releasing frees the slot; the rate rule then throttles after its burst of 5.
        for l in &held {
            assert_eq!(e.release(l, Nanos(0)), 1);
            assert_eq!(e.release(l, Nanos(0)), 0, "a second release is harmless");
        }
        let mut passes = 2;
        loop {
            match e.enforce(&rules, &req, &ctx, Nanos(0)).expect("ok") {
                QuotaOutcome::Pass { leases } => {
                    passes += 1;
                    e.release(&leases, Nanos(0));
                }
                QuotaOutcome::Throttle(t) => {
                    assert_eq!(&*t.rule, "pay@1.0.0#agent-rate");
                    assert_eq!(t.retry_after, Some(Duration::from_millis(100)));
                    assert!(t.reason.contains("agent a-1"), "{}", t.reason);
                    break;
                }
            }
        }
        assert_eq!(passes, 5, "burst 5: five pass at one instant");
        // A throttled request held no lease: both slots are free.
        assert_eq!(e.stats().live_leases, 0);
        // Another agent has its own budget; another namespace is out of scope.
        let (other, ctx2) = request("a-2", "payment.eu.x.fr.acme");
        assert!(matches!(
            e.enforce(&rules, &other, &ctx2, Nanos(0)),
            Ok(QuotaOutcome::Pass { .. })
        ));
        let (outside, ctx3) = request("a-1", "tools.shell.x.fr.acme");
        assert_eq!(
            e.enforce(&rules, &outside, &ctx3, Nanos(0)),
            Ok(QuotaOutcome::Pass {
                leases: Leases::default()
            })
        );
    }

    #[test]
    fn cost_comes_from_the_context_and_bad_costs_are_errors() {
        let rules = QuotaRules::build(&[policy(PAY)]);
        let e = enforcer();
        let (req, mut ctx) = request("a-1", "payment.eu.x.fr.acme");
        ctx.insert("units".into(), json!(6));
        let QuotaOutcome::Throttle(t) = e.enforce(&rules, &req, &ctx, Nanos(0)).expect("ok") else {
            panic!("cost 6 over burst 5 never passes")
        };
        assert_eq!(t.retry_after, None);
        assert!(t.reason.contains("never pass"), "{}", t.reason);
        ctx.insert("units".into(), json!("six"));
        let err = e
            .enforce(&rules, &req, &ctx, Nanos(0))
            .expect_err("a string cost");
        assert_eq!(err.field(), "context.units");
        assert_eq!(
            e.stats().live_leases,
            0,
            "no lease leaks on a throttle or an error"
        );
    }

    #[test]
    fn allowed_count_is_rate_times_time_plus_burst() {
        // 50/s with burst 10, one request per millisecond for 3 s: R·T + B = 160 (± 1).
        let doc = PAY
            .replace("rate: 10/s, burst: 5, cost: units", "rate: 50/s, burst: 10")
            .replace("limit: 2, ttl: 10s", "limit: 1000000");
        let rules = QuotaRules::build(&[policy(&doc)]);
        let e = enforcer();
        let (req, ctx) = request("a-1", "payment.eu.x.fr.acme");
        let mut allowed = 0i64;
        for ms in 0..3000u64 {
            if let Ok(QuotaOutcome::Pass { leases }) =
                e.enforce(&rules, &req, &ctx, Nanos(ms * 1_000_000))
            {
                allowed += 1;
                e.release(&leases, Nanos(ms * 1_000_000));
            }
        }
        assert!((allowed - 160).abs() <= 1, "allowed {allowed}");
    }

    #[test]
    fn lease_text_round_trips_and_rejects_garbage() {
        let l = Leases(vec![LeaseId(0x1a), LeaseId(0xff00)]);
        assert_eq!(l.to_string(), "1a.ff00");
        assert_eq!(Leases::parse("1a.ff00"), Some(l));
        for bad in ["", ".", "1a.", "zz", "0", "1a.0", "12345678901234567"] {
            assert_eq!(Leases::parse(bad), None, "{bad:?}");
        }
    }
}
