//! `Nanos`: a monotonic instant in nanoseconds since an epoch the caller chooses.
//!
//! The quota core never reads a clock. Every call takes the current instant as a
//! `Nanos`, so tests drive time by hand and the server decides what "now" means
//! (typically nanoseconds since the process started, from a monotonic clock).

use std::fmt;
use std::time::Duration;

/// An instant: nanoseconds since the caller's epoch. `Nanos(0)` is the epoch itself.
///
/// A `u64` of nanoseconds spans 584 years, so saturation at `u64::MAX` is a
/// theoretical edge, not a case callers meet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The epoch. As a stored theoretical arrival time it means "no debt".
    pub const ZERO: Nanos = Nanos(0);

    /// The instant `d` after the epoch, saturating at the far end of the range.
    pub fn from_duration(d: Duration) -> Self {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The time since the epoch.
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// This instant moved `d` later, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Nanos(self.0.saturating_add(Nanos::from_duration(d).0))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl From<Duration> for Nanos {
    fn from(d: Duration) -> Self {
        Nanos::from_duration(d)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(
            Nanos::from_duration(Duration::from_millis(3)),
            Nanos(3_000_000)
        );
        assert_eq!(Nanos::from_duration(Duration::MAX), Nanos(u64::MAX));
        assert_eq!(
            Nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Nanos(u64::MAX)
        );
        assert_eq!(Nanos(5).saturating_since(Nanos(9)), Duration::ZERO);
        assert_eq!(Nanos(9).saturating_since(Nanos(5)), Duration::from_nanos(4));
        assert_eq!(Nanos(7).as_duration(), Duration::from_nanos(7));
    }
}
