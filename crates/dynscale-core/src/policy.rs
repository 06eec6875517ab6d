//! A checked policy: a document that parsed, passed every check that needs no other
//! policy, and whose Cedar rules are parsed once, here, and never again.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::document::{PolicyDocument, Rule};
use crate::ids::{PolicyName, RuleId};

/// The text format a document was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Yaml,
    Json,
}

impl SourceFormat {
    /// JSON when the text starts with `{`, YAML otherwise (YAML is a superset anyway,
    /// but serde_json gives better positions for JSON).
    pub fn detect(text: &str) -> Self {
        if text.trim_start().starts_with('{') {
            SourceFormat::Json
        } else {
            SourceFormat::Yaml
        }
    }
}

/// What a determining Cedar policy asks for beyond plain allow/deny, from its
/// `@effect("...")` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleEffect {
    /// A permit that allows, or a forbid that denies.
    Plain,
    /// On a permit: allowed with a warning. On a forbid: advisory, a warning instead of a deny.
    Warn,
    /// A forbid that also quarantines the agent.
    Quarantine,
    /// A forbid that waits for a human's approval.
    Escalate,
}

/// One Cedar policy of a rule, with its snapshot-wide id.
#[derive(Debug, Clone)]
pub struct CedarRule {
    pub rule: RuleId,
    pub policy: cedar_policy::Policy,
    pub effect: RuleEffect,
}

impl CedarRule {
    /// Whether this rule is a forbid that only warns.
    pub fn is_advisory(&self) -> bool {
        self.policy.effect() == Effect::Forbid && self.effect == RuleEffect::Warn
    }
}

/// `name@version`, the way decisions and listings name a policy version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionRef {
    pub name: PolicyName,
    pub version: semver::Version,
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A document that passed every self-contained check.
#[derive(Debug, Clone)]
pub struct CheckedPolicy {
    pub doc: PolicyDocument,
    /// The text as pushed, kept verbatim for storage and `policy show`.
    pub source: Arc<str>,
    pub format: SourceFormat,
    pub cedar: Vec<CedarRule>,
}

impl CheckedPolicy {
    /// `name@version` of this policy.
    pub fn version_ref(&self) -> VersionRef {
        VersionRef {
            name: self.doc.name.clone(),
            version: self.doc.version.clone(),
        }
    }
}

/// Parses and checks one document. `origin` names it in findings (a file path, or
/// `request` for a document pushed over HTTP). All findings are returned at once.
pub fn check_document(
    origin: &str,
    text: &str,
    schema: Option<&Schema>,
) -> Result<CheckedPolicy, Vec<Diagnostic>> {
    let format = SourceFormat::detect(text);
    let doc = parse_schema(text, format).map_err(|d| vec![d.in_file(origin)])?;
    let mut findings = Vec::new();
    let cedar = check_rules(&doc, text, schema, &mut findings);
    check_fields(&doc, text, &mut findings);
    if findings.is_empty() {
        Ok(CheckedPolicy {
            doc,
            source: Arc::from(text),
            format,
            cedar,
        })
    } else {
        for f in &mut findings {
            f.file = Some(origin.to_owned());
        }
        Err(findings)
    }
}

fn parse_schema(text: &str, format: SourceFormat) -> Result<PolicyDocument, Diagnostic> {
    let schema_error = |message: String, path: String| {
        let field = (!path.is_empty() && path != ".").then_some(path);
        let mut d = Diagnostic::new(DiagnosticCode::Schema, message);
        d.field = field;
        d
    };
    match format {
        SourceFormat::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = (inner.line(), inner.column());
                schema_error(strip_position(&inner.to_string()), path).at(line, column)
            })
        }
        SourceFormat::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let loc = inner.location();
                let d = schema_error(strip_position(&inner.to_string()), path);
                match loc {
                    Some(l) => d.at(l.line(), l.column()),
                    None => d,
                }
            })
        }
    }
}

/// serde's messages end with "at line L column C"; the diagnostic carries those apart.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn check_rules(
    doc: &PolicyDocument,
    text: &str,
    schema: Option<&Schema>,
    findings: &mut Vec<Diagnostic>,
) -> Vec<CedarRule> {
    let mut out = Vec::new();
    if doc.rules.is_empty() {
        findings.push(
            Diagnostic::new(DiagnosticCode::Schema, "a policy needs at least one rule")
                .field("rules"),
        );
    }
    let mut seen = HashSet::new();
    for (i, rule) in doc.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let rule_line = find_rule_line(text, rule);
        let place = |d: Diagnostic| match rule_line {
            Some(l) => d.at(l, 1),
            None => d,
        };
        if rule.id.as_str().is_empty()
            || !rule
                .id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            // Dots are reserved: `rule.n` names the n-th Cedar policy of a rule.
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::Schema,
                    format!(
                        "rule id `{}` must be non-empty and use only letters, digits, `-` and `_`",
                        rule.id
                    ),
                )
                .field(format!("{field}.id")),
            ));
        }
        if !seen.insert(rule.id.as_str()) {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::Schema,
                    format!("rule id `{}` is used twice", rule.id),
                )
                .field(format!("{field}.id")),
            ));
        }
        let bodies = [
            rule.cedar.is_some(),
            rule.quota.is_some(),
            rule.concurrency.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() != 1 {
            findings.push(place(
                Diagnostic::new(
                    DiagnosticCode::Schema,
                    format!(
                        "rule `{}` must have exactly one of `cedar`, `quota`, `concurrency`",
                        rule.id
                    ),
                )
                .field(field.clone()),
            ));
        }
        if let Some(q) = &rule.quota
            && let Err(e) = crate::quota::Gcra::from_rule(q)
        {
            let part = match e {
                crate::quota::GcraError::ZeroBurst
                | crate::quota::GcraError::BurstTooLong { .. } => "burst",
                _ => "rate",
            };
            findings.push(place(
                Diagnostic::new(DiagnosticCode::Schema, e.to_string())
                    .field(format!("{field}.quota.{part}")),
            ));
        }
        if let Some(c) = &rule.concurrency
            && c.limit == 0
        {
            findings.push(place(
                Diagnostic::new(DiagnosticCode::Schema, "limit must be at least 1")
                    .field(format!("{field}.concurrency.limit")),
            ));
        }
        if let Some(src) = &rule.cedar {
            out.extend(parse_cedar(doc, rule, src, text, &field, findings));
        }
    }
    if let Some(schema) = schema {
        type_check(doc, text, &out, schema, findings);
    }
    out
}

fn parse_cedar(
    doc: &PolicyDocument,
    rule: &Rule,
    src: &str,
    text: &str,
    field: &str,
    findings: &mut Vec<Diagnostic>,
) -> Vec<CedarRule> {
    let field = format!("{field}.cedar");
    let block = find_block(text, src);
    let set = match PolicySet::from_str(src) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors.iter() {
                let offset = miette::Diagnostic::labels(e)
                    .and_then(|mut l| l.next())
                    .map(|l| l.offset());
                let mut d = Diagnostic::new(
                    DiagnosticCode::CedarSyntax,
                    format!("rule `{}`: {e}", rule.id),
                )
                .field(field.clone());
                if let Some((line, col)) = block.and_then(|b| b.position(src, offset)) {
                    d = d.at(line, col);
                }
                findings.push(d);
            }
            return Vec::new();
        }
    };
    let policies: Vec<_> = set.policies().collect();
    if policies.is_empty() {
        findings.push(
            Diagnostic::new(
                DiagnosticCode::CedarSyntax,
                format!("rule `{}` holds no Cedar policy", rule.id),
            )
            .field(field.clone()),
        );
    }
    if set.templates().next().is_some() {
        findings.push(
            Diagnostic::new(
                DiagnosticCode::CedarSyntax,
                format!("rule `{}`: Cedar templates are not supported", rule.id),
            )
            .field(field.clone()),
        );
    }
    let many = policies.len() > 1;
    let mut out = Vec::new();
    // Keep source order so ids are stable across parses of the same text.
    let mut ordered: Vec<_> = policies.into_iter().collect();
    // `PolicySet::from_str` names policies policy0, policy1, ... in source order.
    ordered.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    for (n, p) in ordered.into_iter().enumerate() {
        let id = if many {
            format!("{}@{}#{}.{}", doc.name, doc.version, rule.id, n + 1)
        } else {
            format!("{}@{}#{}", doc.name, doc.version, rule.id)
        };
        let effect = match p.annotation("effect") {
            None | Some("deny") | Some("allow") => RuleEffect::Plain,
            Some("warn") => RuleEffect::Warn,
            Some("quarantine") => RuleEffect::Quarantine,
            Some("escalate") => RuleEffect::Escalate,
            Some(other) => {
                findings.push(
                    Diagnostic::new(
                        DiagnosticCode::CedarSyntax,
                        format!(
                            "rule `{}`: @effect(\"{other}\") is not one of warn, quarantine, \
                             escalate",
                            rule.id
                        ),
                    )
                    .field(field.clone()),
                );
                continue;
            }
        };
        if p.effect() == Effect::Permit
            && matches!(effect, RuleEffect::Quarantine | RuleEffect::Escalate)
        {
            findings.push(
                Diagnostic::new(
                    DiagnosticCode::CedarSyntax,
                    format!(
                        "rule `{}`: @effect(\"{}\") belongs on a forbid, not a permit",
                        rule.id,
                        p.annotation("effect").unwrap_or_default()
                    ),
                )
                .field(field.clone()),
            );
            continue;
        }
        out.push(CedarRule {
            rule: rule.id.clone(),
            policy: p.new_id(PolicyId::new(id)),
            effect,
        });
    }
    out
}

fn type_check(
    doc: &PolicyDocument,
    text: &str,
    rules: &[CedarRule],
    schema: &Schema,
    findings: &mut Vec<Diagnostic>,
) {
    let mut set = PolicySet::new();
    for r in rules {
        // Ids are unique by construction (name@version#rule[.n]).
        if set.add(r.policy.clone()).is_err() {
            continue;
        }
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let Some(cedar_rule) = rules.iter().find(|r| r.policy.id() == e.policy_id()) else {
            continue;
        };
        let index = doc.rules.iter().position(|r| r.id == cedar_rule.rule);
        let mut d = Diagnostic::new(
            DiagnosticCode::CedarType,
            format!("rule `{}`: {e}", cedar_rule.rule),
        )
        .field(match index {
            Some(i) => format!("rules[{i}].cedar"),
            None => "rules".into(),
        });
        // Labels point into the rule's Cedar text; map them into the document.
        let src = index.and_then(|i| doc.rules[i].cedar.as_deref());
        let offset = miette::Diagnostic::labels(e)
            .and_then(|mut l| l.next())
            .map(|l| l.offset());
        if let Some((line, col)) =
            src.and_then(|src| find_block(text, src).and_then(|b| b.position(src, offset)))
        {
            d = d.at(line, col);
        }
        findings.push(d);
    }
}

fn check_fields(doc: &PolicyDocument, text: &str, findings: &mut Vec<Diagnostic>) {
    let line_of = |key: &str| find_key_line(text, key);
    let mut push = |d: Diagnostic, key: &str| {
        findings.push(match line_of(key) {
            Some(l) => d.at(l, 1),
            None => d,
        })
    };
    if doc.policy_id.get_version_num() != 4 {
        push(
            Diagnostic::new(
                DiagnosticCode::Schema,
                format!("policyId `{}` must be a version 4 uuid", doc.policy_id),
            )
            .field("policyId"),
            "policyId",
        );
    }
    if doc.name.as_str().is_empty()
        || !doc
            .name
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        push(
            Diagnostic::new(
                DiagnosticCode::Schema,
                format!(
                    "name `{}` must be non-empty and use only letters, digits, `-` and `_`",
                    doc.name
                ),
            )
            .field("name"),
            "name",
        );
    }
    if let Some(rp) = &doc.rollback_point {
        if rp >= &doc.version {
            push(
                Diagnostic::new(
                    DiagnosticCode::RollbackLimit,
                    format!("rollbackPoint {rp} must be below version {}", doc.version),
                )
                .field("rollbackPoint"),
                "rollbackPoint",
            );
        } else if doc.version.major > rp.major + 2 {
            push(
                Diagnostic::new(
                    DiagnosticCode::RollbackLimit,
                    format!(
                        "rollbackPoint {rp} is more than 2 major versions below {}",
                        doc.version
                    ),
                )
                .field("rollbackPoint"),
                "rollbackPoint",
            );
        }
    }
    for (list, key) in [
        (&doc.dependencies, "dependencies"),
        (&doc.conflicts, "conflicts"),
    ] {
        for (i, r) in list.iter().enumerate() {
            if r.policy == doc.name {
                push(
                    Diagnostic::new(
                        DiagnosticCode::Schema,
                        format!("a policy cannot list itself in {key}"),
                    )
                    .field(format!("{key}[{i}].policy")),
                    key,
                );
            }
        }
    }
    if let Err(errors) = crate::rollout::Plan::from_activation(&doc.activation) {
        for e in errors {
            let key = e.field();
            push(
                Diagnostic::new(DiagnosticCode::Schema, e.to_string())
                    .field(format!("activation.{key}")),
                key,
            );
        }
    }
    if let Some(v) = &doc.validity
        && let (Some(from), Some(until)) = (v.from, v.until)
        && from >= until
    {
        push(
            Diagnostic::new(
                DiagnosticCode::Schema,
                "validity.from must be before validity.until",
            )
            .field("validity"),
            "validity",
        );
    }
}

/// The 1-based line of the first line that starts (after indentation and an optional
/// list dash) with `key:` or `"key":`.
pub(crate) fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:")) || t.starts_with(&format!("\"{key}\""))
        })
        .map(|i| i + 1)
}

fn find_rule_line(text: &str, rule: &Rule) -> Option<usize> {
    let id = rule.id.as_str();
    text.lines()
        .position(|l| {
            let t = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches('{');
            let t = t.trim_start();
            (t.starts_with("id:") && t[3..].trim().trim_matches(['"', '\'']) == id)
                || (t.starts_with("\"id\"") && t.contains(&format!("\"{id}\"")))
        })
        .map(|i| i + 1)
}

/// Where a Cedar block scalar's text sits in the document.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// 1-based line of the block's first line.
    first_line: usize,
    /// Indentation of the block's lines.
    indent: usize,
}

impl Block {
    /// Maps a byte offset in the Cedar text to a line and column in the document.
    fn position(&self, src: &str, offset: Option<usize>) -> Option<(usize, usize)> {
        let offset = offset?.min(src.len());
        let before = src.get(..offset)?;
        let line = before.matches('\n').count();
        let col = before.rfind('\n').map_or(offset, |i| offset - i - 1);
        Some((self.first_line + line, self.indent + col + 1))
    }
}

/// Finds the first line of a block scalar's content in the document, so Cedar errors
/// point at the document's own line numbers. Flow strings (JSON) are not located.
fn find_block(text: &str, src: &str) -> Option<Block> {
    let first = src.lines().next()?;
    if first.trim().is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let src_lines: Vec<&str> = src.lines().collect();
    (0..lines.len()).find_map(|i| {
        let l = lines[i];
        let indent = l.len() - l.trim_start().len();
        let matches_all = src_lines.iter().enumerate().all(|(k, s)| {
            lines.get(i + k).is_some_and(|dl| {
                if s.is_empty() {
                    dl.trim().is_empty()
                } else {
                    dl.get(indent..) == Some(*s)
                }
            })
        });
        (l.trim_start() == first.trim_start() && matches_all).then_some(Block {
            first_line: i + 1,
            indent,
        })
    })
}
