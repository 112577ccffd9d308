//! The service's commands (`serve`, `migrate`, `events`, `deliveries`) and the program's edge:
//! errors become one line and an exit code. The binary (the workspace's root package) adds the
//! development tools' commands to these.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{store, telemetry};

/// The service's subcommands.
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
    /// Inspect stored events (needs only DATABASE_URL).
    Events {
        /// What to do.
        #[command(subcommand)]
        command: crate::ops::EventsCommand,
    },
    /// Operate on forward deliveries (needs only DATABASE_URL).
    Deliveries {
        /// What to do.
        #[command(subcommand)]
        command: crate::ops::DeliveriesCommand,
    },
    /// Register and show expected orders (reconciliation).
    Orders {
        /// What to do.
        #[command(subcommand)]
        command: crate::ops_orders::OrdersCommand,
    },
}

/// Entry point of a binary: reads `.env`, parses the command line `C`, runs `run` on a runtime.
/// A configuration error exits 2, any other error 1, each as one line on stderr.
pub fn main_with<C, F>(run: impl FnOnce(C) -> F) -> ExitCode
where
    C: Parser,
    F: Future<Output = anyhow::Result<()>>,
{
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("error: .env could not be read: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = C::parse();
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
            // Not eprintln!: it panics when stderr is a closed pipe, and the exit code matters more.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("error: {e:#}\n").as_bytes());
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs one subcommand to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { no_migrate } => serve(no_migrate).await,
        Command::Migrate => {
            let config = Config::from_env()?;
            telemetry::init_logs(config.log_format);
            let pool = store::connect_lazy(&config.database_url, 2)?;
            store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Events { command } => crate::ops::events(command).await,
        Command::Deliveries { command } => crate::ops::deliveries(command).await,
        Command::Orders { command } => crate::ops_orders::orders(command).await,
    }
}

async fn serve(no_migrate: bool) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init_logs(config.log_format);
    let pool = store::connect_lazy(&config.database_url, config.database_max_connections)?;
    if !no_migrate {
        store::migrate(&pool).await.context("applying migrations (is the database reachable?)")?;
    }
    let shutdown = CancellationToken::new();
    let running = crate::service::start(&config, pool.clone(), shutdown.clone()).await?;
    tracing::info!(
        addr = %running.addr(),
        admin_addr = %running.admin_addr().map_or_else(|| "off (ADMIN_TOKENS not set)".to_owned(), |a| a.to_string()),
        merchants = config.merchants.ids().count(),
        time_zone = %config.iotpay_time_zone,
        "serving"
    );
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::service::wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight requests");
        signal.cancel();
    });
    running.wait().await?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
