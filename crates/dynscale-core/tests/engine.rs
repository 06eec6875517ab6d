//! Tests of the decision engine: checked policy documents compiled into a snapshot,
//! evaluated against requests built from JSON, and decided under operator controls.
//!
//! Sections: table-driven decisions over a realistic fintech/retail policy set; the
//! action index; every checked policy compiling; incremental compilation; a
//! model-based property test against a naive oracle (every matching policy in one
//! Cedar set). Known bugs are `#[ignore]`d tests that state the bug.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Effect, Entities, EntityUid, PolicySet, Request, RestrictedExpression,
};
use dynscale_core::controls::{ControlState, KillScope, Quarantine};
use dynscale_core::decision::{Decision, DecisionEffect, Outcome, decide};
use dynscale_core::ids::{AgentId, PackId, SnapshotId};
use dynscale_core::policy::{CheckedPolicy, RuleEffect, check_document};
use dynscale_core::request::{ActionInput, ActionRequest};
use dynscale_core::snapshot::{
    DefaultDecision, EngineConfig, EvalError, Evaluation, PolicyVerdict, RuleHit, Snapshot,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// Fixtures shared by every section.
// ---------------------------------------------------------------------------------

const POLICY_ID: &str = "1f0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f";
const AGENT: &str = "a1";

/// Renders a policy document with one Cedar text per rule.
fn document(name: &str, version: &str, scope: &str, rules: &[(&str, &str)]) -> String {
    let mut text = format!(
        "policyId: {POLICY_ID}\nname: {name}\nversion: {version}\nnamespace: \"{scope}\"\nrules:\n"
    );
    for (id, cedar) in rules {
        text.push_str(&format!("  - id: {id}\n    cedar: |\n"));
        for line in cedar.lines() {
            text.push_str("      ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// A checked policy; the fixtures are meant to be valid, so a finding fails the test.
fn policy_version(
    name: &str,
    version: &str,
    scope: &str,
    rules: &[(&str, &str)],
) -> Arc<CheckedPolicy> {
    let text = document(name, version, scope, rules);
    match check_document("t.yaml", &text, None) {
        Ok(p) => Arc::new(p),
        Err(findings) => panic!("fixture {name} does not check: {findings:#?}\n{text}"),
    }
}

fn policy(name: &str, scope: &str, rules: &[(&str, &str)]) -> Arc<CheckedPolicy> {
    policy_version(name, "1.0.0", scope, rules)
}

fn compile(
    policies: &[Arc<CheckedPolicy>],
    config: &Arc<EngineConfig>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    Snapshot::compile(
        SnapshotId(1),
        policies.to_vec(),
        None,
        Arc::clone(config),
        previous,
    )
    .unwrap_or_else(|e| panic!("checked policies must compile: {e}"))
}

fn deny_by_default() -> Arc<EngineConfig> {
    Arc::new(EngineConfig::default())
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// A request from agent `a1` on `Account::"acct-1"`; `ctx` gets the namespace added.
fn request(namespace: &str, action: &str, subject: Value, ctx: Value) -> ActionRequest {
    let subject = object(subject);
    let mut context = object(ctx);
    context.insert("namespace".into(), Value::String(namespace.into()));
    let resource = Map::new();
    let input = ActionInput {
        subject_type: "Agent",
        subject_id: AGENT,
        subject_properties: &subject,
        action,
        resource_type: "Account",
        resource_id: "acct-1",
        resource_properties: &resource,
        context: &context,
        default_namespace: None,
    };
    ActionRequest::build(&input, None).unwrap_or_else(|e| panic!("fixture request must build: {e}"))
}

fn labels(hits: &[RuleHit]) -> Vec<String> {
    let mut out: Vec<String> = hits.iter().map(RuleHit::label).collect();
    out.sort();
    out
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut out = items.to_vec();
    out.sort();
    out
}

/// An evaluation with every list in a canonical order: Cedar reports reasons from a
/// hash set, so only the sets are meaningful.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Normal {
    Unknown(String),
    Forbid(Vec<String>),
    Permit(Vec<String>),
    Default(DefaultDecision),
}

fn normalize(result: &Result<Evaluation, EvalError>) -> (Normal, Vec<String>, Vec<String>) {
    match result {
        Err(EvalError::UnknownNamespace { root, .. }) => {
            (Normal::Unknown(root.clone()), Vec::new(), Vec::new())
        }
        Err(e @ EvalError::Cedar(_)) => panic!("{e}"),
        Ok(e) => {
            let verdict = match &e.verdict {
                PolicyVerdict::Forbid(h) => Normal::Forbid(labels(h)),
                PolicyVerdict::Permit(h) => Normal::Permit(labels(h)),
                PolicyVerdict::Default(d) => Normal::Default(*d),
            };
            let policies = e.policies.iter().map(|p| p.to_string()).collect();
            let mut rest = labels(&e.advisories);
            rest.extend(sorted(&e.errors));
            (verdict, rest, policies)
        }
    }
}

// ---------------------------------------------------------------------------------
// Table-driven decisions over a realistic policy set.
// ---------------------------------------------------------------------------------

mod decisions {
    use super::*;

    const USA: &str = "payment.processing.americas.usa.fintech";
    const DEU: &str = "payment.processing.europe.deu.fintech";
    const RETAIL: &str = "shop.checkout.europe.fra.retail";
    const APPROVAL: Uuid = Uuid::from_u128(0xa11);
    const QUARANTINE_DECISION: Uuid = Uuid::from_u128(0xd1);

    fn fintech_policies() -> Vec<Arc<CheckedPolicy>> {
        vec![
            policy(
                "fintech-base",
                "*.*.*.*.fintech",
                &[
                    (
                        "transfer-ok",
                        r#"permit(principal, action == Action::"transfer", resource);"#,
                    ),
                    (
                        "report-warn",
                        "@effect(\"warn\")\npermit(principal, action == Action::\"report\", resource);",
                    ),
                    (
                        "export-ok",
                        r#"permit(principal, action == Action::"export", resource);"#,
                    ),
                    (
                        "deploy-alpha",
                        r#"permit(principal in Pack::"alpha", action == Action::"deploy", resource);"#,
                    ),
                    (
                        "trade-ok",
                        r#"permit(principal, action == Action::"trade", resource);"#,
                    ),
                    (
                        "pay-ok",
                        r#"permit(principal, action == Action::"pay", resource);"#,
                    ),
                    (
                        "wire-ok",
                        r#"permit(principal, action == Action::"wire", resource);"#,
                    ),
                    (
                        "exfiltrate-ok",
                        r#"permit(principal, action == Action::"exfiltrate", resource);"#,
                    ),
                    (
                        "audit-cleared",
                        concat!(
                            r#"permit(principal, action == Action::"audit", resource) "#,
                            r#"when { principal.clearance == "high" };"#
                        ),
                    ),
                ],
            ),
            policy(
                "fintech-guard",
                "*.*.*.*.fintech",
                &[
                    (
                        "export-advisory",
                        "@effect(\"warn\")\nforbid(principal, action == Action::\"export\", resource)\n  when { context.rows > 1000 };",
                    ),
                    (
                        "delete-advisory",
                        "@effect(\"warn\")\nforbid(principal, action == Action::\"delete\", resource);",
                    ),
                    (
                        "exfiltrate-quarantine",
                        "@effect(\"quarantine\")\nforbid(principal, action == Action::\"exfiltrate\", resource);",
                    ),
                    (
                        "wire-escalate",
                        "@effect(\"escalate\")\nforbid(principal, action == Action::\"wire\", resource)\n  when { context.amount > 1000 };",
                    ),
                    (
                        "purge-quarantine",
                        "@effect(\"quarantine\")\nforbid(principal, action == Action::\"purge\", resource);",
                    ),
                    (
                        "purge-escalate",
                        "@effect(\"escalate\")\nforbid(principal, action == Action::\"purge\", resource);",
                    ),
                    (
                        "low-credit",
                        "forbid(principal, action == Action::\"trade\", resource)\n  when { principal.credit_score < 150 };",
                    ),
                    (
                        "pay-over-ten",
                        "forbid(principal, action == Action::\"pay\", resource)\n  when { context.amount.greaterThan(decimal(\"10.0\")) };",
                    ),
                ],
            ),
            policy(
                "payments-usa",
                "payment.*.*.usa.fintech",
                &[(
                    "no-big-transfer",
                    "forbid(principal, action == Action::\"transfer\", resource)\n  when { context.amount > 10000 };",
                )],
            ),
            policy(
                "retail-base",
                "*.*.*.*.retail",
                &[(
                    "refund-limit",
                    "forbid(principal, action == Action::\"refund\", resource)\n  when { context.amount > 500 };",
                )],
            ),
        ]
    }

    fn snapshot() -> Snapshot {
        let config = EngineConfig {
            default_decision: DefaultDecision::Deny,
            namespace_defaults: BTreeMap::from([("retail".to_owned(), DefaultDecision::Allow)]),
            ..EngineConfig::default()
        };
        compile(&fintech_policies(), &Arc::new(config), None)
    }

    /// Operator controls a case runs under.
    #[derive(Debug, Clone)]
    enum Control {
        None,
        Kill(KillScope),
        Quarantined,
        /// An approved escalation for exactly the case's request.
        ApproveThis,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fx {
        None,
        Quarantine,
        Open,
        Consume,
    }

    #[derive(Debug)]
    struct Case {
        name: &'static str,
        namespace: &'static str,
        action: &'static str,
        subject: Value,
        context: Value,
        control: Control,
        outcome: Outcome,
        /// Exact reasons, order-insensitive.
        reasons: Vec<String>,
        warnings: Vec<&'static str>,
        effect: Fx,
        /// `name@version` of the policies evaluated, when the case checks them.
        policies: Option<Vec<&'static str>>,
        /// Whether some policy's evaluation failed.
        errors: bool,
    }

    impl Case {
        fn new(name: &'static str, namespace: &'static str, action: &'static str) -> Self {
            Case {
                name,
                namespace,
                action,
                subject: json!({}),
                context: json!({}),
                control: Control::None,
                outcome: Outcome::Deny,
                reasons: Vec::new(),
                warnings: Vec::new(),
                effect: Fx::None,
                policies: None,
                errors: false,
            }
        }
        fn subject(mut self, v: Value) -> Self {
            self.subject = v;
            self
        }
        fn context(mut self, v: Value) -> Self {
            self.context = v;
            self
        }
        fn control(mut self, c: Control) -> Self {
            self.control = c;
            self
        }
        fn expect(mut self, outcome: Outcome, reasons: &[&str]) -> Self {
            self.outcome = outcome;
            self.reasons = reasons.iter().map(|r| (*r).to_owned()).collect();
            self
        }
        fn reason(mut self, r: String) -> Self {
            self.reasons.push(r);
            self
        }
        fn warnings(mut self, w: &[&'static str]) -> Self {
            self.warnings = w.to_vec();
            self
        }
        fn effect(mut self, fx: Fx) -> Self {
            self.effect = fx;
            self
        }
        fn policies(mut self, p: &[&'static str]) -> Self {
            self.policies = Some(p.to_vec());
            self
        }
        fn with_errors(mut self) -> Self {
            self.errors = true;
            self
        }
    }

    fn default_deny(root: &str) -> String {
        format!("no policy permits this action; default of `{root}` is deny")
    }

    fn cases() -> Vec<Case> {
        use Outcome::*;
        let quarantined = format!(
            "agent {AGENT} is quarantined (decision {QUARANTINE_DECISION}: earlier incident)"
        );
        vec![
            // Deny-overrides across scopes: the org permit loses to the country forbid.
            Case::new("org permit, usa forbid satisfied", USA, "transfer")
                .context(json!({"amount": 20000}))
                .expect(Deny, &["payments-usa@1.0.0#no-big-transfer"])
                .policies(&["fintech-base@1.0.0", "payments-usa@1.0.0"]),
            Case::new("org permit, usa forbid not satisfied", USA, "transfer")
                .context(json!({"amount": 50}))
                .expect(Allow, &["fintech-base@1.0.0#transfer-ok"])
                .policies(&["fintech-base@1.0.0", "payments-usa@1.0.0"]),
            Case::new("usa forbid does not reach germany", DEU, "transfer")
                .context(json!({"amount": 20000}))
                .expect(Allow, &["fintech-base@1.0.0#transfer-ok"])
                .policies(&["fintech-base@1.0.0"]),
            // Effects.
            Case::new("warn permit", USA, "report")
                .expect(Warn, &["fintech-base@1.0.0#report-warn"])
                .warnings(&["warn fintech-base@1.0.0#report-warn"]),
            Case::new("advisory forbid satisfied beside a permit", USA, "export")
                .context(json!({"rows": 5000}))
                .expect(Warn, &["fintech-base@1.0.0#export-ok"])
                .warnings(&["advisory fintech-guard@1.0.0#export-advisory"]),
            Case::new("advisory forbid not satisfied", USA, "export")
                .context(json!({"rows": 10}))
                .expect(Allow, &["fintech-base@1.0.0#export-ok"]),
            Case::new(
                "advisory forbid alone keeps the default deny",
                USA,
                "delete",
            )
            .expect(Deny, &[])
            .reason(default_deny("fintech"))
            .policies(&["fintech-guard@1.0.0"]),
            Case::new("quarantine forbid", USA, "exfiltrate")
                .expect(Quarantine, &["fintech-guard@1.0.0#exfiltrate-quarantine"])
                .effect(Fx::Quarantine),
            Case::new("escalate forbid", USA, "wire")
                .context(json!({"amount": 5000}))
                .expect(Escalate, &["fintech-guard@1.0.0#wire-escalate"])
                .effect(Fx::Open),
            Case::new("escalate forbid with this request approved", USA, "wire")
                .context(json!({"amount": 5000}))
                .control(Control::ApproveThis)
                .expect(Allow, &[])
                .reason(format!(
                    "escalation {APPROVAL} approved (fintech-guard@1.0.0#wire-escalate)"
                ))
                .effect(Fx::Consume),
            Case::new("escalate forbid not satisfied", USA, "wire")
                .context(json!({"amount": 10}))
                .expect(Allow, &["fintech-base@1.0.0#wire-ok"]),
            Case::new("quarantine beats escalate", USA, "purge")
                .expect(
                    Quarantine,
                    &[
                        "fintech-guard@1.0.0#purge-escalate",
                        "fintech-guard@1.0.0#purge-quarantine",
                    ],
                )
                .effect(Fx::Quarantine),
            Case::new("quarantine beats an approved escalation", USA, "purge")
                .control(Control::ApproveThis)
                .expect(
                    Quarantine,
                    &[
                        "fintech-guard@1.0.0#purge-escalate",
                        "fintech-guard@1.0.0#purge-quarantine",
                    ],
                )
                .effect(Fx::Quarantine),
            // Operator controls come before policies.
            Case::new("global kill switch", USA, "transfer")
                .context(json!({"amount": 50}))
                .control(Control::Kill(KillScope::Global))
                .expect(Deny, &["kill switch: global"])
                .policies(&[]),
            Case::new("pack kill switch", USA, "transfer")
                .subject(json!({"pack": "alpha"}))
                .context(json!({"amount": 50}))
                .control(Control::Kill(KillScope::Pack(PackId::from("alpha"))))
                .expect(Deny, &["kill switch: pack alpha"])
                .policies(&[]),
            Case::new("kill switch of another pack", USA, "transfer")
                .subject(json!({"pack": "beta"}))
                .context(json!({"amount": 50}))
                .control(Control::Kill(KillScope::Pack(PackId::from("alpha"))))
                .expect(Allow, &["fintech-base@1.0.0#transfer-ok"]),
            Case::new("agent kill switch", USA, "transfer")
                .context(json!({"amount": 50}))
                .control(Control::Kill(KillScope::Agent(AgentId::from(AGENT))))
                .expect(Deny, &["kill switch: agent a1"]),
            Case::new(
                "kill switch before a quarantine forbid",
                RETAIL,
                "exfiltrate",
            )
            .control(Control::Kill(KillScope::Global))
            .expect(Deny, &["kill switch: global"]),
            Case::new("quarantined agent", USA, "transfer")
                .context(json!({"amount": 50}))
                .control(Control::Quarantined)
                .expect(Deny, &[])
                .reason(quarantined)
                .policies(&[]),
            // Defaults and unknown namespaces (the latter are checked apart).
            Case::new("no rule for the action: default deny", USA, "rename")
                .expect(Deny, &[])
                .reason(default_deny("fintech"))
                .policies(&[]),
            Case::new("configured default allow", RETAIL, "read")
                .expect(Allow, &["no policy applies; default of `retail` is allow"])
                .policies(&[]),
            Case::new(
                "fintech quarantine rule does not reach retail",
                RETAIL,
                "exfiltrate",
            )
            .expect(Allow, &["no policy applies; default of `retail` is allow"]),
            Case::new("retail forbid", RETAIL, "refund")
                .context(json!({"amount": 600}))
                .expect(Deny, &["retail-base@1.0.0#refund-limit"])
                .policies(&["retail-base@1.0.0"]),
            // Entities and attributes.
            Case::new("principal in pack alpha", USA, "deploy")
                .subject(json!({"pack": "alpha"}))
                .expect(Allow, &["fintech-base@1.0.0#deploy-alpha"]),
            Case::new("principal in another pack", USA, "deploy")
                .subject(json!({"pack": "beta"}))
                .expect(Deny, &[])
                .reason(default_deny("fintech")),
            Case::new("principal in no pack", USA, "deploy")
                .expect(Deny, &[])
                .reason(default_deny("fintech")),
            Case::new("low credit score", USA, "trade")
                .subject(json!({"credit_score": 100}))
                .expect(Deny, &["fintech-guard@1.0.0#low-credit"]),
            Case::new("good credit score", USA, "trade")
                .subject(json!({"credit_score": 200}))
                .expect(Allow, &["fintech-base@1.0.0#trade-ok"]),
            Case::new(
                "credit score missing: the forbid errors and is skipped",
                USA,
                "trade",
            )
            .expect(Allow, &["fintech-base@1.0.0#trade-ok"])
            .policies(&["fintech-base@1.0.0", "fintech-guard@1.0.0"])
            .with_errors(),
            Case::new(
                "clearance missing: the permit errors, default deny",
                USA,
                "audit",
            )
            .expect(Deny, &[])
            .reason(default_deny("fintech"))
            .with_errors(),
            Case::new("clearance high", USA, "audit")
                .subject(json!({"clearance": "high"}))
                .expect(Allow, &["fintech-base@1.0.0#audit-cleared"]),
            Case::new("decimal amount above 10.0", USA, "pay")
                .context(json!({"amount": 12.5}))
                .expect(Deny, &["fintech-guard@1.0.0#pay-over-ten"]),
            Case::new("decimal amount below 10.0", USA, "pay")
                .context(json!({"amount": 9.75}))
                .expect(Allow, &["fintech-base@1.0.0#pay-ok"]),
        ]
    }

    fn controls_for(control: &Control, req: &ActionRequest) -> ControlState {
        let mut c = ControlState::default();
        match control {
            Control::None => {}
            Control::Kill(scope) => {
                c.kill_switches.insert(scope.clone());
            }
            Control::Quarantined => {
                c.quarantined.insert(
                    AgentId::from(AGENT),
                    Quarantine {
                        agent: AgentId::from(AGENT),
                        since: OffsetDateTime::UNIX_EPOCH,
                        decision_id: QUARANTINE_DECISION,
                        reason: "earlier incident".into(),
                    },
                );
            }
            Control::ApproveThis => {
                c.approved.insert(req.fingerprint.clone(), APPROVAL);
            }
        }
        c
    }

    fn effect_kind(d: &Decision) -> Fx {
        match &d.effect {
            None => Fx::None,
            Some(DecisionEffect::QuarantineAgent { .. }) => Fx::Quarantine,
            Some(DecisionEffect::OpenEscalation { .. }) => Fx::Open,
            Some(DecisionEffect::ConsumeApproval { .. }) => Fx::Consume,
        }
    }

    /// The rules an effect names: its reason is the determining labels joined by ", ".
    fn effect_labels(d: &Decision) -> Option<Vec<String>> {
        let reason = match &d.effect {
            Some(DecisionEffect::QuarantineAgent { reason })
            | Some(DecisionEffect::OpenEscalation { reason }) => reason,
            _ => return None,
        };
        let mut out: Vec<String> = reason.split(", ").map(str::to_owned).collect();
        out.sort();
        Some(out)
    }

    #[test]
    fn decision_table() {
        let snapshot = snapshot();
        let mut failures = Vec::new();
        for case in cases() {
            let req = request(
                case.namespace,
                case.action,
                case.subject.clone(),
                case.context.clone(),
            );
            let controls = controls_for(&case.control, &req);
            let d = match decide(&snapshot, &controls, &req) {
                Ok(d) => d,
                Err(e) => {
                    failures.push(format!("{}: unexpected error {e}", case.name));
                    continue;
                }
            };
            let mut problems = Vec::new();
            if d.outcome != case.outcome {
                problems.push(format!("outcome {} != {}", d.outcome, case.outcome));
            }
            if sorted(&d.reasons) != sorted(&case.reasons) {
                problems.push(format!("reasons {:?} != {:?}", d.reasons, case.reasons));
            }
            if d.warnings != case.warnings {
                problems.push(format!("warnings {:?} != {:?}", d.warnings, case.warnings));
            }
            if effect_kind(&d) != case.effect {
                problems.push(format!("effect {:?} != {:?}", d.effect, case.effect));
            }
            if let Some(named) = effect_labels(&d)
                && named != sorted(&case.reasons)
            {
                problems.push(format!(
                    "effect names {named:?}, reasons {:?}",
                    case.reasons
                ));
            }
            if let Some(DecisionEffect::ConsumeApproval { escalation }) = &d.effect
                && *escalation != APPROVAL
            {
                problems.push(format!("consumes {escalation}, approved {APPROVAL}"));
            }
            if let Some(expected) = &case.policies {
                let got: Vec<&str> = d.policies.iter().map(|p| &**p).collect();
                if &got != expected {
                    problems.push(format!("policies {got:?} != {expected:?}"));
                }
            }
            if d.errors.is_empty() == case.errors {
                problems.push(format!(
                    "errors {:?}, expected some: {}",
                    d.errors, case.errors
                ));
            }
            if d.snapshot != SnapshotId(1) {
                problems.push(format!("snapshot {}", d.snapshot));
            }
            if !problems.is_empty() {
                failures.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn evaluation_error_names_the_skipped_policy() {
        let d = decide(
            &snapshot(),
            &ControlState::default(),
            &request(USA, "trade", json!({}), json!({})),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(
            d.errors[0].contains("fintech-guard@1.0.0#low-credit")
                && d.errors[0].contains("credit_score"),
            "{}",
            d.errors[0]
        );
    }

    #[test]
    fn unknown_namespace_root_is_an_error() {
        let snapshot = snapshot();
        for ns in ["payment.processing.americas.usa.acme", "a.b.c.d.fintech2"] {
            let req = request(ns, "transfer", json!({}), json!({}));
            let root = ns.rsplit('.').next().unwrap_or(ns);
            match decide(&snapshot, &ControlState::default(), &req) {
                Err(EvalError::UnknownNamespace { namespace, root: r }) => {
                    assert_eq!((namespace.as_str(), r.as_str()), (ns, root));
                }
                other => panic!("{ns}: expected UnknownNamespace, got {other:?}"),
            }
        }
        // A root that only has a configured default is known, and gets that default.
        let config = Arc::new(EngineConfig {
            default_decision: DefaultDecision::Deny,
            namespace_defaults: BTreeMap::from([("acme".to_owned(), DefaultDecision::Allow)]),
            ..EngineConfig::default()
        });
        let configured = compile(&fintech_policies(), &config, None);
        let req = request("x.y.z.w.acme", "transfer", json!({}), json!({}));
        let d = decide(&configured, &ControlState::default(), &req)
            .unwrap_or_else(|e| panic!("configured root must be known: {e}"));
        assert_eq!(d.outcome, Outcome::Allow);
        // A root with policies in other scopes only is known, and gets the default.
        let req = request(
            "mail.send.europe.deu.fintech",
            "transfer",
            json!({}),
            json!({}),
        );
        let only_usa = compile(&fintech_policies()[2..3], &deny_by_default(), None);
        let e = only_usa.evaluate(&req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.verdict, PolicyVerdict::Default(DefaultDecision::Deny));
        // An empty snapshot knows nothing.
        let empty = Snapshot::empty(deny_by_default());
        assert!(matches!(
            empty.evaluate(&req),
            Err(EvalError::UnknownNamespace { .. })
        ));
    }

    #[test]
    fn approval_is_bound_to_the_exact_request() {
        let snapshot = snapshot();
        let approved = request(USA, "wire", json!({}), json!({"amount": 5000}));
        let mut controls = ControlState::default();
        controls
            .approved
            .insert(approved.fingerprint.clone(), APPROVAL);
        let other_amount = request(USA, "wire", json!({}), json!({"amount": 5001}));
        let d = decide(&snapshot, &controls, &other_amount).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.outcome, Outcome::Escalate, "{d:?}");
        assert!(matches!(
            d.effect,
            Some(DecisionEffect::OpenEscalation { .. })
        ));
        let d = decide(&snapshot, &controls, &approved).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    }

    #[test]
    fn approval_does_not_override_a_plain_forbid() {
        let policies = [policy(
            "guard",
            "*.*.*.*.fintech",
            &[
                (
                    "hard-no",
                    r#"forbid(principal, action == Action::"wire", resource);"#,
                ),
                (
                    "ask-human",
                    "@effect(\"escalate\")\nforbid(principal, action == Action::\"wire\", resource);",
                ),
            ],
        )];
        let snapshot = compile(&policies, &deny_by_default(), None);
        let req = request(USA, "wire", json!({}), json!({}));
        let mut controls = ControlState::default();
        controls.approved.insert(req.fingerprint.clone(), APPROVAL);
        let d = decide(&snapshot, &controls, &req).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !d.outcome.is_allowed(),
            "a satisfied plain forbid must deny whatever a human approved: {d:?}"
        );
        assert!(
            !matches!(d.effect, Some(DecisionEffect::ConsumeApproval { .. })),
            "{d:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The action index: a request only meets the rules that can apply to its action.
// ---------------------------------------------------------------------------------

mod action_index {
    use super::*;

    const NS: &str = "payment.processing.americas.usa.fintech";

    fn verdict(snapshot: &Snapshot, action: &str, ctx: Value) -> Normal {
        normalize(&snapshot.evaluate(&request(NS, action, json!({}), ctx))).0
    }

    fn allow_all() -> Arc<CheckedPolicy> {
        policy(
            "allow-all",
            "*.*.*.*.fintech",
            &[("any", "permit(principal, action, resource);")],
        )
    }

    #[test]
    fn eq_constraint_applies_to_its_action_only() {
        let snapshot = compile(
            &[
                allow_all(),
                policy(
                    "no-transfer",
                    "payment.*.*.*.fintech",
                    &[(
                        "t",
                        r#"forbid(principal, action == Action::"transfer", resource);"#,
                    )],
                ),
            ],
            &deny_by_default(),
            None,
        );
        assert_eq!(
            verdict(&snapshot, "transfer", json!({})),
            Normal::Forbid(vec!["no-transfer@1.0.0#t".into()])
        );
        assert_eq!(
            verdict(&snapshot, "read", json!({})),
            Normal::Permit(vec!["allow-all@1.0.0#any".into()])
        );
        let read = snapshot
            .evaluate(&request(NS, "read", json!({}), json!({})))
            .unwrap_or_else(|e| panic!("{e}"));
        let evaluated: Vec<&str> = read.policies.iter().map(|p| &**p).collect();
        assert_eq!(
            evaluated,
            ["allow-all@1.0.0"],
            "the transfer rule is not evaluated for read"
        );
    }

    #[test]
    fn in_list_applies_to_each_listed_action() {
        let snapshot = compile(
            &[
                allow_all(),
                policy(
                    "no-ab",
                    "*.*.*.usa.fintech",
                    &[(
                        "ab",
                        r#"forbid(principal, action in [Action::"a", Action::"b"], resource);"#,
                    )],
                ),
            ],
            &deny_by_default(),
            None,
        );
        for action in ["a", "b"] {
            assert_eq!(
                verdict(&snapshot, action, json!({})),
                Normal::Forbid(vec!["no-ab@1.0.0#ab".into()]),
                "{action}"
            );
        }
        assert_eq!(
            verdict(&snapshot, "c", json!({})),
            Normal::Permit(vec!["allow-all@1.0.0#any".into()])
        );
    }

    #[test]
    fn any_action_rules_apply_to_every_action() {
        let snapshot = compile(
            &[
                policy(
                    "specific",
                    "*.*.*.*.fintech",
                    &[
                        (
                            "t",
                            r#"permit(principal, action == Action::"transfer", resource);"#,
                        ),
                        (
                            "r",
                            r#"permit(principal, action in [Action::"read"], resource);"#,
                        ),
                    ],
                ),
                policy(
                    "stop",
                    "*.*.*.*.fintech",
                    &[(
                        "all",
                        "forbid(principal, action, resource) when { context.stop };",
                    )],
                ),
            ],
            &deny_by_default(),
            None,
        );
        for action in ["transfer", "read", "never-named"] {
            assert_eq!(
                verdict(&snapshot, action, json!({"stop": true})),
                Normal::Forbid(vec!["stop@1.0.0#all".into()]),
                "{action}"
            );
        }
        assert_eq!(
            verdict(&snapshot, "transfer", json!({"stop": false})),
            Normal::Permit(vec!["specific@1.0.0#t".into()])
        );
        assert_eq!(
            verdict(&snapshot, "read", json!({"stop": false})),
            Normal::Permit(vec!["specific@1.0.0#r".into()])
        );
        assert_eq!(
            verdict(&snapshot, "never-named", json!({"stop": false})),
            Normal::Default(DefaultDecision::Deny)
        );
    }
}

// ---------------------------------------------------------------------------------
// Every policy that passes `check_document` compiles (the snapshot's stated invariant).
// ---------------------------------------------------------------------------------

mod checked_policies_compile {
    use super::*;

    fn compiles(p: Arc<CheckedPolicy>) -> Snapshot {
        Snapshot::compile(SnapshotId(1), vec![p], None, deny_by_default(), None)
            .unwrap_or_else(|e| panic!("a checked policy must compile: {e}"))
    }

    fn verdict(snapshot: &Snapshot, action: &str) -> Normal {
        let ns = "payment.processing.americas.usa.fintech";
        normalize(&snapshot.evaluate(&request(ns, action, json!({}), json!({})))).0
    }

    #[test]
    fn many_rules_and_multi_policy_rules_compile() {
        let snapshot = compiles(policy(
            "multi",
            "*.*.*.*.fintech",
            &[
                (
                    "pair",
                    "permit(principal, action == Action::\"a\", resource);\n\
                     forbid(principal, action == Action::\"b\", resource);",
                ),
                (
                    "single",
                    r#"permit(principal, action in [Action::"b", Action::"c"], resource);"#,
                ),
            ],
        ));
        assert_eq!(
            verdict(&snapshot, "a"),
            Normal::Permit(vec!["multi@1.0.0#pair".into()])
        );
        assert_eq!(
            verdict(&snapshot, "b"),
            Normal::Forbid(vec!["multi@1.0.0#pair".into()])
        );
        assert_eq!(
            verdict(&snapshot, "c"),
            Normal::Permit(vec!["multi@1.0.0#single".into()])
        );
    }

    #[test]
    fn repeated_action_in_list_compiles() {
        let p = policy(
            "dup",
            "*.*.*.*.fintech",
            &[(
                "aa",
                r#"forbid(principal, action in [Action::"a", Action::"a"], resource);"#,
            )],
        );
        let snapshot = compiles(p);
        assert_eq!(
            verdict(&snapshot, "a"),
            Normal::Forbid(vec!["dup@1.0.0#aa".into()])
        );
    }

    #[test]
    fn rule_ids_cannot_collide_with_multi_policy_rules() {
        // The n-th Cedar policy of rule `x` is `name@version#x.n`; dots are therefore
        // not allowed in rule ids, so no rule can be named `x.1`.
        let yaml = r#"
policyId: 1f0c9d2e-7a3b-4c5d-8e9f-0a1b2c3d4e5f
name: collide
version: 1.0.0
namespace: "*.*.*.*.fintech"
rules:
  - id: x
    cedar: |
      permit(principal, action == Action::"a", resource);
      permit(principal, action == Action::"b", resource);
  - id: x.1
    cedar: |
      forbid(principal, action == Action::"c", resource);
"#;
        let errors = dynscale_core::policy::check_document("t.yaml", yaml, None)
            .expect_err("a dotted rule id is refused");
        assert!(
            errors
                .iter()
                .any(|e| e.field.as_deref() == Some("rules[1].id")),
            "{errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Incremental compilation gives the decisions of a fresh compile.
// ---------------------------------------------------------------------------------

mod incremental {
    use super::*;

    const NAMESPACES: [&str; 5] = [
        "payment.processing.americas.usa.fintech",
        "payment.processing.europe.deu.fintech",
        "mail.send.europe.deu.fintech",
        "shop.checkout.europe.fra.retail",
        "shop.checkout.asia.jpn.media",
    ];
    const ACTIONS: [&str; 3] = ["transfer", "read", "delete"];
    const AMOUNTS: [i64; 3] = [0, 500, 50_000];

    type Outcomes = Vec<(Normal, Vec<String>, Vec<String>)>;

    fn grid(snapshot: &Snapshot) -> Outcomes {
        let mut out = Vec::new();
        for ns in NAMESPACES {
            for action in ACTIONS {
                for amount in AMOUNTS {
                    let req = request(ns, action, json!({}), json!({"amount": amount}));
                    out.push(normalize(&snapshot.evaluate(&req)));
                }
            }
        }
        out
    }

    fn base() -> Vec<Arc<CheckedPolicy>> {
        vec![
            policy(
                "org-read",
                "*.*.*.*.fintech",
                &[(
                    "r",
                    r#"permit(principal, action == Action::"read", resource);"#,
                )],
            ),
            policy(
                "org-transfer",
                "*.*.*.*.fintech",
                &[(
                    "t",
                    r#"permit(principal, action == Action::"transfer", resource);"#,
                )],
            ),
            policy(
                "usa-limit",
                "payment.*.*.usa.fintech",
                &[(
                    "big",
                    "forbid(principal, action == Action::\"transfer\", resource)\n  when { context.amount > 10000 };",
                )],
            ),
            policy(
                "retail-all",
                "*.*.*.*.retail",
                &[("all", "permit(principal, action, resource);")],
            ),
        ]
    }

    /// Applies a change to the base set, then checks incremental == fresh, and that the
    /// change is visible (so a compile that ignored it would fail).
    fn check(change: &str, next: Vec<Arc<CheckedPolicy>>) {
        let config = deny_by_default();
        let before = compile(&base(), &config, None);
        let incremental = compile(&next, &config, Some(&before));
        let fresh = compile(&next, &config, None);
        let got = grid(&incremental);
        assert_eq!(
            got,
            grid(&fresh),
            "{change}: incremental differs from fresh"
        );
        assert_ne!(got, grid(&before), "{change}: the change is not visible");
        assert_eq!(incremental.scope_count(), fresh.scope_count(), "{change}");
    }

    #[test]
    fn add_to_a_new_scope() {
        let mut next = base();
        next.push(policy(
            "deu-no-delete",
            "*.*.*.deu.fintech",
            &[(
                "d",
                r#"forbid(principal, action == Action::"delete", resource);"#,
            )],
        ));
        next.push(policy(
            "media",
            "*.*.*.*.media",
            &[(
                "r",
                r#"permit(principal, action == Action::"read", resource);"#,
            )],
        ));
        check("add", next);
    }

    #[test]
    fn add_to_an_existing_scope() {
        let mut next = base();
        next.push(policy(
            "usa-read-guard",
            "payment.*.*.usa.fintech",
            &[("r", "forbid(principal, action == Action::\"read\", resource)\n  when { context.amount > 100 };")],
        ));
        check("add beside", next);
    }

    #[test]
    fn remove_the_only_policy_of_a_scope() {
        let next: Vec<_> = base()
            .into_iter()
            .filter(|p| p.doc.name.as_str() != "usa-limit")
            .collect();
        check("remove scope", next);
    }

    #[test]
    fn remove_one_of_two_in_a_scope() {
        let next: Vec<_> = base()
            .into_iter()
            .filter(|p| p.doc.name.as_str() != "org-read")
            .collect();
        check("remove one", next);
    }

    #[test]
    fn remove_a_whole_root() {
        let next: Vec<_> = base()
            .into_iter()
            .filter(|p| p.doc.name.as_str() != "retail-all")
            .collect();
        check("remove root", next);
    }

    #[test]
    fn replace_a_version() {
        let mut next = base();
        next[2] = policy_version(
            "usa-limit",
            "1.1.0",
            "payment.*.*.usa.fintech",
            &[(
                "big",
                "forbid(principal, action == Action::\"transfer\", resource)\n  when { context.amount > 100 };",
            )],
        );
        check("replace", next);
    }

    #[test]
    fn replace_moving_scope() {
        let mut next = base();
        next[2] = policy_version(
            "usa-limit",
            "2.0.0",
            "*.*.*.deu.fintech",
            &[(
                "big",
                "forbid(principal, action == Action::\"transfer\", resource)\n  when { context.amount > 10000 };",
            )],
        );
        check("replace and move", next);
    }

    #[test]
    fn chain_of_compiles_matches_fresh() {
        // Each step compiles on the previous incremental snapshot, not on a fresh one.
        let config = deny_by_default();
        let base = base();
        let extra = policy(
            "deu-no-delete",
            "*.*.*.deu.fintech",
            &[(
                "d",
                r#"forbid(principal, action == Action::"delete", resource);"#,
            )],
        );
        let steps: Vec<Vec<Arc<CheckedPolicy>>> = vec![
            base.clone(),
            [base.clone(), vec![Arc::clone(&extra)]].concat(),
            vec![Arc::clone(&base[0]), Arc::clone(&extra)],
            base.clone(),
            Vec::new(),
            base,
        ];
        let mut previous: Option<Snapshot> = None;
        for (i, set) in steps.iter().enumerate() {
            let next = compile(set, &config, previous.as_ref());
            assert_eq!(grid(&next), grid(&compile(set, &config, None)), "step {i}");
            previous = Some(next);
        }
    }
}

// ---------------------------------------------------------------------------------
// Model-based: the indexed snapshot against one Cedar set of every matching policy.
// ---------------------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    /// Literal values per segment (service, operation, division, country, org).
    const LITERALS: [[&str; 2]; 5] = [
        ["pay", "mail"],
        ["auth", "send"],
        ["eu", "us"],
        ["de", "fr"],
        ["fin", "ret"],
    ];
    const ACTIONS: [&str; 3] = ["a0", "a1", "a2"];
    /// An org no policy names: unknown unless some scope has a wildcard org.
    const STRANGER_ORG: &str = "acme";

    #[derive(Debug, Clone)]
    enum ActionSpec {
        Any,
        Eq(usize),
        In(Vec<usize>),
    }

    #[derive(Debug, Clone)]
    enum Cond {
        Always,
        When(i64),
        Unless(i64),
    }

    #[derive(Debug, Clone)]
    struct GenRule {
        forbid: bool,
        /// 0 plain; 1 warn (permit) or quarantine (forbid); 2 escalate (forbid only).
        flavour: u8,
        action: ActionSpec,
        cond: Cond,
    }

    impl GenRule {
        fn annotation(&self) -> Option<&'static str> {
            match (self.forbid, self.flavour) {
                (false, 1) => Some("warn"),
                (true, 1) => Some("quarantine"),
                (true, 2) => Some("escalate"),
                _ => None,
            }
        }

        fn effect(&self) -> RuleEffect {
            match self.annotation() {
                Some("warn") => RuleEffect::Warn,
                Some("quarantine") => RuleEffect::Quarantine,
                Some("escalate") => RuleEffect::Escalate,
                _ => RuleEffect::Plain,
            }
        }

        fn cedar(&self) -> String {
            let mut s = String::new();
            if let Some(a) = self.annotation() {
                s.push_str(&format!("@effect(\"{a}\")\n"));
            }
            let action = match &self.action {
                ActionSpec::Any => "action".to_owned(),
                ActionSpec::Eq(i) => format!("action == Action::\"{}\"", ACTIONS[*i]),
                ActionSpec::In(is) => format!(
                    "action in [{}]",
                    is.iter()
                        .map(|i| format!("Action::\"{}\"", ACTIONS[*i]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let effect = if self.forbid { "forbid" } else { "permit" };
            s.push_str(&format!("{effect}(principal, {action}, resource)"));
            match self.cond {
                Cond::Always => {}
                Cond::When(n) => s.push_str(&format!(" when {{ context.x > {n} }}")),
                Cond::Unless(n) => s.push_str(&format!(" unless {{ context.x > {n} }}")),
            }
            s.push(';');
            s
        }

        fn applies_to(&self, action: &str) -> bool {
            match &self.action {
                ActionSpec::Any => true,
                ActionSpec::Eq(i) => ACTIONS[*i] == action,
                ActionSpec::In(is) => is.iter().any(|i| ACTIONS[*i] == action),
            }
        }
    }

    #[derive(Debug, Clone)]
    struct GenPolicy {
        scope: Vec<&'static str>,
        rules: Vec<GenRule>,
    }

    #[derive(Debug, Clone)]
    struct GenRequest {
        namespace: Vec<&'static str>,
        action: &'static str,
        x: Option<i64>,
    }

    fn rule() -> impl Strategy<Value = GenRule> {
        let action = prop_oneof![
            Just(ActionSpec::Any),
            (0..ACTIONS.len()).prop_map(ActionSpec::Eq),
            proptest::sample::subsequence(vec![0, 1, 2], 1..=3).prop_map(ActionSpec::In),
        ];
        let cond = prop_oneof![
            Just(Cond::Always),
            (0..10i64).prop_map(Cond::When),
            (0..10i64).prop_map(Cond::Unless),
        ];
        (any::<bool>(), 0..3u8, action, cond).prop_map(|(forbid, flavour, action, cond)| GenRule {
            forbid,
            flavour: if forbid { flavour } else { flavour.min(1) },
            action,
            cond,
        })
    }

    fn scope_segment(i: usize) -> BoxedStrategy<&'static str> {
        let [a, b] = LITERALS[i];
        // Wildcards are frequent outside the org so scopes overlap; a wildcard org is
        // rarer so unknown roots still occur.
        let wildcard = if i == 4 { 1 } else { 3 };
        prop_oneof![wildcard => Just("*"), 1 => Just(a), 1 => Just(b)].boxed()
    }

    fn gen_policy() -> impl Strategy<Value = GenPolicy> {
        let scope: Vec<_> = (0..5).map(scope_segment).collect();
        (scope, proptest::collection::vec(rule(), 1..=3))
            .prop_map(|(scope, rules)| GenPolicy { scope, rules })
    }

    fn gen_request() -> impl Strategy<Value = GenRequest> {
        let mut segments: Vec<BoxedStrategy<&'static str>> = (0..4)
            .map(|i| proptest::sample::select(LITERALS[i].to_vec()).boxed())
            .collect();
        segments.push(proptest::sample::select(vec!["fin", "ret", STRANGER_ORG]).boxed());
        (
            segments,
            proptest::sample::select(vec!["a0", "a1", "a2", "a3"]),
            proptest::option::weighted(0.9, 0..12i64),
        )
            .prop_map(|(namespace, action, x)| GenRequest {
                namespace,
                action,
                x,
            })
    }

    fn check_generated(i: usize, version: &str, p: &GenPolicy) -> Arc<CheckedPolicy> {
        let cedar: Vec<String> = p.rules.iter().map(GenRule::cedar).collect();
        let ids: Vec<String> = (0..p.rules.len()).map(|r| format!("r{r}")).collect();
        let rules: Vec<(&str, &str)> = ids
            .iter()
            .map(String::as_str)
            .zip(cedar.iter().map(String::as_str))
            .collect();
        policy_version(&format!("p{i}"), version, &p.scope.join("."), &rules)
    }

    fn build_request(r: &GenRequest) -> ActionRequest {
        let ctx = match r.x {
            Some(x) => json!({"x": x}),
            None => json!({}),
        };
        request(&r.namespace.join("."), r.action, json!({}), ctx)
    }

    fn config(fin_allows: bool, fast_path: bool) -> Arc<EngineConfig> {
        let mut c = EngineConfig {
            fast_path,
            ..EngineConfig::default()
        };
        if fin_allows {
            c.namespace_defaults
                .insert("fin".into(), DefaultDecision::Allow);
        }
        Arc::new(c)
    }

    /// What the model compares: verdict kind with its (label, effect) pairs sorted,
    /// the errors sorted, and the policies evaluated.
    #[derive(Debug, PartialEq)]
    enum Kind {
        Unknown,
        Forbid(Vec<(String, RuleEffect)>),
        Permit(Vec<(String, RuleEffect)>),
        Default(DefaultDecision),
    }

    #[derive(Debug, PartialEq)]
    struct Observed {
        kind: Kind,
        errors: Vec<String>,
        policies: Vec<String>,
    }

    fn pairs(mut v: Vec<(String, RuleEffect)>) -> Vec<(String, RuleEffect)> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn observe(result: Result<Evaluation, EvalError>) -> Observed {
        let e = match result {
            Err(EvalError::UnknownNamespace { .. }) => {
                return Observed {
                    kind: Kind::Unknown,
                    errors: Vec::new(),
                    policies: Vec::new(),
                };
            }
            Err(e @ EvalError::Cedar(_)) => panic!("{e}"),
            Ok(e) => e,
        };
        assert!(
            e.advisories.is_empty(),
            "no advisory rule is generated: {e:?}"
        );
        let hits = |h: &[RuleHit]| pairs(h.iter().map(|h| (h.label(), h.effect)).collect());
        let kind = match &e.verdict {
            PolicyVerdict::Forbid(h) => Kind::Forbid(hits(h)),
            PolicyVerdict::Permit(h) => Kind::Permit(hits(h)),
            PolicyVerdict::Default(d) => Kind::Default(*d),
        };
        Observed {
            kind,
            errors: sorted(&e.errors),
            policies: e.policies.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The naive model: every policy whose scope matches goes into one Cedar set,
    /// evaluated once; reasons are classified by their Cedar effect.
    fn oracle(
        generated: &[GenPolicy],
        checked: &[Arc<CheckedPolicy>],
        config: &EngineConfig,
        r: &GenRequest,
    ) -> Observed {
        let root = r.namespace[4];
        let known = config.namespace_defaults.contains_key(root)
            || generated
                .iter()
                .any(|p| p.scope[4] == "*" || p.scope[4] == root);
        let matches = |p: &GenPolicy| {
            p.scope
                .iter()
                .zip(&r.namespace)
                .all(|(s, n)| *s == "*" || s == n)
        };
        let mut any_match = false;
        let mut set = PolicySet::new();
        let mut effects = BTreeMap::new();
        let mut policies = Vec::new();
        for (g, c) in generated.iter().zip(checked) {
            if !matches(g) {
                continue;
            }
            any_match = true;
            if g.rules.iter().any(|rule| rule.applies_to(r.action)) {
                policies.push(c.version_ref().to_string());
            }
            for (rule, cr) in g.rules.iter().zip(&c.cedar) {
                effects.insert(cr.policy.id().to_string(), rule.effect());
                if let Err(e) = set.add(cr.policy.clone()) {
                    panic!("oracle set: {e}");
                }
            }
        }
        if !any_match && !known {
            return Observed {
                kind: Kind::Unknown,
                errors: Vec::new(),
                policies: Vec::new(),
            };
        }
        policies.sort();
        let parse =
            |s: &str| EntityUid::from_str(s).unwrap_or_else(|e| panic!("oracle uid {s}: {e}"));
        let mut ctx = vec![(
            "namespace".to_owned(),
            RestrictedExpression::new_string(r.namespace.join(".")),
        )];
        if let Some(x) = r.x {
            ctx.push(("x".to_owned(), RestrictedExpression::new_long(x)));
        }
        let context = Context::from_pairs(ctx).unwrap_or_else(|e| panic!("oracle context: {e}"));
        let cedar_request = Request::new(
            parse(&format!("Agent::\"{AGENT}\"")),
            parse(&format!("Action::\"{}\"", r.action)),
            parse("Account::\"acct-1\""),
            context,
            None,
        )
        .unwrap_or_else(|e| panic!("oracle request: {e}"));
        let response = Authorizer::new().is_authorized(&cedar_request, &set, &Entities::empty());
        let mut forbids = Vec::new();
        let mut permits = Vec::new();
        for id in response.diagnostics().reason() {
            let label = id.to_string();
            let effect = effects[&label];
            match set.policy(id).map(cedar_policy::Policy::effect) {
                Some(Effect::Forbid) => forbids.push((label, effect)),
                Some(Effect::Permit) => permits.push((label, effect)),
                None => panic!("reason {label} is not in the set"),
            }
        }
        let kind = if !forbids.is_empty() {
            Kind::Forbid(pairs(forbids))
        } else if !permits.is_empty() {
            Kind::Permit(pairs(permits))
        } else {
            Kind::Default(
                config
                    .namespace_defaults
                    .get(root)
                    .copied()
                    .unwrap_or(config.default_decision),
            )
        };
        let mut errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        errors.sort();
        Observed {
            kind,
            errors,
            policies,
        }
    }

    fn fast() -> Config {
        Config {
            cases: 64,
            // Keep the test to this one file: no regression files beside it.
            failure_persistence: None,
            ..Config::default()
        }
    }

    proptest! {
        #![proptest_config(fast())]

        #[test]
        fn snapshot_agrees_with_one_big_cedar_set(
            generated in proptest::collection::vec(gen_policy(), 0..10),
            requests in proptest::collection::vec(gen_request(), 1..12),
            fin_allows in any::<bool>(),
            fast_path in any::<bool>(),
        ) {
            let checked: Vec<_> = generated
                .iter()
                .enumerate()
                .map(|(i, p)| check_generated(i, "1.0.0", p))
                .collect();
            let config = config(fin_allows, fast_path);
            let snapshot = compile(&checked, &config, None);
            for r in &requests {
                let got = observe(snapshot.evaluate(&build_request(r)));
                let want = oracle(&generated, &checked, &config, r);
                prop_assert_eq!(got, want, "request {:?}", r);
            }
        }

        #[test]
        fn incremental_compile_agrees_with_fresh(
            pool in proptest::collection::vec((gen_policy(), gen_policy()), 1..8),
            before in proptest::collection::vec(0..3u8, 8),
            after in proptest::collection::vec(0..3u8, 8),
            requests in proptest::collection::vec(gen_request(), 1..12),
        ) {
            // Each pool slot holds two versions of one name (the second may move scope);
            // a set picks, per slot, none, the first or the second.
            let versions: Vec<[Arc<CheckedPolicy>; 2]> = pool
                .iter()
                .enumerate()
                .map(|(i, (v1, v2))| {
                    [check_generated(i, "1.0.0", v1), check_generated(i, "2.0.0", v2)]
                })
                .collect();
            let pick = |choice: &[u8]| -> Vec<Arc<CheckedPolicy>> {
                versions
                    .iter()
                    .zip(choice)
                    .filter_map(|(v, c)| match c {
                        1 => Some(Arc::clone(&v[0])),
                        2 => Some(Arc::clone(&v[1])),
                        _ => None,
                    })
                    .collect()
            };
            let config = config(false, true);
            let first = compile(&pick(&before), &config, None);
            let incremental = compile(&pick(&after), &config, Some(&first));
            let fresh = compile(&pick(&after), &config, None);
            for r in &requests {
                let req = build_request(r);
                prop_assert_eq!(
                    normalize(&incremental.evaluate(&req)),
                    normalize(&fresh.evaluate(&req)),
                    "request {:?}", r
                );
            }
        }
    }

    /// One step of a policy history: a name's active set changes, or time passes.
    #[derive(Debug, Clone)]
    enum Step {
        /// Slot, and what becomes active: 0 nothing, 1 the first version, 2 the
        /// second, 3 the first standing and the third in its window, 4 the third alone.
        Set(usize, u8),
        /// Hours that pass.
        Wait(u8),
    }

    fn step(slots: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..slots, 0..5u8).prop_map(|(i, c)| Step::Set(i, c)),
            1 => (0..4u8).prop_map(Step::Wait),
        ]
    }

    fn start() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600)
            .unwrap_or_else(|e| panic!("start instant: {e}"))
    }

    fn hours(h: i64) -> OffsetDateTime {
        start() + time::Duration::hours(h)
    }

    /// A version in force during `[from, until)` hours after the start.
    fn scheduled(i: usize, p: &GenPolicy, from: i64, until: i64) -> Arc<CheckedPolicy> {
        let cedar: Vec<String> = p.rules.iter().map(GenRule::cedar).collect();
        let ids: Vec<String> = (0..p.rules.len()).map(|r| format!("r{r}")).collect();
        let rules: Vec<(&str, &str)> = ids
            .iter()
            .map(String::as_str)
            .zip(cedar.iter().map(String::as_str))
            .collect();
        let rfc = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("format {t}: {e}"))
        };
        let mut text = document(&format!("p{i}"), "3.0.0", &p.scope.join("."), &rules);
        text.push_str(&format!(
            "validity:\n  from: \"{}\"\n  until: \"{}\"\n",
            rfc(hours(from)),
            rfc(hours(until))
        ));
        match check_document("t.yaml", &text, None) {
            Ok(p) => Arc::new(p),
            Err(findings) => panic!("scheduled fixture does not check: {findings:#?}\n{text}"),
        }
    }

    fn refs(policies: &[Arc<CheckedPolicy>]) -> Vec<String> {
        let mut out: Vec<String> = policies
            .iter()
            .map(|p| p.version_ref().to_string())
            .collect();
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(fast())]

        /// The node's path: the catalog reports what changed in force and the snapshot
        /// is patched with it, step after step. After every step the patched snapshot
        /// must equal a fresh compile of the catalog's whole set in force.
        #[test]
        fn patched_snapshots_agree_with_fresh_compiles(
            pool in proptest::collection::vec(
                (gen_policy(), gen_policy(), gen_policy(), 0..8i64, 1..6i64),
                1..6,
            ),
            steps in proptest::collection::vec(step(6), 1..16),
            requests in proptest::collection::vec(gen_request(), 1..8),
        ) {
            let versions: Vec<[Arc<CheckedPolicy>; 3]> = pool
                .iter()
                .enumerate()
                .map(|(i, (v1, v2, v3, from, len))| {
                    [
                        check_generated(i, "1.0.0", v1),
                        check_generated(i, "2.0.0", v2),
                        scheduled(i, v3, *from, from + len),
                    ]
                })
                .collect();
            let config = config(true, true);
            let mut catalog = dynscale_core::catalog::Catalog::new();
            let mut now = start();
            let (first, next) = catalog.take_in_force_changes(now);
            prop_assert!(first.is_empty());
            let mut patched = Snapshot::compile(SnapshotId(0), Vec::new(), next, Arc::clone(&config), None)
                .unwrap_or_else(|e| panic!("empty compile: {e}"));
            for (n, s) in steps.iter().enumerate() {
                match s {
                    Step::Set(i, choice) => {
                        let Some([v1, v2, v3]) = versions.get(*i) else { continue };
                        let active = match choice {
                            1 => vec![Arc::clone(v1)],
                            2 => vec![Arc::clone(v2)],
                            3 => vec![Arc::clone(v1), Arc::clone(v3)],
                            4 => vec![Arc::clone(v3)],
                            _ => Vec::new(),
                        };
                        catalog.set_active(&v1.doc.name, active);
                    }
                    Step::Wait(h) => now += time::Duration::hours(i64::from(*h)),
                }
                let (changes, next) = catalog.take_in_force_changes(now);
                patched = patched
                    .patch(SnapshotId(n as u64 + 1), &changes, next)
                    .unwrap_or_else(|e| panic!("step {n} ({s:?}): patch failed: {e}"));
                let (in_force, want_next) = catalog.in_force(now);
                let fresh = compile(&in_force, &config, None);
                prop_assert_eq!(refs(&patched.in_force()), refs(&in_force), "step {} {:?}", n, s);
                prop_assert_eq!(patched.next_change_at(), want_next, "step {} {:?}", n, s);
                prop_assert_eq!(patched.policy_count(), in_force.len(), "step {}", n);
                prop_assert_eq!(patched.scope_count(), fresh.scope_count(), "step {}", n);
                for r in &requests {
                    let req = build_request(r);
                    prop_assert_eq!(
                        normalize(&patched.evaluate(&req)),
                        normalize(&fresh.evaluate(&req)),
                        "step {} {:?}, request {:?}", n, s, r
                    );
                }
            }
        }
    }
}

/// Which evaluator decides: the fast path when every matching rule compiled to it and
/// the request raises no error; Cedar otherwise, with the same result.
mod evaluators {
    use super::*;
    use dynscale_core::snapshot::Evaluator;

    const NS: &str = "payment.processing.americas.usa.fintech";

    fn policies() -> Vec<Arc<CheckedPolicy>> {
        vec![
            policy(
                "limits",
                NS,
                &[
                    (
                        "small",
                        r#"permit(principal, action == Action::"transfer", resource)
                           when { context.amount <= 100 };"#,
                    ),
                    (
                        "credit",
                        r#"forbid(principal, action, resource)
                           when { principal.credit_score < 500 };"#,
                    ),
                ],
            ),
            policy(
                "rates",
                "*.*.*.*.fintech",
                &[(
                    "rate",
                    r#"permit(principal, action == Action::"quote", resource)
                       when { context.rate.lessThan(decimal("0.5")) };"#,
                )],
            ),
        ]
    }

    fn evaluate(fast_path: bool, action: &str, subject: Value, ctx: Value) -> Evaluation {
        let config = Arc::new(EngineConfig {
            fast_path,
            ..EngineConfig::default()
        });
        compile(&policies(), &config, None)
            .evaluate(&request(NS, action, subject, ctx))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The evaluation with the fast path on (checked against it off), and who decided.
    fn both(action: &str, subject: Value, ctx: Value) -> (Normal, Vec<String>, Evaluator) {
        let fast = evaluate(true, action, subject.clone(), ctx.clone());
        let cedar = evaluate(false, action, subject, ctx);
        assert_eq!(cedar.evaluator, Evaluator::Cedar);
        let evaluator = fast.evaluator;
        let got = normalize(&Ok(fast));
        assert_eq!(got, normalize(&Ok(cedar)));
        (got.0, got.1, evaluator)
    }

    #[test]
    fn compiled_rules_decide_on_the_fast_path() {
        let good = json!({"credit_score": 700});
        let (verdict, _, by) = both("transfer", good.clone(), json!({"amount": 50}));
        assert_eq!(verdict, Normal::Permit(vec!["limits@1.0.0#small".into()]));
        assert_eq!(by, Evaluator::FastPath);
        let (verdict, _, by) = both(
            "transfer",
            json!({"credit_score": 10}),
            json!({"amount": 50}),
        );
        assert_eq!(verdict, Normal::Forbid(vec!["limits@1.0.0#credit".into()]));
        assert_eq!(by, Evaluator::FastPath);
        let (verdict, _, by) = both("transfer", good, json!({"amount": 500}));
        assert_eq!(verdict, Normal::Default(DefaultDecision::Deny));
        assert_eq!(by, Evaluator::FastPath);
    }

    #[test]
    fn an_error_goes_to_cedar_which_names_it() {
        // No credit score: Cedar's error, worded by Cedar, names the skipped rule.
        let (verdict, rest, by) = both("transfer", json!({}), json!({"amount": 50}));
        assert_eq!(by, Evaluator::Cedar);
        assert_eq!(verdict, Normal::Permit(vec!["limits@1.0.0#small".into()]));
        assert!(
            rest.iter()
                .any(|e| e.contains("limits@1.0.0#credit") && e.contains("credit_score")),
            "{rest:?}"
        );
    }

    #[test]
    fn a_rule_outside_the_subset_goes_to_cedar() {
        // `decimal` is an extension function: the `quote` set stays on Cedar.
        let (verdict, _, by) = both("quote", json!({"credit_score": 700}), json!({"rate": 0.25}));
        assert_eq!(by, Evaluator::Cedar);
        assert_eq!(verdict, Normal::Permit(vec!["rates@1.0.0#rate".into()]));
    }
}
