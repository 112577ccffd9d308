//! Command line: `serve`, `migrate`, `sandbox`, `sink`. The program's edge: errors become one line and an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::{store, telemetry};

/// Receives, verifies, stores, confirms and forwards IOTPay payment notifications.
#[derive(Debug, Parser)]
#[command(name = "iotpay-notify", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and background workers (applies pending migrations first).
    Serve {
        /// Do not apply migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// A simulated IOTPay for development: serves cc_query, sends signed notifications.
    Sandbox(crate::sandbox::command::SandboxArgs),
    /// Receive forwarded events: verify their signature, print them; can fail on purpose.
    Sink(crate::sink::command::SinkArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("error: .env could not be read: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs one subcommand to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_migrate } => serve(no_migrate).await,
        Command::Migrate => {
            let config = Config::from_env()?;
            telemetry::init_logs(config.log_format);
            let pool = store::connect_lazy(&config.database_url, 2)?;
            store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Sandbox(args) => crate::sandbox::command::run(args).await,
        Command::Sink(args) => crate::sink::command::run(args).await,
    }
}

async fn serve(no_migrate: bool) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init_logs(config.log_format);
    let pool = store::connect_lazy(&config.database_url, config.database_max_connections)?;
    if !no_migrate {
        store::migrate(&pool).await.context("applying migrations (is the database reachable?)")?;
    }
    let app = App::bind(&config, pool.clone()).await.with_context(|| format!("binding {}", config.listen_addr))?;
    let shutdown = CancellationToken::new();
    tracing::info!(
        addr = %app.local_addr(),
        merchants = config.merchants.ids().count(),
        time_zone = %config.iotpay_time_zone,
        "serving"
    );
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight requests");
        signal.cancel();
    });
    // Background workers run until `shutdown` is cancelled; each adds itself here.
    let workers: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let stop = shutdown.clone();
    app.serve(async move { stop.cancelled().await }).await?;
    shutdown.cancel();
    workers.join_all().await;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
