//! The cost of one action under a quota rule: the number of cells it spends, read
//! from a field of the request context that the rule names.

use serde_json::{Map, Value};

/// Why a context does not give a usable cost. The field is named so the caller can
/// answer with an error that points at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error(
        "context.{field} is the cost of this action and must be a non-negative integer, not {found}"
    )]
    NotACount { field: String, found: &'static str },
}

impl CostError {
    /// The request field at fault, as a dotted path.
    pub fn field(&self) -> String {
        match self {
            CostError::NotACount { field, .. } => format!("context.{field}"),
        }
    }
}

/// The cost of an action under a rule whose `cost` names `field` (or names nothing).
///
/// No field named, the field missing, or `null`: the action costs 1. A non-negative
/// integer is the cost (0 is allowed: a free action always passes). Anything else
/// (a negative or fractional number, a string, …) is an error rather than a guess,
/// because silently charging 1 for a malformed cost would let a caller dodge the quota.
pub fn cost_from_context(
    field: Option<&str>,
    context: &Map<String, Value>,
) -> Result<u64, CostError> {
    let Some(field) = field else { return Ok(1) };
    let found = match context.get(field) {
        None | Some(Value::Null) => return Ok(1),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(cost) => return Ok(cost),
            None if n.is_i64() => "a negative number",
            None => "a fractional or out-of-range number",
        },
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    };
    Err(CostError::NotACount {
        field: field.to_owned(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_cost_or_names_the_field() {
        let ctx = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let not_a_count = |found| {
            Err(CostError::NotACount {
                field: "tokens".into(),
                found,
            })
        };
        let cases = [
            (None, json!({"tokens": "x"}), Ok(1)),
            (Some("tokens"), json!({}), Ok(1)),
            (Some("tokens"), json!({"tokens": null}), Ok(1)),
            (Some("tokens"), json!({"tokens": 0}), Ok(0)),
            (Some("tokens"), json!({"tokens": 250}), Ok(250)),
            (
                Some("tokens"),
                json!({"tokens": -1}),
                not_a_count("a negative number"),
            ),
            (
                Some("tokens"),
                json!({"tokens": 1.5}),
                not_a_count("a fractional or out-of-range number"),
            ),
            (
                Some("tokens"),
                json!({"tokens": "3"}),
                not_a_count("a string"),
            ),
            (
                Some("tokens"),
                json!({"tokens": true}),
                not_a_count("a boolean"),
            ),
            (
                Some("tokens"),
                json!({"tokens": [1]}),
                not_a_count("an array"),
            ),
            (
                Some("tokens"),
                json!({"tokens": {}}),
                not_a_count("an object"),
            ),
        ];
        for (field, context, want) in cases {
            assert_eq!(
                cost_from_context(field, &ctx(context.clone())),
                want,
                "{field:?} in {context}"
            );
        }
        let err =
            cost_from_context(Some("tokens"), &ctx(json!({"tokens": "3"}))).expect_err("a string");
        assert_eq!(err.field(), "context.tokens");
        assert!(err.to_string().contains("context.tokens"), "{err}");
    }
}
