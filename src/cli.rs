//! Command line: `serve`, `migrate`, `sandbox`, `sink`. The program's edge: errors become one line and an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
    /// Play the whole flow on one machine (throwaway PostgreSQL unless DATABASE_URL is set).
    Demo,
    /// Load-test a running service's `POST /iotpay/notify` and print throughput and latency.
    Bench(BenchArgs),
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// `MCH_ID:KEY` the service accepts (default: the first entry of IOTPAY_MERCHANTS).
    #[arg(long)]
    pub merchant: Option<String>,
    /// Requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Total requests.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    pub count: usize,
    /// Longest run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Share of requests repeating an earlier notification (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub repeat_share: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// End to end: also run the sandbox IOTPay query API and a sink here, and measure
    /// notification sent → confirmed → delivered (the service must use them: see the printed env).
    #[arg(long)]
    pub pipeline: bool,
    /// `--pipeline`: listen address of the sandbox query API.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub sandbox_listen: std::net::SocketAddr,
    /// `--pipeline`: listen address of the sink.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub sink_listen: std::net::SocketAddr,
    /// `--pipeline`: the service's FORWARD_SECRET, to verify forwarded events.
    #[arg(long, env = "FORWARD_SECRET", hide_env_values = true)]
    pub forward_secret: Option<String>,
    /// `--pipeline`: database to read `confirmed_at` from (sent → confirmed is skipped without it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// `--pipeline`: longest wait for the service's /readyz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
    /// `--pipeline`: longest wait after the last send for every event to be delivered, in seconds.
    #[arg(long, default_value_t = 120)]
    pub settle_timeout: u64,
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
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_migrate } => serve(no_migrate).await,
        Command::Bench(args) => bench(args).await,
        Command::Demo => {
            // The demo prints its own story; service logs only when RUST_LOG asks for them.
            if std::env::var_os("RUST_LOG").is_some() {
                telemetry::init_logs(crate::config::LogFormat::Text);
            }
            crate::demo::run().await
        }
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
    let shutdown = CancellationToken::new();
    let running = crate::service::start(&config, pool.clone(), shutdown.clone()).await?;
    tracing::info!(
        addr = %running.addr(),
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
    running.wait().await?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let merchant = match args.merchant {
        Some(m) => m,
        None => std::env::var("IOTPAY_MERCHANTS")
            .ok()
            .and_then(|m| m.split(',').next().map(str::to_owned))
            .ok_or_else(|| anyhow::anyhow!("--merchant MCH_ID:KEY or IOTPAY_MERCHANTS is required"))?,
    };
    let (mch_id, key) = merchant.split_once(':').ok_or_else(|| anyhow::anyhow!("--merchant must be MCH_ID:KEY"))?;
    let plan = crate::bench::BenchPlan {
        base_url: args.url,
        mch_id: mch_id.trim().to_owned(),
        key: crate::domain::MerchantKey::new(key.trim()),
        concurrency: args.concurrency,
        count: args.count,
        duration: std::time::Duration::from_secs(args.duration),
        repeat_share: args.repeat_share,
    };
    if args.pipeline {
        let secret = args
            .forward_secret
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--pipeline needs --forward-secret or FORWARD_SECRET"))?;
        let secret = crate::config::ForwardSecret::parse(secret)
            .map_err(|e| anyhow::anyhow!("--forward-secret / FORWARD_SECRET: {e}"))?;
        let plan = crate::bench::pipeline::PipelinePlan {
            ingest: plan,
            sandbox_listen: args.sandbox_listen,
            sink_listen: args.sink_listen,
            secret,
            database_url: args.database_url,
            ready_timeout: std::time::Duration::from_secs(args.ready_timeout),
            settle_timeout: std::time::Duration::from_secs(args.settle_timeout),
        };
        let ends = crate::bench::pipeline::Ends::start(&plan).await?;
        eprintln!("sandbox and sink running; the service needs: {}", ends.service_env());
        crate::bench::pipeline::wait_ready(&plan.ingest.base_url, plan.ready_timeout).await?;
        let report = crate::bench::pipeline::run(&plan, &ends).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{report}");
        }
        return Ok(());
    }
    let report = crate::bench::run(&plan).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
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
