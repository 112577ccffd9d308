//! Operator queries: list and inspect events with their deliveries, redrive dead deliveries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::admin::ListedEvent;
use super::deliveries::DELIVERIES_CHANNEL;
use super::row::{delivery_counts_of_page, event_columns};
use super::{DeliveryStatus, EventStatus, StoredEvent};

/// Events, newest first, optionally by status and creation time.
pub async fn list_events(
    pool: &PgPool,
    status: Option<EventStatus>,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<ListedEvent>, sqlx::Error> {
    // The page of events first, then the counts of just those: cheap on a large table.
    sqlx::query_as(concat!(
        "SELECT ",
        event_columns!("e"),
        ", d.deliveries, d.delivered, d.dead
           FROM (SELECT * FROM payment_events
                  WHERE ($1::text IS NULL OR status = $1)
                    AND ($2::timestamptz IS NULL OR created_at >= $2)
                  ORDER BY created_at DESC, event_id
                  LIMIT $3) AS e
           ",
        delivery_counts_of_page!(),
        "
          ORDER BY e.created_at DESC, e.event_id",
    ))
    .bind(status.map(EventStatus::as_str))
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A stored notification of an event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NotificationRow {
    /// Row id.
    pub id: i64,
    /// Arrival.
    pub received_at: DateTime<Utc>,
    /// Sender.
    pub remote_addr: Option<String>,
    /// v3 / v2.
    pub api_version: String,
    /// Every received field (card numbers masked).
    pub fields: serde_json::Value,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    /// Position in the schedule.
    pub attempt: i32,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Duration.
    pub duration_ms: i32,
    /// HTTP status, if an answer arrived.
    pub http_status: Option<i32>,
    /// Transport error or non-2xx description.
    pub error: Option<String>,
    /// First 1 KiB of the answer.
    pub response_snippet: Option<String>,
    /// Worker that made it.
    pub worker: String,
    /// Which retry schedule of the delivery it belongs to: 0 for the first; n for the schedule
    /// restarted by the n-th redrive (or move) of the dead delivery, whose attempts count from 1
    /// again. (`attempt` 1 of round 1 is shown as `1 (redrive 1)`.)
    #[sqlx(skip)]
    pub redrive_round: u32,
}

/// Numbers the rounds of a delivery's attempts (oldest first): a restart of the attempt count
/// is a redriven (or moved) dead delivery's fresh schedule. A redrive of a pending delivery keeps
/// its count, so it starts no round.
fn number_rounds(attempts: &mut [AttemptRow]) {
    let (mut round, mut previous) = (0, 0);
    for a in attempts {
        if a.attempt <= previous {
            round += 1;
        }
        previous = a.attempt;
        a.redrive_round = round;
    }
}

impl AttemptRow {
    /// The attempt's label: its number, and after a redrive restarted the count, its round
    /// (`1 (redrive 1)`), as the console and `events show` print it.
    pub fn label(&self) -> String {
        match self.redrive_round {
            0 => self.attempt.to_string(),
            round => format!("{} (redrive {round})", self.attempt),
        }
    }
}

/// One confirmation check of an event (`confirmation_checks`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CheckRow {
    /// Checks of the event so far, this one included.
    pub attempt: i32,
    /// When the check was claimed (the query followed).
    pub started_at: DateTime<Utc>,
    /// When its decision was recorded.
    pub finished_at: DateTime<Utc>,
    /// `confirmed`, `rejected`, `retry` or `unconfirmed`.
    pub result: String,
    /// Why (IOTPay's answer where it gave one); `null` when confirmed.
    pub reason: Option<String>,
}

/// A delivery of an event to one endpoint, with its attempts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// Target URL (user-info masked when printed).
    #[serde(serialize_with = "crate::redact::serialize_masked_url")]
    pub endpoint: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// Attempts in the current schedule.
    pub attempts: i32,
    /// Next try (pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Success time.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Dead time.
    pub dead_at: Option<DateTime<Utc>>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Times an operator redrove it.
    pub redrive_count: i32,
    /// Creation (with the confirmation).
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    #[sqlx(skip)]
    pub attempts_log: Vec<AttemptRow>,
}

/// Everything known about one event.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    /// Every column of the `payment_events` row, in table order.
    pub event: Vec<(String, serde_json::Value)>,
    /// Its notifications, oldest first.
    pub notifications: Vec<NotificationRow>,
    /// Its confirmation checks, oldest first.
    pub checks: Vec<CheckRow>,
    /// Its deliveries with their attempts.
    pub deliveries: Vec<DeliveryRow>,
}

impl EventDetail {
    /// The JSON document of `events show --json` and `GET /api/v1/events/{event_id}`:
    /// `{"event": {...}, "notifications": [...], "deliveries": [{..., "attempts_log": [...]}]}`.
    pub fn document(&self) -> serde_json::Value {
        let event: serde_json::Map<String, serde_json::Value> = self.event.iter().cloned().collect();
        serde_json::json!({
            "event": event,
            "notifications": self.notifications,
            "checks": self.checks,
            "deliveries": self.deliveries,
        })
    }
}

/// The event, its notifications, deliveries and attempts; `None` when unknown.
pub async fn show_event(pool: &PgPool, event_id: &str) -> Result<Option<EventDetail>, sqlx::Error> {
    // Every column generically, so fields added by later migrations show up too.
    let event: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT c.key, c.value::jsonb
           FROM payment_events e, json_each(row_to_json(e)) WITH ORDINALITY AS c(key, value, n)
          WHERE e.event_id = $1
          ORDER BY c.n",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    if event.is_empty() {
        return Ok(None);
    }
    let notifications = sqlx::query_as(
        "SELECT id, received_at, remote_addr, api_version, fields FROM notifications
          WHERE event_id = $1 ORDER BY received_at, id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let checks = sqlx::query_as(
        "SELECT attempt, started_at, finished_at, result, reason FROM confirmation_checks
          WHERE event_id = $1 ORDER BY id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    let mut deliveries: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, endpoint, status, attempts, next_attempt_at, delivered_at, dead_at, last_error,
                redrive_count, created_at
           FROM deliveries WHERE event_id = $1 ORDER BY endpoint",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    for d in &mut deliveries {
        d.attempts_log = sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, http_status, error, response_snippet, worker
               FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(d.id)
        .fetch_all(pool)
        .await?;
        number_rounds(&mut d.attempts_log);
    }
    Ok(Some(EventDetail { event, notifications, checks, deliveries }))
}

/// A delivery put back in the queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Redriven {
    /// Delivery id.
    pub id: i64,
    /// Event id.
    pub event_id: String,
    /// Target URL (user-info masked when printed).
    #[serde(serialize_with = "crate::redact::serialize_masked_url")]
    pub endpoint: String,
    /// `dead` (now pending with a fresh schedule) or `pending` (now due at once).
    pub previous_status: DeliveryStatus,
}

/// Which deliveries [`redrive`] takes: every filter that is set must match.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedriveFilter<'a> {
    /// Only deliveries to this endpoint URL.
    pub endpoint: Option<&'a str>,
    /// Only deliveries of this event.
    pub event_id: Option<&'a str>,
    /// Only this delivery (the console's buttons name a delivery, never its URL).
    pub delivery_id: Option<i64>,
    /// Also `pending` deliveries that no worker is attempting right now: they become due at once,
    /// keeping their place in the retry schedule.
    pub include_pending: bool,
}

/// Turns matching `dead` deliveries back to `pending`, due now, with a fresh schedule, and wakes
/// the workers; one transaction. `None` filters match everything.
pub async fn redrive(
    pool: &PgPool,
    endpoint: Option<&str>,
    event_id: Option<&str>,
) -> Result<Vec<Redriven>, sqlx::Error> {
    redrive_with(pool, RedriveFilter { endpoint, event_id, ..Default::default() }).await
}

/// Turns matching `dead` deliveries back to `pending`, due now, with a fresh schedule (and, with
/// `include_pending`, makes matching idle pending deliveries due now), then wakes the workers;
/// one transaction. A delivery a worker holds a live lease on is left alone: its attempt is in
/// flight and its result will be recorded.
pub async fn redrive_with(pool: &PgPool, filter: RedriveFilter<'_>) -> Result<Vec<Redriven>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rows: Vec<Redriven> = sqlx::query_as(
        "WITH target AS (
            SELECT id, status FROM deliveries
             WHERE (status = 'dead'
                    OR ($3 AND status = 'pending' AND (lease_until IS NULL OR lease_until < now())))
               AND ($1::text IS NULL OR endpoint = $1)
               AND ($2::text IS NULL OR event_id = $2)
               AND ($4::bigint IS NULL OR id = $4)
             FOR UPDATE
         )
         UPDATE deliveries d
            SET status = 'pending',
                attempts = CASE WHEN target.status = 'dead' THEN 0 ELSE d.attempts END,
                next_attempt_at = now(), dead_at = NULL,
                lease_token = NULL, lease_until = NULL, leased_by = NULL,
                redrive_count = d.redrive_count + 1, updated_at = now()
           FROM target
          WHERE d.id = target.id
        RETURNING d.id, d.event_id, d.endpoint, target.status AS previous_status",
    )
    .bind(filter.endpoint)
    .bind(filter.event_id)
    .bind(filter.include_pending)
    .bind(filter.delivery_id)
    .fetch_all(&mut *tx)
    .await?;
    if !rows.is_empty() {
        let events: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        sqlx::query("SELECT pg_notify($1, e) FROM (SELECT DISTINCT unnest($2::text[]) AS e) AS ids")
            .bind(DELIVERIES_CHANNEL)
            .bind(&events)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// The endpoint of delivery `id`, if it exists.
pub async fn delivery_endpoint(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT endpoint FROM deliveries WHERE id = $1").bind(id).fetch_optional(pool).await
}

/// One event with its delivery totals, for a compact report (the demo's final table).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventOverview {
    /// The event.
    #[sqlx(flatten)]
    pub event: StoredEvent,
    /// Deliveries (one per endpoint).
    pub deliveries: i64,
    /// Of which delivered.
    pub delivered: i64,
    /// Delivery attempts made, all endpoints.
    pub attempts: i64,
}

/// Overview of the events of the given IOTPay order ids, oldest first.
pub async fn event_overview(pool: &PgPool, pay_order_ids: &[String]) -> Result<Vec<EventOverview>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        event_columns!("e"),
        ", count(d.id) AS deliveries,
                count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered,
                (SELECT count(*) FROM delivery_attempts a JOIN deliveries d2 ON d2.id = a.delivery_id
                  WHERE d2.event_id = e.event_id) AS attempts
           FROM payment_events e
           LEFT JOIN deliveries d ON d.event_id = e.event_id
          WHERE e.pay_order_id = ANY($1)
          GROUP BY e.event_id
          ORDER BY e.created_at, e.event_id",
    ))
    .bind(pay_order_ids)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: i32) -> AttemptRow {
        AttemptRow {
            attempt: n,
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            duration_ms: 0,
            http_status: None,
            error: None,
            response_snippet: None,
            worker: String::new(),
            redrive_round: 0,
        }
    }

    #[test]
    fn a_restarted_attempt_count_is_a_new_round() {
        let mut a: Vec<AttemptRow> = [1, 2, 1, 2, 1, 3].into_iter().map(attempt).collect();
        number_rounds(&mut a);
        assert_eq!(a.iter().map(|a| a.redrive_round).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2]);
    }
}
