//! `UnixMs`: a wall-clock instant in milliseconds since the Unix epoch.
//!
//! Scale monitoring reads no clock. The server passes the current instant to every
//! call. Wall-clock time (not a monotonic clock) is used because alert history,
//! response deadlines and storage forecasts are read by people and survive restarts.
//! A clock step backwards makes a few samples land in an older interval (or be
//! dropped as late); a step forwards ends the current intervals early. Neither breaks
//! an invariant.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An instant: milliseconds since 1970-01-01T00:00:00Z. Instants before the epoch
/// are clamped to it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMs(pub u64);

impl UnixMs {
    /// The instant `at` names, clamped to the epoch.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let ms = at.unix_timestamp_nanos() / 1_000_000;
        UnixMs(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
    }

    /// The instant as a date and time (UTC); `None` past the year 9999.
    pub fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    /// This instant moved `d` later, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        UnixMs(self.0.saturating_add(millis(d)))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<OffsetDateTime> for UnixMs {
    fn from(at: OffsetDateTime) -> Self {
        UnixMs::from_datetime(at)
    }
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_datetimes() {
        let at = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let ms = UnixMs::from(at);
        assert_eq!(ms, UnixMs(1_790_000_000_000));
        assert_eq!(ms.to_datetime(), Some(at));
        let before = OffsetDateTime::from_unix_timestamp(-5).unwrap();
        assert_eq!(UnixMs::from(before), UnixMs(0));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(UnixMs(5).saturating_since(UnixMs(9)), Duration::ZERO);
        assert_eq!(
            UnixMs(9).saturating_since(UnixMs(5)),
            Duration::from_millis(4)
        );
        assert_eq!(
            UnixMs(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            UnixMs(u64::MAX)
        );
    }
}
