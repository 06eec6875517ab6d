//! Validation findings: what is wrong, and where (file, line, column, field).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Kinds of finding, stable for clients and tests to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticCode {
    /// The document is not well-formed YAML/JSON or does not fit the schema.
    Schema,
    /// A Cedar rule does not parse.
    CedarSyntax,
    /// A Cedar rule does not type-check against the configured schema.
    CedarType,
    /// The version is not strictly above the last pushed version of the name.
    VersionNotIncreasing,
    /// The policy id does not match the name's earlier versions, or belongs to another name.
    PolicyIdMismatch,
    /// A dependency has no pushed or active version in its range.
    MissingDependency,
    /// Dependencies form a cycle.
    DependencyCycle,
    /// A declared conflict matches an active policy.
    DeclaredConflict,
    /// Two quota or concurrency rules on the same key and overlapping scope disagree.
    ResourceConflict,
    /// Validity windows of versions of one name overlap.
    TemporalConflict,
    /// A rollback goes back more than two major versions, or to an unknown version.
    RollbackLimit,
    /// A major upgrade asks for `immediate` activation without force.
    MajorUpgradeNeedsForce,
    /// The activation strategy cannot be used for this document (a progressive
    /// strategy for a scheduled version, or beside one).
    StrategyUnavailable,
}

/// One finding about a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub code: DiagnosticCode,
    pub message: String,
    /// The file (or other origin) the document came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line in that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in that line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The document field the finding is about, e.g. `rules[2].cedar` or `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Diagnostic {
    /// A finding with no location yet.
    pub fn new(code: DiagnosticCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            field: None,
        }
    }

    /// Names the document field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Places the finding at a line and column.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Names the file.
    pub fn in_file(mut self, file: &str) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: [code] field: message`, omitting what is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            write!(f, ": ")?;
        }
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "[{code}] ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
