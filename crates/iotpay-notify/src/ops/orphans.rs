//! `deliveries orphans|drop|move`: what to do with deliveries to an endpoint that was removed
//! from `FORWARD_URLS` (the worker never claims them, so they would stay pending forever).
//! Like the other operator commands they need only `DATABASE_URL`, plus `FORWARD_URLS` to know
//! which endpoints are configured.

use anyhow::Context;
use clap::Args;
use serde_json::json;
use sqlx::PgPool;

use super::table::table;
use crate::forward::worker::endpoint_label;
use crate::store::orphans;

/// `deliveries orphans`.
#[derive(Debug, Args)]
pub struct OrphansArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `deliveries drop`.
#[derive(Debug, Args)]
pub struct DropArgs {
    /// The endpoint whose pending and dead deliveries are dropped (must not be configured): its
    /// URL, or the masked URL or label other commands print, when only one endpoint has it.
    #[arg(long)]
    pub endpoint: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `deliveries move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The old endpoint (must not be configured): its URL, masked URL or label.
    #[arg(long)]
    pub from: String,
    /// The new endpoint (must be in FORWARD_URLS): its URL, masked URL or label.
    #[arg(long)]
    pub to: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `FORWARD_URLS` as the service reads it.
fn configured() -> Vec<String> {
    std::env::var("FORWARD_URLS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect()
}

fn is_configured(url: &str, configured: &[String]) -> bool {
    configured.iter().any(|c| c == url || c == url.trim_end_matches('/'))
}

/// The stored endpoint an operator means: every output masks the URL's password, so the masked
/// form and the label are accepted when exactly one endpoint with pending or dead deliveries
/// has it (an ambiguous one is refused). A name that matches nothing is taken as given.
pub async fn stored_endpoint(pool: &PgPool, given: &str) -> anyhow::Result<String> {
    let known = orphans::endpoints_with_backlog(pool).await.context("listing endpoints")?;
    Ok(crate::redact::resolve_endpoint(given, &known)?.unwrap_or(given.trim()).to_owned())
}

/// Lists endpoints with pending or dead deliveries that are not in `FORWARD_URLS`.
pub async fn orphans(pool: &PgPool, args: OrphansArgs) -> anyhow::Result<()> {
    let rows = orphans::orphans(pool, &configured()).await.context("listing orphaned deliveries")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "orphans": rows }))?);
    } else if rows.is_empty() {
        println!("no pending or dead deliveries to endpoints outside FORWARD_URLS");
    } else {
        print!(
            "{}",
            table(
                &["ENDPOINT", "PENDING", "DEAD"],
                rows.iter().map(|r| vec![endpoint_label(&r.endpoint), r.pending.to_string(), r.dead.to_string()]),
            )
        );
    }
    Ok(())
}

/// Drops the pending and dead deliveries of an endpoint that is no longer configured.
pub async fn drop(pool: &PgPool, args: DropArgs) -> anyhow::Result<()> {
    let configured = configured();
    let endpoint = stored_endpoint(pool, &args.endpoint).await?;
    anyhow::ensure!(
        !is_configured(&endpoint, &configured) && !is_configured(&args.endpoint, &configured),
        "{} is in FORWARD_URLS: remove it there first (the worker is still delivering to it)",
        endpoint_label(&endpoint)
    );
    let dropped = orphans::drop_endpoint(pool, &endpoint).await.context("dropping deliveries")?;
    if args.json {
        println!("{}", json!({ "endpoint": crate::redact::mask_url(&endpoint), "dropped": dropped }));
    } else {
        println!("dropped: {dropped} deliveries to {}", endpoint_label(&endpoint));
    }
    Ok(())
}

/// Moves the pending and dead deliveries of an old endpoint to a configured one.
pub async fn move_to(pool: &PgPool, args: MoveArgs) -> anyhow::Result<()> {
    let configured = configured();
    let to =
        crate::redact::resolve_endpoint(args.to.trim_end_matches('/'), &configured).context("--to")?.with_context(
            || format!("--to {} is not in FORWARD_URLS: nothing would deliver to it", endpoint_label(&args.to)),
        )?;
    let from = stored_endpoint(pool, &args.from).await.context("--from")?;
    anyhow::ensure!(
        !is_configured(&from, &configured),
        "--from {} is still in FORWARD_URLS: remove it there first",
        endpoint_label(&from)
    );
    let moved = orphans::move_endpoint(pool, &from, to).await.context("moving deliveries")?;
    if args.json {
        println!(
            "{}",
            json!({
                "from": crate::redact::mask_url(&from),
                "to": crate::redact::mask_url(to),
                "moved": moved.moved,
                "already_there": moved.already_there,
            })
        );
    } else {
        println!(
            "moved: {} deliveries from {} to {} (pending, due now); {} dropped as the event already had a delivery there",
            moved.moved,
            endpoint_label(&from),
            endpoint_label(to),
            moved.already_there
        );
    }
    Ok(())
}
