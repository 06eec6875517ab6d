//! `UnixMillis`: wall-clock time as the rollout core sees it, passed in by the caller.
//!
//! Rollouts outlive processes (their state is rebuilt from stored events after a
//! restart), so their time is wall-clock milliseconds since the Unix epoch rather
//! than a monotonic instant. The state machine never reads a clock; a `now` earlier
//! than the last one it saw is treated as that last one, so a clock stepping back
//! cannot run a step timer backwards.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// This instant moved `d` later, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        UnixMillis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
