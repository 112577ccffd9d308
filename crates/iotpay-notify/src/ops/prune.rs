//! `prune`: retention of the append-only `notifications` and `delivery_attempts` tables. Needs
//! only `DATABASE_URL`. What counts as final, and why, is in `store::retention`.

use anyhow::Context;
use chrono::Utc;
use clap::Args;

use crate::store::retention;

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Age of the rows to delete: a duration (`90d`, `12h`) or an RFC 3339 time.
    #[arg(long, value_name = "AGE")]
    pub older_than: String,
    /// Count what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `prune`.
pub async fn run(args: PruneArgs) -> anyhow::Result<()> {
    let cutoff = super::input::parse_since(&args.older_than, Utc::now())
        .with_context(|| format!("--older-than `{}`: expected e.g. 90d or an RFC 3339 time", args.older_than))?;
    let pool = super::input::pool().await?;
    let pruned = if args.dry_run {
        retention::count(&pool, cutoff).await.context("counting prunable rows")?
    } else {
        retention::prune(&pool, cutoff).await.context("pruning")?
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dry_run": args.dry_run,
                "older_than": cutoff.to_rfc3339(),
                "notifications": pruned.notifications,
                "delivery_attempts": pruned.delivery_attempts,
            })
        );
    } else {
        println!(
            "{} {} notifications and {} delivery attempts of final events older than {}",
            if args.dry_run { "would delete" } else { "deleted" },
            pruned.notifications,
            pruned.delivery_attempts,
            cutoff.to_rfc3339()
        );
    }
    Ok(())
}
