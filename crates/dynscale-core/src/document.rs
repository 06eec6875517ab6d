//! The policy document (YAML or JSON) as operators write it: exactly the fields of
//! SPEC §3, parsed strictly so a misspelt field is an error, not a silent default.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::ids::{PolicyName, RuleId};
use crate::namespace::Scope;

/// A policy document after schema parsing (before semantic validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// Stable across versions of the same name (uuid v4).
    pub policy_id: uuid::Uuid,
    /// Unique human name.
    pub name: PolicyName,
    /// Semantic version; must increase per name.
    #[serde(deserialize_with = "de_version")]
    pub version: semver::Version,
    /// The scope of the policy.
    pub namespace: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<PolicyRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<PolicyRef>,
    /// Version to return to on rollback.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_version"
    )]
    pub rollback_point: Option<semver::Version>,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<Validity>,
    pub rules: Vec<Rule>,
}

/// A reference to another policy by name and semver range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    pub policy: PolicyName,
    #[serde(deserialize_with = "de_version_req")]
    pub version: semver::VersionReq,
}

/// How a pushed version becomes active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Activation {
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_duration: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Blue-green: how long the previous version stays warm (and the new one is
    /// watched) after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_warm: Option<HumanDuration>,
}

impl Default for Activation {
    fn default() -> Self {
        Self {
            strategy: Strategy::Immediate,
            steps: None,
            step_duration: None,
            min_samples: None,
            keep_warm: None,
        }
    }
}

/// Activation strategies of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Immediate,
    Shadow,
    Canary,
    BlueGreen,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Immediate => "immediate",
            Strategy::Shadow => "shadow",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
        })
    }
}

/// The time window in which a version is in force. Either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

impl Validity {
    /// Whether the instant lies in `[from, until)`.
    pub fn contains(&self, at: OffsetDateTime) -> bool {
        self.from.is_none_or(|f| f <= at) && self.until.is_none_or(|u| at < u)
    }

    /// Whether some instant lies in both windows.
    pub fn overlaps(&self, other: &Validity) -> bool {
        let starts_before_other_ends = match (self.from, other.until) {
            (Some(f), Some(u)) => f < u,
            _ => true,
        };
        let other_starts_before_self_ends = match (other.from, self.until) {
            (Some(f), Some(u)) => f < u,
            _ => true,
        };
        starts_before_other_ends && other_starts_before_self_ends
    }
}

/// One rule: an id and exactly one of a Cedar text, a quota or a concurrency limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: RuleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cedar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyRule>,
}

/// The key a quota or concurrency limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    Agent,
    Pack,
    Namespace,
    Global,
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKey::Agent => "agent",
            LimitKey::Pack => "pack",
            LimitKey::Namespace => "namespace",
            LimitKey::Global => "global",
        })
    }
}

/// A rate limit (enforced by the quotas capability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub key: LimitKey,
    pub rate: Rate,
    pub burst: u64,
    /// Name of a context field whose value is the cost of one action (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// A limit on actions in flight (enforced by the quotas capability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyRule {
    pub key: LimitKey,
    pub limit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<HumanDuration>,
}

/// `N/s`, `N/min` or `N/h`: N actions per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("rate `{s}` must look like 100/s, 6000/min or 10/h");
        let (count, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("rate `{s}` must allow at least one action"));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A duration written as `500ms`, `30s`, `5m` or `2h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("duration `{s}` must look like 500ms, 30s, 5m or 2h");
        let digits = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = s[..digits].parse().map_err(|_| bad())?;
        let d = match &s[digits..] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        Ok(HumanDuration(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// YAML reads `1.0` as a number; ask for the string form with a clear message.
#[derive(Deserialize)]
#[serde(untagged)]
enum VersionText {
    Text(String),
    Number(serde_json::Number),
}

fn version_from(v: VersionText) -> Result<semver::Version, String> {
    match v {
        VersionText::Text(t) => semver::Version::parse(&t)
            .map_err(|e| format!("version `{t}` is not semver (MAJOR.MINOR.PATCH): {e}")),
        VersionText::Number(n) => Err(format!(
            "version `{n}` is not semver: write MAJOR.MINOR.PATCH, e.g. \"{n}.0\""
        )),
    }
}

fn de_version<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
    version_from(VersionText::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<semver::Version>, D::Error> {
    Option::<VersionText>::deserialize(d)?
        .map(version_from)
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn de_version_req<'de, D: Deserializer<'de>>(d: D) -> Result<semver::VersionReq, D::Error> {
    let text = match VersionText::deserialize(d)? {
        VersionText::Text(t) => t,
        VersionText::Number(n) => n.to_string(),
    };
    semver::VersionReq::parse(&text).map_err(|e| {
        serde::de::Error::custom(format!("version range `{text}` is not a semver range: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(
            "100/s".parse::<Rate>().unwrap(),
            Rate {
                count: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!("6000/min".parse::<Rate>().unwrap().per.as_secs(), 60);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("100/day".parse::<Rate>().is_err());
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().to_string(),
            "250ms"
        );
        assert!("5".parse::<HumanDuration>().is_err());
        assert!("m".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn activation_fields_parse_strictly() {
        let a: Activation = serde_yaml::from_str(
            "{ strategy: canary, steps: [5, 25, 50, 100], stepDuration: 5m, minSamples: 1000 }",
        )
        .unwrap();
        assert_eq!(a.strategy, Strategy::Canary);
        assert_eq!(a.steps, Some(vec![5, 25, 50, 100]));
        assert_eq!(
            a.step_duration,
            Some(HumanDuration(Duration::from_secs(300)))
        );
        assert_eq!(a.min_samples, Some(1000));
        let b: Activation =
            serde_yaml::from_str("{ strategy: blue-green, keepWarm: 10m, minSamples: 500 }")
                .unwrap();
        assert_eq!(b.keep_warm, Some(HumanDuration(Duration::from_secs(600))));
        let err = serde_yaml::from_str::<Activation>("{ strategy: blue-green, keepwarm: 10m }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `keepwarm`"), "{err}");
        assert!(
            serde_yaml::from_str::<Activation>("{ strategy: canary, stepDuration: 5 }").is_err()
        );
        assert!(serde_yaml::from_str::<Activation>("{ strategy: linear }").is_err());
    }

    #[test]
    fn validity_overlap_is_half_open() {
        let t = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let a = Validity {
            from: Some(t("2026-01-01T00:00:00Z")),
            until: Some(t("2026-02-01T00:00:00Z")),
        };
        let b = Validity {
            from: Some(t("2026-02-01T00:00:00Z")),
            until: None,
        };
        let open = Validity {
            from: None,
            until: None,
        };
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&open) && b.overlaps(&open));
        assert!(a.contains(t("2026-01-15T00:00:00Z")));
        assert!(!a.contains(t("2026-02-01T00:00:00Z")));
    }
}
