//! Operator commands: `events list|show` and `deliveries redrive`. They need only `DATABASE_URL`
//! (not the merchants' keys), print tables for people and `--json` for scripts.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::PgPool;

use crate::cli::UsageError;
use crate::config::ConfigError;
use crate::forward::worker::endpoint_label;
use crate::store::{self, ops};

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
    Orphans(crate::ops_orphans::OrphansArgs),
    /// Mark every pending or dead delivery to an endpoint not in FORWARD_URLS as dropped.
    Drop(crate::ops_orphans::DropArgs),
    /// Re-address pending or dead deliveries from an old endpoint to one in FORWARD_URLS.
    Move(crate::ops_orphans::MoveArgs),
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

/// Statuses an event can have.
const STATUSES: &[&str] = &["pending", "confirmed", "rejected", "unconfirmed"];

pub(crate) async fn pool() -> anyhow::Result<PgPool> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty());
    let url = url.ok_or(ConfigError::Missing("DATABASE_URL"))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            var: "DATABASE_URL",
            reason: "must start with postgres:// or postgresql://".into(),
        }
        .into());
    }
    let pool = store::connect_lazy(&url, 2)?;
    Ok(pool)
}

/// Runs an `events` subcommand, printing to stdout.
pub async fn events(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List { status, since, limit, json } => {
            if let Some(s) = &status {
                if !STATUSES.contains(&s.as_str()) {
                    return Err(UsageError(format!("--status must be one of {}", STATUSES.join(", "))).into());
                }
            }
            if limit <= 0 {
                return Err(UsageError("--limit must be positive".into()).into());
            }
            let since = since.as_deref().map(|s| parse_since(s, Utc::now()).context("--since")).transpose()?;
            let pool = pool().await?;
            let rows = ops::list_events(&pool, status.as_deref(), since, limit).await.context("listing events")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", events_table(&rows));
            }
        }
        EventsCommand::Recheck { event_id, json } => {
            let pool = pool().await?;
            match store::admin::recheck(&pool, &event_id).await.context("re-checking the event")? {
                store::admin::Recheck::Queued if json => {
                    println!("{}", serde_json::to_string_pretty(&json!({"event_id": event_id, "status": "pending"}))?)
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
        DeliveriesCommand::Orphans(args) => crate::ops_orphans::orphans(&pool().await?, args).await?,
        DeliveriesCommand::Drop(args) => crate::ops_orphans::drop(&pool().await?, args).await?,
        DeliveriesCommand::Move(args) => crate::ops_orphans::move_to(&pool().await?, args).await?,
        DeliveriesCommand::Redrive(args) => {
            let pool = pool().await?;
            let endpoint = match &args.endpoint {
                Some(given) => Some(crate::ops_orphans::stored_endpoint(&pool, given).await.context("--endpoint")?),
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
                let dead = rows.iter().filter(|r| r.previous_status == "dead").count();
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
                                r.previous_status.clone(),
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

/// The label of an attempt: its number, and after a redrive restarted the count, its round
/// (`1 (redrive 1)`).
pub fn attempt_label(a: &ops::AttemptRow) -> String {
    match a.redrive_round {
        0 => a.attempt.to_string(),
        round => format!("{} (redrive {round})", a.attempt),
    }
}

/// Reads a time flag (`--since`, `--older-than`): an RFC 3339 time, or a duration before `now`
/// (`90s`, `30m`, `24h`, `7d`). A bad value is a [`UsageError`] (exit 2).
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UsageError> {
    use crate::duration::{self, Syntax, Unit};
    // Whole seconds to days, always with a unit.
    const SINCE: Syntax = Syntax { units: &[Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days], bare: None };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    let s = s.trim();
    // Checked all the way: a huge duration is an error, never a wrapped, silently wrong time.
    let too_far = || UsageError(format!("`{s}` reaches before the earliest time this program can represent"));
    let ago = duration::parse(s, SINCE).map_err(|e| match e {
        duration::DurationError::TooLong { .. } => too_far(),
        _ => UsageError(format!("`{s}` is neither an RFC 3339 time nor a duration like 30m, 24h, 7d")),
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| too_far())?;
    now.checked_sub_signed(ago).ok_or_else(too_far)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{:<w$}  ", cell, w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn events_table(rows: &[ops::EventSummary]) -> String {
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
            vec![
                r.event_id.clone(),
                r.event_type.clone(),
                r.status.clone(),
                r.amount.to_string(),
                r.currency.clone(),
                r.mch_id.clone(),
                r.pay_order_id.clone(),
                time(r.created_at),
                deliveries,
            ]
        }),
    )
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
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
            if dl.status == "pending" { time(dl.next_attempt_at) } else { "-".into() },
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
                        vec![attempt_label(a), time(a.started_at), a.duration_ms.to_string(), result, snippet]
                    }),
                ),
                "    ",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_times_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().to_utc();
        assert_eq!(time(parse_since("2026-01-01T12:00:00+01:00", now).unwrap()), "2026-01-01T11:00:00Z");
        assert_eq!(time(parse_since("90s", now).unwrap()), "2026-01-09T23:58:30Z");
        assert_eq!(time(parse_since("30m", now).unwrap()), "2026-01-09T23:30:00Z");
        assert_eq!(time(parse_since("24h", now).unwrap()), "2026-01-09T00:00:00Z");
        assert_eq!(time(parse_since("7d", now).unwrap()), "2026-01-03T00:00:00Z");
        for bad in ["", "h", "5y", "yesterday", "-3h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
