//! `dynscale audit`: read the node's verifiable log (tail, show), get proofs (prove),
//! and check logs and proofs offline (verify, verify-proof, export) with nothing but
//! the data directory or a bundle and the public key.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use dynscale_core::audit_bundle::ProofBundle;
use dynscale_core::audit_entry::AuditEntry;
use dynscale_core::merkle::Verifier;
use dynscale_server::recorder::public_key_path;
use dynscale_store::audit::{read_dir, verify_dir};
use serde::Deserialize;
use serde_json::Value;

use super::Exit;
use crate::cli::{AuditCommand, ExportFormat};
use crate::client::Client;
use crate::table;

#[derive(Debug, Deserialize)]
struct Logged {
    index: u64,
    entry: Value,
}

#[derive(Debug, Deserialize)]
struct Entries {
    size: u64,
    entries: Vec<Logged>,
}

/// Runs one `audit` subcommand.
pub fn run(command: &AuditCommand) -> Result<Exit> {
    match command {
        AuditCommand::Tail { limit, remote } => {
            let client = Client::new(remote.url.clone())?;
            let head: Entries = client.get(&["v1", "audit", "entries"], &[("limit", "1")])?;
            let from = head.size.saturating_sub(u64::from(*limit)).to_string();
            let limit = limit.to_string();
            let page: Entries = client.get(
                &["v1", "audit", "entries"],
                &[("from", from.as_str()), ("limit", limit.as_str())],
            )?;
            let rows: Vec<Vec<String>> = page.entries.iter().map(row).collect();
            print!(
                "{}",
                table::render(&["INDEX", "AT", "TYPE", "WHAT", "OUTCOME/DETAIL"], &rows)
            );
            println!("log size {}", page.size);
            Ok(Exit::Success)
        }
        AuditCommand::Show { id, remote } => {
            let client = Client::new(remote.url.clone())?;
            let id = id.to_string();
            let entry: Value = client.get(&["v1", "audit", "decisions", &id], &[])?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
            Ok(Exit::Success)
        }
        AuditCommand::Pubkey { data_dir, remote } => {
            let key = match data_dir {
                Some(dir) => read_pubkey_file(&public_key_path(dir))?,
                None => Client::new(remote.url.clone())?.get_text(&["v1", "audit", "pubkey"])?,
            };
            println!("{}", key.trim());
            Ok(Exit::Success)
        }
        AuditCommand::Prove { id, remote } => {
            let client = Client::new(remote.url.clone())?;
            let id = id.to_string();
            let bundle: ProofBundle = client.get(
                &["v1", "audit", "proof", "inclusion"],
                &[("decision_id", id.as_str())],
            )?;
            println!("{}", serde_json::to_string_pretty(&bundle)?);
            Ok(Exit::Success)
        }
        AuditCommand::VerifyProof { bundle, pubkey } => {
            let verifier = verifier(pubkey)?;
            let text = std::fs::read_to_string(bundle)
                .with_context(|| format!("reading {}", bundle.display()))?;
            let parsed: ProofBundle = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a proof bundle", bundle.display()))?;
            match parsed.verify(&verifier) {
                Ok((entry, size)) => {
                    println!(
                        "ok: entry {} is in the log of size {size} signed by {}",
                        parsed.index,
                        verifier.name()
                    );
                    println!("{}", serde_json::to_string_pretty(&entry)?);
                    Ok(Exit::Success)
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", bundle.display());
                    Ok(Exit::Failed)
                }
            }
        }
        AuditCommand::Verify { data_dir, pubkey } => {
            let verifier = match pubkey {
                Some(key) => Some(verifier(key)?),
                None => {
                    let path = public_key_path(data_dir);
                    if path.exists() {
                        Some(verifier(&read_pubkey_file(&path)?)?)
                    } else {
                        None
                    }
                }
            };
            let dir = data_dir.join(dynscale_server::recorder::AUDIT_DIR);
            match verify_dir(&dir, verifier.as_ref()) {
                Ok(report) => {
                    println!("ok: {report}");
                    if verifier.is_none() {
                        println!("note: no public key given or found; signatures were not checked");
                    }
                    Ok(Exit::Success)
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", dir.display());
                    Ok(Exit::Failed)
                }
            }
        }
        AuditCommand::Export { data_dir, format } => {
            let dir = data_dir.join(dynscale_server::recorder::AUDIT_DIR);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            if *format == ExportFormat::Csv {
                writeln!(
                    out,
                    "index,type,id,at,agent,pack,action,resource,namespace,outcome,reasons,policies,kind,subject,detail"
                )?;
            }
            for item in read_dir(&dir) {
                let (index, bytes) = item.with_context(|| format!("reading {}", dir.display()))?;
                let entry = AuditEntry::decode(&bytes)
                    .with_context(|| format!("entry {index} does not decode"))?;
                match format {
                    ExportFormat::Jsonl => {
                        let mut v = serde_json::to_value(&entry)?;
                        v["index"] = Value::from(index);
                        writeln!(out, "{v}")?;
                    }
                    ExportFormat::Csv => writeln!(out, "{}", csv_row(index, &entry))?,
                }
            }
            out.flush()?;
            Ok(Exit::Success)
        }
    }
}

fn row(e: &Logged) -> Vec<String> {
    let text = |k: &str| e.entry[k].as_str().unwrap_or("-").to_owned();
    match e.entry["type"].as_str() {
        Some("decision") => vec![
            e.index.to_string(),
            text("at"),
            "decision".into(),
            format!(
                "{} {} in {}",
                text("agent"),
                text("action"),
                text("namespace")
            ),
            text("outcome"),
        ],
        _ => vec![
            e.index.to_string(),
            text("at"),
            text("kind"),
            text("subject"),
            e.entry["detail"].to_string(),
        ],
    }
}

fn read_pubkey_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// A verifier from vkey text or from a file holding it.
fn verifier(key: &str) -> Result<Verifier> {
    let text = if Path::new(key).is_file() {
        read_pubkey_file(Path::new(key))?
    } else {
        key.to_owned()
    };
    match text.trim().parse::<Verifier>() {
        Ok(v) => Ok(v),
        Err(e) => bail!("`{}` is not a dynscale audit public key: {e}", text.trim()),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_row(index: u64, entry: &AuditEntry) -> String {
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let fields: Vec<String> = match entry {
        AuditEntry::Decision(d) => vec![
            index.to_string(),
            "decision".into(),
            d.decision_id.to_string(),
            at(d.at),
            d.agent.clone(),
            d.pack.clone().unwrap_or_default(),
            d.action.clone(),
            d.resource.clone(),
            d.namespace.clone(),
            d.outcome.to_string(),
            d.reasons.join("; "),
            d.policies.join("; "),
            String::new(),
            String::new(),
            String::new(),
        ],
        AuditEntry::Event(e) => vec![
            index.to_string(),
            "event".into(),
            e.event_id.to_string(),
            at(e.at),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            e.kind.clone(),
            e.subject.clone(),
            e.detail.to_string(),
        ],
    };
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}
