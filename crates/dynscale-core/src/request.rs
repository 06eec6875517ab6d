//! An action request in Cedar terms: principal, action, resource, context and the
//! fleet entities (agent in pack), built once per decision from JSON attribute data.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{Context, Entities, Entity, EntityTypeName};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::controls::Fingerprint;
use crate::ids::{AgentId, PackId};
use crate::namespace::{Namespace, NamespaceError};
use crate::value::{self, Record, Uid, Val, cedar_uid};

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
    pub(crate) facts: Facts,
    /// The request in Cedar's own types, built when a decision first needs Cedar.
    cedar: OnceLock<Result<CedarRequest, String>>,
    /// Digest identifying "the same action" for escalation approvals.
    pub fingerprint: Fingerprint,
    /// `Type::"id"` of the resource, for records.
    pub resource: String,
}

/// What policies can see of a request: the four variables and the entities (the
/// principal with its attributes and pack, the resource with its attributes).
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub principal: Val,
    pub action: Val,
    pub resource: Val,
    pub context: Val,
    principal_attrs: Record,
    pack: Option<Uid>,
    resource_attrs: Record,
}

/// An entity as the request's entity store holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntityData<'a> {
    pub attrs: &'a Record,
    /// The entity's parent (its ancestors, as there is no deeper hierarchy).
    pub parent: Option<&'a Uid>,
}

impl Facts {
    /// The entity `uid` as Cedar's entity store for this request holds it: the
    /// principal (which wins when the resource is the same entity), the resource, or
    /// none (packs and actions carry no data).
    pub fn entity(&self, uid: &Uid) -> Option<EntityData<'_>> {
        if matches!(&self.principal, Val::Entity(p) if p == uid) {
            Some(EntityData {
                attrs: &self.principal_attrs,
                parent: self.pack.as_ref(),
            })
        } else if matches!(&self.resource, Val::Entity(r) if r == uid) {
            Some(EntityData {
                attrs: &self.resource_attrs,
                parent: None,
            })
        } else {
            None
        }
    }
}

/// The request in Cedar's types.
#[derive(Debug, Clone)]
pub(crate) struct CedarRequest {
    pub request: cedar_policy::Request,
    pub entities: Entities,
}

impl CedarRequest {
    fn build(f: &Facts) -> Result<Self, String> {
        let uid = |v: &Val| match v {
            Val::Entity(uid) => cedar_uid(uid),
            _ => Err(format!("{v:?} is not an entity")),
        };
        let (principal, action, resource) =
            (uid(&f.principal)?, uid(&f.action)?, uid(&f.resource)?);
        let mut parents = HashSet::new();
        if let Some(pack) = &f.pack {
            // The principal's parent uid is all `principal in Pack::"…"` needs; the Pack
            // entity itself has no attributes, so it is left out of the entities.
            parents.insert(cedar_uid(pack)?);
        }
        let mut entities = Vec::with_capacity(2);
        entities.push(
            Entity::new(
                principal.clone(),
                f.principal_attrs.to_cedar_fields()?,
                parents,
            )
            .map_err(|e| format!("subject.properties: {e}"))?,
        );
        if resource != principal {
            entities.push(
                Entity::new(
                    resource.clone(),
                    f.resource_attrs.to_cedar_fields()?,
                    HashSet::new(),
                )
                .map_err(|e| format!("resource.properties: {e}"))?,
            );
        }
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let context = match &f.context {
            Val::Record(r) => {
                Context::from_pairs(r.to_cedar_fields()?).map_err(|e| format!("context: {e}"))?
            }
            _ => return Err("the context is not a record".into()),
        };
        let request = cedar_policy::Request::new(principal, action, resource, context, None)
            .map_err(|e| e.to_string())?;
        Ok(Self { request, entities })
    }
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

        let principal_uid = Uid::new(
            &type_name("subject.type", input.subject_type)?.to_string(),
            input.subject_id,
        );
        let action_uid = Uid::new("Action", input.action);
        let resource_uid = Uid::new(
            &type_name("resource.type", input.resource_type)?.to_string(),
            input.resource_id,
        );

        let mut attrs = record_fields("subject.properties", input.subject_properties)?;
        if let Some(profile) = profile {
            attrs.extend(record_fields("agent attributes", &profile.attributes)?);
        }
        if let Some(pack) = &pack {
            attrs.push(("pack".into(), Val::Str(Box::from(pack.as_str()))));
        }
        let resource_attrs = if resource_uid == principal_uid {
            Record::default()
        } else {
            Record::from_fields(record_fields(
                "resource.properties",
                input.resource_properties,
            )?)
        };
        let context = Record::from_fields(record_fields("context", input.context)?);
        let resource = format!(
            "{}::\"{}\"",
            resource_uid.ty,
            input.resource_id.escape_debug()
        );
        Ok(ActionRequest {
            agent: AgentId::new(input.subject_id),
            action: input.action.to_owned(),
            namespace,
            facts: Facts {
                principal: Val::Entity(principal_uid),
                action: Val::Entity(action_uid),
                resource: Val::Entity(resource_uid),
                context: Val::Record(context),
                principal_attrs: Record::from_fields(attrs),
                pack: pack.as_ref().map(|p| Uid::new("Pack", p.as_str())),
                resource_attrs,
            },
            pack,
            cedar: OnceLock::new(),
            fingerprint: fingerprint(input),
            resource,
        })
    }

    /// The request in Cedar's types, built on first use.
    pub(crate) fn cedar(&self) -> Result<&CedarRequest, String> {
        self.cedar
            .get_or_init(|| CedarRequest::build(&self.facts))
            .as_ref()
            .map_err(Clone::clone)
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

fn record_fields(path: &str, map: &Map<String, Value>) -> Result<Vec<(Box<str>, Val)>, InputError> {
    value::fields(map).map_err(|e| {
        let (field, reason) = e.at(path);
        InputError::BadValue { field, reason }
    })
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
