//! `dynscale decide`: asks a node for one decision, prints it, and turns the
//! outcome into the exit code (0 allow/warn, 2 anything else).

use anyhow::{Context, Result, bail};
use dynscale_server::wire::{Action, DecideResponse, EvaluationRequest, Resource, Subject};
use serde_json::{Map, Value};

use super::Exit;
use crate::cli::DecideArgs;
use crate::client::{Body, Client};
use crate::table;

/// Builds the request, asks the node and prints the answer.
pub fn run(args: &DecideArgs) -> Result<Exit> {
    let request = build_request(args)?;
    let client = Client::new(args.remote.url.clone())?;
    let body = serde_json::to_value(&request).context("encoding the decision request")?;
    let answer: Value = client.post(&["v1", "decide"], &[], Body::Json(body))?;
    let decision: DecideResponse = serde_json::from_value(answer.clone())
        .context("the node's answer to /v1/decide is not a decision")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).context("printing the answer")?
        );
    } else {
        print!("{}", summary(&decision));
    }
    Ok(exit_for(&decision.context.outcome))
}

/// 0 for allow and warn; 2 for every other outcome, including ones this client
/// does not know.
fn exit_for(outcome: &str) -> Exit {
    match outcome {
        "allow" | "warn" => Exit::Success,
        _ => Exit::NotAllowed,
    }
}

fn build_request(args: &DecideArgs) -> Result<EvaluationRequest> {
    let mut context: Map<String, Value> = args.context.clone().unwrap_or_default();
    if let Some(given) = context.get("namespace")
        && given.as_str() != Some(args.namespace.as_str())
    {
        bail!("--context sets `namespace`; give the namespace with --namespace only");
    }
    context.insert("namespace".into(), Value::String(args.namespace.clone()));
    let mut properties = Map::new();
    if let Some(pack) = &args.pack {
        properties.insert("pack".into(), Value::String(pack.clone()));
    }
    Ok(EvaluationRequest {
        subject: Subject {
            kind: "Agent".into(),
            id: args.agent.clone(),
            properties,
        },
        action: Action {
            name: args.action.clone(),
            properties: Map::new(),
        },
        resource: Resource {
            kind: args.resource.kind.clone(),
            id: args.resource.id.clone(),
            properties: Map::new(),
        },
        context,
    })
}

fn summary(decision: &DecideResponse) -> String {
    let c = &decision.context;
    let mut rows = vec![
        ("outcome", c.outcome.clone()),
        ("reasons", table::list_cell(&c.reasons)),
    ];
    if !c.warnings.is_empty() {
        rows.push(("warnings", table::list_cell(&c.warnings)));
    }
    if !c.errors.is_empty() {
        rows.push(("errors", table::list_cell(&c.errors)));
    }
    rows.push(("policies", table::list_cell(&c.policies)));
    rows.push(("decision id", c.decision_id.to_string()));
    if let Some(index) = c.audit_index {
        rows.push((
            "audit index",
            format!(
                "{index} (prove with `dynscale audit prove {}`)",
                c.decision_id
            ),
        ));
    }
    if let Some(id) = c.escalation_id {
        rows.push((
            "escalation",
            format!("{id} (approve with `dynscale escalation approve {id}`)"),
        ));
    }
    rows.iter()
        .map(|(label, value)| format!("{:<13}{value}\n", format!("{label}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn decide_args(extra: &[&str]) -> DecideArgs {
        let mut argv = vec![
            "dynscale",
            "decide",
            "--agent",
            "a1",
            "--action",
            "read",
            "--namespace",
            "tools.exec.eng.usa.acme",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Decide(args),
            }) => args,
            other => panic!("not a decide command line: {other:?}"),
        }
    }

    #[test]
    fn the_request_carries_pack_resource_and_namespace() {
        let args = decide_args(&[
            "--pack",
            "alpha",
            "--resource",
            "File:r.pdf",
            "--context",
            r#"{"amount": 12}"#,
        ]);
        let body = serde_json::to_value(build_request(&args).expect("request")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "subject": {"type": "Agent", "id": "a1", "properties": {"pack": "alpha"}},
                "action": {"name": "read", "properties": {}},
                "resource": {"type": "File", "id": "r.pdf", "properties": {}},
                "context": {"amount": 12, "namespace": "tools.exec.eng.usa.acme"}
            })
        );
    }

    #[test]
    fn the_default_resource_and_no_pack() {
        let body =
            serde_json::to_value(build_request(&decide_args(&[])).expect("request")).expect("json");
        assert_eq!(body["resource"]["type"], "Resource");
        assert_eq!(body["resource"]["id"], "default");
        assert_eq!(body["subject"]["properties"], serde_json::json!({}));
    }

    #[test]
    fn a_conflicting_namespace_in_the_context_is_refused() {
        let args = decide_args(&["--context", r#"{"namespace": "a.b.c.d.e"}"#]);
        assert!(build_request(&args).is_err());
    }

    #[test]
    fn only_allow_and_warn_exit_zero() {
        assert_eq!(exit_for("allow"), Exit::Success);
        assert_eq!(exit_for("warn"), Exit::Success);
        for other in ["deny", "quarantine", "escalate", "something-new"] {
            assert_eq!(exit_for(other), Exit::NotAllowed, "{other}");
        }
    }
}
