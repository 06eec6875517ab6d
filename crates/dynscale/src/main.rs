//! The `dynscale` binary: parses the command line once into checked values, installs
//! the tracing subscriber, dispatches to one command, and maps the result to an exit
//! code (0 success, 1 error, 2 a decision other than allow or warn).

mod cli;
mod client;
mod commands;
mod config;
mod load;
mod table;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::commands::Exit;

/// The variable that sets the log filter (`info` when unset).
const LOG_ENV: &str = "DYNSCALE_LOG";

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_tracing();
    match dispatch(&cli.command) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(Exit::Failed.code())
        }
    }
}

/// Logs go to stderr so command output on stdout stays clean for pipes.
fn install_tracing() {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: {LOG_ENV}=`{spec}` is not a log filter ({e}); logging at info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn dispatch(command: &Command) -> Result<Exit> {
    match command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Policy(command) => commands::policy::run(command),
        Command::Decide(args) => commands::decide::run(args),
        Command::Agent(command) => commands::agent::run(command),
        Command::Escalation(command) => commands::escalation::run(command),
        Command::Kill(args) => commands::kill::run(args),
        Command::Events(args) => commands::events::run(args),
        Command::Audit(command) => commands::audit::run(command),
        Command::Loadgen(args) => commands::loadgen::run(args),
        Command::Certify(args) => commands::certify::run(args),
        Command::Scale(command) => commands::scale::run(command),
        Command::Rollout(command) => commands::rollout::run(command),
    }
}
