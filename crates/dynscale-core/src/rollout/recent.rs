//! The decisions made inside a rollout recently, so agent feedback
//! (`POST /v1/feedback` with a decision id) can be counted for the arm that decided.
//!
//! Memory is bounded twice: at most `capacity` decisions are held (the oldest go
//! first), and a decision older than `ttl` no longer takes feedback. Feedback counts
//! once per decision: a second report is refused, so a retrying agent cannot weigh
//! one decision twice in the analysis.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use uuid::Uuid;

use super::bucket::Arm;
use super::instant::UnixMillis;

/// Which rollout and arm decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmTag {
    /// The rollout's id (the store's).
    pub rollout: u64,
    pub arm: Arm,
}

/// Why feedback cannot be matched to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackMiss {
    #[error(
        "decision {0} is not a recent decision of a running rollout (unknown, decided \
         outside any rollout, or dropped to bound memory)"
    )]
    Unknown(Uuid),
    #[error("decision {id} is {age_ms} ms old; feedback is taken for {ttl_ms} ms")]
    Expired { id: Uuid, age_ms: u64, ttl_ms: u64 },
    #[error("feedback on decision {0} was already recorded")]
    AlreadyReported(Uuid),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: ArmTag,
    at: UnixMillis,
    reported: bool,
}

/// A bounded map from decision id to the arm that made it.
#[derive(Debug, Clone)]
pub struct RecentDecisions {
    capacity: usize,
    ttl: Duration,
    entries: HashMap<Uuid, Entry>,
    /// Insertion order; may hold ids already removed, never more than `capacity`.
    order: VecDeque<Uuid>,
}

impl RecentDecisions {
    /// An empty map holding at most `capacity` decisions (at least one) for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remembers a decision made at `at`, dropping the oldest ones beyond the bound
    /// and those past their time.
    pub fn insert(&mut self, id: Uuid, tag: ArmTag, at: UnixMillis) {
        while let Some(front) = self.order.front().copied() {
            let stale = self
                .entries
                .get(&front)
                .is_none_or(|e| at.saturating_since(e.at) > self.ttl);
            if self.order.len() < self.capacity && !stale {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&front);
        }
        self.order.push_back(id);
        self.entries.insert(
            id,
            Entry {
                tag,
                at,
                reported: false,
            },
        );
    }

    /// The arm that made decision `id`, marking it reported.
    pub fn take(&mut self, id: Uuid, now: UnixMillis) -> Result<ArmTag, FeedbackMiss> {
        let ttl = self.ttl;
        let entry = self.entries.get_mut(&id).ok_or(FeedbackMiss::Unknown(id))?;
        let age = now.saturating_since(entry.at);
        if age > ttl {
            self.entries.remove(&id);
            return Err(FeedbackMiss::Expired {
                id,
                age_ms: millis(age),
                ttl_ms: millis(ttl),
            });
        }
        if entry.reported {
            return Err(FeedbackMiss::AlreadyReported(id));
        }
        entry.reported = true;
        Ok(entry.tag)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(arm: Arm) -> ArmTag {
        ArmTag { rollout: 7, arm }
    }

    #[test]
    fn feedback_counts_once_within_its_time() {
        let mut r = RecentDecisions::new(10, Duration::from_secs(60));
        let a = Uuid::from_u128(1);
        r.insert(a, tag(Arm::Candidate), UnixMillis(1_000));
        assert_eq!(r.take(a, UnixMillis(2_000)), Ok(tag(Arm::Candidate)));
        assert_eq!(
            r.take(a, UnixMillis(2_000)),
            Err(FeedbackMiss::AlreadyReported(a))
        );
        let b = Uuid::from_u128(2);
        r.insert(b, tag(Arm::Control), UnixMillis(1_000));
        assert_eq!(
            r.take(b, UnixMillis(61_001)),
            Err(FeedbackMiss::Expired {
                id: b,
                age_ms: 60_001,
                ttl_ms: 60_000
            })
        );
        assert_eq!(r.take(b, UnixMillis(61_002)), Err(FeedbackMiss::Unknown(b)));
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut r = RecentDecisions::new(100, Duration::from_secs(3_600));
        for n in 0..1_000u128 {
            r.insert(Uuid::from_u128(n), tag(Arm::Control), UnixMillis(n as u64));
            assert!(r.len() <= 100);
            assert!(r.order.len() <= 100);
        }
        assert_eq!(
            r.take(Uuid::from_u128(899), UnixMillis(1_000)),
            Err(FeedbackMiss::Unknown(Uuid::from_u128(899)))
        );
        assert!(r.take(Uuid::from_u128(900), UnixMillis(1_000)).is_ok());
        assert!(r.take(Uuid::from_u128(999), UnixMillis(1_000)).is_ok());
    }

    #[test]
    fn expired_decisions_leave_on_insert() {
        let mut r = RecentDecisions::new(100, Duration::from_millis(10));
        for n in 0..50u128 {
            r.insert(
                Uuid::from_u128(n),
                tag(Arm::Candidate),
                UnixMillis(n as u64 * 100),
            );
        }
        // Only the newest is within 10 ms of the last insert.
        assert_eq!(r.len(), 1);
    }
}
