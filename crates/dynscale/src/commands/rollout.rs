//! `dynscale rollout`: the status of progressive rollouts, and the operator's
//! `promote`, `pause`, `resume` and `abort`.

use anyhow::Result;
use serde_json::Value;

use super::Exit;
use crate::cli::{RolloutCommand, RolloutNameArgs, RolloutStatusArgs};
use crate::client::{Body, Client};
use crate::table;

/// Runs a `rollout` subcommand.
pub fn run(command: &RolloutCommand) -> Result<Exit> {
    match command {
        RolloutCommand::Status(args) => status(args),
        RolloutCommand::Promote(args) => steer(args, "promote"),
        RolloutCommand::Pause(args) => steer(args, "pause"),
        RolloutCommand::Resume(args) => steer(args, "resume"),
        RolloutCommand::Abort(args) => steer(args, "abort"),
    }
}

fn status(args: &RolloutStatusArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let Some(name) = &args.name else {
        let list: Value = client.get(&["v1", "rollouts"], &[])?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(Exit::Success);
        }
        let rollouts = list["rollouts"].as_array().cloned().unwrap_or_default();
        if rollouts.is_empty() {
            println!(
                "no rollouts; push a policy with `activation: {{ strategy: canary }}` to start one"
            );
            return Ok(Exit::Success);
        }
        let rows: Vec<Vec<String>> = rollouts
            .iter()
            .map(|r| {
                vec![
                    text(&r["name"]),
                    format!("{} → {}", text(&r["control"]), text(&r["candidate"])),
                    text(&r["strategy"]),
                    text(&r["state"]),
                    share(&r["report"]["candidate_share"]),
                    verdict(&r["report"]["verdict"]),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "POLICY",
                    "VERSIONS",
                    "STRATEGY",
                    "STATE",
                    "CANDIDATE SHARE",
                    "VERDICT"
                ],
                &rows
            )
        );
        return Ok(Exit::Success);
    };
    let r: Value = client.get(&["v1", "rollouts", name], &[])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_detail(&r);
    }
    Ok(Exit::Success)
}

fn steer(args: &RolloutNameArgs, command: &str) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let r: Value = client.post(&["v1", "rollouts", &args.name, command], &[], Body::None)?;
    println!(
        "{command}: rollout of {}@{} is {}",
        text(&r["name"]),
        text(&r["candidate"]),
        text(&r["state"])
    );
    Ok(Exit::Success)
}

/// One rollout in detail.
fn print_detail(r: &Value) {
    let rep = &r["report"];
    println!(
        "rollout {} of {}: {} → {} by {}, {}",
        r["id"],
        text(&r["name"]),
        text(&r["control"]),
        text(&r["candidate"]),
        text(&r["strategy"]),
        text(&r["state"])
    );
    println!(
        "candidate share: {} (routing {}); verdict: {}",
        share(&rep["candidate_share"]),
        text(&rep["routing"]["mode"]),
        verdict(&rep["verdict"])
    );
    if let Some(us) = r["rollback_enforced_us"].as_u64() {
        println!("rollback enforced {us} µs after the verdict");
    }
    for (label, span) in [("this step", &rep["window"]), ("all steps", &rep["totals"])] {
        println!("\nsamples, {label}:");
        let rows: Vec<Vec<String>> = ["control", "candidate"]
            .iter()
            .map(|arm| {
                let a = &span[*arm];
                vec![
                    (*arm).to_owned(),
                    num(&a["decisions"]),
                    rate(&a["deny_rate"]),
                    num(&a["evaluation_errors"]),
                    num(&a["feedback"]),
                    rate(&a["failure_rate"]),
                    ms(&a["feedback_latency_mean_ms"]),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "ARM",
                    "DECISIONS",
                    "DENY RATE",
                    "EVAL ERRORS",
                    "FEEDBACK",
                    "FAILURE RATE",
                    "LATENCY"
                ],
                &rows
            )
        );
    }
    println!("\nstatistics (roll back when the e-value reaches the threshold):");
    let rows: Vec<Vec<String>> = rep["statistics"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                text(&s["metric"]),
                float(&s["e_value"]),
                float(&s["threshold"]),
                format!("{} of {}", num(&s["sample"]), num(&s["min_sample"])),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["METRIC", "E-VALUE", "THRESHOLD", "SAMPLE"], &rows)
    );
    println!("\nhard triggers:");
    let rows: Vec<Vec<String>> = rep["triggers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            vec![
                text(&t["trigger"]),
                t["observed"]
                    .as_f64()
                    .map_or_else(|| "not enough data".into(), |v| format!("{v:.4}")),
                float(&t["limit"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["TRIGGER", "OBSERVED", "LIMIT"], &rows)
    );
    let next = &rep["next"];
    match next["action"].as_str() {
        Some("advance") => println!(
            "\nnext: advance to {} not before {} with {} decisions per arm in this step",
            share(&next["share"]),
            when(&next["not_before"]),
            num(&next["min_samples"])
        ),
        Some("switch") => println!(
            "\nnext: switch all traffic after {} shadow comparisons ({} so far)",
            num(&next["shadow_samples"]),
            num(&next["compared"])
        ),
        Some("promote") => println!("\nnext: promote not before {}", when(&next["not_before"])),
        Some("operator") => {
            println!("\nnext: an operator promotes or aborts (`dynscale rollout promote|abort`)")
        }
        _ => println!("\nnext: nothing (finished)"),
    }
    let shadow = &rep["shadow"];
    if shadow.is_object() {
        println!(
            "\nshadow diff over {} compared decisions:",
            num(&shadow["compared"])
        );
        for class in [
            "allow_to_deny",
            "deny_to_allow",
            "other",
            "candidate_errors",
        ] {
            let c = &shadow[class];
            let exemplars: Vec<String> = c["exemplars"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(text)
                .collect();
            println!(
                "  {class}: {}{}",
                num(&c["count"]),
                if exemplars.is_empty() {
                    String::new()
                } else {
                    format!(" (e.g. {})", exemplars.join(", "))
                }
            );
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(
        || {
            if v.is_null() {
                "-".into()
            } else {
                v.to_string()
            }
        },
        str::to_owned,
    )
}

fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn float(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |f| format!("{f:.4}"))
}

fn rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |f| format!("{:.2} %", f * 100.0))
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |f| format!("{f:.1} ms"))
}

/// A share in basis points as a percentage.
fn share(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "-".to_owned(),
        |bp| format!("{:.2} %", bp as f64 / 100.0),
    )
}

/// Unix milliseconds as RFC 3339.
fn when(v: &Value) -> String {
    v.as_u64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// A verdict in a few words.
fn verdict(v: &Value) -> String {
    match v["verdict"].as_str() {
        Some("hold") => format!("hold ({})", text(&v["reason"]["reason"])),
        Some("advance") => format!("advance to {}", share(&v["share"])),
        Some("inconclusive") => format!(
            "inconclusive ({} e-value {})",
            text(&v["finding"]["metric"]),
            float(&v["finding"]["ln_e"].as_f64().map(f64::exp).into())
        ),
        Some("promote") => "promote".into(),
        Some("rollback") => format!("roll back ({})", text(&v["cause"]["by"])),
        _ => text(v),
    }
}
