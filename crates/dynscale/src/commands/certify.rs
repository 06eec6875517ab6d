//! `dynscale certify`: measures the node's limit with rising open-loop load (the
//! loadgen engine), writes the scale report as JSON and Markdown, and records it on
//! the node with `PUT /v1/scale/limits`.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use dynscale_core::certify::{
    MachineInfo, REPORT_FORMAT, ScaleReport, Slo, StepPlan, find_limit, fmt_us, judge, next_step,
};
use serde::de::IgnoredAny;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Exit;
use super::loadgen::{check_reachable, load_mix, run_config, run_with_progress, runtime};
use crate::cli::CertifyArgs;
use crate::client::{Client, ClientError};

/// Growth factor between steps until one fails.
const GROWTH: f64 = 2.0;
/// Bisection stops when the best pass and the lowest failure are this close.
const RESOLUTION: f64 = 0.1;

/// Measures, writes the report and sends it to the node.
pub fn run(args: &CertifyArgs) -> Result<Exit> {
    let workload = &args.workload;
    let mix = load_mix(workload)?;
    check_reachable(workload)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    let slo = Slo {
        p99_us: u64::try_from(args.slo_p99.as_micros()).unwrap_or(u64::MAX),
        max_error_rate: args.max_error_rate,
    };
    let plan = StepPlan {
        start_rps: args.start_rps,
        growth: GROWTH,
        resolution: RESOLUTION,
        max_rps: args.max_rps,
    };
    let step_duration = args.duration / args.steps;
    let measured_at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .context("formatting the date")?;
    let progress = std::io::stdout().is_terminal();
    let runtime = runtime()?;
    let mut steps = Vec::new();
    for i in 0..args.steps {
        let Some(rps) = next_step(&plan, &steps, &slo) else {
            break;
        };
        let config = run_config(workload, mix.clone(), rps, step_duration);
        let label = format!("step {}: {rps:.0}/s ", i + 1);
        let (recorder, elapsed) = runtime.block_on(run_with_progress(&config, progress, &label))?;
        let step = recorder.summary(rps, elapsed).step();
        println!(
            "step {}: offered {:.0}/s, answered {:.0}/s, p99 {}, errors {:.3} % — {}",
            i + 1,
            step.target_rps,
            step.achieved_rps,
            fmt_us(step.p99_us),
            step.error_rate * 100.0,
            judge(&step, &slo).as_str()
        );
        steps.push(step);
    }
    drop(runtime);
    let limit = find_limit(&steps, &slo);
    let report = ScaleReport {
        format: REPORT_FORMAT,
        measured_at,
        node_url: workload.remote.url.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        slo,
        plan,
        workload: format!(
            "mix {}, batch {}, {} connections, {} agents in {} packs, {} per step",
            mix.describe(),
            workload.batch,
            workload.connections,
            workload.agents,
            workload.packs,
            fmt_us(u64::try_from(step_duration.as_micros()).unwrap_or(u64::MAX))
        ),
        machine: machine_info(),
        steps,
        limit,
    };
    write_report(&report, &args.output_dir)?;
    match &report.limit {
        Some(l) => println!(
            "limit: {:.0} decisions/s with p99 {} (objective p99 ≤ {}, errors ≤ {:.3} %)",
            l.max_rps,
            fmt_us(l.p99_us),
            fmt_us(slo.p99_us),
            slo.max_error_rate * 100.0
        ),
        None => println!("limit: no step met the objective"),
    }
    record_on_node(&report, workload.remote.url.clone())?;
    Ok(if report.limit.is_some() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

fn write_report(report: &ScaleReport, dir: &Path) -> Result<()> {
    let json = dir.join("scale-report.json");
    let md = dir.join("scale-report.md");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, report.to_markdown())
        .with_context(|| format!("writing {}", md.display()))?;
    println!("report: {} and {}", json.display(), md.display());
    Ok(())
}

/// `PUT /v1/scale/limits`; a node without the endpoint gets a warning, not a failure,
/// since the report files are already written.
fn record_on_node(report: &ScaleReport, url: reqwest::Url) -> Result<()> {
    let client = Client::new(url)?;
    let body = serde_json::to_value(report)?;
    match client.put::<IgnoredAny>(&["v1", "scale", "limits"], body) {
        Ok(_) => {
            println!("recorded on the node: GET /v1/scale/limits shows it");
            Ok(())
        }
        Err(
            ClientError::Problem { status: 404, .. }
            | ClientError::Status { status: 404, .. }
            | ClientError::Problem { status: 405, .. }
            | ClientError::Status { status: 405, .. },
        ) => {
            eprintln!(
                "warning: the node has no PUT /v1/scale/limits (it answered 404/405), so the \
                 report was not recorded there; the files above hold it"
            );
            Ok(())
        }
        Err(e) => Err(e).context("recording the report on the node"),
    }
}

/// Cores, memory and host of this machine, as far as the OS tells.
fn machine_info() -> MachineInfo {
    let cores = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(0);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or(0);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    MachineInfo {
        cores,
        memory_bytes,
        os: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        hostname,
    }
}

/// `MemTotal:  24576000 kB` → bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }
}
