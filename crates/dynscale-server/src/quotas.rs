//! The node's quota counters: the core [`Enforcer`] with this node's clock and secret
//! hash seed, the quota rules of the current snapshot, and the sweep that drops idle
//! keys and expired leases.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dynscale_core::quota::{
    CostError, Enforcer, EnforcerConfig, EnforcerStats, LeaseConfig, Leases, LimiterConfig, Nanos,
    QuotaOutcome, QuotaRules,
};
use dynscale_core::request::ActionRequest;
use dynscale_core::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Settings of quota enforcement (`[quotas]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    /// The most quota counters held at once; idle ones are evicted first.
    pub max_keys: usize,
    /// The most concurrency leases held at once; beyond it new leases are throttled.
    pub max_leases: usize,
    /// The TTL of a lease whose concurrency rule names none.
    pub lease_ttl_secs: u64,
    /// How often idle counters and expired leases are dropped.
    pub sweep_interval_secs: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            max_keys: 1_000_000,
            max_leases: 1 << 20,
            lease_ttl_secs: 30,
            sweep_interval_secs: 10,
        }
    }
}

/// Why the quota counters could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuotaStartError {
    #[error("[quotas]: {0}")]
    Config(#[from] dynscale_core::quota::EnforcerError),
    #[error("drawing the quota hash seed: {0}")]
    Seed(getrandom::Error),
}

/// How many snapshots' quota rules are kept: the set in force and, per running
/// rollout, its candidate.
const CACHED_RULE_SETS: usize = 8;

/// A snapshot's quota rules. The weak reference keeps the snapshot's allocation (not
/// its contents), so its address cannot be reused while the entry exists and an
/// equal address means the same snapshot.
#[derive(Debug, Clone)]
struct CachedRules {
    snapshot: Weak<Snapshot>,
    rules: Arc<QuotaRules>,
}

/// The node's counters and the rules they enforce.
#[derive(Debug)]
pub struct Quotas {
    enforcer: Enforcer,
    epoch: Instant,
    /// The quota rules of the last snapshots seen, newest first, each kept with a weak
    /// reference to its snapshot: a rollout decides with two snapshots (control and
    /// candidate) at once, so one slot would rebuild the rules on every switch.
    rules: ArcSwap<Vec<CachedRules>>,
    sweep_interval: Duration,
}

impl Quotas {
    /// Empty counters with a fresh random seed.
    pub fn new(settings: &QuotaSettings) -> Result<Self, QuotaStartError> {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(QuotaStartError::Seed)?;
        let enforcer = Enforcer::new(EnforcerConfig {
            limiter: LimiterConfig {
                max_keys: settings.max_keys,
                shards: 64,
            },
            leases: LeaseConfig {
                max_leases: settings.max_leases,
                shards: 16,
            },
            seed: u64::from_le_bytes(seed),
            default_lease_ttl: Duration::from_secs(settings.lease_ttl_secs),
        })?;
        Ok(Quotas {
            enforcer,
            epoch: Instant::now(),
            rules: ArcSwap::from_pointee(Vec::new()),
            sweep_interval: Duration::from_secs(settings.sweep_interval_secs.max(1)),
        })
    }

    fn now(&self) -> Nanos {
        Nanos::from_duration(self.epoch.elapsed())
    }

    /// The quota rules of `snapshot`. They are collected once per snapshot, by the
    /// first decision that reads it, which keeps the push path free of this work.
    fn rules_of(&self, snapshot: &Arc<Snapshot>) -> Arc<QuotaRules> {
        let cached = self.rules.load();
        if let Some(c) = cached
            .iter()
            .find(|c| std::ptr::eq(c.snapshot.as_ptr(), Arc::as_ptr(snapshot)))
        {
            return Arc::clone(&c.rules);
        }
        let rules = Arc::new(QuotaRules::build(&snapshot.in_force()));
        let mut next = Vec::with_capacity(CACHED_RULE_SETS);
        next.push(CachedRules {
            snapshot: Arc::downgrade(snapshot),
            rules: Arc::clone(&rules),
        });
        next.extend(
            cached
                .iter()
                .filter(|c| c.snapshot.strong_count() > 0)
                .take(CACHED_RULE_SETS - 1)
                .cloned(),
        );
        self.rules.store(Arc::new(next));
        rules
    }

    /// Applies the snapshot's quota and concurrency rules to an allowed request.
    pub fn enforce(
        &self,
        snapshot: &Arc<Snapshot>,
        req: &ActionRequest,
        context: &Map<String, Value>,
    ) -> Result<QuotaOutcome, CostError> {
        let rules = self.rules_of(snapshot);
        self.enforcer.enforce(&rules, req, context, self.now())
    }

    /// Frees the leases named by a decision's `lease_id`; how many were still live.
    pub fn release(&self, leases: &Leases) -> usize {
        self.enforcer.release(leases, self.now())
    }

    /// Current counts, for metrics.
    pub fn stats(&self) -> EnforcerStats {
        self.enforcer.stats()
    }

    /// Drops idle counters and expired leases every `sweep_interval_secs`, for as
    /// long as the node holds the counters.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.sweep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(quotas) = weak.upgrade() else { break };
                let now = quotas.now();
                let dropped = quotas.enforcer.sweep(now);
                tracing::trace!(dropped, "quota sweep");
            }
        });
    }
}
