//! The fast path: Cedar rules compiled once into a small expression tree and
//! evaluated directly over the request's values ([`crate::request::Facts`]), without
//! building Cedar's request, entities and per-rule condition on every decision.
//!
//! Cedar stays the reference. A rule compiles only when every part of it is in the
//! subset this module implements (scope constraints, `when`/`unless`, literals, the
//! four variables, `&&` `||` `!` `if`, `==` `!=` `<` `<=` `>` `>=`, `+` `-` `*` and
//! negation on Longs, `in`, `is`, `has`, attribute access, `like`, `contains`,
//! `containsAll`, `containsAny`, `isEmpty`, set and record literals); anything else
//! (extension functions, tags, templates) keeps the rule on Cedar. Evaluation follows
//! Cedar's order and short-circuits, and gives up ([`Stop`]) wherever Cedar would raise
//! an error or where a value it does not model (a decimal) is involved: the decision
//! is then made by Cedar, which also words the error. So a decision the fast path
//! makes is the one Cedar would make; `tests.rs` checks that against Cedar on
//! generated rules and requests.

mod compile;
mod eval;
#[cfg(test)]
mod tests;

use crate::request::Facts;
use crate::value::{Uid, Val};

pub(crate) use compile::compile;

/// Why the fast path gave up on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Cedar raises an evaluation error here (a type error, a missing attribute or
    /// entity, an overflow).
    Error,
    /// A value the fast path does not compute with (a decimal).
    Unsupported,
}

/// A rule's whole condition (scope constraints, then its `when` and `unless` clauses
/// in order) in the fast path's terms.
#[derive(Debug)]
pub(crate) struct Program {
    condition: Expr,
}

impl Program {
    /// Whether the rule is satisfied by the request, as Cedar would decide, or why
    /// the fast path cannot tell.
    pub fn satisfied(&self, facts: &Facts) -> Result<bool, Stop> {
        eval::truth(&self.condition, facts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Principal,
    Action,
    Resource,
    Context,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Eq,
    Less,
    LessEq,
    Add,
    Sub,
    Mul,
    In,
    Contains,
    ContainsAll,
    ContainsAny,
}

/// One element of a `like` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatElem {
    Char(char),
    Wildcard,
}

/// An expression of the supported subset, in the shape Cedar evaluates it: `a != b`
/// is `!(a == b)`, `a > b` is `b < a`, `a >= b` is `b <= a`.
#[derive(Debug)]
enum Expr {
    Lit(Val),
    Var(Var),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    IsEmpty(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    GetAttr(Box<Expr>, Box<str>),
    HasAttr(Box<Expr>, Box<str>),
    Like(Box<Expr>, Box<[PatElem]>),
    /// `e is T`: the normalised type name.
    Is(Box<Expr>, Box<str>),
    Set(Vec<Expr>),
    Record(Vec<(Box<str>, Expr)>),
}

impl Expr {
    fn entity(uid: Uid) -> Self {
        Expr::Lit(Val::Entity(uid))
    }
}
