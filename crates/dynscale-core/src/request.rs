//! An action request in Cedar terms: principal, action, resource, context and the
//! fleet entities (agent in pack), built once per decision from JSON attribute data.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::controls::Fingerprint;
use crate::ids::{AgentId, PackId};
use crate::namespace::{Namespace, NamespaceError};

/// Principal types an action can come from.
pub const SUBJECT_TYPES: [&str; 2] = ["Agent", "Service"];

/// The attribute-bearing parts of a request, as JSON data from the caller.
#[derive(Debug, Clone, Copy)]
pub struct ActionInput<'a> {
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    pub subject_properties: &'a Map<String, Value>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub resource_properties: &'a Map<String, Value>,
    pub context: &'a Map<String, Value>,
    /// Used when the context names no namespace.
    pub default_namespace: Option<&'a str>,
}

/// What the node knows of a registered agent; it overrides what the request claims.
#[derive(Debug, Clone, Default)]
pub struct AgentProfile {
    pub pack: Option<PackId>,
    pub attributes: Map<String, Value>,
}

/// Why a request cannot be evaluated. Each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("subject.type `{found}` is not a known subject type (expected one of Agent, Service)")]
    UnknownSubjectType { found: String },
    #[error("{field}: `{value}` is not a valid Cedar {what}")]
    BadName {
        field: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("context.namespace is required (no default_namespace is configured)")]
    MissingNamespace,
    #[error("context.namespace must be a string")]
    NamespaceNotString,
    #[error("context.namespace: {0}")]
    BadNamespace(NamespaceError),
    #[error("subject.properties.pack must be a string")]
    PackNotString,
    #[error("{field}: {reason}")]
    BadValue { field: String, reason: String },
}

impl InputError {
    /// The request field the error is about, as a dotted path.
    pub fn field(&self) -> String {
        match self {
            InputError::UnknownSubjectType { .. } => "subject.type".into(),
            InputError::BadName { field, .. } | InputError::Empty { field } => (*field).into(),
            InputError::MissingNamespace
            | InputError::NamespaceNotString
            | InputError::BadNamespace(_) => "context.namespace".into(),
            InputError::PackNotString => "subject.properties.pack".into(),
            InputError::BadValue { field, .. } => field.clone(),
        }
    }
}

/// A request ready for evaluation.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub agent: AgentId,
    pub pack: Option<PackId>,
    pub action: String,
    pub namespace: Namespace,
    pub(crate) cedar: cedar_policy::Request,
    pub(crate) entities: Entities,
    /// Digest identifying "the same action" for escalation approvals.
    pub fingerprint: Fingerprint,
    /// `Type::"id"` of the resource, for records.
    pub resource: String,
}

fn type_name(field: &'static str, value: &str) -> Result<EntityTypeName, InputError> {
    if value.is_empty() {
        return Err(InputError::Empty { field });
    }
    EntityTypeName::from_str(value).map_err(|_| InputError::BadName {
        field,
        value: value.to_owned(),
        what: "entity type name",
    })
}

fn non_empty(field: &'static str, value: &str) -> Result<(), InputError> {
    if value.is_empty() {
        Err(InputError::Empty { field })
    } else {
        Ok(())
    }
}

impl ActionRequest {
    /// Builds the Cedar request and entities. `profile` is the registered agent, if any.
    pub fn build(
        input: &ActionInput<'_>,
        profile: Option<&AgentProfile>,
    ) -> Result<Self, InputError> {
        if !SUBJECT_TYPES.contains(&input.subject_type) {
            return Err(InputError::UnknownSubjectType {
                found: input.subject_type.to_owned(),
            });
        }
        non_empty("subject.id", input.subject_id)?;
        non_empty("action.name", input.action)?;
        non_empty("resource.id", input.resource_id)?;
        let namespace = match input.context.get("namespace") {
            Some(Value::String(s)) => Namespace::parse(s).map_err(InputError::BadNamespace)?,
            Some(_) => return Err(InputError::NamespaceNotString),
            None => match input.default_namespace {
                Some(d) => Namespace::parse(d).map_err(InputError::BadNamespace)?,
                None => return Err(InputError::MissingNamespace),
            },
        };
        let claimed_pack = match input.subject_properties.get("pack") {
            Some(Value::String(p)) => Some(PackId::new(p.as_str())),
            Some(Value::Null) | None => None,
            Some(_) => return Err(InputError::PackNotString),
        };
        // A registered agent's pack and attributes are the node's record; they win
        // over what the request claims, including a claim of a pack it was not given.
        let pack = match profile {
            Some(p) => p.pack.clone(),
            None => claimed_pack,
        };

        let subject_type = type_name("subject.type", input.subject_type)?;
        let principal =
            EntityUid::from_type_name_and_id(subject_type, EntityId::new(input.subject_id));
        let action_uid = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Action").map_err(|_| InputError::BadName {
                field: "action.name",
                value: "Action".into(),
                what: "entity type name",
            })?,
            EntityId::new(input.action),
        );
        let resource = EntityUid::from_type_name_and_id(
            type_name("resource.type", input.resource_type)?,
            EntityId::new(input.resource_id),
        );

        let mut attrs = record_fields("subject.properties", input.subject_properties)?;
        if let Some(profile) = profile {
            attrs.extend(record_fields("agent attributes", &profile.attributes)?);
        }
        let mut entities = Vec::with_capacity(2);
        let mut parents = HashSet::new();
        if let Some(pack) = &pack {
            // The principal's parent uid is all `principal in Pack::"…"` needs; the Pack
            // entity itself has no attributes, so it is left out of the entities.
            let pack_uid = EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Pack").map_err(|_| InputError::PackNotString)?,
                EntityId::new(pack.as_str()),
            );
            attrs.insert(
                "pack".into(),
                RestrictedExpression::new_string(pack.to_string()),
            );
            parents.insert(pack_uid);
        }
        let bad_entity = |field: &str, e: &dyn std::fmt::Display| InputError::BadValue {
            field: field.to_owned(),
            reason: e.to_string(),
        };
        entities.push(
            Entity::new(principal.clone(), attrs, parents)
                .map_err(|e| bad_entity("subject.properties", &e))?,
        );
        if resource != principal {
            let rattrs = record_fields("resource.properties", input.resource_properties)?;
            entities.push(
                Entity::new(resource.clone(), rattrs, Default::default())
                    .map_err(|e| bad_entity("resource.properties", &e))?,
            );
        }
        let entities =
            Entities::from_entities(entities, None).map_err(|e| bad_entity("subject", &e))?;
        let context = Context::from_pairs(record_fields("context", input.context)?)
            .map_err(|e| bad_entity("context", &e))?;
        let cedar =
            cedar_policy::Request::new(principal, action_uid, resource.clone(), context, None)
                .map_err(|e| bad_entity("request", &e))?;
        Ok(ActionRequest {
            agent: AgentId::new(input.subject_id),
            pack,
            action: input.action.to_owned(),
            namespace,
            cedar,
            entities,
            fingerprint: fingerprint(input),
            resource: resource.to_string(),
        })
    }
}

/// SHA-256 over the request's identifying parts. serde_json maps are ordered, so the
/// context serialises canonically; it is streamed into the hash, not copied.
fn fingerprint(input: &ActionInput<'_>) -> Fingerprint {
    let mut h = HashWriter(Sha256::new());
    for part in [
        input.subject_type,
        input.subject_id,
        input.action,
        input.resource_type,
        input.resource_id,
    ] {
        h.0.update((part.len() as u64).to_be_bytes());
        h.0.update(part.as_bytes());
    }
    // Writing into a hash cannot fail, and a JSON map always serialises.
    let _ = serde_json::to_writer(&mut h, input.context);
    Fingerprint(hex(&h.0.finalize()))
}

/// Lets serde_json write straight into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Where in the request a bad value sits, built outward only when a value is bad:
/// the segments are collected innermost first as the error returns.
#[derive(Debug)]
struct BadAt {
    segments: Vec<Segment>,
    reason: String,
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl BadAt {
    fn new(reason: String) -> Self {
        Self {
            segments: Vec::new(),
            reason,
        }
    }

    fn within(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    fn at(self, base: &str) -> InputError {
        let mut field = base.to_owned();
        for s in self.segments.iter().rev() {
            match s {
                Segment::Key(k) => {
                    field.push('.');
                    field.push_str(k);
                }
                Segment::Index(i) => {
                    field.push('[');
                    field.push_str(&i.to_string());
                    field.push(']');
                }
            }
        }
        InputError::BadValue {
            field,
            reason: self.reason,
        }
    }
}

fn record_fields(
    path: &str,
    map: &Map<String, Value>,
) -> Result<HashMap<String, RestrictedExpression>, InputError> {
    fields(map).map_err(|e| e.at(path))
}

fn fields(map: &Map<String, Value>) -> Result<HashMap<String, RestrictedExpression>, BadAt> {
    let mut out = HashMap::with_capacity(map.len());
    for (k, v) in map {
        match to_cedar(v) {
            Ok(Some(expr)) => {
                out.insert(k.clone(), expr);
            }
            Ok(None) => {}
            Err(e) => return Err(e.within(Segment::Key(k.clone()))),
        }
    }
    Ok(out)
}

/// JSON to a Cedar value. Integers become Longs, other numbers `decimal` (at most four
/// fractional digits, Cedar's precision), objects records, arrays sets. `null` means
/// the attribute is absent, so `has` is false for it.
fn to_cedar(v: &Value) -> Result<Option<RestrictedExpression>, BadAt> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => decimal(n)?,
        },
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(e) = to_cedar(item).map_err(|e| e.within(Segment::Index(i)))? {
                    set.push(e);
                }
            }
            RestrictedExpression::new_set(set)
        }
        Value::Object(map) => {
            RestrictedExpression::new_record(fields(map)?).map_err(|e| BadAt::new(e.to_string()))?
        }
    }))
}

fn decimal(n: &serde_json::Number) -> Result<RestrictedExpression, BadAt> {
    let f = n
        .as_f64()
        .ok_or_else(|| BadAt::new(format!("{n} is out of range for a Cedar number")))?;
    let text = n.to_string();
    let frac = text.split_once('.').map_or(0, |(_, f)| f.len());
    if text.contains(['e', 'E']) || frac > 4 || f.abs() >= 922_337_203_685_477.0 {
        return Err(BadAt::new(format!(
            "{n} is not representable: Cedar numbers are integers or decimals with at most \
             four fractional digits"
        )));
    }
    let text = if frac == 0 { format!("{text}.0") } else { text };
    Ok(RestrictedExpression::new_decimal(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn input<'a>(
        subject_type: &'a str,
        props: &'a Map<String, Value>,
        ctx: &'a Map<String, Value>,
        empty: &'a Map<String, Value>,
    ) -> ActionInput<'a> {
        ActionInput {
            subject_type,
            subject_id: "a1",
            subject_properties: props,
            action: "transfer",
            resource_type: "Account",
            resource_id: "acct-9",
            resource_properties: empty,
            context: ctx,
            default_namespace: None,
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let empty = Map::new();
        let ctx = obj(json!({"namespace": "payment.processing.americas.usa.fintech"}));
        let props = obj(json!({"pack": "alpha"}));
        let cases: Vec<(ActionInput, &str)> = vec![
            (input("Robot", &props, &ctx, &empty), "subject.type"),
            (input("Agent", &props, &empty, &empty), "context.namespace"),
        ];
        for (i, field) in cases {
            let err = ActionRequest::build(&i, None).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
        let bad_ns = obj(json!({"namespace": "a.b"}));
        let err = ActionRequest::build(&input("Agent", &props, &bad_ns, &empty), None).unwrap_err();
        assert!(matches!(err, InputError::BadNamespace(_)), "{err}");
        let bad_num = obj(json!({"namespace": "a.b.c.d.e", "amount": 1.123456}));
        let err =
            ActionRequest::build(&input("Agent", &props, &bad_num, &empty), None).unwrap_err();
        assert_eq!(err.field(), "context.amount");
        let bad_pack = obj(json!({"pack": 7}));
        let err = ActionRequest::build(&input("Agent", &bad_pack, &ctx, &empty), None).unwrap_err();
        assert_eq!(err.field(), "subject.properties.pack");
    }

    #[test]
    fn registered_pack_wins_and_fingerprint_is_stable() {
        let empty = Map::new();
        let ctx = obj(json!({"namespace": "a.b.c.d.e", "amount": 12.5, "tags": ["x", null]}));
        let props = obj(json!({"pack": "claimed"}));
        let profile = AgentProfile {
            pack: Some(PackId::from("registered")),
            attributes: Map::new(),
        };
        let r =
            ActionRequest::build(&input("Agent", &props, &ctx, &empty), Some(&profile)).unwrap();
        assert_eq!(r.pack, Some(PackId::from("registered")));
        let again = ActionRequest::build(&input("Agent", &props, &ctx, &empty), None).unwrap();
        assert_eq!(r.fingerprint, again.fingerprint);
        let other_ctx = obj(json!({"namespace": "a.b.c.d.e", "amount": 13}));
        let other =
            ActionRequest::build(&input("Agent", &props, &other_ctx, &empty), None).unwrap();
        assert_ne!(r.fingerprint, other.fingerprint);
    }
}
