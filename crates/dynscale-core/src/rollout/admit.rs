//! Whether a pushed version starts a rollout, and whether it may run beside the
//! rollouts already running.
//!
//! - A progressive strategy (shadow, canary, blue-green) rolls the pushed version
//!   (the candidate) out against the name's standing version (the control).
//! - A first version of a name has nothing to compare with, so it is activated at
//!   once, whatever its strategy (the way Argo Rollouts treats a first revision); the
//!   push reports that it did.
//! - One rollout per name: while a name is rolling out, no other version of it may be
//!   pushed or rolled back (promote or abort first).
//! - Rollouts run side by side only when no namespace can fall in both: a request is
//!   then in at most one rollout, and each arm's measurements are its own. A rollout's
//!   scopes are the control's and the candidate's namespace patterns.

use crate::document::Strategy;
use crate::ids::PolicyName;
use crate::namespace::Scope;

use super::bucket::RolloutSalt;

/// A running rollout as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    pub name: &'a PolicyName,
    pub candidate: &'a semver::Version,
    /// The scopes of the control and the candidate.
    pub scopes: &'a [Scope],
}

/// How a push that passed validation is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Activate now.
    Immediate {
        /// Set when the document asked for a rollout that cannot happen because the
        /// name has no standing version to compare with.
        first_version: bool,
    },
    /// Start a rollout against the standing version.
    Rollout,
}

/// Why a push or rollback must wait for a running rollout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct Busy(Box<BusyReason>);

impl Busy {
    /// What is in the way.
    pub fn reason(&self) -> &BusyReason {
        &self.0
    }
}

impl From<BusyReason> for Busy {
    fn from(r: BusyReason) -> Self {
        Busy(Box::new(r))
    }
}

/// The running rollout in the way of a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusyReason {
    #[error(
        "policy {name} is rolling out version {candidate}; promote or abort that rollout \
         (`dynscale rollout promote|abort {name}`) before changing the policy again"
    )]
    SameName {
        name: PolicyName,
        candidate: semver::Version,
    },
    #[error(
        "a rollout of {name} in scope `{scope}` would overlap the running rollout of \
         {running}@{candidate} in scope `{running_scope}`: a namespace could fall in both; \
         promote or abort that rollout first, or use `immediate`"
    )]
    Overlap {
        name: PolicyName,
        scope: Scope,
        running: PolicyName,
        candidate: semver::Version,
        running_scope: Scope,
    },
}

/// Refuses any change of a name that is rolling out.
pub fn check_name_free<'a>(
    name: &PolicyName,
    running: impl IntoIterator<Item = Running<'a>>,
) -> Result<(), Busy> {
    match running.into_iter().find(|r| r.name == name) {
        Some(r) => Err(BusyReason::SameName {
            name: name.clone(),
            candidate: r.candidate.clone(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Decides how a validated push is carried out. `scopes` are the candidate's scope
/// and the standing version's (absent for a first version).
pub fn admit<'a>(
    name: &PolicyName,
    strategy: Strategy,
    has_standing: bool,
    scopes: &[&Scope],
    running: impl IntoIterator<Item = Running<'a>> + Clone,
) -> Result<Admission, Busy> {
    check_name_free(name, running.clone())?;
    if strategy == Strategy::Immediate {
        return Ok(Admission::Immediate {
            first_version: false,
        });
    }
    if !has_standing {
        return Ok(Admission::Immediate {
            first_version: true,
        });
    }
    for r in running {
        for ours in scopes {
            if let Some(theirs) = r.scopes.iter().find(|s| s.overlaps(ours)) {
                return Err(BusyReason::Overlap {
                    name: name.clone(),
                    scope: (*ours).clone(),
                    running: r.name.clone(),
                    candidate: r.candidate.clone(),
                    running_scope: theirs.clone(),
                }
                .into());
            }
        }
    }
    Ok(Admission::Rollout)
}

/// The salt of a rollout: `name@version` of its candidate, unique because versions of a
/// name only increase, and stable so a restarted node buckets agents the same way.
pub fn salt_for(name: &PolicyName, version: &semver::Version) -> RolloutSalt {
    let text = format!("{name}@{version}");
    // Deliberate: with every NUL removed the salt is valid. Names are checked text
    // without NUL anyway; removing keeps the salt deterministic should one slip in.
    RolloutSalt::new(text.replace('\0', "")).expect("a salt without NUL is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn strategies_and_first_versions() {
        let name = PolicyName::new("p");
        let s = scope("payment.*.*.usa.acme");
        let none: Vec<Running> = Vec::new();
        assert_eq!(
            admit(&name, Strategy::Canary, true, &[&s], none.clone()),
            Ok(Admission::Rollout)
        );
        assert_eq!(
            admit(&name, Strategy::Shadow, false, &[&s], none.clone()),
            Ok(Admission::Immediate {
                first_version: true
            })
        );
        assert_eq!(
            admit(&name, Strategy::Immediate, true, &[&s], none),
            Ok(Admission::Immediate {
                first_version: false
            })
        );
    }

    #[test]
    fn overlapping_scopes_are_refused_and_disjoint_ones_run_together() {
        let running_name = PolicyName::new("payments-guard");
        let candidate = v("2.0.0");
        let running_scopes = [scope("payment.*.*.usa.acme")];
        let running = [Running {
            name: &running_name,
            candidate: &candidate,
            scopes: &running_scopes,
        }];
        let name = PolicyName::new("email-guard");
        let disjoint = scope("email.*.*.*.acme");
        assert_eq!(
            admit(&name, Strategy::Canary, true, &[&disjoint], running),
            Ok(Admission::Rollout)
        );
        let other_org = scope("payment.*.*.usa.other");
        assert_eq!(
            admit(&name, Strategy::Canary, true, &[&other_org], running),
            Ok(Admission::Rollout)
        );
        let org_wide = scope("*.*.*.*.acme");
        let err = admit(
            &name,
            Strategy::Canary,
            true,
            &[&disjoint, &org_wide],
            running,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a rollout of email-guard in scope `*.*.*.*.acme` would overlap the running \
             rollout of payments-guard@2.0.0 in scope `payment.*.*.usa.acme`: a namespace \
             could fall in both; promote or abort that rollout first, or use `immediate`"
        );
        // An immediate push of another name applies to both arms alike.
        assert!(admit(&name, Strategy::Immediate, true, &[&org_wide], running).is_ok());
        // The rolling-out name itself cannot change, whatever the strategy.
        let same = admit(
            &running_name,
            Strategy::Immediate,
            true,
            &[&disjoint],
            running,
        );
        assert!(
            matches!(
                same.as_ref().map_err(Busy::reason),
                Err(BusyReason::SameName { .. })
            ),
            "{same:?}"
        );
        assert!(check_name_free(&running_name, running).is_err());
        assert!(check_name_free(&name, running).is_ok());
    }

    #[test]
    fn salts_name_the_candidate() {
        assert_eq!(
            salt_for(&PolicyName::new("payments-guard"), &v("2.1.0")).as_str(),
            "payments-guard@2.1.0"
        );
    }
}
