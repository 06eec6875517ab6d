//! `dynscale scale status` and `dynscale scale alerts`: the node's signals with their
//! levels, and its alerts, as tables (levels coloured on a terminal) or JSON.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use serde_json::Value;

use super::Exit;
use crate::cli::{ScaleArgs, ScaleCommand};
use crate::client::Client;
use crate::table;

/// Runs a `scale` subcommand.
pub fn run(command: &ScaleCommand) -> Result<Exit> {
    match command {
        ScaleCommand::Status(args) => status(args),
        ScaleCommand::Alerts(args) => alerts(args),
    }
}

fn status(args: &ScaleArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let report: Value = client.get(&["v1", "scale", "status"], &[])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(Exit::Success);
    }
    let color = std::io::stdout().is_terminal();
    let status = &report["status"];
    let signals = status["signals"]
        .as_array()
        .context("the node's scale status has no signals")?;
    let rows: Vec<Vec<String>> = signals
        .iter()
        .map(|s| {
            let value = s["value"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            vec![text(&s["signal"]), value, level(&s["level"], color)]
        })
        .collect();
    print!("{}", table::render(&["SIGNAL", "VALUE", "LEVEL"], &rows));
    let window = &status["decisions"]["level_window"];
    println!(
        "\noverall {}; decisions {}/s over the last {}, p50 {} p99 {} p999 {}",
        level(&status["overall"], color),
        window["throughput_per_s"]
            .as_f64()
            .map_or_else(|| "-".into(), |t| format!("{t:.1}")),
        duration(&window["covered"]),
        duration(&window["p50"]),
        duration(&window["p99"]),
        duration(&window["p999"]),
    );
    let admission = &report["admission"];
    println!(
        "admission: {} of {} in flight{}",
        admission["in_flight"],
        admission["limit"],
        if admission["shedding"] == true {
            ", SHEDDING (new decisions get 429)"
        } else {
            ""
        }
    );
    Ok(Exit::Success)
}

fn alerts(args: &ScaleArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let list: Value = client.get(&["v1", "scale", "alerts"], &[])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let alerts = list["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(Exit::Success);
    }
    let color = std::io::stdout().is_terminal();
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            let name = match a["instance"].as_str() {
                Some(pack) => format!("{} (pack {pack})", text(&a["alert"])),
                None => text(&a["alert"]),
            };
            vec![
                name,
                text(&a["state"]),
                text(&a["since"]),
                text(&a["owner"]),
                format!("{} s", a["respond_within_secs"]),
                text(&a["condition"]),
                level(&a["level"], color),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ALERT",
                "STATE",
                "SINCE",
                "OWNER",
                "RESPOND WITHIN",
                "CONDITION",
                "LEVEL"
            ],
            &rows
        )
    );
    Ok(Exit::Success)
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| "-".to_owned(), str::to_owned)
}

/// A `{secs, nanos}` duration as milliseconds.
fn duration(v: &Value) -> String {
    match (v["secs"].as_u64(), v["nanos"].as_u64()) {
        (Some(s), Some(n)) => format!("{:.2} ms", s as f64 * 1e3 + n as f64 / 1e6),
        _ => "-".to_owned(),
    }
}

/// A level in capitals, coloured when printing to a terminal. It is the last column
/// of every table, so the colour codes never upset the alignment.
fn level(v: &Value, color: bool) -> String {
    let Some(name) = v.as_str() else {
        return "-".to_owned();
    };
    let code = match name {
        "green" => "32",
        "yellow" => "33",
        "orange" => "38;5;208",
        "red" => "31",
        _ => return name.to_uppercase(),
    };
    if color {
        format!("\x1b[{code}m{}\x1b[0m", name.to_uppercase())
    } else {
        name.to_uppercase()
    }
}
