//! `dynscale agent`: register an agent's pack and attributes, show what the node
//! knows of it, release it from quarantine.

use anyhow::{Result, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use super::Exit;
use super::kill::KillSwitch;
use crate::cli::{AgentCommand, AgentIdArgs, RegisterArgs};
use crate::client::{Body, Client};

/// An agent as the node reports it.
#[derive(Debug, Deserialize)]
struct AgentState {
    id: String,
    pack: Option<String>,
    #[serde(default)]
    attributes: Map<String, Value>,
    quarantine: Option<Quarantine>,
    kill_switch: Option<KillSwitch>,
}

#[derive(Debug, Deserialize)]
struct Quarantine {
    since: String,
    decision_id: String,
    reason: String,
}

/// Runs one `agent` subcommand.
pub fn run(command: &AgentCommand) -> Result<Exit> {
    match command {
        AgentCommand::Register(args) => register(args),
        AgentCommand::Show(args) => show(args),
        AgentCommand::Release(args) => release(args),
    }
}

fn register(args: &RegisterArgs) -> Result<Exit> {
    let mut attributes = Map::new();
    for (key, value) in &args.attrs {
        if attributes.insert(key.clone(), value.clone()).is_some() {
            bail!("--attr {key} is given twice");
        }
    }
    let body = json!({ "pack": args.pack, "attributes": attributes });
    let client = Client::new(args.remote.url.clone())?;
    let _: IgnoredAny = client.put(&["v1", "agents", &args.id], body)?;
    match &args.pack {
        Some(pack) => println!("registered agent {} in pack {pack}", args.id),
        None => println!("registered agent {} (no pack)", args.id),
    }
    Ok(Exit::Success)
}

fn show(args: &AgentIdArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let agent: AgentState = client.get(&["v1", "agents", &args.id], &[])?;
    println!("agent:       {}", agent.id);
    println!(
        "pack:        {}",
        agent.pack.as_deref().unwrap_or("- (not registered)")
    );
    if agent.attributes.is_empty() {
        println!("attributes:  -");
    } else {
        println!("attributes:  {}", Value::Object(agent.attributes));
    }
    match &agent.quarantine {
        Some(q) => println!(
            "quarantine:  since {} by decision {} ({}); release with `dynscale agent release {}`",
            q.since, q.decision_id, q.reason, agent.id
        ),
        None => println!("quarantine:  -"),
    }
    match &agent.kill_switch {
        Some(k) => println!("kill switch: {k}"),
        None => println!("kill switch: -"),
    }
    Ok(Exit::Success)
}

fn release(args: &AgentIdArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let _: IgnoredAny = client.post(&["v1", "agents", &args.id, "release"], &[], Body::None)?;
    println!("released agent {} from quarantine", args.id);
    Ok(Exit::Success)
}
