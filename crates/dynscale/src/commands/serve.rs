//! `dynscale serve`: assembles the configuration, builds the tokio runtime and runs
//! the node until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};

use super::Exit;
use crate::cli::ServeArgs;
use crate::config;

/// Runs a node in the foreground.
pub fn run(args: &ServeArgs) -> Result<Exit> {
    let config = config::load(args, &|name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dynscale_server::serve(config, shutdown_signal()))?;
    tracing::info!("dynscale node stopped");
    Ok(Exit::Success)
}

/// Completes on the first Ctrl-C or SIGTERM. A signal that cannot be listened for
/// is logged and never fires, so the other one still works.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
