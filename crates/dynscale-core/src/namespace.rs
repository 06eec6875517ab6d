//! Compliance namespaces (`service.operation.division.country.org`) and the scopes
//! policies declare over them, where `*` stands for any one segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of segments of a namespace: service, operation, division, country, org.
pub const SEGMENTS: usize = 5;

/// Names of the segments, in namespace order, for error messages.
pub const SEGMENT_NAMES: [&str; SEGMENTS] = ["service", "operation", "division", "country", "org"];

/// Why a namespace or scope text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// The text does not have exactly five dot-separated segments.
    #[error(
        "namespace `{text}` has {found} segment(s); expected 5 dot-separated segments \
         service.operation.division.country.org"
    )]
    SegmentCount { text: String, found: usize },
    /// One segment is empty or holds a character outside `[A-Za-z0-9_-]`.
    #[error(
        "namespace `{text}`: the {segment} segment `{value}` must be non-empty and use only \
         letters, digits, `_` and `-`{wildcard}"
    )]
    BadSegment {
        text: String,
        segment: &'static str,
        value: String,
        wildcard: &'static str,
    },
}

fn split(text: &str, allow_wildcard: bool) -> Result<Vec<&str>, NamespaceError> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != SEGMENTS {
        return Err(NamespaceError::SegmentCount {
            text: text.to_owned(),
            found: parts.len(),
        });
    }
    for (i, part) in parts.iter().enumerate() {
        let ok = (allow_wildcard && *part == "*")
            || (!part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        if !ok {
            return Err(NamespaceError::BadSegment {
                text: text.to_owned(),
                segment: SEGMENT_NAMES[i],
                value: (*part).to_owned(),
                wildcard: if allow_wildcard { " (or be `*`)" } else { "" },
            });
        }
    }
    Ok(parts)
}

/// A concrete namespace a request is made in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    text: String,
}

impl Namespace {
    /// Parses `service.operation.division.country.org`.
    pub fn parse(text: &str) -> Result<Self, NamespaceError> {
        split(text, false)?;
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The segments in namespace order (service first, org last).
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.text.split('.')
    }

    /// The org segment: the root of the namespace, which owns the default decision.
    pub fn root(&self) -> &str {
        self.text.rsplit('.').next().unwrap_or(&self.text)
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The scope of a policy: a namespace pattern in which `*` matches any one segment.
/// An org-level policy is `*.*.*.*.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    text: String,
}

impl Scope {
    /// Parses a scope pattern.
    pub fn parse(text: &str) -> Result<Self, NamespaceError> {
        split(text, true)?;
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The segments in namespace order; `None` is the wildcard.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = Option<&str>> {
        self.text.split('.').map(|s| (s != "*").then_some(s))
    }

    /// The org segment, if the scope names one.
    pub fn root(&self) -> Option<&str> {
        self.segments().next_back().flatten()
    }

    /// Whether the namespace lies inside this scope.
    pub fn matches(&self, namespace: &Namespace) -> bool {
        self.segments()
            .zip(namespace.segments())
            .all(|(p, s)| p.is_none_or(|p| p == s))
    }

    /// Whether some namespace lies inside both scopes.
    pub fn overlaps(&self, other: &Scope) -> bool {
        self.segments()
            .zip(other.segments())
            .all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Scope {
    type Err = NamespaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scope::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_need_five_clean_segments() {
        let table = [
            ("payment.processing.americas.usa.fintech", true),
            ("a.b.c.d", false),
            ("a.b.c.d.e.f", false),
            ("a..c.d.e", false),
            ("a.b.c.d.*", false),
            ("a.b c.c.d.e", false),
            ("svc-1.op_2.DIV.us.org", true),
        ];
        for (text, ok) in table {
            assert_eq!(Namespace::parse(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn error_names_the_segment() {
        let err = Namespace::parse("pay.x y.a.b.c").unwrap_err().to_string();
        assert!(err.contains("operation"), "{err}");
        let err = Namespace::parse("a.b").unwrap_err().to_string();
        assert!(err.contains("2 segment"), "{err}");
    }

    #[test]
    fn scopes_match_and_overlap() {
        let ns = Namespace::parse("payment.processing.americas.usa.fintech").unwrap();
        let cases = [
            ("payment.*.*.usa.fintech", true),
            ("*.*.*.*.fintech", true),
            ("*.*.*.*.retail", false),
            ("payment.processing.americas.usa.fintech", true),
            ("email.*.*.*.fintech", false),
        ];
        for (scope, m) in cases {
            assert_eq!(Scope::parse(scope).unwrap().matches(&ns), m, "{scope}");
        }
        let a = Scope::parse("payment.*.*.usa.fintech").unwrap();
        assert!(a.overlaps(&Scope::parse("*.*.*.*.fintech").unwrap()));
        assert!(!a.overlaps(&Scope::parse("*.*.*.deu.fintech").unwrap()));
        assert_eq!(a.root(), Some("fintech"));
        assert_eq!(ns.root(), "fintech");
    }
}
