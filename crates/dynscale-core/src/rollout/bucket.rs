//! Deterministic bucketing of agents into rollout arms.
//!
//! Every agent falls into one of [`BUCKETS`] (10 000) buckets, pinned by this exact
//! function, which must never change while rollouts that use it are stored:
//!
//! ```text
//! digest = SHA-256( salt as UTF-8 ‖ 0x00 ‖ agent id as UTF-8 )
//! bucket = u64::from_be_bytes(digest[0..8]) mod 10 000
//! ```
//!
//! The `0x00` separator keeps `("ab", "c")` and `("a", "bc")` apart; salts therefore
//! may not contain NUL (agent ids may). The modulo bias of reducing a 64-bit value to
//! 10 000 buckets is below 10⁻¹⁵ and is ignored.
//!
//! An agent is in the candidate arm when its bucket is below the candidate's share in
//! basis points (1 bp = 0.01 %, 10 000 bp = 100 %). Raising the share therefore only
//! adds agents: an agent in the candidate arm at 5 % is in it at 25 %, 50 % and 100 %.
//!
//! Test vectors (checked by a unit test; any implementation must reproduce them):
//!
//! | salt | agent id | bucket |
//! |---|---|---|
//! | `rollout-1` | `agent-1` | 1049 |
//! | `rollout-1` | `agent-2` | 6234 |
//! | `payments-guard@2.1.0` | `agent-7` | 7927 |
//! | (empty) | `a` | 6266 |
//! | `s` | (empty) | 1641 |

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::AgentId;

/// The number of buckets agents are hashed into.
pub const BUCKETS: u16 = 10_000;

/// Why a salt or a share was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// The salt contains a NUL byte, which is the separator of the hashed input.
    #[error("rollout salt `{salt}` contains a NUL byte")]
    SaltHasNul { salt: String },
    /// A share above 100 %.
    #[error("share of {basis_points} basis points is above 10000 (100 %)")]
    ShareTooLarge { basis_points: u32 },
}

/// The per-rollout salt, so two rollouts pick independent agent subsets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RolloutSalt(String);

impl RolloutSalt {
    /// A salt; refuses text with a NUL byte.
    pub fn new(salt: impl Into<String>) -> Result<Self, BucketError> {
        let salt = salt.into();
        if salt.contains('\0') {
            return Err(BucketError::SaltHasNul { salt });
        }
        Ok(Self(salt))
    }

    /// The salt as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RolloutSalt {
    type Error = BucketError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<RolloutSalt> for String {
    fn from(s: RolloutSalt) -> Self {
        s.0
    }
}

impl fmt::Display for RolloutSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bucket in `0..10 000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bucket(u16);

impl Bucket {
    /// The bucket number.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// The bucket of an agent in a rollout (see the module docs for the pinned function).
pub fn bucket(salt: &RolloutSalt, agent: &AgentId) -> Bucket {
    let mut h = Sha256::new();
    h.update(salt.0.as_bytes());
    h.update([0u8]);
    h.update(agent.as_str().as_bytes());
    let digest = h.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let reduced = u64::from_be_bytes(head) % u64::from(BUCKETS);
    // The remainder is below 10 000, so it fits in a u16.
    Bucket(reduced as u16)
}

/// A share of agents in basis points: 0 (nobody) to 10 000 (everybody).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BasisPoints(u16);

impl BasisPoints {
    /// Nobody.
    pub const ZERO: BasisPoints = BasisPoints(0);
    /// Everybody.
    pub const ALL: BasisPoints = BasisPoints(BUCKETS);

    /// A share; refuses more than 10 000.
    pub fn new(basis_points: u32) -> Result<Self, BucketError> {
        u16::try_from(basis_points)
            .ok()
            .filter(|bp| *bp <= BUCKETS)
            .map(BasisPoints)
            .ok_or(BucketError::ShareTooLarge { basis_points })
    }

    /// A whole percentage (0–100).
    pub fn from_percent(percent: u32) -> Result<Self, BucketError> {
        Self::new(percent.saturating_mul(100))
    }

    /// The share in basis points.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The share as a fraction in `[0, 1]`.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(BUCKETS)
    }
}

impl TryFrom<u32> for BasisPoints {
    type Error = BucketError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<BasisPoints> for u32 {
    fn from(b: BasisPoints) -> Self {
        u32::from(b.0)
    }
}

impl fmt::Display for BasisPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

/// One side of a rollout's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// The version in force before the rollout.
    Control,
    /// The version being rolled out.
    Candidate,
}

/// The arm of a bucket when the candidate has `share`.
pub fn arm_of(bucket: Bucket, share: BasisPoints) -> Arm {
    if bucket.0 < share.0 {
        Arm::Candidate
    } else {
        Arm::Control
    }
}

/// The arm of an agent in a rollout when the candidate has `share`.
pub fn assign(salt: &RolloutSalt, agent: &AgentId, share: BasisPoints) -> Arm {
    arm_of(bucket(salt, agent), share)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn salt(s: &str) -> RolloutSalt {
        RolloutSalt::new(s).expect("test salts have no NUL")
    }

    #[test]
    fn pinned_test_vectors() {
        for (s, agent, expected) in [
            ("rollout-1", "agent-1", 1049),
            ("rollout-1", "agent-2", 6234),
            ("payments-guard@2.1.0", "agent-7", 7927),
            ("", "a", 6266),
            ("s", "", 1641),
        ] {
            assert_eq!(
                bucket(&salt(s), &AgentId::new(agent)).get(),
                expected,
                "salt {s:?}, agent {agent:?}"
            );
        }
    }

    #[test]
    fn shares_and_salts_are_checked() {
        assert_eq!(BasisPoints::from_percent(5).map(|b| b.get()), Ok(500));
        assert_eq!(BasisPoints::new(10_000), Ok(BasisPoints::ALL));
        assert_eq!(
            BasisPoints::new(10_001),
            Err(BucketError::ShareTooLarge {
                basis_points: 10_001
            })
        );
        assert!(BasisPoints::from_percent(101).is_err());
        assert!(RolloutSalt::new("a\0b").is_err());
        assert!(serde_json::from_str::<RolloutSalt>("\"a\\u0000b\"").is_err());
        assert!(serde_json::from_str::<BasisPoints>("10001").is_err());
        assert_eq!(
            BasisPoints::new(2_550).map(|b| b.to_string()),
            Ok("25.50%".into())
        );
    }

    #[test]
    fn shares_are_roughly_uniform() {
        let s = salt("uniformity");
        let agents = 20_000;
        let in_candidate = (0..agents)
            .filter(|i| {
                assign(&s, &AgentId::new(format!("agent-{i}")), BasisPoints(2_500))
                    == Arm::Candidate
            })
            .count();
        // 25 % of 20 000 is 5 000 with a standard deviation of about 61.
        assert!((4_700..=5_300).contains(&in_candidate), "{in_candidate}");
    }

    proptest! {
        #[test]
        fn raising_the_share_only_adds_agents(
            s in "[a-z0-9@.-]{0,20}",
            agent in ".{0,30}",
            a in 0u16..=10_000,
            b in 0u16..=10_000,
        ) {
            let (low, high) = (BasisPoints(a.min(b)), BasisPoints(a.max(b)));
            let s = salt(&s);
            let agent = AgentId::new(agent);
            if assign(&s, &agent, low) == Arm::Candidate {
                prop_assert_eq!(assign(&s, &agent, high), Arm::Candidate);
            }
            prop_assert_eq!(assign(&s, &agent, BasisPoints::ZERO), Arm::Control);
            prop_assert_eq!(assign(&s, &agent, BasisPoints::ALL), Arm::Candidate);
        }

        #[test]
        fn candidate_set_grows_with_the_share(s in "[a-z]{1,8}", a in 0u16..=10_000, b in 0u16..=10_000) {
            let (low, high) = (BasisPoints(a.min(b)), BasisPoints(a.max(b)));
            let s = salt(&s);
            let agents: Vec<AgentId> = (0..200).map(|i| AgentId::new(format!("ag-{i}"))).collect();
            let count = |share| agents.iter().filter(|ag| assign(&s, ag, share) == Arm::Candidate).count();
            prop_assert!(count(low) <= count(high));
        }
    }
}
