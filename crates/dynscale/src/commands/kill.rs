//! `dynscale kill`: set, release or list kill switches. A kill switch denies every
//! action under it (one agent, one pack, or the whole node) from the next decision on.

use anyhow::{Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Exit;
use crate::cli::KillArgs;
use crate::client::{Body, Client};

/// What a kill switch covers, checked from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Global,
    Pack(String),
    Agent(String),
}

impl Target {
    fn body(&self) -> Value {
        match self {
            Target::Global => json!({ "scope": "global" }),
            Target::Pack(id) => json!({ "scope": "pack", "id": id }),
            Target::Agent(id) => json!({ "scope": "agent", "id": id }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Global => f.write_str("global"),
            Target::Pack(id) => write!(f, "pack {id}"),
            Target::Agent(id) => write!(f, "agent {id}"),
        }
    }
}

/// What the command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    List,
    Set(Target),
    Release(Target),
}

fn request(args: &KillArgs) -> Result<Request> {
    if args.list {
        return Ok(Request::List);
    }
    let target = match (&args.agent, &args.pack, args.global) {
        (Some(agent), None, false) => Target::Agent(agent.clone()),
        (None, Some(pack), false) => Target::Pack(pack.clone()),
        (None, None, true) => Target::Global,
        _ => bail!("name exactly one of --agent ID, --pack ID or --global (or use --list)"),
    };
    Ok(if args.release {
        Request::Release(target)
    } else {
        Request::Set(target)
    })
}

/// A kill switch as the API spells it: `{"scope": "pack", "id": "alpha"}`.
#[derive(Debug, Deserialize)]
pub struct KillSwitch {
    pub scope: String,
    pub id: Option<String>,
}

impl std::fmt::Display for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} {id}", self.scope),
            None => f.write_str(&self.scope),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Changed {
    changed: bool,
}

#[derive(Debug, Deserialize)]
struct KillSwitches {
    kill_switches: Vec<KillSwitch>,
}

/// Runs `kill`.
pub fn run(args: &KillArgs) -> Result<Exit> {
    let request = request(args)?;
    let client = Client::new(args.remote.url.clone())?;
    match request {
        Request::List => {
            let list: KillSwitches = client.get(&["v1", "kill"], &[])?;
            if list.kill_switches.is_empty() {
                println!("no kill switches in force");
            }
            for k in list.kill_switches {
                println!("{k}");
            }
        }
        Request::Set(target) => {
            let done: Changed = client.post(&["v1", "kill"], &[], Body::Json(target.body()))?;
            if done.changed {
                println!("kill switch set: {target}");
            } else {
                println!("kill switch already set: {target}");
            }
        }
        Request::Release(target) => {
            let done: Changed =
                client.post(&["v1", "kill", "release"], &[], Body::Json(target.body()))?;
            if done.changed {
                println!("kill switch released: {target}");
            } else {
                println!("no kill switch was set: {target}");
            }
        }
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(flags: &[&str]) -> Result<Request, String> {
        let mut argv = vec!["dynscale", "kill"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Kill(args),
            }) => request(&args).map_err(|e| e.to_string()),
            Ok(other) => Err(format!("not kill: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn flags_become_one_request() {
        assert_eq!(parse(&["--list"]), Ok(Request::List));
        assert_eq!(
            parse(&["--agent", "a1"]),
            Ok(Request::Set(Target::Agent("a1".into())))
        );
        assert_eq!(
            parse(&["--release", "--pack", "p"]),
            Ok(Request::Release(Target::Pack("p".into())))
        );
        assert_eq!(parse(&["--global"]), Ok(Request::Set(Target::Global)));
        for bad in [
            &[][..],
            &["--release"],
            &["--agent", "a", "--pack", "p"],
            &["--list", "--global"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
