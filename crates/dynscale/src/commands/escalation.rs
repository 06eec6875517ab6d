//! `dynscale escalation`: the actions waiting for a human, and the human's answer.

use anyhow::Result;
use serde::Deserialize;

use super::Exit;
use crate::cli::{EscalationCommand, EscalationIdArgs, EscalationListArgs};
use crate::client::{Body, Client};
use crate::table;

/// An escalation as the node reports it.
#[derive(Debug, Deserialize)]
struct Escalation {
    id: String,
    decision_id: String,
    agent: String,
    action: String,
    resource: String,
    namespace: String,
    reason: String,
    created_at: String,
    status: String,
    decided_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EscalationList {
    escalations: Vec<Escalation>,
}

/// Runs one `escalation` subcommand.
pub fn run(command: &EscalationCommand) -> Result<Exit> {
    match command {
        EscalationCommand::List(args) => list(args),
        EscalationCommand::Show(args) => show(args),
        EscalationCommand::Approve(args) => answer(args, "approve"),
        EscalationCommand::Deny(args) => answer(args, "deny"),
    }
}

fn list(args: &EscalationListArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let limit = args.limit.map(|l| l.to_string());
    let mut query = Vec::new();
    if let Some(status) = args.status {
        query.push(("status", status.as_str()));
    }
    if let Some(limit) = &limit {
        query.push(("limit", limit.as_str()));
    }
    let listing: EscalationList = client.get(&["v1", "escalations"], &query)?;
    if listing.escalations.is_empty() {
        println!("no escalations");
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = listing
        .escalations
        .into_iter()
        .map(|e| {
            vec![
                e.id,
                e.status,
                e.agent,
                e.action,
                e.namespace,
                e.created_at,
                e.reason,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "STATUS",
                "AGENT",
                "ACTION",
                "NAMESPACE",
                "CREATED",
                "REASON"
            ],
            &rows
        )
    );
    Ok(Exit::Success)
}

fn print_escalation(e: &Escalation) {
    println!("escalation: {}", e.id);
    println!("status:     {}", e.status);
    println!("agent:      {}", e.agent);
    println!("action:     {}", e.action);
    println!("resource:   {}", e.resource);
    println!("namespace:  {}", e.namespace);
    println!("reason:     {}", e.reason);
    println!("decision:   {}", e.decision_id);
    println!("created:    {}", e.created_at);
    println!("decided:    {}", e.decided_at.as_deref().unwrap_or("-"));
}

fn show(args: &EscalationIdArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let id = args.id.to_string();
    let e: Escalation = client.get(&["v1", "escalations", &id], &[])?;
    print_escalation(&e);
    Ok(Exit::Success)
}

/// `verb` is `approve` or `deny`, the last segment of the route.
fn answer(args: &EscalationIdArgs, verb: &str) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let id = args.id.to_string();
    let e: Escalation = client.post(&["v1", "escalations", &id, verb], &[], Body::None)?;
    print_escalation(&e);
    Ok(Exit::Success)
}
