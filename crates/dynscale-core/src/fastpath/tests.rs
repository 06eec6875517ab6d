//! The fast path against Cedar: generated rules (well and badly typed, every operator
//! of the subset) over generated requests. Wherever the fast path answers, Cedar must
//! give the same answer; where it reports a Cedar error, Cedar must raise one.

use cedar_policy::{Authorizer, PolicyId, PolicySet};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use super::{Program, Stop, compile};
use crate::request::{ActionInput, ActionRequest};

/// What Cedar says of one rule on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cedar {
    Satisfied(bool),
    Error,
}

fn cedar_verdict(policy: &cedar_policy::Policy, req: &ActionRequest) -> Cedar {
    let mut set = PolicySet::new();
    set.add(policy.clone()).expect("one policy");
    let cedar = req.cedar().expect("a built request converts to Cedar");
    let resp = Authorizer::new().is_authorized(&cedar.request, &set, &cedar.entities);
    if resp.diagnostics().errors().next().is_some() {
        Cedar::Error
    } else {
        Cedar::Satisfied(resp.diagnostics().reason().next().is_some())
    }
}

fn parse(text: &str) -> Option<cedar_policy::Policy> {
    cedar_policy::Policy::parse(Some(PolicyId::new("p")), text).ok()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A request from its parts: `(principal id, resource "Type:id", action, subject
/// properties, resource properties, context)`.
type Parts = (String, String, String, Value, Value, Value);

fn build(parts: &Parts) -> ActionRequest {
    let (principal, resource, action, subject, res, ctx) = parts;
    let (subject, res) = (object(subject.clone()), object(res.clone()));
    let mut context = object(ctx.clone());
    context.insert("namespace".into(), json!("a.b.c.d.e"));
    let (rtype, rid) = resource.split_once(':').expect("Type:id");
    let input = ActionInput {
        subject_type: "Agent",
        subject_id: principal,
        subject_properties: &subject,
        action,
        resource_type: rtype,
        resource_id: rid,
        resource_properties: &res,
        context: &context,
        default_namespace: None,
    };
    ActionRequest::build(&input, None).expect("generated requests are valid")
}

// ----- generated values -----

fn attr_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["n", "s", "b", "set", "rec", "d", "missing"])
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        prop::sample::select(vec!["a", "b", "ops", "x*y", "", "ab*"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(json!(1.5)),
        Just(Value::Null),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(attr_name().prop_map(str::to_owned), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_record() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(attr_name().prop_map(str::to_owned), json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop::sample::select(vec!["a0", "a1"]),
        prop::sample::select(vec!["Resource:r0", "Resource:r1", "Agent:a0", "Pack:ops"]),
        prop::sample::select(vec!["read", "write"]),
        json_record(),
        prop::option::of(prop::sample::select(vec!["ops", "dev"])),
        json_record(),
        json_record(),
    )
        .prop_map(|(p, r, a, mut subject, pack, res, ctx)| {
            if let (Some(pack), Value::Object(m)) = (pack, &mut subject) {
                m.insert("pack".into(), json!(pack));
            }
            (p.into(), r.into(), a.into(), subject, res, ctx)
        })
}

// ----- generated rules -----

fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0",
        "1",
        "-2",
        "9223372036854775807",
        "\"a\"",
        "\"ops\"",
        "\"\"",
        "true",
        "false",
        "Pack::\"ops\"",
        "Pack::\"dev\"",
        "Agent::\"a0\"",
        "Resource::\"r0\"",
        "Action::\"read\"",
        "[1, 2]",
        "[\"a\", \"b\"]",
        "[Pack::\"ops\", Pack::\"dev\"]",
        "[Pack::\"ops\", 1]",
        "[]",
        "{n: 1, s: \"a\"}",
        "{}",
    ])
    .prop_map(str::to_owned)
}

fn base() -> impl Strategy<Value = String> {
    prop_oneof![
        literal(),
        prop::sample::select(vec!["principal", "resource", "action", "context"])
            .prop_map(str::to_owned),
        (
            prop::sample::select(vec!["principal", "resource", "context", "context.rec"]),
            attr_name()
        )
            .prop_map(|(v, a)| format!("{v}.{a}")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    base().prop_recursive(3, 24, 3, |e| {
        let pair = (e.clone(), e.clone());
        prop_oneof![
            (
                pair.clone(),
                prop::sample::select(vec![
                    "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "&&", "||", "in"
                ])
            )
                .prop_map(|((a, b), op)| format!("({a} {op} {b})")),
            (
                pair.clone(),
                prop::sample::select(vec!["contains", "containsAll", "containsAny"])
            )
                .prop_map(|((a, b), m)| format!("({a}).{m}({b})")),
            e.clone().prop_map(|a| format!("(!{a})")),
            e.clone().prop_map(|a| format!("(-{a})")),
            e.clone().prop_map(|a| format!("({a}).isEmpty()")),
            (e.clone(), attr_name()).prop_map(|(a, n)| format!("({a} has {n})")),
            (e.clone(), attr_name()).prop_map(|(a, n)| format!("({a}).{n}")),
            (
                e.clone(),
                prop::sample::select(vec!["a*", "*", "ab\\*", "", "*b*", "o?s"])
            )
                .prop_map(|(a, p)| format!("({a} like \"{p}\")")),
            (
                e.clone(),
                prop::sample::select(vec!["Agent", "Pack", "Resource"])
            )
                .prop_map(|(a, t)| format!("({a} is {t})")),
            (e.clone(), e.clone()).prop_map(|(a, b)| format!("({a} is Agent in {b})")),
            (e.clone(), pair).prop_map(|(c, (a, b))| format!("(if {c} then {a} else {b})")),
            prop::collection::vec(e.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            (e.clone(), e).prop_map(|(a, b)| format!("{{n: {a}, s: {b}}}")),
        ]
    })
}

fn rule() -> impl Strategy<Value = String> {
    let principal = prop::sample::select(vec![
        "principal",
        "principal == Agent::\"a0\"",
        "principal in Pack::\"ops\"",
        "principal is Agent",
        "principal is Agent in Pack::\"dev\"",
    ]);
    let action = prop::sample::select(vec![
        "action",
        "action == Action::\"read\"",
        "action in [Action::\"read\", Action::\"write\"]",
        "action in Action::\"write\"",
    ]);
    let resource = prop::sample::select(vec![
        "resource",
        "resource == Resource::\"r0\"",
        "resource in Pack::\"ops\"",
        "resource is Resource",
    ]);
    let clauses = prop::collection::vec((any::<bool>(), expr()), 0..3);
    (principal, action, resource, clauses).prop_map(|(p, a, r, clauses)| {
        let mut text = format!("permit({p}, {a}, {r})");
        for (when, body) in clauses {
            let kind = if when { "when" } else { "unless" };
            text.push_str(&format!(" {kind} {{ {body} }}"));
        }
        text.push(';');
        text
    })
}

/// Runs `cases` generated (rule, requests) pairs, checks each answer of the fast
/// path against Cedar, and returns how many answers were decided, Cedar errors
/// reported, and given up.
fn differential(cases: u32) -> (usize, usize, usize) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::Cell::new((0usize, 0usize, 0usize));
    runner
        .run(
            &(rule(), prop::collection::vec(parts(), 1..6)),
            |(text, requests)| {
                let Some(policy) = parse(&text) else {
                    return Ok(());
                };
                let program: Program = compile(&policy.to_json().expect("JSON form"))
                    .ok_or_else(|| TestCaseError::fail(format!("not compiled: {text}")))?;
                for parts in &requests {
                    let req = build(parts);
                    let cedar = cedar_verdict(&policy, &req);
                    let fast = program.satisfied(&req.facts);
                    let (mut decided, mut errors, mut gave_up) = counts.get();
                    match fast {
                        Ok(b) => {
                            prop_assert_eq!(cedar, Cedar::Satisfied(b), "{}\n{:?}", text, parts);
                            decided += 1;
                        }
                        Err(Stop::Error) => {
                            prop_assert_eq!(cedar, Cedar::Error, "{}\n{:?}", text, parts);
                            errors += 1;
                        }
                        Err(Stop::Unsupported) => gave_up += 1,
                    }
                    counts.set((decided, errors, gave_up));
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    counts.get()
}

#[test]
fn agrees_with_cedar_on_generated_rules_and_requests() {
    let (decided, errors, gave_up) = differential(3_000);
    let total = decided + errors + gave_up;
    eprintln!("decided {decided}, errors {errors}, gave up {gave_up}");
    // Not vacuous: most answers are the fast path's own, and both outcomes and the
    // error reports are exercised.
    assert!(total > 3_000, "{total} answers checked");
    assert!(decided * 2 > total, "decided {decided} of {total}");
    assert!(errors * 20 > total, "errors {errors} of {total}");
}

#[test]
fn rules_of_the_subset_compile_and_others_stay_on_cedar() {
    for text in [
        r#"permit(principal, action, resource);"#,
        r#"forbid(principal in Pack::"ops", action == Action::"shell.exec", resource)
           when { context has command && context.command like "*rm -rf /*" };"#,
        r#"permit(principal is Agent in Pack::"ops", action in [Action::"a", Action::"b"], resource is Doc)
           unless { [1, 2].containsAny(context.ids) || resource.tags.isEmpty() };"#,
        r#"permit(principal, action, resource) when { if context.n > 2 then context.n * 2 <= -principal.k else false };"#,
    ] {
        let p = parse(text).unwrap_or_else(|| panic!("parses: {text}"));
        assert!(
            compile(&p.to_json().expect("JSON form")).is_some(),
            "compiles: {text}"
        );
    }
    for text in [
        r#"permit(principal, action, resource) when { context.amount.lessThan(decimal("1.5")) };"#,
        r#"permit(principal, action, resource) when { ip(context.src).isLoopback() };"#,
        r#"permit(principal, action, resource) when { principal.hasTag("t") };"#,
    ] {
        let p = parse(text).unwrap_or_else(|| panic!("parses: {text}"));
        assert!(
            compile(&p.to_json().expect("JSON form")).is_none(),
            "stays on Cedar: {text}"
        );
    }
}

#[test]
fn like_patterns_match_as_cedar_does() {
    use super::PatElem;
    let pat = |s: &str| -> Vec<PatElem> {
        s.chars()
            .map(|c| {
                if c == '*' {
                    PatElem::Wildcard
                } else {
                    PatElem::Char(c)
                }
            })
            .collect()
    };
    let cases = [
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("*b*", "abc", true),
        ("a*c*e", "abcde", true),
        ("a*c*e", "abcdf", false),
        ("*rm -rf /*", "sudo rm -rf / --no-preserve-root", true),
        ("*rm -rf /*", "ls", false),
        ("é*ü", "éaü", true),
        ("**a", "a", true),
        ("a**", "b", false),
    ];
    for (p, text, want) in cases {
        assert_eq!(
            super::eval::wildcard_match(&pat(p), text),
            want,
            "{p:?} on {text:?}"
        );
    }
}
