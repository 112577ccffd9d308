//! The development tools' commands: `demo`, `sandbox`, `sink`, `bench`.

use anyhow::Context;
use clap::Subcommand;

use crate::iotpay::Merchants;

/// The development tools' subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A simulated IOTPay for development: serves cc_query, sends signed notifications.
    Sandbox(crate::sandbox::command::SandboxArgs),
    /// Receive forwarded events: verify their signature, print them; can fail on purpose.
    Sink(crate::sink::command::SinkArgs),
    /// Play the whole flow on one machine, on its own throwaway PostgreSQL (DATABASE_URL is ignored).
    Demo(crate::demo::DemoArgs),
    /// Load-test a running service's `POST /iotpay/notify` and print throughput and latency.
    Bench(BenchArgs),
}

/// Runs one development tool to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => bench(args).await,
        Command::Demo(args) => {
            // The demo prints its own story; service logs only when RUST_LOG asks for them.
            if std::env::var_os("RUST_LOG").is_some() {
                crate::telemetry::init_logs(crate::config::LogFormat::Text);
            }
            crate::demo::run(args).await
        }
        Command::Sandbox(args) => crate::sandbox::command::run(args).await,
        Command::Sink(args) => crate::sink::command::run(args).await,
    }
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

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let merchants = match &args.merchant {
        Some(m) => Some(Merchants::parse(m).map_err(anyhow::Error::msg).context("--merchant")?),
        None => crate::env::merchants()?,
    };
    let (mch_id, key) = merchants
        .as_ref()
        .and_then(Merchants::first)
        .context("--merchant MCH_ID:KEY or IOTPAY_MERCHANTS is required")?;
    let plan = crate::bench::BenchPlan {
        base_url: args.url,
        mch_id: mch_id.to_string(),
        key: key.clone(),
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
