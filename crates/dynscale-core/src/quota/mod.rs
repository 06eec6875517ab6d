//! Quotas: GCRA rate limits per key, the bounded keyed limiter, concurrency leases,
//! and the glue from a policy's quota rules to a request's keys and costs.
//!
//! Everything here is pure: the current time is a [`Nanos`] passed to every call,
//! and the hash seed is passed in. The server owns the clock and the instances.

pub mod cost;
pub mod enforce;
pub mod gcra;
pub mod key;
pub mod lease;
pub mod limiter;
mod table;
pub mod time;

pub use cost::{CostError, cost_from_context};
pub use enforce::{
    Enforcer, EnforcerConfig, EnforcerError, EnforcerStats, Leases, QuotaOutcome, QuotaRules,
    Throttle,
};
pub use gcra::{Gcra, GcraError, Verdict};
pub use key::{KeyHash, KeyHasher, QuotaKey};
pub use lease::{LeaseConfig, LeaseDenied, LeaseError, LeaseId, LeaseTable};
pub use limiter::{LimiterConfig, LimiterError, LimiterStats, QuotaCharge, QuotaLimiter};
pub use time::Nanos;
