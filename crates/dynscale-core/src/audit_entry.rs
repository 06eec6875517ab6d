//! The bytes of one audit log entry: a decision or an event, in a compact, versioned
//! binary form (a decision of the example workload takes well under 200 bytes), and
//! the privacy transform that hashes or drops configured context fields before an
//! entry is written.
//!
//! Layout: `kind: u8 ‖ id: [u8; 16] ‖ at ‖ body`. Strings are `varint length ‖ UTF-8`,
//! lists are `varint count ‖ items`. A new layout gets a new kind, so old entries stay
//! readable and their leaf hashes never change:
//!
//! - kind 1, a decision (first layout, still decoded): `at` is a varint of unix
//!   microseconds; every field is text, the context a JSON string.
//! - kind 2, an event: `at` as in kind 1, then kind, subject and detail (JSON text).
//! - kind 3, a decision (still decoded): `at` is a zigzag varint of microseconds
//!   relative to the UUIDv7 millisecond timestamp in the id, reasons and warnings name
//!   their policy by its position in `policies`, versions are varints, the context is
//!   binary JSON.
//! - kind 4, a decision (written now), see [`encode_decision`]: kind 3 where any text
//!   may refer to a text earlier in the same entry (a namespace to its action or pack,
//!   a throttle reason to its policy and agent), a `type::"id"` resource is stored as
//!   its two parts, common versions take one byte, small numbers and short strings of
//!   the context one tag byte. Nothing refers outside the entry, so one entry (as in a
//!   proof bundle) still renders the whole decision.
//!
//! An unknown kind byte is refused with [`DecodeError::UnknownKind`].

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
/// Entry kind byte of a decision in the first compact layout (still decoded).
pub const KIND_DECISION_COMPACT: u8 = 3;
/// Entry kind byte of a decision in the compact layout with text references (the one
/// written).
pub const KIND_DECISION_REFS: u8 = 4;

/// Flag bits of a kind 3 decision, after the outcome in bits 0..3.
const FLAG_PACK: u8 = 0x08;
const FLAG_WARNINGS: u8 = 0x10;
const FLAG_ESCALATION: u8 = 0x20;
const FLAG_CONTEXT: u8 = 0x40;
/// Kind 4 only: the resource is `Type::"id"`, stored as its type and id.
const FLAG_RESOURCE_PARTS: u8 = 0x80;
const OUTCOME_MASK: u8 = 0x07;
/// Kind 4: a text is written as a reference only to an earlier text at least this long.
const MIN_REFERENCE: usize = 3;
/// Kind 4: the most bytes the texts of one entry may expand to through references, so a
/// damaged or hostile entry cannot make a reader allocate without bound.
const MAX_EXPANDED: usize = 64 << 20;
/// Deepest nesting of a binary JSON value that decodes (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

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
            AuditEntry::Decision(d) => encode_decision(&mut w, d),
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
        if kind == KIND_DECISION_COMPACT || kind == KIND_DECISION_REFS {
            let layout = if kind == KIND_DECISION_REFS {
                Layout::Refs
            } else {
                Layout::Compact
            };
            let record = decode_decision(&mut r, id, &mut Texts::new(layout))?;
            if r.pos != bytes.len() {
                return Err(DecodeError::Trailing { offset: r.pos });
            }
            return Ok(AuditEntry::Decision(record));
        }
        if kind != KIND_DECISION && kind != KIND_EVENT {
            return Err(DecodeError::UnknownKind(kind));
        }
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

/// Appends a decision in the compact layout with text references (kind 4):
///
/// ```text
/// 4 ‖ id[16] ‖ at: zigzag varint, µs − (UUIDv7 ms of id, else 0) × 1000
/// ‖ flags: u8, outcome in bits 0..3, then pack 0x08, warnings 0x10, escalation 0x20,
///   context 0x40, resource in parts 0x80
/// ‖ snapshot: varint ‖ [pack: text] ‖ agent: varint bytes shared with the pack's
///   start, then the rest as text ‖ action: text
/// ‖ resource: text, or with 0x80 type: text ‖ id: text for `type::"id"`
/// ‖ namespace: text
/// ‖ policies: count, each name: text ‖ version (see `put_version`)
/// ‖ reasons: count, each rule (see `put_rules`) ‖ [warnings: count, each rule]
/// ‖ [context: count, each key: text ‖ value (binary JSON, see `put_value`)]
/// ‖ [escalation id: 16 bytes]
/// ```
///
/// A text is `varint 2·n ‖ n bytes of UTF-8`, or `varint 2·k + 1` and k pieces, each
/// `varint 2·n ‖ n bytes` (a literal piece) or `varint 2·i + 1` (the i-th text the
/// entry holds before, in this order: pack, agent, action, resource, the resource's id,
/// namespace, each policy, each reason, each warning, each context key and string
/// value). So a namespace can name the action or pack it contains, and a throttle
/// reason the policy and agent it quotes, without referring outside the entry: one
/// entry (as in a proof bundle) still renders the whole decision. A text takes pieces
/// only when that is shorter.
///
/// Kind 3 (the layout before, still decoded) has the same fields with every text a
/// plain `varint n ‖ bytes`, no resource parts, versions as in `put_version` without
/// the packed form, and context tags 0..=8 only.
pub fn encode_decision(w: &mut Vec<u8>, d: &DecisionRecord) {
    encode_decision_as(w, d, &mut Texts::new(Layout::Refs));
}

fn encode_decision_as(w: &mut Vec<u8>, d: &DecisionRecord, texts: &mut Texts) {
    let refs = texts.layout == Layout::Refs;
    w.push(if refs {
        KIND_DECISION_REFS
    } else {
        KIND_DECISION_COMPACT
    });
    w.extend_from_slice(d.decision_id.as_bytes());
    put_zigzag(w, micros(d.at) - time_base(&d.decision_id));
    let pack = d.pack.as_deref().unwrap_or("");
    let resource_parts = if refs {
        resource_parts(&d.resource)
    } else {
        None
    };
    let mut flags = outcome_byte(d.outcome);
    if !pack.is_empty() {
        flags |= FLAG_PACK;
    }
    if !d.warnings.is_empty() {
        flags |= FLAG_WARNINGS;
    }
    if d.escalation_id.is_some() {
        flags |= FLAG_ESCALATION;
    }
    if !d.context.is_empty() {
        flags |= FLAG_CONTEXT;
    }
    if resource_parts.is_some() {
        flags |= FLAG_RESOURCE_PARTS;
    }
    w.push(flags);
    put_varint(w, d.snapshot);
    if !pack.is_empty() {
        texts.put(w, pack);
        texts.learn(pack);
    }
    let shared = common_prefix(pack, &d.agent);
    put_varint(w, shared as u64);
    texts.put(w, &d.agent[shared..]);
    texts.learn(&d.agent);
    texts.put(w, &d.action);
    texts.learn(&d.action);
    match resource_parts {
        Some((kind, id)) => {
            texts.put(w, kind);
            texts.put(w, id);
            texts.learn(&d.resource);
            texts.learn(id);
        }
        None => {
            texts.put(w, &d.resource);
            texts.learn(&d.resource);
        }
    }
    texts.put(w, &d.namespace);
    texts.learn(&d.namespace);
    put_varint(w, d.policies.len() as u64);
    for policy in &d.policies {
        match policy.rsplit_once('@') {
            Some((name, version)) => {
                texts.put(w, name);
                put_version(w, version, texts);
            }
            None => {
                texts.put(w, policy);
                w.push(0);
            }
        }
        texts.learn(policy);
    }
    put_rules(w, &d.reasons, &d.policies, texts);
    if !d.warnings.is_empty() {
        put_rules(w, &d.warnings, &d.policies, texts);
    }
    if !d.context.is_empty() {
        put_object(w, &d.context, texts);
    }
    if let Some(id) = d.escalation_id {
        w.extend_from_slice(id.as_bytes());
    }
}

/// The type and id of a resource written `type::"id"` (an id without quotes or
/// backslashes, so the parts give back the same text).
fn resource_parts(resource: &str) -> Option<(&str, &str)> {
    let (kind, id) = resource.strip_suffix('"')?.rsplit_once("::\"")?;
    (!kind.is_empty() && !id.contains(['"', '\\'])).then_some((kind, id))
}

/// The two compact decision layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Kind 3: plain texts.
    Compact,
    /// Kind 4: texts may refer to earlier texts of the entry.
    Refs,
}

/// The texts of one entry, as far as written or read, for kind 4's references.
#[derive(Debug)]
struct Texts {
    layout: Layout,
    table: Vec<String>,
    /// Bytes of text read so far (bounded by `MAX_EXPANDED`).
    expanded: usize,
}

/// A piece of a kind 4 text.
enum Piece<'a> {
    Literal(&'a str),
    Reference(usize),
}

impl Texts {
    fn new(layout: Layout) -> Self {
        Self {
            layout,
            table: Vec::new(),
            expanded: 0,
        }
    }

    /// Records a text later texts may refer to (kind 4).
    fn learn(&mut self, text: &str) {
        if self.layout == Layout::Refs {
            self.table.push(text.to_owned());
        }
    }

    /// Writes a text: plain in kind 3; in kind 4 as pieces when that is shorter.
    fn put(&self, w: &mut Vec<u8>, text: &str) {
        if self.layout == Layout::Compact {
            put_str(w, text);
            return;
        }
        match self.pieces(text) {
            Some(pieces) if pieces_len(&pieces) < literal_len(text) => {
                put_varint(w, 2 * pieces.len() as u64 + 1);
                for piece in pieces {
                    match piece {
                        Piece::Literal(literal) => {
                            put_varint(w, 2 * literal.len() as u64);
                            w.extend_from_slice(literal.as_bytes());
                        }
                        Piece::Reference(i) => put_varint(w, 2 * i as u64 + 1),
                    }
                }
            }
            _ => {
                put_varint(w, 2 * text.len() as u64);
                w.extend_from_slice(text.as_bytes());
            }
        }
    }

    /// `text` cut into literals and references to the longest earlier text found at
    /// each position (the first of equal ones), scanning left to right; `None` when
    /// no earlier text occurs in it.
    fn pieces<'a>(&self, text: &'a str) -> Option<Vec<Piece<'a>>> {
        let mut pieces = Vec::new();
        let (mut pos, mut literal_from) = (0, 0);
        while pos < text.len() {
            let rest = &text[pos..];
            let best = self
                .table
                .iter()
                .enumerate()
                .filter(|(_, known)| {
                    known.len() >= MIN_REFERENCE && rest.starts_with(known.as_str())
                })
                .max_by_key(|(i, known)| (known.len(), std::cmp::Reverse(*i)));
            match best {
                Some((i, known)) => {
                    if literal_from < pos {
                        pieces.push(Piece::Literal(&text[literal_from..pos]));
                    }
                    pieces.push(Piece::Reference(i));
                    pos += known.len();
                    literal_from = pos;
                }
                None => pos += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if pieces.is_empty() {
            return None;
        }
        if literal_from < text.len() {
            pieces.push(Piece::Literal(&text[literal_from..]));
        }
        Some(pieces)
    }

    /// Reads a text written by [`Texts::put`].
    fn read(&mut self, r: &mut Reader<'_>) -> Result<String, DecodeError> {
        if self.layout == Layout::Compact {
            return r.string();
        }
        let start = r.pos;
        let head = r.varint()?;
        let text = if head % 2 == 0 {
            r.utf8(head / 2)?
        } else {
            let n = (head - 1) / 2;
            // Each piece takes at least one byte.
            if n == 0 || n > (r.bytes.len() - r.pos) as u64 {
                return Err(DecodeError::Invalid {
                    offset: start,
                    what: "text pieces",
                });
            }
            let mut text = String::new();
            for _ in 0..n {
                let at = r.pos;
                let piece = r.varint()?;
                if piece % 2 == 0 {
                    let literal = r.utf8(piece / 2)?;
                    if literal.is_empty() {
                        return Err(DecodeError::Invalid {
                            offset: at,
                            what: "empty text piece",
                        });
                    }
                    text.push_str(&literal);
                } else {
                    let known = usize::try_from((piece - 1) / 2)
                        .ok()
                        .and_then(|i| self.table.get(i))
                        .ok_or(DecodeError::Invalid {
                            offset: at,
                            what: "text reference",
                        })?;
                    if known.len() + text.len() + self.expanded > MAX_EXPANDED {
                        return Err(DecodeError::Invalid {
                            offset: at,
                            what: "text expansion",
                        });
                    }
                    text.push_str(known);
                }
            }
            text
        };
        self.expanded += text.len();
        if self.expanded > MAX_EXPANDED {
            return Err(DecodeError::Invalid {
                offset: start,
                what: "text expansion",
            });
        }
        Ok(text)
    }
}

fn literal_len(text: &str) -> usize {
    varint_len(2 * text.len() as u64) + text.len()
}

fn pieces_len(pieces: &[Piece<'_>]) -> usize {
    varint_len(2 * pieces.len() as u64 + 1)
        + pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(literal) => literal_len(literal),
                Piece::Reference(i) => varint_len(2 * *i as u64 + 1),
            })
            .sum::<usize>()
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn decode_decision(
    r: &mut Reader<'_>,
    decision_id: Uuid,
    texts: &mut Texts,
) -> Result<DecisionRecord, DecodeError> {
    let refs = texts.layout == Layout::Refs;
    let at_pos = r.pos;
    let at = r
        .zigzag()?
        .checked_add(time_base(&decision_id))
        .filter(|micros| *micros >= 0)
        .and_then(|micros| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
        })
        .ok_or(DecodeError::Invalid {
            offset: at_pos,
            what: "timestamp",
        })?;
    let flags_pos = r.pos;
    let flags = r.byte()?;
    let outcome = outcome_from(flags & OUTCOME_MASK)
        .filter(|_| refs || flags & FLAG_RESOURCE_PARTS == 0)
        .ok_or(DecodeError::Invalid {
            offset: flags_pos,
            what: "outcome and flags",
        })?;
    let snapshot = r.varint()?;
    let pack = if flags & FLAG_PACK != 0 {
        let pos = r.pos;
        let pack = texts.read(r)?;
        if pack.is_empty() {
            return Err(DecodeError::Invalid {
                offset: pos,
                what: "pack",
            });
        }
        texts.learn(&pack);
        Some(pack)
    } else {
        None
    };
    let shared_pos = r.pos;
    let shared = r.varint()?;
    let prefix = pack
        .as_deref()
        .unwrap_or("")
        .get(..usize::try_from(shared).unwrap_or(usize::MAX))
        .ok_or(DecodeError::Invalid {
            offset: shared_pos,
            what: "agent prefix",
        })?;
    let agent = format!("{prefix}{}", texts.read(r)?);
    texts.learn(&agent);
    let action = texts.read(r)?;
    texts.learn(&action);
    let resource = if flags & FLAG_RESOURCE_PARTS != 0 {
        let pos = r.pos;
        let kind = texts.read(r)?;
        let id = texts.read(r)?;
        let resource = format!("{kind}::\"{id}\"");
        if resource_parts(&resource) != Some((kind.as_str(), id.as_str())) {
            return Err(DecodeError::Invalid {
                offset: pos,
                what: "resource parts",
            });
        }
        texts.learn(&resource);
        texts.learn(&id);
        resource
    } else {
        let resource = texts.read(r)?;
        texts.learn(&resource);
        resource
    };
    let namespace = texts.read(r)?;
    texts.learn(&namespace);
    let count = r.count()?;
    let mut policies = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = texts.read(r)?;
        let policy = match r.version(texts)? {
            Some(version) => format!("{name}@{version}"),
            None => name,
        };
        texts.learn(&policy);
        policies.push(policy);
    }
    let reasons = r.rules(&policies, texts)?;
    let warnings = if flags & FLAG_WARNINGS != 0 {
        let pos = r.pos;
        let warnings = r.rules(&policies, texts)?;
        if warnings.is_empty() {
            return Err(DecodeError::Invalid {
                offset: pos,
                what: "warnings",
            });
        }
        warnings
    } else {
        Vec::new()
    };
    let context = if flags & FLAG_CONTEXT != 0 {
        let pos = r.pos;
        let context = r.object(0, texts)?;
        if context.is_empty() {
            return Err(DecodeError::Invalid {
                offset: pos,
                what: "context",
            });
        }
        context
    } else {
        Map::new()
    };
    let escalation_id = if flags & FLAG_ESCALATION != 0 {
        Some(Uuid::from_bytes(r.array::<16>()?))
    } else {
        None
    };
    Ok(DecisionRecord {
        decision_id,
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

/// Unix microseconds, clamped at the epoch (as kind 1 stores them).
fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from((at.unix_timestamp_nanos() / 1000).max(0)).unwrap_or(i64::MAX)
}

/// The UUIDv7 timestamp of an id in microseconds, or 0 for other ids.
fn time_base(id: &Uuid) -> i64 {
    if id.get_version_num() != 7 {
        return 0;
    }
    let b = id.as_bytes();
    let ms = b[..6]
        .iter()
        .fold(0i64, |acc, byte| (acc << 8) | i64::from(*byte));
    ms * 1000
}

/// Bytes `agent` shares with the start of `pack`, at a character boundary.
fn common_prefix(pack: &str, agent: &str) -> usize {
    pack.char_indices()
        .zip(agent.chars())
        .find(|((_, a), b)| a != b)
        .map_or_else(
            || {
                if agent.starts_with(pack) {
                    pack.len()
                } else {
                    agent.len()
                }
            },
            |((i, _), _)| i,
        )
}

fn put_zigzag(w: &mut Vec<u8>, v: i64) {
    put_varint(w, ((v << 1) ^ (v >> 63)) as u64);
}

/// A policy version. Kind 3: `1 ‖ str` for any text, `2 + major ‖ minor ‖ patch`
/// (varints) for a plain `major.minor.patch` without leading zeros. Kind 4: `1 ‖ text`,
/// `2 + 2·major ‖ minor ‖ patch`, or one varint `3 + 2·(16·major + 4·minor + patch)`
/// when minor and patch are below 4 (one byte up to 3.3.3).
fn put_version(w: &mut Vec<u8>, version: &str, texts: &Texts) {
    let parts: Vec<&str> = version.split('.').collect();
    let numbers: Option<Vec<u64>> = if parts.len() == 3 {
        parts
            .iter()
            .map(|p| {
                let canonical = !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && (p.len() == 1 || !p.starts_with('0'));
                canonical.then(|| p.parse::<u64>().ok()).flatten()
            })
            .collect()
    } else {
        None
    };
    match (texts.layout, numbers) {
        (Layout::Compact, Some(n)) if n[0] < u64::MAX - 2 => {
            put_varint(w, n[0] + 2);
            put_varint(w, n[1]);
            put_varint(w, n[2]);
        }
        (Layout::Refs, Some(n)) if n[1] < 4 && n[2] < 4 && n[0] < (u64::MAX - 3) / 32 => {
            put_varint(w, 3 + 2 * (16 * n[0] + 4 * n[1] + n[2]));
        }
        (Layout::Refs, Some(n)) if n[0] < (u64::MAX - 2) / 2 => {
            put_varint(w, 2 + 2 * n[0]);
            put_varint(w, n[1]);
            put_varint(w, n[2]);
        }
        _ => {
            w.push(1);
            texts.put(w, version);
        }
    }
}

/// Reasons or warnings: count, then each as `0 ‖ text` (the text as is) or `i + 1 ‖
/// text` for `policies[i] + "#" + text`.
fn put_rules(w: &mut Vec<u8>, rules: &[String], policies: &[String], texts: &mut Texts) {
    put_varint(w, rules.len() as u64);
    for rule in rules {
        let found = policies.iter().enumerate().find_map(|(i, p)| {
            rule.strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix('#'))
                .map(|rest| (i, rest))
        });
        match found {
            Some((i, rest)) => {
                put_varint(w, i as u64 + 1);
                texts.put(w, rest);
            }
            None => {
                w.push(0);
                texts.put(w, rule);
            }
        }
        texts.learn(rule);
    }
}

/// Binary JSON: an object is `count ‖ (key: text ‖ value)*` with keys in the map's
/// order.
fn put_object(w: &mut Vec<u8>, map: &Map<String, Value>, texts: &mut Texts) {
    put_varint(w, map.len() as u64);
    for (k, v) in map {
        texts.put(w, k);
        texts.learn(k);
        put_value(w, v, texts);
    }
}

const JSON_NULL: u8 = 0;
const JSON_FALSE: u8 = 1;
const JSON_TRUE: u8 = 2;
const JSON_UINT: u8 = 3;
const JSON_NEGINT: u8 = 4;
const JSON_FLOAT: u8 = 5;
const JSON_STRING: u8 = 6;
const JSON_ARRAY: u8 = 7;
const JSON_OBJECT: u8 = 8;

/// Kind 4: tags of small unsigned integers (the value is the tag − `JSON_SMALL_UINT`).
const JSON_SMALL_UINT: u8 = 9;
const JSON_SMALL_UINT_MAX: u64 = 31;
/// Kind 4: tags of short strings written as is (the length is the tag − this).
const JSON_SHORT_STRING: u8 = 64;

/// A JSON value: a tag byte, then a varint (u64, or −1 − n of a negative i64), an f64
/// (8 bytes LE), a text, `count ‖ values`, or an object. Kind 4 adds tags 9..=40 for
/// the integers 0..=31 and tags 64..=255 for strings of 0..=191 bytes written as is.
fn put_value(w: &mut Vec<u8>, v: &Value, texts: &mut Texts) {
    let refs = texts.layout == Layout::Refs;
    match v {
        Value::Null => w.push(JSON_NULL),
        Value::Bool(false) => w.push(JSON_FALSE),
        Value::Bool(true) => w.push(JSON_TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if refs && u <= JSON_SMALL_UINT_MAX {
                    w.push(JSON_SMALL_UINT + u as u8);
                } else {
                    w.push(JSON_UINT);
                    put_varint(w, u);
                }
            } else if let Some(i) = n.as_i64() {
                w.push(JSON_NEGINT);
                put_varint(w, !(i as u64));
            } else {
                w.push(JSON_FLOAT);
                w.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            let short = u8::try_from(s.len())
                .ok()
                .filter(|len| *len <= u8::MAX - JSON_SHORT_STRING);
            let mut text = Vec::new();
            texts.put(&mut text, s);
            match short {
                // Written as is, unless its pieces are shorter.
                Some(len) if refs && text.len() > s.len() => {
                    w.push(JSON_SHORT_STRING + len);
                    w.extend_from_slice(s.as_bytes());
                }
                _ => {
                    w.push(JSON_STRING);
                    w.extend_from_slice(&text);
                }
            }
            texts.learn(s);
        }
        Value::Array(items) => {
            w.push(JSON_ARRAY);
            put_varint(w, items.len() as u64);
            for item in items {
                put_value(w, item, texts);
            }
        }
        Value::Object(map) => {
            w.push(JSON_OBJECT);
            put_object(w, map, texts);
        }
    }
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
        let len = self.varint()?;
        self.utf8(len)
    }

    /// `len` bytes of UTF-8 text.
    fn utf8(&mut self, len: u64) -> Result<String, DecodeError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
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

    fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A list count, refused when the rest could not hold that many one-byte items.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let start = self.pos;
        let n = self.varint()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(DecodeError::Invalid {
                offset: start,
                what: "list length",
            });
        }
        Ok(n as usize)
    }

    /// A policy version (see `put_version`); `None` for a policy without one.
    fn version(&mut self, texts: &mut Texts) -> Result<Option<String>, DecodeError> {
        let start = self.pos;
        let invalid = DecodeError::Invalid {
            offset: start,
            what: "version",
        };
        let major = match (self.varint()?, texts.layout) {
            (0, _) => return Ok(None),
            (1, _) => return Ok(Some(texts.read(self)?)),
            (u64::MAX, Layout::Compact) => return Err(invalid),
            (v, Layout::Compact) => v - 2,
            (v, Layout::Refs) if v % 2 == 0 => (v - 2) / 2,
            (v, Layout::Refs) => {
                let packed = (v - 3) / 2;
                return Ok(Some(format!(
                    "{}.{}.{}",
                    packed / 16,
                    (packed / 4) % 4,
                    packed % 4
                )));
            }
        };
        let (minor, patch) = (self.varint()?, self.varint()?);
        Ok(Some(format!("{major}.{minor}.{patch}")))
    }

    /// Reasons or warnings (see `put_rules`).
    fn rules(
        &mut self,
        policies: &[String],
        texts: &mut Texts,
    ) -> Result<Vec<String>, DecodeError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let start = self.pos;
            let policy = self.varint()?;
            let text = texts.read(self)?;
            let rule = if policy == 0 {
                text
            } else {
                let policy = usize::try_from(policy - 1)
                    .ok()
                    .and_then(|i| policies.get(i))
                    .ok_or(DecodeError::Invalid {
                        offset: start,
                        what: "policy reference",
                    })?;
                format!("{policy}#{text}")
            };
            texts.learn(&rule);
            out.push(rule);
        }
        Ok(out)
    }

    /// A binary JSON object (see `put_object`); duplicate keys are refused.
    fn object(
        &mut self,
        depth: usize,
        texts: &mut Texts,
    ) -> Result<Map<String, Value>, DecodeError> {
        let start = self.pos;
        if depth > MAX_DEPTH {
            return Err(DecodeError::Invalid {
                offset: start,
                what: "nesting depth",
            });
        }
        let n = self.count()?;
        let mut map = Map::new();
        for _ in 0..n {
            let key_at = self.pos;
            let key = texts.read(self)?;
            texts.learn(&key);
            let value = self.value(depth + 1, texts)?;
            if map.insert(key, value).is_some() {
                return Err(DecodeError::Invalid {
                    offset: key_at,
                    what: "duplicate context key",
                });
            }
        }
        Ok(map)
    }

    fn value(&mut self, depth: usize, texts: &mut Texts) -> Result<Value, DecodeError> {
        let start = self.pos;
        let invalid = |what| DecodeError::Invalid {
            offset: start,
            what,
        };
        if depth > MAX_DEPTH {
            return Err(invalid("nesting depth"));
        }
        let refs = texts.layout == Layout::Refs;
        Ok(match self.byte()? {
            JSON_NULL => Value::Null,
            JSON_FALSE => Value::Bool(false),
            JSON_TRUE => Value::Bool(true),
            JSON_UINT => Value::from(self.varint()?),
            JSON_NEGINT => {
                let v = self.varint()?;
                if v > i64::MAX as u64 {
                    return Err(invalid("negative integer"));
                }
                Value::from(!v as i64)
            }
            JSON_FLOAT => {
                let f = f64::from_le_bytes(self.array::<8>()?);
                Value::Number(serde_json::Number::from_f64(f).ok_or(invalid("number"))?)
            }
            JSON_STRING => {
                let s = texts.read(self)?;
                texts.learn(&s);
                Value::String(s)
            }
            JSON_ARRAY => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    items.push(self.value(depth + 1, texts)?);
                }
                Value::Array(items)
            }
            JSON_OBJECT => Value::Object(self.object(depth, texts)?),
            tag if refs
                && (JSON_SMALL_UINT..=JSON_SMALL_UINT + JSON_SMALL_UINT_MAX as u8)
                    .contains(&tag) =>
            {
                Value::from(tag - JSON_SMALL_UINT)
            }
            tag if refs && tag >= JSON_SHORT_STRING => {
                let s = self.utf8(u64::from(tag - JSON_SHORT_STRING))?;
                texts.learn(&s);
                Value::String(s)
            }
            _ => return Err(invalid("JSON value tag")),
        })
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

    /// The bytes of `d` in kind 3, the compact layout before text references.
    fn kind3(d: &DecisionRecord) -> Vec<u8> {
        let mut w = Vec::new();
        encode_decision_as(&mut w, d, &mut Texts::new(Layout::Compact));
        w
    }

    /// A throttled transfer as the example workload logs it.
    fn throttled() -> DecisionRecord {
        DecisionRecord {
            decision_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002),
            at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
            outcome: Outcome::Throttle,
            snapshot: 5,
            agent: "treasury-118".into(),
            pack: Some("treasury".into()),
            action: "transfer".into(),
            resource: "Account::\"acct-13316\"".into(),
            namespace: "payment.transfer.finance.usa.acme".into(),
            policies: vec!["base-safety@1.0.0".into(), "payments-guard@2.1.0".into()],
            reasons: vec![
                "quota payments-guard@2.1.0#agent-rate: 100/s, burst 200 exceeded for agent \
                 treasury-118"
                    .into(),
            ],
            warnings: vec![],
            context: json!({"amount": 4729, "currency": "EUR", "destination_country": "fra"})
                .as_object()
                .cloned()
                .unwrap(),
            escalation_id: None,
        }
    }

    #[test]
    fn texts_refer_to_earlier_texts_of_the_same_entry() {
        let d = throttled();
        let bytes = AuditEntry::Decision(d.clone()).encode();
        assert_eq!(bytes[0], KIND_DECISION_REFS);
        assert_eq!(
            AuditEntry::decode(&bytes).unwrap(),
            AuditEntry::Decision(d.clone())
        );
        let old = kind3(&d);
        assert_eq!(old[0], KIND_DECISION_COMPACT);
        assert_eq!(AuditEntry::decode(&old).unwrap(), AuditEntry::Decision(d));
        // The reason names its policy and agent, the namespace its action.
        assert!(
            bytes.len() + 35 < old.len(),
            "kind 4 {} bytes, kind 3 {}",
            bytes.len(),
            old.len()
        );
        let mut d = decision();
        d.namespace = "data.export.crm.deu.acme".into();
        d.action = "data.export".into();
        d.context = json!({"destination_country": "deu", "n": 3})
            .as_object()
            .cloned()
            .unwrap();
        let bytes = AuditEntry::Decision(d.clone()).encode();
        assert_eq!(
            AuditEntry::decode(&bytes).unwrap(),
            AuditEntry::Decision(d.clone())
        );
        assert!(bytes.len() + 12 < kind3(&d).len());
    }

    #[test]
    fn references_that_expand_without_bound_are_refused() {
        // Context values that each repeat the one before twice: 2^k bytes from a few.
        let d = decision();
        let mut bytes = vec![KIND_DECISION_REFS];
        bytes.extend_from_slice(d.decision_id.as_bytes());
        put_zigzag(&mut bytes, micros(d.at) - time_base(&d.decision_id));
        bytes.push(FLAG_CONTEXT);
        put_varint(&mut bytes, 1); // snapshot
        put_varint(&mut bytes, 0); // agent prefix
        for text in ["agent", "act", "res", "ns"] {
            put_varint(&mut bytes, 2 * text.len() as u64);
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(&[0, 0]); // no policies, no reasons
        let values = 40u64;
        put_varint(&mut bytes, values);
        // Texts so far: agent 0, action 1, resource 2, namespace 3.
        for k in 0..values {
            let key = format!("k{k:02}");
            put_varint(&mut bytes, 2 * key.len() as u64);
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(JSON_STRING);
            // The previous value (or the agent), twice.
            let previous = if k == 0 { 0 } else { 4 + 2 * k - 1 };
            put_varint(&mut bytes, 2 * 2 + 1);
            put_varint(&mut bytes, 2 * previous + 1);
            put_varint(&mut bytes, 2 * previous + 1);
        }
        assert!(matches!(
            AuditEntry::decode(&bytes),
            Err(DecodeError::Invalid {
                what: "text expansion",
                ..
            })
        ));
        // A reference to a text not yet read is refused.
        let mut ahead = vec![KIND_DECISION_REFS];
        ahead.extend_from_slice(d.decision_id.as_bytes());
        put_zigzag(&mut ahead, micros(d.at) - time_base(&d.decision_id));
        ahead.push(0);
        put_varint(&mut ahead, 1);
        put_varint(&mut ahead, 0);
        put_varint(&mut ahead, 3); // one piece
        put_varint(&mut ahead, 2 * 7 + 1); // text 7: none yet
        assert!(matches!(
            AuditEntry::decode(&ahead),
            Err(DecodeError::Invalid {
                what: "text reference",
                ..
            })
        ));
    }

    #[test]
    fn compact_layout_is_written_and_first_layout_still_reads() {
        let d = decision();
        let bytes = AuditEntry::Decision(d.clone()).encode();
        assert_eq!(bytes[0], KIND_DECISION_REFS);
        // The same decision in the first layout (kind 1), as older logs hold it.
        let mut old = vec![KIND_DECISION];
        old.extend_from_slice(d.decision_id.as_bytes());
        put_varint(&mut old, micros(d.at) as u64);
        old.push(outcome_byte(d.outcome));
        put_varint(&mut old, d.snapshot);
        for s in [
            d.agent.as_str(),
            d.pack.as_deref().unwrap_or(""),
            &d.action,
            &d.resource,
            &d.namespace,
        ] {
            put_str(&mut old, s);
        }
        for list in [&d.policies, &d.reasons, &d.warnings] {
            put_varint(&mut old, list.len() as u64);
            for s in list {
                put_str(&mut old, s);
            }
        }
        put_str(&mut old, &Value::Object(d.context.clone()).to_string());
        old.push(0);
        assert_eq!(
            AuditEntry::decode(&old).unwrap(),
            AuditEntry::Decision(d.clone())
        );
        assert!(
            bytes.len() + 25 < old.len(),
            "{} vs {}",
            bytes.len(),
            old.len()
        );
    }

    #[test]
    fn compact_decisions_keep_every_value() {
        let mut d = decision();
        d.outcome = Outcome::Warn;
        d.agent = "research-7".into();
        d.policies = vec![
            "base-safety@1.0.0".into(),
            "odd@01.2".into(),
            "no-version".into(),
            "a@b@10.20.30".into(),
        ];
        d.reasons = vec![
            "odd@01.2#r".into(),
            "elsewhere#r".into(),
            "base-safety@1.0.0#".into(),
        ];
        d.warnings = vec!["a@b@10.20.30#w".into()];
        d.context = json!({
            "n": -5, "min": i64::MIN, "max": u64::MAX, "f": 2.5, "whole": 1.0,
            "s": "x", "list": [null, true, false, [], {}], "obj": {"k": {"k": 1}}
        })
        .as_object()
        .cloned()
        .unwrap();
        d.escalation_id = Some(Uuid::from_u128(3));
        let entry = AuditEntry::Decision(d.clone());
        assert_eq!(AuditEntry::decode(&entry.encode()).unwrap(), entry);
        // An id that is not a UUIDv7 carries no time: `at` is stored whole.
        d.decision_id = Uuid::from_u128(0xabcd);
        d.pack = Some("ops".into());
        d.agent = "op".into();
        let entry = AuditEntry::Decision(d);
        assert_eq!(AuditEntry::decode(&entry.encode()).unwrap(), entry);
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
        let mut bad_kind = bytes.clone();
        bad_kind[0] = 9;
        assert_eq!(
            AuditEntry::decode(&bad_kind),
            Err(DecodeError::UnknownKind(9))
        );
        let d = decision();
        let mut at = Vec::new();
        put_zigzag(&mut at, micros(d.at) - time_base(&d.decision_id));
        let flags_at = 17 + at.len();
        for flags in [0x87, 0x06, 0x07] {
            let mut bad_flags = bytes.clone();
            bad_flags[flags_at] = flags;
            assert_eq!(
                AuditEntry::decode(&bad_flags),
                Err(DecodeError::Invalid {
                    offset: flags_at,
                    what: "outcome and flags"
                })
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<u64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter_map("finite", serde_json::Number::from_f64)
                    .prop_map(Value::Number),
                ".{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn outcome() -> impl Strategy<Value = Outcome> {
            prop_oneof![
                Just(Outcome::Allow),
                Just(Outcome::Warn),
                Just(Outcome::Deny),
                Just(Outcome::Quarantine),
                Just(Outcome::Escalate),
                Just(Outcome::Throttle),
            ]
        }

        fn version() -> impl Strategy<Value = String> {
            prop_oneof![
                (0u64..30, 0u64..30, 0u64..1000).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
                "[0-9.a-z@-]{0,8}",
            ]
        }

        prop_compose! {
            fn record()(
                id in any::<u128>(),
                v7 in any::<bool>(),
                micros in 0i64..4_000_000_000_000_000,
                id_skew in -5_000_000i64..5_000_000,
                outcome in outcome(),
                snapshot in any::<u64>(),
                pack in proptest::option::of("[a-zé]{0,6}"),
                agent_tail in ".{0,8}",
                agent_from_pack in any::<bool>(),
                action in ".{0,10}",
                resource in ".{0,16}",
                namespace in "[a-z.]{0,24}",
                policies in prop::collection::vec(("[a-z@-]{0,8}", proptest::option::of(version())), 0..4),
                reasons in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), ".{0,8}"), 0..3),
                warnings in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), ".{0,8}"), 0..3),
                context in prop::collection::btree_map(".{0,8}", json_value(), 0..4),
                escalation in proptest::option::of(any::<u128>()),
            ) -> DecisionRecord {
                let mut id = Uuid::from_u128(id);
                if v7 {
                    // A UUIDv7 whose time is near (not at) the decision's.
                    let ms = ((micros + id_skew).max(0) / 1000) as u64;
                    let mut b = *id.as_bytes();
                    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                    b[6] = 0x70 | (b[6] & 0x0f);
                    id = Uuid::from_bytes(b);
                }
                let policies: Vec<String> = policies
                    .into_iter()
                    .map(|(name, v)| match v {
                        Some(v) => format!("{name}@{v}"),
                        None => name,
                    })
                    .collect();
                let rules = |items: Vec<(prop::sample::Index, bool, String)>| -> Vec<String> {
                    items
                        .into_iter()
                        .map(|(i, refer, text)| match (refer, policies.is_empty()) {
                            (true, false) => format!("{}#{text}", policies[i.index(policies.len())]),
                            _ => text,
                        })
                        .collect()
                };
                let agent = match (&pack, agent_from_pack) {
                    (Some(p), true) => format!("{p}{agent_tail}"),
                    _ => agent_tail,
                };
                DecisionRecord {
                    decision_id: id,
                    at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap(),
                    outcome,
                    snapshot,
                    agent,
                    pack: pack.filter(|p| !p.is_empty()),
                    action,
                    resource,
                    namespace,
                    reasons: rules(reasons),
                    warnings: rules(warnings),
                    policies,
                    context: context.into_iter().collect(),
                    escalation_id: escalation.map(Uuid::from_u128),
                }
            }
        }

        proptest! {
            #[test]
            fn compact_decisions_round_trip(d in record()) {
                let entry = AuditEntry::Decision(d.clone());
                let bytes = entry.encode();
                prop_assert_eq!(bytes[0], KIND_DECISION_REFS);
                prop_assert_eq!(AuditEntry::decode(&bytes).unwrap(), entry.clone());
                let old = kind3(&d);
                prop_assert_eq!(old[0], KIND_DECISION_COMPACT);
                prop_assert_eq!(AuditEntry::decode(&old).unwrap(), entry);
            }

            #[test]
            fn texts_quoting_each_other_round_trip(
                d in record(),
                quote in prop::collection::vec((0usize..8, ".{0,4}"), 1..6),
            ) {
                // Namespace, reasons and context built from the entry's other texts.
                let mut d = d;
                let known: Vec<String> = [d.agent.clone(), d.action.clone(), d.resource.clone()]
                    .into_iter()
                    .chain(d.pack.clone())
                    .chain(d.policies.clone())
                    .collect();
                let text: String = quote
                    .iter()
                    .map(|(i, glue)| format!("{}{glue}", known[i % known.len()]))
                    .collect();
                d.namespace = text.clone();
                d.reasons.push(format!("quota {text}"));
                d.context.insert(text.clone(), Value::String(text.clone()));
                d.context.insert("again".into(), Value::String(format!("{text}{text}")));
                let entry = AuditEntry::Decision(d.clone());
                let bytes = entry.encode();
                prop_assert_eq!(AuditEntry::decode(&bytes).unwrap(), entry.clone());
                prop_assert!(bytes.len() <= kind3(&d).len() + 2, "{} vs {}", bytes.len(), kind3(&d).len());
                prop_assert_eq!(AuditEntry::decode(&kind3(&d)).unwrap(), entry);
            }

            #[test]
            fn garbage_is_an_error_not_a_panic(
                kind in 0u8..5,
                body in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut bytes = vec![kind];
                bytes.extend(body);
                let _ = AuditEntry::decode(&bytes);
            }

            #[test]
            fn damaged_entries_never_panic(
                d in record(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut bytes = AuditEntry::Decision(d).encode();
                let end = cut.index(bytes.len());
                prop_assert!(AuditEntry::decode(&bytes[..end]).is_err(), "cut at {}", end);
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                let _ = AuditEntry::decode(&bytes);
            }
        }
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
