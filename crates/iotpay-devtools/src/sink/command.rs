//! The `iotpay-notify sink` subcommand: a thin command line over [`Sink`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::{Sink, SinkConfig};
use crate::config::ForwardSecret;

/// Flags of `iotpay-notify sink`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Listen address; any path is accepted (e.g. FORWARD_URLS=http://127.0.0.1:8099/webhook).
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: SocketAddr,
    /// The Standard Webhooks secret the service signs with (`whsec_…`).
    #[arg(long, env = "FORWARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Answer 503 to the first N correctly signed requests.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u32,
    /// Answer 503 to correctly signed requests for SECS seconds after start.
    #[arg(long, value_name = "SECS")]
    pub fail_for: Option<u64>,
}

/// Runs the sink until Ctrl-C, printing one line per request.
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let secret = ForwardSecret::parse(&args.secret).map_err(anyhow::Error::msg).context("--secret / FORWARD_SECRET")?;
    let mut config = SinkConfig::new(secret);
    config.listen = args.listen;
    config.fail_first = args.fail_first;
    config.fail_for = args.fail_for.map(Duration::from_secs);
    config.print = true;
    let sink = Sink::start(config).await?;
    println!("sink listening: FORWARD_URLS={} (Ctrl-C to stop)", sink.url());
    crate::service::wait_for_signal().await;
    Ok(())
}
