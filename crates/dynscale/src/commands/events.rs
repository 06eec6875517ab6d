//! `dynscale events`: the node's change history, oldest first, one page at a time.

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use super::Exit;
use crate::cli::EventsArgs;
use crate::client::Client;
use crate::table;

/// The node's page size when `--limit` is not given.
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
struct Event {
    id: u64,
    at: String,
    kind: String,
    subject: String,
    #[serde(default)]
    detail: Value,
}

#[derive(Debug, Deserialize)]
struct EventList {
    events: Vec<Event>,
}

/// Prints one page of events.
pub fn run(args: &EventsArgs) -> Result<Exit> {
    let client = Client::new(args.remote.url.clone())?;
    let after = args.after.to_string();
    let limit = args.limit.map(|l| l.to_string());
    let mut query = vec![("after", after.as_str())];
    if let Some(limit) = &limit {
        query.push(("limit", limit.as_str()));
    }
    let page: EventList = client.get(&["v1", "events"], &query)?;
    let Some(last) = page.events.last().map(|e| e.id) else {
        println!("no events after {}", args.after);
        return Ok(Exit::Success);
    };
    let full = page.events.len() >= args.limit.map_or(DEFAULT_LIMIT, |l| l as usize);
    let rows: Vec<Vec<String>> = page
        .events
        .into_iter()
        .map(|e| {
            let detail = match &e.detail {
                Value::Null => "-".to_owned(),
                Value::Object(m) if m.is_empty() => "-".to_owned(),
                other => other.to_string(),
            };
            vec![e.id.to_string(), e.at, e.kind, e.subject, detail]
        })
        .collect();
    print!(
        "{}",
        table::render(&["ID", "AT", "KIND", "SUBJECT", "DETAIL"], &rows)
    );
    if full {
        eprintln!("more may follow: dynscale events --after {last}");
    }
    Ok(Exit::Success)
}
