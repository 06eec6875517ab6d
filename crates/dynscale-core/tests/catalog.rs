//! Catalog-level validation of SPEC §3: versions, policy ids, strategies, major
//! upgrades, dependencies and cycles, declared, resource and temporal conflicts,
//! pruning, windows in force, and rollback.

use std::sync::Arc;

use dynscale_core::catalog::{ActivationPlan, Catalog, PushOptions};
use dynscale_core::diagnostic::{Diagnostic, DiagnosticCode};
use dynscale_core::ids::PolicyName;
use dynscale_core::policy::{CheckedPolicy, check_document};
use proptest::prelude::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const NOW: &str = "2026-01-01T00:00:00Z";
const SCOPE: &str = "payment.*.*.usa.fintech";

fn ts(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).expect("test timestamps are RFC 3339")
}

fn name(s: &str) -> PolicyName {
    PolicyName::new(s)
}

/// A uuid v4 derived from the name, so versions of one name share an id and
/// different names do not.
fn id_for(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{:08x}-7a3b-4c5d-8e9f-{:012x}",
        h >> 32,
        h & 0xffff_ffff_ffff
    )
}

/// A policy document under construction, written out as YAML.
#[derive(Debug, Clone)]
struct Doc {
    name: String,
    version: String,
    id: String,
    scope: String,
    deps: Vec<(String, String)>,
    conflicts: Vec<(String, String)>,
    strategy: &'static str,
    window: Option<(Option<String>, Option<String>)>,
    rules: Vec<String>,
}

fn doc(name: &str, version: &str) -> Doc {
    Doc {
        name: name.to_owned(),
        version: version.to_owned(),
        id: id_for(name),
        scope: SCOPE.to_owned(),
        deps: Vec::new(),
        conflicts: Vec::new(),
        strategy: "immediate",
        window: None,
        rules: vec![
            "  - id: allow-all\n    cedar: |\n      permit(principal, action, resource);\n"
                .to_owned(),
        ],
    }
}

impl Doc {
    fn dep(mut self, policy: &str, range: &str) -> Self {
        self.deps.push((policy.to_owned(), range.to_owned()));
        self
    }
    fn conflict(mut self, policy: &str, range: &str) -> Self {
        self.conflicts.push((policy.to_owned(), range.to_owned()));
        self
    }
    fn id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }
    fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.to_owned();
        self
    }
    fn strategy(mut self, strategy: &'static str) -> Self {
        self.strategy = strategy;
        self
    }
    fn window(mut self, from: Option<&str>, until: Option<&str>) -> Self {
        self.window = Some((from.map(str::to_owned), until.map(str::to_owned)));
        self
    }
    fn quota(mut self, id: &str, key: &str, rate: &str, burst: u64) -> Self {
        self.rules.push(format!(
            "  - id: {id}\n    quota: {{ key: {key}, rate: {rate}, burst: {burst} }}\n"
        ));
        self
    }
    fn concurrency(mut self, id: &str, key: &str, limit: u64) -> Self {
        self.rules.push(format!(
            "  - id: {id}\n    concurrency: {{ key: {key}, limit: {limit} }}\n"
        ));
        self
    }

    fn yaml(&self) -> String {
        let mut y = format!(
            "policyId: {}\nname: {}\nversion: \"{}\"\nnamespace: \"{}\"\n",
            self.id, self.name, self.version, self.scope
        );
        for (key, list) in [("dependencies", &self.deps), ("conflicts", &self.conflicts)] {
            if !list.is_empty() {
                y.push_str(&format!("{key}:\n"));
                for (policy, range) in list {
                    y.push_str(&format!("  - policy: {policy}\n    version: \"{range}\"\n"));
                }
            }
        }
        y.push_str(&format!("activation:\n  strategy: {}\n", self.strategy));
        if let Some((None, None)) = &self.window {
            y.push_str("validity: {}\n");
        } else if let Some((from, until)) = &self.window {
            y.push_str("validity:\n");
            if let Some(f) = from {
                y.push_str(&format!("  from: {f}\n"));
            }
            if let Some(u) = until {
                y.push_str(&format!("  until: {u}\n"));
            }
        }
        y.push_str("rules:\n");
        for r in &self.rules {
            y.push_str(r);
        }
        y
    }

    fn checked(&self) -> Arc<CheckedPolicy> {
        let yaml = self.yaml();
        match check_document("test.yaml", &yaml, None) {
            Ok(p) => Arc::new(p),
            Err(e) => panic!("test document does not check: {e:?}\n{yaml}"),
        }
    }
}

fn opts(now: &str, force: bool) -> PushOptions {
    PushOptions {
        now: ts(now),
        force,
    }
}

/// Pushes, records and applies a document the way the server does after storing it.
fn push(catalog: &mut Catalog, d: &Doc, now: &str) -> ActivationPlan {
    let policy = d.checked();
    let plan = match catalog.plan_push(&policy, &opts(now, true)) {
        Ok(plan) => plan,
        Err(e) => panic!("setup push of {}@{} refused: {e:#?}", d.name, d.version),
    };
    catalog.record_pushed(&plan.name, policy.doc.policy_id, &plan.version);
    catalog.apply(&plan);
    plan
}

fn catalog_of(docs: &[Doc]) -> Catalog {
    let mut catalog = Catalog::new();
    for d in docs {
        push(&mut catalog, d, NOW);
    }
    catalog
}

fn versions(policies: &[Arc<CheckedPolicy>]) -> Vec<String> {
    policies
        .iter()
        .map(|p| format!("{}@{}", p.doc.name, p.doc.version))
        .collect()
}

fn strings(vs: &[semver::Version]) -> Vec<String> {
    vs.iter().map(ToString::to_string).collect()
}

/// One expected finding: its code, its field, and text its message must contain.
type Finding = (DiagnosticCode, &'static str, &'static [&'static str]);

struct Case {
    what: &'static str,
    setup: Vec<Doc>,
    push: Doc,
    force: bool,
    /// Empty when the push must be accepted.
    expect: Vec<Finding>,
}

fn case(what: &'static str, setup: Vec<Doc>, push: Doc, expect: Vec<Finding>) -> Case {
    Case {
        what,
        setup,
        push,
        force: false,
        expect,
    }
}

fn assert_findings(what: &str, got: &[Diagnostic], expect: &[Finding]) {
    let codes: Vec<_> = got.iter().map(|d| (d.code, d.field.as_deref())).collect();
    let want: Vec<_> = expect.iter().map(|(c, f, _)| (*c, Some(*f))).collect();
    assert_eq!(codes, want, "{what}: {got:#?}");
    for (d, (_, _, fragments)) in got.iter().zip(expect) {
        for fragment in *fragments {
            assert!(
                d.message.contains(fragment),
                "{what}: `{}` lacks `{fragment}`",
                d.message
            );
        }
        assert!(d.line.is_some(), "{what}: {d:?} has no line");
        assert_eq!(d.file, None, "{what}: the caller names the file");
    }
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let catalog = catalog_of(&c.setup);
        let result = catalog.plan_push(&c.push.checked(), &opts(NOW, c.force));
        match (result, c.expect.is_empty()) {
            (Ok(plan), true) => {
                assert_eq!(plan.version.to_string(), c.push.version, "{}", c.what);
                assert!(plan.is_new_version, "{}", c.what);
            }
            (Ok(plan), false) => panic!("{}: accepted, plan {plan:?}", c.what),
            (Err(e), true) => panic!("{}: refused: {e:#?}", c.what),
            (Err(e), false) => assert_findings(c.what, &e, &c.expect),
        }
    }
}

use DiagnosticCode as C;

#[test]
fn versions_must_increase() {
    run(vec![
        case(
            "first version",
            vec![],
            doc("payments-guard", "1.0.0"),
            vec![],
        ),
        case(
            "higher version",
            vec![doc("payments-guard", "2.1.0")],
            doc("payments-guard", "2.1.1"),
            vec![],
        ),
        case(
            "lower version",
            vec![doc("payments-guard", "2.1.0")],
            doc("payments-guard", "2.0.0"),
            vec![(
                C::VersionNotIncreasing,
                "version",
                &["version 2.0.0 of payments-guard is not above 2.1.0, its last pushed version"],
            )],
        ),
        case(
            "same version",
            vec![doc("payments-guard", "2.1.0")],
            doc("payments-guard", "2.1.0"),
            vec![(C::VersionNotIncreasing, "version", &["not above 2.1.0"])],
        ),
        case(
            "other names do not count",
            vec![doc("other", "9.0.0")],
            doc("payments-guard", "1.0.0"),
            vec![],
        ),
    ]);
}

#[test]
fn policy_ids_stay_with_their_name() {
    const FOREIGN: &str = "2a0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f";
    run(vec![
        case(
            "same id across versions",
            vec![doc("payments-guard", "1.0.0")],
            doc("payments-guard", "1.1.0"),
            vec![],
        ),
        case(
            "changed id",
            vec![doc("payments-guard", "1.0.0")],
            doc("payments-guard", "1.1.0").id(FOREIGN),
            vec![(
                C::PolicyIdMismatch,
                "policyId",
                &[FOREIGN, "earlier versions of payments-guard"],
            )],
        ),
        case(
            "id of another name",
            vec![doc("other", "1.0.0").id(FOREIGN)],
            doc("payments-guard", "1.0.0").id(FOREIGN),
            vec![(
                C::PolicyIdMismatch,
                "policyId",
                &["already belongs", "`other`"],
            )],
        ),
    ]);
}

#[test]
fn strategies_and_major_upgrades() {
    let mut forced = case(
        "major upgrade with force",
        vec![doc("payments-guard", "1.4.0")],
        doc("payments-guard", "2.0.0"),
        vec![],
    );
    forced.force = true;
    run(vec![
        case(
            "canary of a first version is accepted",
            vec![],
            doc("payments-guard", "1.0.0").strategy("canary"),
            vec![],
        ),
        case(
            "a scheduled version cannot be rolled out",
            vec![doc("payments-guard", "1.0.0")],
            doc("payments-guard", "1.1.0")
                .window(Some("2026-02-01T00:00:00Z"), None)
                .strategy("shadow"),
            vec![(
                C::StrategyUnavailable,
                "activation.strategy",
                &["activation strategy `shadow` does not apply to a scheduled version"],
            )],
        ),
        case(
            "no rollout beside a scheduled version",
            vec![
                doc("payments-guard", "1.0.0"),
                doc("payments-guard", "1.1.0").window(Some("2026-02-01T00:00:00Z"), None),
            ],
            doc("payments-guard", "1.2.0").strategy("blue-green"),
            vec![(
                C::StrategyUnavailable,
                "activation.strategy",
                &["the scheduled payments-guard@1.1.0 can be in force instead"],
            )],
        ),
        case(
            "major upgrade without force",
            vec![doc("payments-guard", "1.4.0")],
            doc("payments-guard", "2.0.0"),
            vec![(
                C::MajorUpgradeNeedsForce,
                "version",
                &["a major upgrade (1.4.0 → 2.0.0) with immediate activation needs --force"],
            )],
        ),
        forced,
        case(
            "minor upgrade without force",
            vec![doc("payments-guard", "1.4.0")],
            doc("payments-guard", "1.5.0"),
            vec![],
        ),
        case(
            "first version of a major is not an upgrade",
            vec![],
            doc("payments-guard", "3.0.0"),
            vec![],
        ),
        case(
            "a major upgrade by canary needs no force",
            vec![doc("payments-guard", "1.4.0")],
            doc("payments-guard", "2.0.0").strategy("canary"),
            vec![],
        ),
    ]);
}

#[test]
fn dependencies_resolve_and_do_not_cycle() {
    run(vec![
        case(
            "dependency in range",
            vec![doc("base-safety", "1.3.0")],
            doc("payments-guard", "1.0.0").dep("base-safety", "^1.2"),
            vec![],
        ),
        case(
            "dependency never pushed",
            vec![],
            doc("payments-guard", "1.0.0").dep("base-safety", "^1.2"),
            vec![(
                C::MissingDependency,
                "dependencies[0].policy",
                &[
                    "`base-safety` ^1.2",
                    "no version of `base-safety` is pushed",
                ],
            )],
        ),
        case(
            "dependency out of range",
            vec![doc("base-safety", "1.0.0"), doc("base-safety", "2.0.0")],
            doc("payments-guard", "1.0.0")
                .dep("base-safety", "^2")
                .dep("base-safety", "^1.2"),
            vec![(
                C::MissingDependency,
                "dependencies[1].version",
                &["^1.2", "1.0.0, 2.0.0"],
            )],
        ),
        case(
            "a chain is not a cycle",
            vec![doc("b", "1.0.0"), doc("a", "1.0.0").dep("b", "^1")],
            doc("c", "1.0.0").dep("a", "^1"),
            vec![],
        ),
        case(
            "two-cycle",
            vec![doc("b", "1.0.0"), doc("a", "1.0.0").dep("b", "^1")],
            doc("b", "1.1.0").dep("a", "^1"),
            vec![(C::DependencyCycle, "dependencies[0].policy", &["b → a → b"])],
        ),
        case(
            "three-cycle",
            vec![
                doc("c", "1.0.0"),
                doc("b", "1.0.0").dep("c", "^1"),
                doc("a", "1.0.0").dep("b", "^1"),
            ],
            doc("c", "1.1.0").dep("base", "*").dep("a", "^1"),
            vec![
                (C::MissingDependency, "dependencies[0].policy", &["`base`"]),
                (
                    C::DependencyCycle,
                    "dependencies[1].policy",
                    &["c → a → b → c"],
                ),
            ],
        ),
    ]);
}

#[test]
fn dependency_on_a_pushed_but_inactive_version_resolves() {
    let mut catalog = Catalog::new();
    let base = doc("base-safety", "1.3.0").checked();
    catalog.record_pushed(&name("base-safety"), base.doc.policy_id, &base.doc.version);
    assert!(catalog.active_versions(&name("base-safety")).is_empty());
    let candidate = doc("payments-guard", "1.0.0").dep("base-safety", "^1.2");
    assert!(
        catalog
            .plan_push(&candidate.checked(), &opts(NOW, false))
            .is_ok()
    );
}

#[test]
fn declared_conflicts_both_ways() {
    run(vec![
        case(
            "candidate declares a conflict with an active version",
            vec![doc("legacy-guard", "1.5.0")],
            doc("payments-guard", "1.0.0").conflict("legacy-guard", "<2.0.0"),
            vec![(
                C::DeclaredConflict,
                "conflicts[0]",
                &[
                    "payments-guard@1.0.0",
                    "`legacy-guard <2.0.0`",
                    "legacy-guard@1.5.0",
                ],
            )],
        ),
        case(
            "declared range misses the active version",
            vec![doc("legacy-guard", "2.1.0")],
            doc("payments-guard", "1.0.0").conflict("legacy-guard", "<2.0.0"),
            vec![],
        ),
        case(
            "declared conflict with a name that is not active",
            vec![],
            doc("payments-guard", "1.0.0").conflict("legacy-guard", "*"),
            vec![],
        ),
        case(
            "an active version declares a conflict with the candidate",
            vec![doc("legacy-guard", "1.5.0").conflict("payments-guard", ">=2.0.0")],
            doc("payments-guard", "2.0.0"),
            vec![(
                C::DeclaredConflict,
                "version",
                &[
                    "legacy-guard@1.5.0",
                    "`payments-guard >=2.0.0`",
                    "payments-guard@2.0.0",
                ],
            )],
        ),
        case(
            "active declaration misses the candidate's version",
            vec![doc("legacy-guard", "1.5.0").conflict("payments-guard", ">=2.0.0")],
            doc("payments-guard", "1.9.0"),
            vec![],
        ),
    ]);
}

#[test]
fn resource_conflicts_on_same_key_and_scope() {
    let limits = || doc("limits", "1.0.0").quota("agent-quota", "agent", "50/s", 100);
    run(vec![
        case(
            "different quota on the same key and scope",
            vec![limits()],
            doc("payments-guard", "1.0.0").quota("agent-rate", "agent", "100/s", 200),
            vec![(
                C::ResourceConflict,
                "rules[1].quota",
                &[
                    "payments-guard@1.0.0#agent-rate",
                    "limits@1.0.0#agent-quota",
                    "`agent`",
                ],
            )],
        ),
        case(
            "same quota written another way",
            vec![limits()],
            doc("payments-guard", "1.0.0").quota("agent-rate", "agent", "3000/min", 100),
            vec![],
        ),
        case(
            "different burst",
            vec![limits()],
            doc("payments-guard", "1.0.0").quota("agent-rate", "agent", "50/s", 101),
            vec![(
                C::ResourceConflict,
                "rules[1].quota",
                &["burst 101", "burst 100"],
            )],
        ),
        case(
            "different key",
            vec![limits()],
            doc("payments-guard", "1.0.0").quota("pack-rate", "pack", "100/s", 200),
            vec![],
        ),
        case(
            "different scope",
            vec![limits()],
            doc("payments-guard", "1.0.0")
                .scope("payment.*.*.deu.fintech")
                .quota("agent-rate", "agent", "100/s", 200),
            vec![],
        ),
        case(
            "earlier versions of the same name do not conflict",
            vec![doc("payments-guard", "1.0.0").quota("agent-rate", "agent", "50/s", 100)],
            doc("payments-guard", "1.1.0").quota("agent-rate", "agent", "100/s", 200),
            vec![],
        ),
        case(
            "different concurrency limit",
            vec![doc("limits", "1.0.0").concurrency("inflight", "pack", 50)],
            doc("payments-guard", "1.0.0").concurrency("pack-inflight", "pack", 20),
            vec![(
                C::ResourceConflict,
                "rules[1].concurrency",
                &["limit 20", "limit 50", "limits@1.0.0#inflight"],
            )],
        ),
        case(
            "same concurrency limit",
            vec![doc("limits", "1.0.0").concurrency("inflight", "pack", 50)],
            doc("payments-guard", "1.0.0").concurrency("pack-inflight", "pack", 50),
            vec![],
        ),
    ]);
}

#[test]
fn validity_windows() {
    let feb = (Some("2026-02-01T00:00:00Z"), Some("2026-03-01T00:00:00Z"));
    let with_window =
        |v: &str, w: (Option<&str>, Option<&str>)| doc("payments-guard", v).window(w.0, w.1);
    run(vec![
        case(
            "scheduled beside standing",
            vec![doc("payments-guard", "1.0.0")],
            with_window("1.1.0", feb),
            vec![],
        ),
        case(
            "overlapping windows",
            vec![doc("payments-guard", "1.0.0"), with_window("1.1.0", feb)],
            with_window(
                "1.2.0",
                (Some("2026-02-15T00:00:00Z"), Some("2026-04-01T00:00:00Z")),
            ),
            vec![(
                C::TemporalConflict,
                "validity",
                &[
                    "payments-guard@1.2.0 (from 2026-02-15T00:00:00Z until 2026-04-01T00:00:00Z)",
                    "payments-guard@1.1.0 (from 2026-02-01T00:00:00Z until 2026-03-01T00:00:00Z)",
                ],
            )],
        ),
        case(
            "open-ended window overlaps",
            vec![with_window("1.1.0", feb)],
            with_window("1.2.0", (None, None)),
            vec![(C::TemporalConflict, "validity", &["(always)"])],
        ),
        case(
            "adjacent windows",
            vec![with_window("1.1.0", feb)],
            with_window("1.2.0", (Some("2026-03-01T00:00:00Z"), None)),
            vec![],
        ),
        case(
            "ended window",
            vec![],
            with_window("1.0.0", (None, Some("2025-12-31T00:00:00Z"))),
            vec![(
                C::TemporalConflict,
                "validity.until",
                &["ended at 2025-12-31T00:00:00Z (now is 2026-01-01T00:00:00Z)"],
            )],
        ),
        case(
            "window ending now has ended",
            vec![],
            with_window("1.0.0", (None, Some(NOW))),
            vec![(C::TemporalConflict, "validity.until", &["ended at"])],
        ),
    ]);
}

#[test]
fn several_findings_at_once() {
    run(vec![case(
        "four problems",
        vec![doc("payments-guard", "2.1.0"), doc("legacy-guard", "1.0.0")],
        doc("payments-guard", "2.0.0")
            .window(None, Some("2027-01-01T00:00:00Z"))
            .strategy("canary")
            .dep("base-safety", "^1")
            .conflict("legacy-guard", "^1"),
        vec![
            (C::VersionNotIncreasing, "version", &["2.0.0"]),
            (C::StrategyUnavailable, "activation.strategy", &["`canary`"]),
            (
                C::MissingDependency,
                "dependencies[0].policy",
                &["base-safety"],
            ),
            (C::DeclaredConflict, "conflicts[0]", &["legacy-guard@1.0.0"]),
        ],
    )]);
}

#[test]
fn plans_replace_standing_keep_scheduled_and_prune_ended() {
    let mut catalog = catalog_of(&[doc("payments-guard", "1.0.0")]);
    let pg = name("payments-guard");

    let plan = push(
        &mut catalog,
        &doc("payments-guard", "1.1.0")
            .window(Some("2026-02-01T00:00:00Z"), Some("2026-03-01T00:00:00Z")),
        NOW,
    );
    assert!(plan.removed.is_empty());
    assert_eq!(
        versions(&plan.active_after),
        ["payments-guard@1.0.0", "payments-guard@1.1.0"]
    );

    // A new standing version replaces the old one and keeps the pending window.
    let plan = push(&mut catalog, &doc("payments-guard", "1.2.0"), NOW);
    assert_eq!(strings(&plan.removed), ["1.0.0"]);
    assert_eq!(
        versions(&plan.active_after),
        ["payments-guard@1.1.0", "payments-guard@1.2.0"]
    );

    // After the window ended, any plan for the name prunes it.
    let later = "2026-03-01T00:00:00Z";
    let scheduled = doc("payments-guard", "1.3.0").window(Some("2026-06-01T00:00:00Z"), None);
    let plan = catalog
        .plan_push(&scheduled.checked(), &opts(later, false))
        .expect("a later window is accepted");
    assert_eq!(strings(&plan.removed), ["1.1.0"]);
    assert_eq!(
        versions(&plan.active_after),
        ["payments-guard@1.2.0", "payments-guard@1.3.0"]
    );
    catalog.apply(&plan);
    assert_eq!(
        catalog
            .active_versions(&pg)
            .iter()
            .map(|p| p.doc.version.to_string())
            .collect::<Vec<_>>(),
        ["1.2.0", "1.3.0"]
    );
    // `apply` records the new version even without `record_pushed`.
    assert_eq!(
        strings(&catalog.pushed_versions(&pg)),
        ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    );
}

#[test]
fn in_force_switches_at_window_boundaries() {
    let catalog = catalog_of(&[
        doc("payments-guard", "1.0.0"),
        doc("payments-guard", "1.1.0")
            .window(Some("2026-02-01T00:00:00Z"), Some("2026-03-01T00:00:00Z")),
        doc("payments-guard", "1.2.0").window(Some("2026-04-01T00:00:00Z"), None),
        doc("holiday", "1.0.0").window(Some("2026-03-15T00:00:00Z"), Some("2026-03-20T00:00:00Z")),
    ]);
    let table = [
        (
            "2026-01-15T00:00:00Z",
            vec!["payments-guard@1.0.0"],
            Some("2026-02-01T00:00:00Z"),
        ),
        (
            "2026-02-01T00:00:00Z",
            vec!["payments-guard@1.1.0"],
            Some("2026-03-01T00:00:00Z"),
        ),
        (
            "2026-02-28T23:59:59Z",
            vec!["payments-guard@1.1.0"],
            Some("2026-03-01T00:00:00Z"),
        ),
        (
            "2026-03-01T00:00:00Z",
            vec!["payments-guard@1.0.0"],
            Some("2026-03-15T00:00:00Z"),
        ),
        (
            "2026-03-15T00:00:00Z",
            vec!["holiday@1.0.0", "payments-guard@1.0.0"],
            Some("2026-03-20T00:00:00Z"),
        ),
        (
            "2026-03-20T00:00:00Z",
            vec!["payments-guard@1.0.0"],
            Some("2026-04-01T00:00:00Z"),
        ),
        ("2026-04-01T00:00:00Z", vec!["payments-guard@1.2.0"], None),
    ];
    for (at, want, next) in table {
        let (in_force, boundary) = catalog.in_force(ts(at));
        assert_eq!(versions(&in_force), want, "at {at}");
        assert_eq!(boundary, next.map(ts), "next boundary after {at}");
    }
}

#[test]
fn rollbacks() {
    let setup = || {
        let mut c = catalog_of(&[
            doc("payments-guard", "2.1.0"),
            doc("payments-guard", "3.0.0"),
            doc("payments-guard", "5.0.0"),
            doc("payments-guard", "5.1.0").window(Some("2026-02-01T00:00:00Z"), None),
        ]);
        push(
            &mut c,
            &doc("legacy-guard", "1.0.0").conflict("payments-guard", "<3.0.0"),
            NOW,
        );
        c
    };
    let catalog = setup();
    let rollback = |v: &str| catalog.plan_rollback(&doc("payments-guard", v).checked(), ts(NOW));

    let plan = rollback("3.0.0").expect("two majors back is allowed");
    assert_eq!(versions(&plan.active_after), ["payments-guard@3.0.0"]);
    assert_eq!(strings(&plan.removed), ["5.0.0", "5.1.0"]);
    assert!(!plan.is_new_version);

    let table: [(&str, Vec<Finding>); 4] = [
        (
            "2.1.0",
            vec![
                (
                    C::RollbackLimit,
                    "version",
                    &["rollback from 5.0.0 to 2.1.0 goes back 3 major versions; the limit is 2"],
                ),
                (C::DeclaredConflict, "version", &["legacy-guard@1.0.0"]),
            ],
        ),
        (
            "5.0.0",
            vec![(
                C::RollbackLimit,
                "version",
                &["already the standing version"],
            )],
        ),
        (
            "4.0.0",
            vec![(C::RollbackLimit, "version", &["never pushed"])],
        ),
        (
            "1.0.0",
            vec![
                (C::RollbackLimit, "version", &["never pushed"]),
                (C::RollbackLimit, "version", &["goes back 4 major versions"]),
                (C::DeclaredConflict, "version", &["legacy-guard@1.0.0"]),
            ],
        ),
    ];
    for (target, expect) in table {
        match rollback(target) {
            Ok(plan) => panic!("rollback to {target} accepted: {plan:?}"),
            Err(e) => assert_findings(target, &e, &expect),
        }
    }

    let mut catalog = setup();
    let plan = catalog
        .plan_rollback(&doc("payments-guard", "3.0.0").checked(), ts(NOW))
        .expect("allowed");
    catalog.apply(&plan);
    let (in_force, _) = catalog.in_force(ts("2026-06-01T00:00:00Z"));
    assert_eq!(
        versions(&in_force),
        ["legacy-guard@1.0.0", "payments-guard@3.0.0"]
    );
    assert_eq!(catalog.pushed_versions(&name("payments-guard")).len(), 4);
}

#[test]
fn findings_point_at_the_right_lines() {
    let catalog = catalog_of(&[
        doc("payments-guard", "1.0.0"),
        doc("limits", "1.0.0").quota("q", "agent", "1/s", 1),
    ]);
    // `version:` appears under dependencies before the top-level one.
    let text = "\
policyId: 2b0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f
name: payments-guard
namespace: \"payment.*.*.usa.fintech\"
dependencies:
- policy: base-safety
  version: \"^1\"
- policy: other
  version: \"^1\"
version: \"0.9.0\"
rules:
  - id: allow-all
    cedar: |
      permit(principal, action, resource);
  - id: agent-rate
    quota: { key: agent, rate: 5/s, burst: 5 }
";
    let policy = Arc::new(check_document("test.yaml", text, None).expect("checks"));
    let findings = catalog
        .plan_push(&policy, &opts(NOW, false))
        .expect_err("refused");
    let at: Vec<_> = findings
        .iter()
        .map(|d| (d.field.as_deref().unwrap_or(""), d.line, d.column))
        .collect();
    assert_eq!(
        at,
        [
            ("version", Some(9), Some(1)),
            ("policyId", Some(1), Some(1)),
            ("dependencies[0].policy", Some(5), Some(3)),
            ("dependencies[1].policy", Some(7), Some(3)),
            ("rules[1].quota", Some(14), Some(5)),
        ]
    );
}

#[test]
fn catalog_listing() {
    let mut catalog = catalog_of(&[doc("b", "1.0.0"), doc("a", "1.0.0"), doc("a", "1.1.0")]);
    let a = doc("a", "1.1.0").checked();
    catalog.record_pushed(&name("c"), a.doc.policy_id, &semver::Version::new(1, 0, 0));
    assert_eq!(
        catalog.names().map(PolicyName::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(catalog.active().count(), 2);
    catalog.set_active(&name("a"), Vec::new());
    assert!(catalog.active_versions(&name("a")).is_empty());
    assert_eq!(
        strings(&catalog.pushed_versions(&name("a"))),
        ["1.0.0", "1.1.0"]
    );
    assert!(catalog.pushed_versions(&name("zzz")).is_empty());
}

/// One push of the property test: which name, an optional window in hours from the
/// push instant, and how far the clock moves first.
#[derive(Debug, Clone)]
struct Step {
    name: usize,
    window: Option<(Option<i64>, Option<i64>)>,
    advance_hours: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..3usize,
        proptest::option::of((
            proptest::option::of(-5i64..20),
            proptest::option::of(1i64..30),
        )),
        0i64..12,
    )
        .prop_map(|(name, window, advance_hours)| Step {
            name,
            window: window.map(|(from, len)| (from, len.map(|l| from.unwrap_or(0) + l))),
            advance_hours,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_force_holds_at_most_one_version_per_name(
        steps in proptest::collection::vec(step(), 1..16),
        probes in proptest::collection::vec(0i64..200, 1..8),
    ) {
        const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
        let start = ts(NOW);
        let hours = time::Duration::hours;
        let mut catalog = Catalog::new();
        let mut now = start;
        for (i, s) in steps.iter().enumerate() {
            now += hours(s.advance_hours);
            let rfc = |h: i64| (now + hours(h)).format(&Rfc3339).expect("formats");
            let mut d = doc(NAMES[s.name], &format!("1.{i}.0"))
                .quota("q", "agent", "1/s", 1);
            if let Some((from, until)) = s.window {
                d = d.window(from.map(rfc).as_deref(), until.map(rfc).as_deref());
            }
            let policy = d.checked();
            if let Ok(plan) = catalog.plan_push(&policy, &opts(&rfc(0), false)) {
                catalog.record_pushed(&plan.name, policy.doc.policy_id, &plan.version);
                catalog.apply(&plan);
            }
        }
        for p in probes {
            let at = start + hours(p);
            let (in_force, next) = catalog.in_force(at);
            let mut names: Vec<_> = in_force.iter().map(|p| p.doc.name.clone()).collect();
            let before = names.len();
            names.dedup();
            prop_assert_eq!(names.len(), before, "two versions of one name at {}", at);
            if let Some(next) = next {
                prop_assert!(next > at);
            }
            for p in &in_force {
                prop_assert!(p.doc.validity.is_none_or(|w| w.contains(at)));
            }
        }
        for n in NAMES {
            let active = catalog.active_versions(&name(n));
            prop_assert!(active.iter().filter(|p| p.doc.validity.is_none()).count() <= 1);
        }
    }
}

#[test]
fn upgrade_path_shows_range_path_and_rollback_limit() {
    let mut catalog = Catalog::new();
    for v in ["1.0.0", "1.2.0", "2.0.0", "3.0.0", "3.1.0"] {
        push(&mut catalog, &doc("base-safety", v), NOW);
    }
    // Roll back to 2.0.0 so 3.0.0 and 3.1.0 lie ahead on the path.
    let target = doc("base-safety", "2.0.0").checked();
    let plan = catalog
        .plan_rollback(&target, ts(NOW))
        .expect("rollback plans");
    catalog.apply(&plan);
    push(
        &mut catalog,
        &doc("payments-guard", "1.0.0").dep("base-safety", ">=2.0.0, <3.1.0"),
        NOW,
    );
    let up = catalog
        .upgrade_path(&name("base-safety"))
        .expect("base-safety was pushed");
    let versions = |vs: &[semver::Version]| vs.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(up.current.map(|v| v.to_string()), Some("2.0.0".into()));
    assert_eq!(up.dependents.len(), 1);
    assert_eq!(up.dependents[0].policy, "payments-guard@1.0.0");
    assert_eq!(versions(&up.compatible), ["2.0.0", "3.0.0"]);
    let path: Vec<_> = up
        .path
        .iter()
        .map(|s| {
            (
                s.version.to_string(),
                s.change,
                s.needs_rollout_or_force,
                s.compatible,
            )
        })
        .collect();
    use dynscale_core::catalog::VersionChange::*;
    assert_eq!(
        path,
        [
            ("3.0.0".to_owned(), Major, true, true),
            ("3.1.0".to_owned(), Minor, false, false),
        ]
    );
    assert_eq!(up.path[1].breaks, ["payments-guard@1.0.0"]);
    assert_eq!(up.rollback_limit_majors, 2);
    assert_eq!(up.rollback_floor_major, Some(0));
    assert_eq!(versions(&up.rollback_targets), ["1.0.0", "1.2.0"]);
    assert!(catalog.upgrade_path(&name("never-pushed")).is_none());
}

#[test]
fn promotion_replaces_the_standing_version() {
    let mut catalog = Catalog::new();
    push(&mut catalog, &doc("payments-guard", "1.0.0"), NOW);
    let candidate = doc("payments-guard", "1.1.0").strategy("canary").checked();
    catalog.record_pushed(
        &name("payments-guard"),
        candidate.doc.policy_id,
        &candidate.doc.version,
    );
    assert_eq!(
        catalog
            .standing_version(&name("payments-guard"))
            .map(|p| p.doc.version.to_string()),
        Some("1.0.0".into())
    );
    let plan = catalog.plan_promotion(&candidate);
    assert_eq!(plan.removed, [semver::Version::new(1, 0, 0)]);
    assert!(!plan.is_new_version);
    catalog.apply(&plan);
    let active: Vec<String> = catalog
        .active_versions(&name("payments-guard"))
        .iter()
        .map(|p| p.doc.version.to_string())
        .collect();
    assert_eq!(active, ["1.1.0"]);
}
