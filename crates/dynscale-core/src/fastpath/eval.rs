//! Evaluation of a [`Program`](super::Program)'s expression over a request, with
//! Cedar's semantics: left-to-right, `&&` `||` `if` short-circuit, both operands of
//! every other operator evaluated, and a [`Stop`] wherever Cedar errors.

use std::borrow::Cow;

use super::{BinOp, Expr, PatElem, Stop, Var};
use crate::request::Facts;
use crate::value::{Record, Val};

type Out<'a> = Result<Cow<'a, Val>, Stop>;

/// The expression as a boolean; anything else is a type error, as in Cedar.
pub(super) fn truth(e: &Expr, f: &Facts) -> Result<bool, Stop> {
    as_bool(&*eval(e, f)?)
}

/// The stop for a value of the wrong type: Cedar's type error, unless a decimal is
/// involved, whose handling the fast path leaves to Cedar.
fn wrong(v: &Val) -> Stop {
    if matches!(v, Val::Decimal(_)) {
        Stop::Unsupported
    } else {
        Stop::Error
    }
}

fn as_bool(v: &Val) -> Result<bool, Stop> {
    match v {
        Val::Bool(b) => Ok(*b),
        other => Err(wrong(other)),
    }
}

fn as_long(v: &Val) -> Result<i64, Stop> {
    match v {
        Val::Long(i) => Ok(*i),
        other => Err(wrong(other)),
    }
}

fn as_set(v: &Val) -> Result<&[Val], Stop> {
    match v {
        Val::Set(items) => Ok(items),
        other => Err(wrong(other)),
    }
}

fn owned<'a>(v: Val) -> Out<'a> {
    Ok(Cow::Owned(v))
}

fn eval<'a>(e: &'a Expr, f: &'a Facts) -> Out<'a> {
    match e {
        Expr::Lit(v) => Ok(Cow::Borrowed(v)),
        Expr::Var(var) => Ok(Cow::Borrowed(match var {
            Var::Principal => &f.principal,
            Var::Action => &f.action,
            Var::Resource => &f.resource,
            Var::Context => &f.context,
        })),
        Expr::Not(a) => owned(Val::Bool(!truth(a, f)?)),
        Expr::Neg(a) => {
            let i = as_long(&*eval(a, f)?)?;
            owned(Val::Long(i.checked_neg().ok_or(Stop::Error)?))
        }
        Expr::IsEmpty(a) => owned(Val::Bool(as_set(&*eval(a, f)?)?.is_empty())),
        Expr::And(a, b) => owned(Val::Bool(truth(a, f)? && truth(b, f)?)),
        Expr::Or(a, b) => owned(Val::Bool(truth(a, f)? || truth(b, f)?)),
        Expr::If(c, t, e) => {
            if truth(c, f)? {
                eval(t, f)
            } else {
                eval(e, f)
            }
        }
        Expr::Binary(op, a, b) => {
            let (a, b) = (eval(a, f)?, eval(b, f)?);
            owned(binary(*op, &a, &b, f)?)
        }
        Expr::GetAttr(e, name) => match eval(e, f)? {
            Cow::Borrowed(Val::Record(r)) => r.get(name).map(Cow::Borrowed).ok_or(Stop::Error),
            Cow::Owned(Val::Record(r)) => r.get(name).cloned().map(Cow::Owned).ok_or(Stop::Error),
            v => match &*v {
                Val::Entity(uid) => {
                    let data = f.entity(uid).ok_or(Stop::Error)?;
                    data.attrs.get(name).map(Cow::Borrowed).ok_or(Stop::Error)
                }
                other => Err(wrong(other)),
            },
        },
        Expr::HasAttr(e, name) => {
            let v = eval(e, f)?;
            owned(Val::Bool(match &*v {
                Val::Record(r) => r.get(name).is_some(),
                Val::Entity(uid) => f.entity(uid).is_some_and(|d| d.attrs.get(name).is_some()),
                other => return Err(wrong(other)),
            }))
        }
        Expr::Like(e, pattern) => match &*eval(e, f)? {
            Val::Str(s) => owned(Val::Bool(wildcard_match(pattern, s))),
            other => Err(wrong(other)),
        },
        Expr::Is(e, ty) => match &*eval(e, f)? {
            Val::Entity(uid) => owned(Val::Bool(uid.ty == *ty)),
            other => Err(wrong(other)),
        },
        Expr::Set(items) => {
            let vals = items
                .iter()
                .map(|i| eval(i, f).map(Cow::into_owned))
                .collect::<Result<_, _>>()?;
            owned(Val::Set(vals))
        }
        Expr::Record(fields) => {
            let vals = fields
                .iter()
                .map(|(k, e)| Ok((k.clone(), eval(e, f)?.into_owned())))
                .collect::<Result<_, Stop>>()?;
            owned(Val::Record(Record::from_fields(vals)))
        }
    }
}

fn binary(op: BinOp, a: &Val, b: &Val, f: &Facts) -> Result<Val, Stop> {
    let arith = |checked: fn(i64, i64) -> Option<i64>| {
        checked(as_long(a)?, as_long(b)?)
            .map(Val::Long)
            .ok_or(Stop::Error)
    };
    Ok(match op {
        BinOp::Eq => Val::Bool(equal(a, b)?),
        BinOp::Less | BinOp::LessEq => match (a, b) {
            (Val::Long(x), Val::Long(y)) => {
                Val::Bool(if op == BinOp::Less { x < y } else { x <= y })
            }
            // Cedar compares extension values of some types; decimals are left to it.
            (Val::Decimal(_), _) | (_, Val::Decimal(_)) => return Err(Stop::Unsupported),
            _ => return Err(Stop::Error),
        },
        BinOp::Add => arith(i64::checked_add)?,
        BinOp::Sub => arith(i64::checked_sub)?,
        BinOp::Mul => arith(i64::checked_mul)?,
        BinOp::In => Val::Bool(is_in(a, b, f)?),
        BinOp::Contains => Val::Bool(contains(as_set(a)?, b)?),
        BinOp::ContainsAll => {
            let (a, b) = (as_set(a)?, as_set(b)?);
            Val::Bool(all(b, |x| contains(a, x))?)
        }
        BinOp::ContainsAny => {
            let (a, b) = (as_set(a)?, as_set(b)?);
            Val::Bool(any(b, |x| contains(a, x))?)
        }
    })
}

/// `a in b`: `a` an entity, `b` an entity or a set of entities (all checked first);
/// true when `a` is one of them or has one as its parent.
fn is_in(a: &Val, b: &Val, f: &Facts) -> Result<bool, Stop> {
    let Val::Entity(uid) = a else {
        return Err(wrong(a));
    };
    let parent = f.entity(uid).and_then(|d| d.parent);
    let hit = |target: &Val| match target {
        Val::Entity(t) => Ok(t == uid || parent == Some(t)),
        other => Err(wrong(other)),
    };
    match b {
        Val::Entity(_) => hit(b),
        Val::Set(items) => {
            // Every element must be an entity, even after a hit.
            let mut found = false;
            for item in items.iter() {
                found |= hit(item)?;
            }
            Ok(found)
        }
        other => Err(wrong(other)),
    }
}

fn any(items: &[Val], mut test: impl FnMut(&Val) -> Result<bool, Stop>) -> Result<bool, Stop> {
    for item in items {
        if test(item)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn all(items: &[Val], mut test: impl FnMut(&Val) -> Result<bool, Stop>) -> Result<bool, Stop> {
    for item in items {
        if !test(item)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn contains(set: &[Val], v: &Val) -> Result<bool, Stop> {
    any(set, |x| equal(x, v))
}

/// Cedar's value equality: values of different kinds are unequal, sets are equal as
/// sets, records field by field. Two decimals are left to Cedar.
fn equal(a: &Val, b: &Val) -> Result<bool, Stop> {
    Ok(match (a, b) {
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Long(x), Val::Long(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Entity(x), Val::Entity(y)) => x == y,
        (Val::Set(x), Val::Set(y)) => all(x, |i| contains(y, i))? && all(y, |i| contains(x, i))?,
        (Val::Record(x), Val::Record(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for ((kx, vx), (ky, vy)) in x.fields().zip(y.fields()) {
                if kx != ky || !equal(vx, vy)? {
                    return Ok(false);
                }
            }
            true
        }
        (Val::Decimal(_), Val::Decimal(_)) => return Err(Stop::Unsupported),
        _ => false,
    })
}

/// Cedar's `like`: `*` matches any run of characters (none included), every other
/// element one equal character.
pub(super) fn wildcard_match(pattern: &[PatElem], text: &str) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // After the last wildcard: the pattern position behind it, and where in the text
    // its match would end if the rest fails.
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        match pattern.get(p) {
            Some(PatElem::Wildcard) => {
                backtrack = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(PatElem::Char(c)) => {
                if let Some(tc) = text[t..].chars().next()
                    && tc == *c
                {
                    p += 1;
                    t += tc.len_utf8();
                    continue;
                }
            }
            None if t == text.len() => return true,
            None => {}
        }
        // A mismatch: let the last wildcard take one more character, or fail.
        match backtrack {
            Some((bp, bt)) if bt < text.len() => {
                let next = bt + text[bt..].chars().next().map_or(1, char::len_utf8);
                backtrack = Some((bp, next));
                p = bp;
                t = next;
            }
            _ => return false,
        }
    }
}
