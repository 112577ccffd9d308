//! Operator commands: `events list|show` and `deliveries redrive`. They need only `DATABASE_URL`
//! (not the merchants' keys), print tables for people and `--json` for scripts.

mod input;
pub mod orders;
pub mod orphans;
pub mod prune;
mod table;

use std::fmt::Write as _;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::forward::worker::endpoint_label;
use crate::store::{self, ops, DeliveryStatus, EventStatus};
use input::pool;
pub use input::{parse_since, UsageError};
use table::{cell, indent, opt_time, table, time};

/// `iotpay-notify events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    List {
        /// Only events with this status (pending, confirmed, rejected, unconfirmed).
        #[arg(long)]
        status: Option<String>,
        /// Only events created since an RFC 3339 time or a duration ago (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put an unconfirmed event back to pending for one more check with IOTPay.
    Recheck {
        /// The event's id (evt_...).
        event_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show an event, its notifications, its confirmation, every delivery and attempt.
    Show {
        /// The event's id (evt_...).
        event_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `iotpay-notify deliveries ...`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Put dead deliveries back in the queue with a fresh retry schedule.
    Redrive(RedriveArgs),
    /// List endpoints that still have pending or dead deliveries but are not in FORWARD_URLS.
    Orphans(orphans::OrphansArgs),
    /// Mark every pending or dead delivery to an endpoint not in FORWARD_URLS as dropped.
    Drop(orphans::DropArgs),
    /// Re-address pending or dead deliveries from an old endpoint to one in FORWARD_URLS.
    Move(orphans::MoveArgs),
}

/// Which dead deliveries to redrive (at least one filter, or `--all`).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["endpoint", "event", "all"])))]
pub struct RedriveArgs {
    /// Only deliveries to this endpoint URL.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only deliveries of this event id.
    #[arg(long)]
    pub event: Option<String>,
    /// Every dead delivery.
    #[arg(long)]
    pub all: bool,
    /// Also retry matching pending deliveries now (those no worker is attempting at the moment),
    /// keeping their place in the retry schedule.
    #[arg(long)]
    pub pending: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `events` subcommand, printing to stdout.
pub async fn events(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List { status, since, limit, json } => {
            let status = status
                .map(|s| {
                    EventStatus::parse(&s)
                        .ok_or_else(|| UsageError(format!("--status must be one of {}", EventStatus::choices())))
                })
                .transpose()?;
            if limit <= 0 {
                return Err(UsageError("--limit must be positive".into()).into());
            }
            let since = since.as_deref().map(|s| parse_since(s, Utc::now()).context("--since")).transpose()?;
            let pool = pool().await?;
            let rows = ops::list_events(&pool, status, since, limit).await.context("listing events")?;
            if json {
                let lines: Vec<store::admin::EventLine> = rows.iter().map(store::admin::EventLine).collect();
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", events_table(&rows));
            }
        }
        EventsCommand::Recheck { event_id, json } => {
            let pool = pool().await?;
            match store::admin::recheck(&pool, &event_id).await.context("re-checking the event")? {
                store::admin::Recheck::Queued if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({"event_id": event_id, "status": EventStatus::Pending}))?
                    )
                }
                store::admin::Recheck::Queued => {
                    println!("{event_id}: unconfirmed -> pending, one more check is due now")
                }
                store::admin::Recheck::Unknown => anyhow::bail!("no event {event_id}"),
                store::admin::Recheck::NotUnconfirmed(s) => {
                    anyhow::bail!("{event_id} is {s}: only unconfirmed events are re-checked")
                }
            }
        }
        EventsCommand::Show { event_id, json } => {
            let pool = pool().await?;
            let detail = ops::show_event(&pool, &event_id).await.context("reading the event")?;
            let detail = detail.with_context(|| format!("no event {event_id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail.document())?);
            } else {
                print!("{}", event_text(&detail));
            }
        }
    }
    Ok(())
}

/// Runs a `deliveries` subcommand, printing to stdout.
pub async fn deliveries(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::Orphans(args) => orphans::orphans(&pool().await?, args).await?,
        DeliveriesCommand::Drop(args) => orphans::drop(&pool().await?, args).await?,
        DeliveriesCommand::Move(args) => orphans::move_to(&pool().await?, args).await?,
        DeliveriesCommand::Redrive(args) => {
            let pool = pool().await?;
            let endpoint = match &args.endpoint {
                Some(given) => Some(orphans::stored_endpoint(&pool, given).await.context("--endpoint")?),
                None => None,
            };
            let filter = ops::RedriveFilter {
                endpoint: endpoint.as_deref(),
                event_id: args.event.as_deref(),
                include_pending: args.pending,
                ..Default::default()
            };
            let rows = ops::redrive_with(&pool, filter).await.context("redriving deliveries")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "redriven": rows }))?);
            } else {
                let dead = rows.iter().filter(|r| r.previous_status == DeliveryStatus::Dead).count();
                let mut out = format!("redriven: {dead} dead deliveries back to pending\n");
                if args.pending {
                    let _ = writeln!(out, "retried now: {} pending deliveries", rows.len() - dead);
                }
                if !rows.is_empty() {
                    out.push_str(&table(
                        &["DELIVERY", "EVENT_ID", "ENDPOINT", "WAS"],
                        rows.iter().map(|r| {
                            vec![
                                r.id.to_string(),
                                r.event_id.clone(),
                                endpoint_label(&r.endpoint),
                                r.previous_status.to_string(),
                            ]
                        }),
                    ));
                }
                print!("{out}");
            }
        }
    }
    Ok(())
}

fn events_table(rows: &[store::admin::ListedEvent]) -> String {
    if rows.is_empty() {
        return "no events\n".into();
    }
    table(
        &["EVENT_ID", "TYPE", "STATUS", "AMOUNT", "CUR", "MCH_ID", "PAY_ORDER_ID", "CREATED_AT", "DELIVERIES"],
        rows.iter().map(|r| {
            let deliveries = if r.deliveries == 0 {
                "-".to_owned()
            } else if r.dead > 0 {
                format!("{}/{} delivered, {} dead", r.delivered, r.deliveries, r.dead)
            } else {
                format!("{}/{} delivered", r.delivered, r.deliveries)
            };
            let e = &r.event;
            vec![
                e.event_id.clone(),
                e.event_type.to_string(),
                e.status.to_string(),
                e.amount.to_string(),
                e.currency.as_str().to_owned(),
                e.mch_id.to_string(),
                e.pay_order_id.to_string(),
                time(e.created_at),
                deliveries,
            ]
        }),
    )
}

fn event_text(d: &ops::EventDetail) -> String {
    let mut out = String::from("event\n");
    let width = d.event.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &d.event {
        let _ = writeln!(out, "  {k:<width$}  {}", cell(v));
    }
    let _ = writeln!(out, "\nnotifications ({})", d.notifications.len());
    if !d.notifications.is_empty() {
        out.push_str(&indent(
            &table(
                &["ID", "RECEIVED_AT", "FROM", "API", "FIELDS"],
                d.notifications.iter().map(|n| {
                    vec![
                        n.id.to_string(),
                        time(n.received_at),
                        n.remote_addr.clone().unwrap_or_else(|| "-".into()),
                        n.api_version.clone(),
                        n.fields.to_string(),
                    ]
                }),
            ),
            "  ",
        ));
    }
    let _ = writeln!(out, "\nconfirmation checks ({})", d.checks.len());
    if !d.checks.is_empty() {
        out.push_str(&indent(
            &table(
                &["#", "STARTED_AT", "RESULT", "REASON"],
                d.checks.iter().map(|c| {
                    vec![
                        c.attempt.to_string(),
                        time(c.started_at),
                        c.result.clone(),
                        c.reason.clone().unwrap_or_else(|| "-".into()),
                    ]
                }),
            ),
            "  ",
        ));
    }
    let _ = writeln!(out, "\ndeliveries ({})", d.deliveries.len());
    for dl in &d.deliveries {
        let _ = writeln!(
            out,
            "  {}  {}  status={} attempts={} next_attempt_at={} delivered_at={} dead_at={} redrives={}",
            dl.id,
            endpoint_label(&dl.endpoint),
            dl.status,
            dl.attempts,
            if dl.status == DeliveryStatus::Pending { time(dl.next_attempt_at) } else { "-".into() },
            opt_time(dl.delivered_at),
            opt_time(dl.dead_at),
            dl.redrive_count,
        );
        if let Some(e) = &dl.last_error {
            let _ = writeln!(out, "    last_error: {e}");
        }
        if !dl.attempts_log.is_empty() {
            out.push_str(&indent(
                &table(
                    &["#", "STARTED_AT", "MS", "RESULT", "RESPONSE"],
                    dl.attempts_log.iter().map(|a| {
                        let result = match (a.http_status, &a.error) {
                            (Some(s), _) => s.to_string(),
                            (None, Some(e)) => e.clone(),
                            (None, None) => "-".into(),
                        };
                        let snippet: String = a
                            .response_snippet
                            .as_deref()
                            .unwrap_or("")
                            .chars()
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .take(60)
                            .collect();
                        vec![a.label(), time(a.started_at), a.duration_ms.to_string(), result, snippet]
                    }),
                ),
                "    ",
            ));
        }
    }
    out
}
