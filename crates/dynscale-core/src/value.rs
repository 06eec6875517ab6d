//! The values a request carries, as Cedar sees them: built once from the caller's
//! JSON, read directly by the fast path ([`crate::fastpath`]) and turned into Cedar's
//! own values only when a decision needs Cedar.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::RestrictedExpression;
use serde_json::{Map, Value};

/// An entity's type and id. The type is Cedar's normalised name (`Ns::Type`), the id
/// the raw string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uid {
    pub ty: Box<str>,
    pub id: Box<str>,
}

impl Uid {
    pub fn new(ty: &str, id: &str) -> Self {
        Self {
            ty: Box::from(ty),
            id: Box::from(id),
        }
    }
}

/// A Cedar value. It has no `PartialEq`: Cedar's equality (sets as sets, decimals by
/// value) is the fast path's `equal`.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Bool(bool),
    Long(i64),
    Str(Box<str>),
    Entity(Uid),
    /// Elements in no particular order; duplicates are allowed (Cedar's sets have
    /// none, which no operation on them can tell).
    Set(Box<[Val]>),
    Record(Record),
    /// A JSON number with a fraction, as Cedar `decimal` text (validated). The fast
    /// path does not compute with decimals; a rule that touches one goes to Cedar.
    Decimal(Box<str>),
}

/// A record: fields sorted by name, names unique.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record(Box<[(Box<str>, Val)]>);

impl Record {
    /// A record from fields in any order; a later field of the same name wins.
    pub fn from_fields(mut fields: Vec<(Box<str>, Val)>) -> Self {
        // Stable sort, then keep the last of each name.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Box<str>, Val)> = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Self(out.into_boxed_slice())
    }

    pub fn get(&self, name: &str) -> Option<&Val> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &Val)> {
        self.0.iter().map(|(k, v)| (k.borrow(), v))
    }

    /// The fields as Cedar attribute expressions.
    pub fn to_cedar_fields(&self) -> Result<HashMap<String, RestrictedExpression>, String> {
        self.0
            .iter()
            .map(|(k, v)| Ok((k.to_string(), v.to_cedar()?)))
            .collect()
    }
}

impl Val {
    /// The value as a Cedar expression.
    pub fn to_cedar(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            Val::Bool(b) => RestrictedExpression::new_bool(*b),
            Val::Long(i) => RestrictedExpression::new_long(*i),
            Val::Str(s) => RestrictedExpression::new_string(s.to_string()),
            Val::Entity(uid) => RestrictedExpression::new_entity_uid(cedar_uid(uid)?),
            Val::Set(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(Val::to_cedar)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Val::Record(r) => {
                RestrictedExpression::new_record(r.to_cedar_fields()?).map_err(|e| e.to_string())?
            }
            Val::Decimal(text) => RestrictedExpression::new_decimal(text),
        })
    }
}

/// The Cedar uid of an entity.
pub(crate) fn cedar_uid(uid: &Uid) -> Result<cedar_policy::EntityUid, String> {
    let ty = cedar_policy::EntityTypeName::from_str(&uid.ty).map_err(|e| e.to_string())?;
    Ok(cedar_policy::EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(&*uid.id),
    ))
}

/// Where in the request a bad value sits, built outward only when a value is bad:
/// the segments are collected innermost first as the error returns.
#[derive(Debug)]
pub(crate) struct BadAt {
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

    /// The dotted path of the bad value under `base`, and why it is bad.
    pub fn at(self, base: &str) -> (String, String) {
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
        (field, self.reason)
    }
}

/// The fields of a JSON object as a record. `null` means the field is absent.
pub(crate) fn record(map: &Map<String, Value>) -> Result<Record, BadAt> {
    Ok(Record::from_fields(fields(map)?))
}

/// The fields of a JSON object, `null`s left out, in the object's order.
pub(crate) fn fields(map: &Map<String, Value>) -> Result<Vec<(Box<str>, Val)>, BadAt> {
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match from_json(v) {
            Ok(Some(val)) => out.push((Box::from(k.as_str()), val)),
            Ok(None) => {}
            Err(e) => return Err(e.within(Segment::Key(k.clone()))),
        }
    }
    Ok(out)
}

/// JSON to a Cedar value. Integers become Longs, other numbers `decimal` (at most four
/// fractional digits, Cedar's precision), objects records, arrays sets. `null` means
/// the attribute is absent, so `has` is false for it.
fn from_json(v: &Value) -> Result<Option<Val>, BadAt> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => Val::Bool(*b),
        Value::String(s) => Val::Str(Box::from(s.as_str())),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Val::Long(i),
            None => Val::Decimal(decimal(n)?.into_boxed_str()),
        },
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(e) = from_json(item).map_err(|e| e.within(Segment::Index(i)))? {
                    set.push(e);
                }
            }
            Val::Set(set.into_boxed_slice())
        }
        Value::Object(map) => Val::Record(record(map)?),
    }))
}

/// A JSON number with a fraction as Cedar `decimal` text, or why it cannot be one.
fn decimal(n: &serde_json::Number) -> Result<String, BadAt> {
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
    Ok(if frac == 0 { format!("{text}.0") } else { text })
}
