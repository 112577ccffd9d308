//! The service's commands (`serve`, `migrate`, `events`, `deliveries`) and the program's edge:
//! errors become one line and an exit code. The binary (the workspace's root package) adds the
//! development tools' commands to these.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ops::UsageError;
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
    /// Delete notifications and delivery attempts of final events older than an age (retention).
    Prune(crate::ops::prune::PruneArgs),
    /// Probe a running service's readiness: exit 0 when the URL answers 200, 1 otherwise (for
    /// container healthchecks: the slim image has no curl).
    Healthcheck {
        /// The readiness URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
        /// Longest wait for the answer, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
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
        command: crate::ops::orders::OrdersCommand,
    },
}

/// Entry point of a binary: reads `.env`, parses the command line `C`, runs `run` on a runtime.
/// A configuration or command-line error exits 2, any other error 1, each as one line on
/// stderr. (A panic, which should never happen, exits 101 with Rust's panic message.)
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
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("error: {}\n", one_line(&e)).as_bytes());
            let usage =
                |c: &(dyn std::error::Error + 'static)| c.is::<crate::config::ConfigError>() || c.is::<UsageError>();
            if e.chain().any(usage) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes on one line, each said once: sqlx and std errors repeat their
/// source's text in their own (`Address already in use (os error 98): Address already in use ...`).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs one subcommand to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { no_migrate } => serve(no_migrate).await,
        Command::Migrate => {
            let config = Config::from_env()?;
            telemetry::init_logs(config.log_format);
            let target = crate::config::database_target(&config.database_url);
            store::reach::probe(&config.database_url)
                .await
                .with_context(|| format!("cannot reach the database at {target}"))?;
            let pool = store::connect_lazy(&config.database_url, 2)?;
            store::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Healthcheck { url, timeout } => {
            crate::healthcheck::probe(&url, std::time::Duration::from_secs(timeout)).await
        }
        Command::Prune(args) => crate::ops::prune::run(args).await,
        Command::Events { command } => crate::ops::events(command).await,
        Command::Deliveries { command } => crate::ops::deliveries(command).await,
        Command::Orders { command } => crate::ops::orders::orders(command).await,
    }
}

/// The configured merchant ids, sorted, for the start log line (never their keys).
fn merchant_ids(config: &Config) -> String {
    let mut ids: Vec<&str> = config.merchants.ids().map(|id| id.as_str()).collect();
    ids.sort_unstable();
    ids.join(",")
}

async fn serve(no_migrate: bool) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init_logs(config.log_format);
    let pool = store::connect_lazy(&config.database_url, config.database_max_connections)?;
    // The ports first, for real: a second instance on the same port fails at once, before
    // touching the database, and these very sockets serve once migrations are done.
    let listeners = crate::app::Listeners::bind(&config)?;
    if !no_migrate {
        let target = crate::config::database_target(&config.database_url);
        store::reach::probe(&config.database_url)
            .await
            .with_context(|| format!("cannot reach the database at {target}"))?;
        store::migrate(&pool)
            .await
            .with_context(|| format!("applying migrations on {target} (is the database reachable?)"))?;
    }
    let shutdown = CancellationToken::new();
    let running = crate::service::start_on(&config, pool.clone(), shutdown.clone(), listeners).await?;
    tracing::info!(
        addr = %running.addr(),
        admin_addr = %running.admin_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
        database = %crate::config::database_target(&config.database_url),
        merchants = %merchant_ids(&config),
        time_zone = config.iotpay_time_zone.iana_name().unwrap_or("-"),
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
