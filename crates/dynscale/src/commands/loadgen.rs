//! `dynscale loadgen`: open-loop load against a node, a summary, a per-second CSV and
//! service-level gates that set the exit code.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::IgnoredAny;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Exit;
use crate::cli::{LoadgenArgs, Workload};
use crate::client::Client;
use crate::load::engine::{self, RunConfig, Shared};
use crate::load::mix::{DEFAULT_MIX, Fleet, Mix};
use crate::load::record::{Gates, Recorder, unmet_gates};

/// Runs the load, writes the CSV, prints the summary and judges the gates.
pub fn run(args: &LoadgenArgs) -> Result<Exit> {
    if args.print_mix {
        print!("{DEFAULT_MIX}");
        return Ok(Exit::Success);
    }
    let mix = load_mix(&args.workload)?;
    check_reachable(&args.workload)?;
    let config = run_config(&args.workload, mix, args.rps, args.duration);
    let runtime = runtime()?;
    let progress = std::io::stdout().is_terminal();
    let (recorder, elapsed) = runtime.block_on(run_with_progress(&config, progress, ""))?;
    let summary = recorder.summary(args.rps, elapsed);
    if let Some(path) = &args.output {
        std::fs::write(path, recorder.csv())
            .with_context(|| format!("writing the per-second CSV to {}", path.display()))?;
    }
    let gates = Gates {
        p99: args.slo_p99,
        max_error_rate: args.max_error_rate,
    };
    let unmet = unmet_gates(&summary, &gates);
    if args.json {
        let out = serde_json::json!({ "summary": summary, "unmet_gates": unmet });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", summary.render());
        if let Some(path) = &args.output {
            println!("per-second rows: {}", path.display());
        }
    }
    if unmet.is_empty() {
        Ok(Exit::Success)
    } else {
        for gate in &unmet {
            eprintln!("SLO not met: {gate}");
        }
        Ok(Exit::Failed)
    }
}

/// The mix named by `--mix`, or the built-in one.
pub fn load_mix(workload: &Workload) -> Result<Arc<Mix>> {
    let mix = match &workload.mix {
        Some(path) => Mix::from_file(path)?,
        None => Mix::default_mix()?,
    };
    Ok(Arc::new(mix))
}

/// Fails early, with the client's clear message, when nothing answers at the URL.
pub fn check_reachable(workload: &Workload) -> Result<()> {
    let client = Client::new(workload.remote.url.clone())?;
    let _: IgnoredAny = client.get(&["healthz"], &[])?;
    Ok(())
}

/// The engine settings for one run at `rps` for `duration`.
pub fn run_config(workload: &Workload, mix: Arc<Mix>, rps: f64, duration: Duration) -> RunConfig {
    RunConfig {
        url: workload.remote.url.clone(),
        mix,
        fleet: Fleet {
            agents: workload.agents,
            packs: workload.packs,
        },
        rps,
        duration,
        batch: workload.batch as usize,
        connections: workload.connections as usize,
        timeout: workload.timeout,
        grace: (duration / 10).max(Duration::from_secs(2)),
        seed: workload.seed,
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the engine, with a progress bar on stderr when `progress` (stdout is a
/// terminal); `label` prefixes the bar (e.g. the step of `certify`).
pub async fn run_with_progress(
    config: &RunConfig,
    progress: bool,
    label: &str,
) -> Result<(Recorder, Duration)> {
    let mut ticker: Option<(ProgressBar, JoinHandle<()>)> = None;
    let total = config.duration;
    let label = label.to_owned();
    let result = engine::run(config, |shared, start| {
        if progress {
            let bar = progress_bar(total, &label);
            let handle = tokio::spawn(tick(bar.clone(), shared, start));
            ticker = Some((bar, handle));
        }
    })
    .await;
    if let Some((bar, handle)) = ticker {
        handle.abort();
        bar.finish_and_clear();
    }
    result
}

fn progress_bar(total: Duration, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total.as_millis() as u64);
    let template = format!("{label}{{bar:30}} {{elapsed}}/{} {{msg}}", fmt_secs(total));
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.0}s", d.as_secs_f64())
}

async fn tick(bar: ProgressBar, shared: Arc<Shared>, start: Instant) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        let elapsed = Instant::now().saturating_duration_since(start);
        let (sent, answered, errors, p99) = shared.with(|r| {
            let (s, a, e) = r.totals();
            (s, a, e, r.p99_us())
        });
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "sent {sent}, answered {answered}, errors {errors}, p99 {}",
            dynscale_core::certify::fmt_us(p99)
        ));
    }
}
