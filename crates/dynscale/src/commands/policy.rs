//! `dynscale policy`: validate documents offline or on a node, push, list, show and
//! roll back.

use std::path::Path;

use anyhow::{Context, Result};
use dynscale_core::policy::check_document;
use serde::Deserialize;
use serde_json::json;

use super::Exit;
use crate::cli::{
    PolicyCommand, PushArgs, RemoteArgs, RollbackArgs, ShowArgs, UpgradePathArgs, ValidateArgs,
};
use crate::client::{Body, Client, ClientError};
use crate::table;

/// What a push, validation or rollback activated (or would).
#[derive(Debug, Deserialize)]
struct Activated {
    name: String,
    version: String,
    #[serde(default)]
    active: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    snapshot: u64,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    rollout: Option<serde_json::Value>,
}

/// One policy name in a listing.
#[derive(Debug, Deserialize)]
struct PolicySummary {
    name: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    active: Vec<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PolicyList {
    policies: Vec<PolicySummary>,
}

/// One stored version with its source.
#[derive(Debug, Deserialize)]
struct PolicyVersion {
    name: String,
    version: String,
    policy_id: String,
    active: bool,
    format: String,
    pushed_at: String,
    source: String,
}

/// Runs one `policy` subcommand.
pub fn run(command: &PolicyCommand) -> Result<Exit> {
    match command {
        PolicyCommand::Validate(args) if args.remote => validate_remote(args),
        PolicyCommand::Validate(args) => validate_offline(args),
        PolicyCommand::Push(args) => push(args),
        PolicyCommand::List(args) => list(args),
        PolicyCommand::Show(args) => show(args),
        PolicyCommand::Rollback(args) => rollback(args),
        PolicyCommand::UpgradePath(args) => upgrade_path(args),
    }
}

fn read_document(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy document {}", path.display()))
}

/// Reports the files that failed; every finding has been printed already.
fn summary(failed: usize, total: usize) -> Exit {
    if failed == 0 {
        Exit::Success
    } else {
        eprintln!("error: {failed} of {total} document(s) failed validation");
        Exit::Failed
    }
}

fn validate_offline(args: &ValidateArgs) -> Result<Exit> {
    let schema = match &args.schema {
        Some(path) => Some(dynscale_server::load_schema(path)?),
        None => None,
    };
    let mut failed = 0;
    for path in &args.files {
        let origin = path.display().to_string();
        let text = match read_document(path) {
            Ok(text) => text,
            Err(e) => {
                println!("{origin}: cannot read the file: {}", e.root_cause());
                failed += 1;
                continue;
            }
        };
        match check_document(&origin, &text, schema.as_ref()) {
            Ok(policy) => println!("ok {origin} ({})", policy.version_ref()),
            Err(findings) => {
                failed += 1;
                for finding in findings {
                    println!("{finding}");
                }
            }
        }
    }
    Ok(summary(failed, args.files.len()))
}

fn validate_remote(args: &ValidateArgs) -> Result<Exit> {
    let client = Client::new(args.remote_url.url.clone())?;
    let force = args.force.to_string();
    let mut failed = 0;
    for path in &args.files {
        let origin = path.display().to_string();
        let text = read_document(path)?;
        let query = [("origin", origin.as_str()), ("force", force.as_str())];
        let answer: Result<Activated, _> = client.post(
            &["v1", "policies", "validate"],
            &query,
            Body::Document(text),
        );
        match answer {
            Ok(done) => println!("ok {origin} ({}@{})", done.name, done.version),
            Err(ClientError::Problem { problem, .. }) => {
                failed += 1;
                let findings = problem.findings();
                if findings.is_empty() {
                    println!("{origin}: {problem}");
                }
                for finding in findings {
                    println!("{finding}");
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(summary(failed, args.files.len()))
}

fn push(args: &PushArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let origin = args.file.display().to_string();
    let text = read_document(&args.file)?;
    let force = args.force.to_string();
    let query = [("origin", origin.as_str()), ("force", force.as_str())];
    let done: Activated = client.post(&["v1", "policies"], &query, Body::Document(text))?;
    println!(
        "pushed {}@{} (snapshot {})",
        done.name, done.version, done.snapshot
    );
    print_activation(&done);
    if let Some(note) = &done.note {
        println!("note:        {note}");
    }
    if let Some(r) = &done.rollout {
        println!(
            "rollout {}:  {} of {} against {} (still active); follow it with \
             `dynscale rollout status {}`",
            r["id"],
            r["strategy"].as_str().unwrap_or("-"),
            done.version,
            r["control"].as_str().unwrap_or("-"),
            done.name
        );
    }
    Ok(Exit::Success)
}

fn print_activation(done: &Activated) {
    println!("active:      {}", table::list_cell(&done.active));
    if !done.removed.is_empty() {
        println!("deactivated: {}", table::list_cell(&done.removed));
    }
}

fn list(args: &RemoteArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let listing: PolicyList = client.get(&["v1", "policies"], &[])?;
    if listing.policies.is_empty() {
        println!("no policies; push one with `dynscale policy push FILE`");
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = listing
        .policies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                table::list_cell(&p.active),
                table::list_cell(&p.versions),
                p.namespace.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["NAME", "ACTIVE", "VERSIONS", "NAMESPACE"], &rows)
    );
    Ok(Exit::Success)
}

fn show(args: &ShowArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let version = args.version.as_ref().map(ToString::to_string);
    let query: Vec<(&str, &str)> = version.iter().map(|v| ("version", v.as_str())).collect();
    let shown: PolicyVersion = client.get(&["v1", "policies", &args.name], &query)?;
    if !args.raw {
        println!(
            "# {}@{} ({}, {}, pushed {}, policy id {})",
            shown.name,
            shown.version,
            if shown.active { "active" } else { "inactive" },
            shown.format,
            shown.pushed_at,
            shown.policy_id,
        );
    }
    print!("{}", shown.source);
    if !shown.source.ends_with('\n') {
        println!();
    }
    Ok(Exit::Success)
}

fn rollback(args: &RollbackArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let body = match &args.to {
        Some(v) => json!({ "to": v.to_string() }),
        None => json!({}),
    };
    let done: Activated = client.post(
        &["v1", "policies", &args.name, "rollback"],
        &[],
        Body::Json(body),
    )?;
    println!(
        "rolled back {} to {} (snapshot {})",
        done.name, done.version, done.snapshot
    );
    print_activation(&done);
    Ok(Exit::Success)
}

fn upgrade_path(args: &UpgradePathArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let up: serde_json::Value = client.get(&["v1", "policies", &args.name, "upgrade-path"], &[])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&up)?);
        return Ok(Exit::Success);
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    };
    println!("{}: active {}", args.name, s(&up["current"]));
    let dependents = up["dependents"].as_array().cloned().unwrap_or_default();
    if dependents.is_empty() {
        println!("compatible range: any version (no active policy depends on it)");
    } else {
        let ranges: Vec<String> = dependents
            .iter()
            .map(|d| format!("{} (required by {})", s(&d["requires"]), s(&d["policy"])))
            .collect();
        println!("compatible range: {}", ranges.join(" and "));
        println!(
            "compatible pushed versions: {}",
            table::list_cell(&list(&up["compatible"]))
        );
    }
    let path = up["path"].as_array().cloned().unwrap_or_default();
    if path.is_empty() {
        println!("upgrade path: none (no pushed version above the active one)");
    } else {
        println!("upgrade path:");
        let rows: Vec<Vec<String>> = path
            .iter()
            .map(|p| {
                let how = if p["needs_rollout_or_force"] == true {
                    "shadow/canary/blue-green, or immediate with --force"
                } else {
                    "any strategy"
                };
                let breaks = list(&p["breaks"]);
                vec![
                    s(&p["version"]),
                    s(&p["change"]),
                    how.to_owned(),
                    if breaks.is_empty() {
                        "yes".to_owned()
                    } else {
                        format!("no: breaks {}", breaks.join(", "))
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(&["VERSION", "CHANGE", "ACTIVATION", "COMPATIBLE"], &rows)
        );
    }
    println!(
        "rollback limit: {} major versions back (down to major {}); reachable: {}",
        up["rollback_limit_majors"],
        up["rollback_floor_major"],
        table::list_cell(&list(&up["rollback_targets"]))
    );
    Ok(Exit::Success)
}
