//! The bytes of one audit log entry: a decision or an event, in a compact, versioned
//! binary form (a decision of the example workload takes well under 200 bytes), and
//! the privacy transform that hashes or drops configured context fields before an
//! entry is written.
//!
//! Layout: `kind: u8 ‖ id: [u8; 16] ‖ at: varint (unix microseconds) ‖ body`. Kind 1
//! is a decision, kind 2 an event. Strings are `varint length ‖ UTF-8`, lists are
//! `varint count ‖ items`. A new layout gets a new kind, so old entries stay readable
//! and their leaf hashes never change.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::decision::Outcome;
use crate::namespace::{Namespace, Scope};

/// Entry kind byte of a decision.
pub const KIND_DECISION: u8 = 1;
/// Entry kind byte of an event.
pub const KIND_EVENT: u8 = 2;

/// One decision as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub decision_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub outcome: Outcome,
    pub snapshot: u64,
    pub agent: String,
    pub pack: Option<String>,
    pub action: String,
    pub resource: String,
    pub namespace: String,
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// The request context after the privacy transform.
    pub context: Map<String, Value>,
    pub escalation_id: Option<Uuid>,
}

/// A policy, rollout, control, admin or alert event as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// E.g. `policy.pushed`, `kill.set`, `agent.quarantined`.
    pub kind: String,
    pub subject: String,
    pub detail: Value,
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AuditEntry {
    Decision(DecisionRecord),
    Event(EventRecord),
}

impl AuditEntry {
    /// The decision or event id.
    pub fn id(&self) -> Uuid {
        match self {
            AuditEntry::Decision(d) => d.decision_id,
            AuditEntry::Event(e) => e.event_id,
        }
    }

    /// The entry's bytes, as hashed into the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(160);
        match self {
            AuditEntry::Decision(d) => {
                w.push(KIND_DECISION);
                w.extend_from_slice(d.decision_id.as_bytes());
                put_time(&mut w, d.at);
                w.push(outcome_byte(d.outcome));
                put_varint(&mut w, d.snapshot);
                put_str(&mut w, &d.agent);
                put_str(&mut w, d.pack.as_deref().unwrap_or(""));
                put_str(&mut w, &d.action);
                put_str(&mut w, &d.resource);
                put_str(&mut w, &d.namespace);
                put_list(&mut w, &d.policies);
                put_list(&mut w, &d.reasons);
                put_list(&mut w, &d.warnings);
                let ctx = if d.context.is_empty() {
                    String::new()
                } else {
                    Value::Object(d.context.clone()).to_string()
                };
                put_str(&mut w, &ctx);
                match d.escalation_id {
                    Some(id) => {
                        w.push(1);
                        w.extend_from_slice(id.as_bytes());
                    }
                    None => w.push(0),
                }
            }
            AuditEntry::Event(e) => {
                w.push(KIND_EVENT);
                w.extend_from_slice(e.event_id.as_bytes());
                put_time(&mut w, e.at);
                put_str(&mut w, &e.kind);
                put_str(&mut w, &e.subject);
                put_str(&mut w, &e.detail.to_string());
            }
        }
        w
    }

    /// Decodes entry bytes, refusing anything malformed with the byte offset.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let kind = r.byte()?;
        let id = Uuid::from_bytes(r.array::<16>()?);
        let at = r.time()?;
        let entry = match kind {
            KIND_DECISION => {
                let outcome = outcome_from(r.byte()?).ok_or(DecodeError::Invalid {
                    offset: r.pos - 1,
                    what: "outcome",
                })?;
                let snapshot = r.varint()?;
                let agent = r.string()?;
                let pack = Some(r.string()?).filter(|p| !p.is_empty());
                let action = r.string()?;
                let resource = r.string()?;
                let namespace = r.string()?;
                let policies = r.list()?;
                let reasons = r.list()?;
                let warnings = r.list()?;
                let ctx_at = r.pos;
                let ctx = r.string()?;
                let context = if ctx.is_empty() {
                    Map::new()
                } else {
                    match serde_json::from_str(&ctx) {
                        Ok(Value::Object(m)) => m,
                        _ => {
                            return Err(DecodeError::Invalid {
                                offset: ctx_at,
                                what: "context",
                            });
                        }
                    }
                };
                let escalation_id = match r.byte()? {
                    0 => None,
                    1 => Some(Uuid::from_bytes(r.array::<16>()?)),
                    _ => {
                        return Err(DecodeError::Invalid {
                            offset: r.pos - 1,
                            what: "escalation flag",
                        });
                    }
                };
                AuditEntry::Decision(DecisionRecord {
                    decision_id: id,
                    at,
                    outcome,
                    snapshot,
                    agent,
                    pack,
                    action,
                    resource,
                    namespace,
                    policies,
                    reasons,
                    warnings,
                    context,
                    escalation_id,
                })
            }
            KIND_EVENT => {
                let kind = r.string()?;
                let subject = r.string()?;
                let detail_at = r.pos;
                let detail =
                    serde_json::from_str(&r.string()?).map_err(|_| DecodeError::Invalid {
                        offset: detail_at,
                        what: "event detail",
                    })?;
                AuditEntry::Event(EventRecord {
                    event_id: id,
                    at,
                    kind,
                    subject,
                    detail,
                })
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.pos != bytes.len() {
            return Err(DecodeError::Trailing { offset: r.pos });
        }
        Ok(entry)
    }
}

/// Why entry bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry ends early at byte {offset}")]
    Truncated { offset: usize },
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("invalid {what} at byte {offset}")]
    Invalid { offset: usize, what: &'static str },
    #[error("unexpected bytes after the entry at byte {offset}")]
    Trailing { offset: usize },
}

fn outcome_byte(o: Outcome) -> u8 {
    match o {
        Outcome::Allow => 0,
        Outcome::Warn => 1,
        Outcome::Deny => 2,
        Outcome::Quarantine => 3,
        Outcome::Escalate => 4,
        Outcome::Throttle => 5,
    }
}

fn outcome_from(b: u8) -> Option<Outcome> {
    Some(match b {
        0 => Outcome::Allow,
        1 => Outcome::Warn,
        2 => Outcome::Deny,
        3 => Outcome::Quarantine,
        4 => Outcome::Escalate,
        5 => Outcome::Throttle,
        _ => return None,
    })
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_time(w: &mut Vec<u8>, at: OffsetDateTime) {
    let micros = (at.unix_timestamp_nanos() / 1000).max(0);
    put_varint(w, u64::try_from(micros).unwrap_or(u64::MAX));
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_varint(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn put_list(w: &mut Vec<u8>, items: &[String]) {
    put_varint(w, items.len() as u64);
    for s in items {
        put_str(w, s);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(DecodeError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self
            .bytes
            .get(self.pos..self.pos + N)
            .ok_or(DecodeError::Truncated { offset: self.pos })?;
        self.pos += N;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid {
            offset: start,
            what: "varint",
        })
    }

    fn time(&mut self) -> Result<OffsetDateTime, DecodeError> {
        let start = self.pos;
        let micros = self.varint()?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|_| {
            DecodeError::Invalid {
                offset: start,
                what: "timestamp",
            }
        })
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Invalid {
            offset: start,
            what: "length",
        })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(DecodeError::Truncated { offset: self.pos })?;
        let s =
            std::str::from_utf8(&self.bytes[self.pos..end]).map_err(|_| DecodeError::Invalid {
                offset: self.pos,
                what: "UTF-8 text",
            })?;
        self.pos = end;
        Ok(s.to_owned())
    }

    fn list(&mut self) -> Result<Vec<String>, DecodeError> {
        let start = self.pos;
        let n = self.varint()?;
        // Each item takes at least one byte, so a count beyond the rest is corrupt.
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(DecodeError::Invalid {
                offset: start,
                what: "list length",
            });
        }
        (0..n).map(|_| self.string()).collect()
    }
}

/// What to do with one context field before it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldTreatment {
    /// Replaced by a salted SHA-256; deleting the salt unlinks the data.
    Hash,
    /// Removed.
    Drop,
}

/// Privacy rules for the namespaces of one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRule {
    pub namespace: Scope,
    /// Top-level context field names to hash.
    #[serde(default)]
    pub hash: Vec<String>,
    /// Top-level context field names to drop.
    #[serde(default)]
    pub drop: Vec<String>,
}

impl PrivacyRule {
    /// What this rule does to a field, if anything.
    fn treatment(&self, field: &str) -> Option<FieldTreatment> {
        if self.drop.iter().any(|f| f == field) {
            Some(FieldTreatment::Drop)
        } else if self.hash.iter().any(|f| f == field) {
            Some(FieldTreatment::Hash)
        } else {
            None
        }
    }
}

/// Applies every matching rule to a context: dropped fields vanish, hashed ones become
/// `"sha256:<hex>"`, a SHA-256 of `salt` and the field's JSON text (first 16 bytes). `namespace` itself
/// is always kept (it is recorded separately anyway).
pub fn apply_privacy(
    context: &Map<String, Value>,
    namespace: &Namespace,
    rules: &[PrivacyRule],
    salt: &[u8],
) -> Map<String, Value> {
    let applicable: Vec<&PrivacyRule> = rules
        .iter()
        .filter(|r| r.namespace.matches(namespace))
        .collect();
    let mut out = Map::new();
    for (k, v) in context {
        if k == "namespace" {
            continue;
        }
        let treatment = applicable
            .iter()
            .filter_map(|r| r.treatment(k))
            .max_by_key(|t| matches!(t, FieldTreatment::Drop));
        match treatment {
            Some(FieldTreatment::Drop) => {}
            Some(FieldTreatment::Hash) => {
                out.insert(k.clone(), Value::String(salted_hash(salt, v)));
            }
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn salted_hash(salt: &[u8], v: &Value) -> String {
    let mut h = Sha256::new();
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(v.to_string().as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision() -> DecisionRecord {
        DecisionRecord {
            decision_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
            at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
            outcome: Outcome::Allow,
            snapshot: 12,
            agent: "agent-0042".into(),
            pack: Some("research".into()),
            action: "tool.call".into(),
            resource: "Tool::\"search\"".into(),
            namespace: "tools.search.eng.usa.acme".into(),
            policies: vec!["base-safety@1.0.0".into()],
            reasons: vec!["base-safety@1.0.0#read-only-tools".into()],
            warnings: vec![],
            context: json!({"readonly": true}).as_object().cloned().unwrap(),
            escalation_id: None,
        }
    }

    #[test]
    fn round_trips_and_stays_compact() {
        let entry = AuditEntry::Decision(decision());
        let bytes = entry.encode();
        assert!(bytes.len() <= 200, "{} bytes", bytes.len());
        assert_eq!(AuditEntry::decode(&bytes).unwrap(), entry);
        let mut with_escalation = decision();
        with_escalation.escalation_id = Some(Uuid::from_u128(7));
        with_escalation.pack = None;
        let e = AuditEntry::Decision(with_escalation);
        assert_eq!(AuditEntry::decode(&e.encode()).unwrap(), e);
        let ev = AuditEntry::Event(EventRecord {
            event_id: Uuid::from_u128(9),
            at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
            kind: "policy.pushed".into(),
            subject: "payments-guard@2.1.0".into(),
            detail: json!({"force": false}),
        });
        assert_eq!(AuditEntry::decode(&ev.encode()).unwrap(), ev);
    }

    #[test]
    fn every_truncation_and_garbage_is_refused() {
        let bytes = AuditEntry::Decision(decision()).encode();
        for cut in 0..bytes.len() {
            assert!(AuditEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            AuditEntry::decode(&longer),
            Err(DecodeError::Trailing { .. })
        ));
        let mut bad_kind = bytes;
        bad_kind[0] = 9;
        assert_eq!(
            AuditEntry::decode(&bad_kind),
            Err(DecodeError::UnknownKind(9))
        );
    }

    #[test]
    fn privacy_hashes_and_drops_per_scope() {
        let rules = vec![PrivacyRule {
            namespace: Scope::parse("payment.*.*.*.acme").unwrap(),
            hash: vec!["account".into()],
            drop: vec!["ssn".into(), "account".into()],
        }];
        let ctx = json!({"namespace": "payment.x.y.usa.acme", "account": "DE89", "ssn": "123", "amount": 5});
        let ctx = ctx.as_object().unwrap();
        let ns = Namespace::parse("payment.x.y.usa.acme").unwrap();
        let out = apply_privacy(ctx, &ns, &rules, b"salt-1");
        assert_eq!(out.get("amount"), Some(&json!(5)));
        assert!(!out.contains_key("ssn"), "dropped");
        assert!(!out.contains_key("account"), "drop wins over hash");
        let rules = vec![PrivacyRule {
            namespace: Scope::parse("payment.*.*.*.acme").unwrap(),
            hash: vec!["account".into()],
            drop: vec![],
        }];
        let a = apply_privacy(ctx, &ns, &rules, b"salt-1");
        let b = apply_privacy(ctx, &ns, &rules, b"salt-2");
        let hashed = a["account"].as_str().unwrap();
        assert!(hashed.starts_with("sha256:") && !hashed.contains("DE89"));
        assert_ne!(a["account"], b["account"], "the salt keys the hash");
        let other = Namespace::parse("email.x.y.usa.acme").unwrap();
        assert_eq!(
            apply_privacy(ctx, &other, &rules, b"s")["account"],
            json!("DE89")
        );
    }
}
