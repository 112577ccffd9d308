//! Queries of the admin API and console: the filtered, keyset-paginated event list, re-checking
//! an unconfirmed event, and the figures of the overview. Event detail and redrive are the
//! operator commands' own ([`super::ops`]).

use chrono::{DateTime, Utc};
use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};
use sqlx::PgPool;

use super::confirm::PENDING_CHANNEL;
use super::row::{delivery_counts_of_page, event_columns, serialize_fields};
use super::{EventStatus, StoredEvent};

/// Filters of the event list; every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// The event's status.
    pub status: Option<EventStatus>,
    /// `payment.succeeded`, ...
    pub event_type: Option<String>,
    /// `v3`, `v2`, ...
    pub api_version: Option<String>,
    /// Merchant id.
    pub mch_id: Option<String>,
    /// The merchant's order number.
    pub mch_order_no: Option<String>,
    /// IOTPay's order id.
    pub pay_order_id: Option<String>,
    /// Any id: event id, `pay_order_id`, `mch_order_no` or `original_order_id`.
    pub any_id: Option<String>,
    /// Created at or after.
    pub created_since: Option<DateTime<Utc>>,
    /// Created before.
    pub created_until: Option<DateTime<Utc>>,
}

/// Position after the last event of a page (events are ordered newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last event returned.
    pub created_at: DateTime<Utc>,
    /// Its id (ties on `created_at` are ordered by id, descending).
    pub event_id: String,
}

/// One event of a list, with its deliveries (one per endpoint) counted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedEvent {
    /// The event.
    #[sqlx(flatten)]
    pub event: StoredEvent,
    /// Deliveries (one per endpoint).
    pub deliveries: i64,
    /// Of which delivered.
    pub delivered: i64,
    /// Of which dead.
    pub dead: i64,
}

/// The API's document of a listed event (`EventSummary` in openapi.json).
impl Serialize for ListedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("EventSummary", 17)?;
        serialize_fields!(out, self.event;
            event_id, event_type, api_version, status, status_reason, mch_id, mch_order_no, pay_order_id,
            original_order_id, amount, currency, notification_count, created_at, confirmed_at);
        serialize_fields!(out, self; deliveries, delivered, dead);
        out.end()
    }
}

/// One line of `events list`: `--json` prints these fields of the listed event.
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'a>(pub &'a ListedEvent);

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("EventLine", 12)?;
        serialize_fields!(out, self.0.event;
            event_id, event_type, status, amount, currency, mch_id, pay_order_id, created_at, confirmed_at);
        serialize_fields!(out, self.0; deliveries, delivered, dead);
        out.end()
    }
}

/// A page of events, newest first, strictly after `after`; one more row than `limit` is read so
/// the caller knows whether another page follows. Keyset pagination on the immutable
/// (`created_at`, `event_id`): rows inserted meanwhile never shift a page, so a walk neither skips
/// nor repeats a row that existed when it started.
pub async fn list_events(
    pool: &PgPool,
    filter: &EventFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<ListedEvent>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        event_columns!("e"),
        ", COALESCE(d.deliveries, 0) AS deliveries, COALESCE(d.delivered, 0) AS delivered,
                COALESCE(d.dead, 0) AS dead
           FROM (SELECT * FROM payment_events
                  WHERE ($1::text IS NULL OR status = $1)
                    AND ($2::text IS NULL OR event_type = $2)
                    AND ($3::text IS NULL OR api_version = $3)
                    AND ($4::text IS NULL OR mch_id = $4)
                    AND ($5::text IS NULL OR mch_order_no = $5)
                    AND ($6::text IS NULL OR pay_order_id = $6)
                    AND ($7::text IS NULL OR event_id = $7 OR pay_order_id = $7 OR mch_order_no = $7
                         OR original_order_id = $7)
                    AND ($8::timestamptz IS NULL OR created_at >= $8)
                    AND ($9::timestamptz IS NULL OR created_at < $9)
                    AND ($10::timestamptz IS NULL OR (created_at, event_id) < ($10, $11::text))
                  ORDER BY created_at DESC, event_id DESC
                  LIMIT $12) AS e
           ",
        delivery_counts_of_page!(),
        "
          ORDER BY e.created_at DESC, e.event_id DESC",
    ))
    .bind(filter.status.map(EventStatus::as_str))
    .bind(&filter.event_type)
    .bind(&filter.api_version)
    .bind(&filter.mch_id)
    .bind(&filter.mch_order_no)
    .bind(&filter.pay_order_id)
    .bind(&filter.any_id)
    .bind(filter.created_since)
    .bind(filter.created_until)
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.event_id.as_str()))
    .bind(limit + 1)
    .fetch_all(pool)
    .await
}

/// What a re-check request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// The event was `unconfirmed` and is `pending` again, due now.
    Queued,
    /// No such event.
    Unknown,
    /// The event has this other status; nothing changed.
    NotUnconfirmed(EventStatus),
}

/// Puts an `unconfirmed` event back to `pending`, due now, and wakes the confirmation workers.
/// Its window still counts from `created_at`, so it gets exactly one more check: a conclusive
/// answer decides it, an inconclusive one makes it `unconfirmed` again.
pub async fn recheck(pool: &PgPool, event_id: &str) -> Result<Recheck, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let status: Option<EventStatus> =
        sqlx::query_scalar("SELECT status FROM payment_events WHERE event_id = $1 FOR UPDATE")
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = match status {
        None => Recheck::Unknown,
        Some(s) if s != EventStatus::Unconfirmed => Recheck::NotUnconfirmed(s),
        Some(_) => {
            sqlx::query(
                "UPDATE payment_events
                    SET status = 'pending', status_reason = NULL, decided_at = NULL, next_check_at = now(),
                        lease_until = NULL, leased_by = NULL, updated_at = now(),
                        -- A recheck asks afresh: earlier not-found answers do not count toward
                        -- a rejection (CONFIRM_NOT_FOUND_*).
                        not_found_checks = 0, first_not_found_at = NULL
                  WHERE event_id = $1",
            )
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, '')").bind(PENDING_CHANNEL).execute(&mut *tx).await?;
            Recheck::Queued
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Events per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    /// Stored, not yet decided.
    pub pending: i64,
    /// IOTPay agrees.
    pub confirmed: i64,
    /// IOTPay contradicts.
    pub rejected: i64,
    /// Gave up asking.
    pub unconfirmed: i64,
}

impl StatusCounts {
    /// The count of one status.
    pub fn get(&self, status: EventStatus) -> i64 {
        match status {
            EventStatus::Pending => self.pending,
            EventStatus::Confirmed => self.confirmed,
            EventStatus::Rejected => self.rejected,
            EventStatus::Unconfirmed => self.unconfirmed,
        }
    }
}

/// The forwarding state of one endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EndpointStats {
    /// The endpoint URL (user-info and query values masked when serialized: it may carry a password).
    #[serde(serialize_with = "crate::redact::serialize_masked_url")]
    pub endpoint: String,
    /// One of its pending or dead deliveries: the console's forms name the endpoint by it, so
    /// the URL never travels through a page.
    #[serde(skip)]
    pub delivery_id: i64,
    /// Deliveries waiting (pending).
    pub pending: i64,
    /// Age of the oldest pending delivery, in seconds (0 when none).
    pub oldest_pending_age_seconds: f64,
    /// Dead deliveries waiting for an operator.
    pub dead: i64,
}

/// One minute of the last hour.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Minute {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Events first stored in it.
    pub received: i64,
    /// Events confirmed in it.
    pub confirmed: i64,
    /// Deliveries delivered in it.
    pub delivered: i64,
    /// Events still undecided at its end (confirmation backlog).
    pub pending_events: i64,
    /// Deliveries neither delivered nor dead at its end (forwarding backlog).
    pub pending_deliveries: i64,
}

/// Counts by status, per-endpoint backlog and dead, and the last 60 minutes.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// When the figures were read (database clock).
    pub generated_at: DateTime<Utc>,
    /// Events per status.
    pub events: StatusCounts,
    /// Per endpoint, by URL.
    pub endpoints: Vec<EndpointStats>,
    /// Oldest first, 60 entries; the last one is the current minute.
    pub per_minute: Vec<Minute>,
}

/// Events per status only (the console's live counts).
pub async fn status_counts(pool: &PgPool) -> Result<StatusCounts, sqlx::Error> {
    let rows: Vec<(EventStatus, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM payment_events GROUP BY status").fetch_all(pool).await?;
    let mut c = StatusCounts::default();
    for (status, n) in rows {
        let count = match status {
            EventStatus::Pending => &mut c.pending,
            EventStatus::Confirmed => &mut c.confirmed,
            EventStatus::Rejected => &mut c.rejected,
            EventStatus::Unconfirmed => &mut c.unconfirmed,
        };
        *count = n;
    }
    Ok(c)
}

/// Reads every figure of [`Stats`]. The backlog history is reconstructed from the rows'
/// timestamps, so it needs no sampling job: a row is pending from `pending_since` (set when a
/// dead delivery is redriven or moved, or an unconfirmed event re-checked; else `created_at`)
/// until `decided_at`, `delivered_at` or `dead_at`. So a redriven delivery or a re-checked event
/// counts from its redrive or re-check on, and its dead or unconfirmed time is not backlog (its
/// first pending period, before it died, is not drawn either: the row keeps no earlier times).
pub async fn stats(pool: &PgPool) -> Result<Stats, sqlx::Error> {
    let events = status_counts(pool).await?;
    let endpoints = sqlx::query_as(
        "SELECT endpoint, min(id) AS delivery_id,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)::float8
                    AS oldest_pending_age_seconds,
                count(*) FILTER (WHERE status = 'dead') AS dead
           FROM deliveries WHERE status IN ('pending', 'dead')
          GROUP BY endpoint ORDER BY endpoint",
    )
    .fetch_all(pool)
    .await?;
    let per_minute = sqlx::query_as(
        "WITH minutes AS (
            SELECT m AS minute, m + interval '1 minute' AS minute_end
              FROM generate_series(date_trunc('minute', now()) - interval '59 minutes',
                                   date_trunc('minute', now()), interval '1 minute') AS m
         ), recent_events AS (
            -- Rows decided before decided_at existed (or by hand) count as decided when last updated.
            SELECT created_at, confirmed_at, status, COALESCE(pending_since, created_at) AS pending_since,
                   CASE WHEN status <> 'pending' THEN COALESCE(decided_at, confirmed_at, updated_at) END AS decided_at
              FROM payment_events
             WHERE status = 'pending' OR created_at >= now() - interval '61 minutes'
                OR COALESCE(decided_at, confirmed_at, updated_at) >= now() - interval '61 minutes'
         ), recent_deliveries AS (
            -- A dropped delivery (deliveries drop|move) left the backlog when last updated.
            SELECT status, delivered_at, dead_at, COALESCE(pending_since, created_at) AS pending_since,
                   CASE WHEN status = 'dropped' THEN updated_at END AS dropped_at
              FROM deliveries
             WHERE status = 'pending' OR created_at >= now() - interval '61 minutes'
                OR delivered_at >= now() - interval '61 minutes' OR dead_at >= now() - interval '61 minutes'
         )
         SELECT minutes.minute,
                (SELECT count(*) FROM recent_events e
                  WHERE e.created_at >= minutes.minute AND e.created_at < minutes.minute_end) AS received,
                (SELECT count(*) FROM recent_events e
                  WHERE e.confirmed_at >= minutes.minute AND e.confirmed_at < minutes.minute_end) AS confirmed,
                (SELECT count(*) FROM recent_deliveries d
                  WHERE d.delivered_at >= minutes.minute AND d.delivered_at < minutes.minute_end) AS delivered,
                (SELECT count(*) FROM recent_events e
                  WHERE e.pending_since < minutes.minute_end
                    AND (e.decided_at IS NULL OR e.decided_at >= minutes.minute_end)) AS pending_events,
                (SELECT count(*) FROM recent_deliveries d
                  WHERE d.pending_since < minutes.minute_end
                    AND (d.delivered_at IS NULL OR d.delivered_at >= minutes.minute_end)
                    AND (d.dead_at IS NULL OR d.dead_at >= minutes.minute_end)
                    AND (d.dropped_at IS NULL OR d.dropped_at >= minutes.minute_end)
                    AND NOT (d.status = 'dead' AND d.dead_at IS NULL)) AS pending_deliveries
           FROM minutes ORDER BY minutes.minute",
    )
    .fetch_all(pool)
    .await?;
    let generated_at = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    Ok(Stats { generated_at, events, endpoints, per_minute })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> ListedEvent {
        let event = StoredEvent { status_reason: Some("why".into()), ..StoredEvent::example() };
        ListedEvent { event, deliveries: 2, delivered: 1, dead: 1 }
    }

    #[test]
    fn the_api_document_of_a_listed_event_is_pinned() {
        // openapi.json `EventSummary`: these fields in this order, times as chrono writes them.
        let expected = concat!(
            r#"{"event_id":"evt_1","event_type":"refund.succeeded","api_version":"v3","status":"confirmed","#,
            r#""status_reason":"why","mch_id":"10000701","mch_order_no":"r-1","pay_order_id":"R1","#,
            r#""original_order_id":"P1","amount":500,"currency":"CAD","notification_count":1,"#,
            r#""created_at":"2026-01-02T03:04:05.678Z","confirmed_at":"2026-01-02T03:04:07.678Z","#,
            r#""deliveries":2,"delivered":1,"dead":1}"#
        );
        assert_eq!(serde_json::to_string(&listed()).unwrap(), expected);
    }

    #[test]
    fn the_events_list_json_line_is_pinned() {
        // README's `events list --json`.
        let expected = concat!(
            r#"{"event_id":"evt_1","event_type":"refund.succeeded","status":"confirmed","amount":500,"#,
            r#""currency":"CAD","mch_id":"10000701","pay_order_id":"R1","created_at":"2026-01-02T03:04:05.678Z","#,
            r#""confirmed_at":"2026-01-02T03:04:07.678Z","deliveries":2,"delivered":1,"dead":1}"#
        );
        assert_eq!(serde_json::to_string(&EventLine(&listed())).unwrap(), expected);
    }
}
