//! From a Cedar policy to a [`Program`], through Cedar's JSON form of the policy (its
//! EST). Anything outside the supported subset gives `None`: the rule stays on Cedar.

use serde_json::Value;

use super::{BinOp, Expr, PatElem, Program, Var};
use crate::value::{Record, Uid, Val};

/// Deeper expressions stay on Cedar; evaluation recurses as deep as the expression.
const MAX_DEPTH: usize = 64;

/// The condition of a rule, given in Cedar's JSON form ([`cedar_policy::Policy::to_json`]),
/// as a program, or `None` when some part of it is outside the subset the fast path
/// implements.
pub(crate) fn compile(json: &Value) -> Option<Program> {
    let mut parts = Vec::new();
    parts.extend(scope(json.get("principal")?, Var::Principal)?);
    parts.extend(action_scope(json.get("action")?)?);
    parts.extend(scope(json.get("resource")?, Var::Resource)?);
    for clause in json.get("conditions")?.as_array()? {
        let body = expr(clause.get("body")?, 0)?;
        match clause.get("kind")?.as_str()? {
            "when" => parts.push(body),
            "unless" => parts.push(Expr::Not(Box::new(body))),
            _ => return None,
        }
    }
    // `&&` is associative under Cedar's short-circuit and type rules, so the scope
    // constraints and clauses chain in order.
    let condition = parts
        .into_iter()
        .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
        .unwrap_or(Expr::Lit(Val::Bool(true)));
    Some(Program { condition })
}

/// `{"type": T, "id": I}` or `{"__entity": {"type": T, "id": I}}`.
fn uid(v: &Value) -> Option<Uid> {
    let v = v.get("__entity").unwrap_or(v);
    Some(Uid::new(v.get("type")?.as_str()?, v.get("id")?.as_str()?))
}

/// A principal or resource constraint; `Some(None)` when it constrains nothing.
fn scope(c: &Value, var: Var) -> Option<Option<Expr>> {
    let v = || Box::new(Expr::Var(var));
    let entity = |c: &Value| Some(Box::new(Expr::entity(uid(c.get("entity")?)?)));
    Some(Some(match c.get("op")?.as_str()? {
        "All" | "all" => return Some(None),
        "==" => Expr::Binary(BinOp::Eq, v(), entity(c)?),
        "in" => Expr::Binary(BinOp::In, v(), entity(c)?),
        "is" => {
            let is = Expr::Is(v(), Box::from(c.get("entity_type")?.as_str()?));
            match c.get("in") {
                None => is,
                Some(within) => Expr::And(
                    Box::new(is),
                    Box::new(Expr::Binary(BinOp::In, v(), entity(within)?)),
                ),
            }
        }
        _ => return None,
    }))
}

/// The action constraint; `Some(None)` when it constrains nothing.
fn action_scope(c: &Value) -> Option<Option<Expr>> {
    let v = || Box::new(Expr::Var(Var::Action));
    Some(Some(match c.get("op")?.as_str()? {
        "All" | "all" => return Some(None),
        "==" => Expr::Binary(
            BinOp::Eq,
            v(),
            Box::new(Expr::entity(uid(c.get("entity")?)?)),
        ),
        "in" => {
            let target = match (c.get("entity"), c.get("entities")) {
                (Some(e), None) => Val::Entity(uid(e)?),
                (None, Some(es)) => Val::Set(
                    es.as_array()?
                        .iter()
                        .map(|e| uid(e).map(Val::Entity))
                        .collect::<Option<_>>()?,
                ),
                _ => return None,
            };
            Expr::Binary(BinOp::In, v(), Box::new(Expr::Lit(target)))
        }
        _ => return None,
    }))
}

fn expr(v: &Value, depth: usize) -> Option<Expr> {
    if depth > MAX_DEPTH {
        return None;
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (op, a) = obj.iter().next()?;
    let sub = |v: &Value| expr(v, depth + 1).map(Box::new);
    let arg = |a: &Value| sub(a.get("arg")?);
    let pair = |a: &Value| Some((sub(a.get("left")?)?, sub(a.get("right")?)?));
    let binary = |op: BinOp, a: &Value| pair(a).map(|(l, r)| Expr::Binary(op, l, r));
    let attr = |a: &Value| Some((sub(a.get("left")?)?, Box::from(a.get("attr")?.as_str()?)));
    Some(match op.as_str() {
        "Value" => Expr::Lit(literal(a, depth)?),
        "Var" => Expr::Var(match a.as_str()? {
            "principal" => Var::Principal,
            "action" => Var::Action,
            "resource" => Var::Resource,
            "context" => Var::Context,
            _ => return None,
        }),
        "!" => Expr::Not(arg(a)?),
        "neg" => Expr::Neg(arg(a)?),
        "isEmpty" => Expr::IsEmpty(arg(a)?),
        "&&" => pair(a).map(|(l, r)| Expr::And(l, r))?,
        "||" => pair(a).map(|(l, r)| Expr::Or(l, r))?,
        "==" => binary(BinOp::Eq, a)?,
        "!=" => Expr::Not(Box::new(binary(BinOp::Eq, a)?)),
        "<" => binary(BinOp::Less, a)?,
        "<=" => binary(BinOp::LessEq, a)?,
        ">" => pair(a).map(|(l, r)| Expr::Binary(BinOp::Less, r, l))?,
        ">=" => pair(a).map(|(l, r)| Expr::Binary(BinOp::LessEq, r, l))?,
        "+" => binary(BinOp::Add, a)?,
        "-" => binary(BinOp::Sub, a)?,
        "*" => binary(BinOp::Mul, a)?,
        "in" => binary(BinOp::In, a)?,
        "contains" => binary(BinOp::Contains, a)?,
        "containsAll" => binary(BinOp::ContainsAll, a)?,
        "containsAny" => binary(BinOp::ContainsAny, a)?,
        "." => attr(a).map(|(e, name)| Expr::GetAttr(e, name))?,
        // An extended `has` (a list of names) stays on Cedar.
        "has" => attr(a).map(|(e, name)| Expr::HasAttr(e, name))?,
        "like" => Expr::Like(sub(a.get("left")?)?, pattern(a.get("pattern")?)?),
        "is" => {
            let left = || sub(a.get("left")?);
            let test = Expr::Is(left()?, Box::from(a.get("entity_type")?.as_str()?));
            match a.get("in") {
                None => test,
                // `e is T in E` is `e is T && e in E`.
                Some(within) => Expr::And(
                    Box::new(test),
                    Box::new(Expr::Binary(BinOp::In, left()?, sub(within)?)),
                ),
            }
        }
        "if-then-else" => Expr::If(
            sub(a.get("if")?)?,
            sub(a.get("then")?)?,
            sub(a.get("else")?)?,
        ),
        "Set" => {
            let items = a
                .as_array()?
                .iter()
                .map(|e| expr(e, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            fold_set(items)
        }
        "Record" => {
            let fields = a
                .as_object()?
                .iter()
                .map(|(k, e)| Some((Box::from(k.as_str()), expr(e, depth + 1)?)))
                .collect::<Option<Vec<_>>>()?;
            fold_record(fields)
        }
        // Extension functions, tags, slots and anything newer stay on Cedar.
        _ => return None,
    })
}

/// A set of literals is a literal, built once instead of on every evaluation.
fn fold_set(items: Vec<Expr>) -> Expr {
    if items.iter().all(|e| matches!(e, Expr::Lit(_))) {
        let vals = items.into_iter().filter_map(|e| match e {
            Expr::Lit(v) => Some(v),
            _ => None,
        });
        Expr::Lit(Val::Set(vals.collect()))
    } else {
        Expr::Set(items)
    }
}

/// A record of literals is a literal.
fn fold_record(fields: Vec<(Box<str>, Expr)>) -> Expr {
    if fields.iter().all(|(_, e)| matches!(e, Expr::Lit(_))) {
        let vals = fields.into_iter().filter_map(|(k, e)| match e {
            Expr::Lit(v) => Some((k, v)),
            _ => None,
        });
        Expr::Lit(Val::Record(Record::from_fields(vals.collect())))
    } else {
        Expr::Record(fields)
    }
}

/// A literal value in Cedar's JSON value form. Extension values stay on Cedar.
fn literal(v: &Value, depth: usize) -> Option<Val> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match v {
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Long(n.as_i64()?),
        Value::String(s) => Val::Str(Box::from(s.as_str())),
        Value::Array(items) => Val::Set(
            items
                .iter()
                .map(|i| literal(i, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Value::Object(o) => {
            if o.len() == 1
                && let Some(e) = o.get("__entity")
            {
                Val::Entity(uid(e)?)
            } else if o.keys().any(|k| k.starts_with("__")) {
                return None;
            } else {
                Val::Record(Record::from_fields(
                    o.iter()
                        .map(|(k, v)| Some((Box::from(k.as_str()), literal(v, depth + 1)?)))
                        .collect::<Option<_>>()?,
                ))
            }
        }
        Value::Null => return None,
    })
}

/// A `like` pattern: `"Wildcard"` or `{"Literal": text}` elements.
fn pattern(v: &Value) -> Option<Box<[PatElem]>> {
    let mut out = Vec::new();
    for elem in v.as_array()? {
        match elem {
            Value::String(s) if s == "Wildcard" => out.push(PatElem::Wildcard),
            Value::Object(o) if o.len() == 1 => {
                out.extend(o.get("Literal")?.as_str()?.chars().map(PatElem::Char));
            }
            _ => return None,
        }
    }
    Some(out.into_boxed_slice())
}
