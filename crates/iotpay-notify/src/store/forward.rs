//! The delivery worker's SQL: claim due deliveries under a lease, record each attempt, backlog stats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::group_commit::BatchWrite;
use super::row::event_columns;
use super::{DeliveryStatus, StoreError, StoredEvent};

/// A delivery claimed by this worker until its lease expires.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Delivery id.
    pub delivery_id: i64,
    /// Target URL.
    pub endpoint: String,
    /// Attempts already made in the current schedule.
    pub attempts: i32,
    /// Proof of the claim, required to record the result.
    pub lease_token: String,
    /// The event to send (always `confirmed`: the claim checks it).
    #[sqlx(flatten)]
    pub event: StoredEvent,
}

/// Claims up to `limit` due deliveries of `endpoint` whose event is `confirmed`, skipping rows
/// other workers hold, and leases them for `lease`. One short transaction; no network inside.
pub async fn claim(
    pool: &PgPool,
    endpoint: &str,
    limit: usize,
    lease: Duration,
    worker: &str,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut tx = super::begin_queue_tx(pool).await?;
    let claimed: Vec<Claimed> = sqlx::query_as(concat!(
        r#"
        WITH due AS (
            SELECT d.id
              FROM deliveries d
              JOIN payment_events e ON e.event_id = d.event_id
             WHERE d.endpoint = $1
               AND d.status = 'pending'
               AND d.next_attempt_at <= now()
               AND (d.lease_until IS NULL OR d.lease_until < now())
               AND e.status = 'confirmed'
             -- Exactly the order of deliveries_endpoint_due_idx, so the scan stops after $2 rows
             -- instead of sorting every pending delivery (a tie-break on id cost a full sort).
             ORDER BY d.next_attempt_at
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE deliveries d
           SET lease_token = gen_random_uuid(),
               lease_until = now() + $3 * interval '1 millisecond',
               leased_by = $4,
               updated_at = now()
          FROM due, payment_events e
         WHERE d.id = due.id AND e.event_id = d.event_id
        RETURNING d.id AS delivery_id, d.endpoint, d.attempts, d.lease_token::text AS lease_token, "#,
        event_columns!("e")
    ))
    .bind(endpoint)
    .bind(limit as i64)
    .bind(lease.as_millis() as f64)
    .bind(worker)
    // Planned afresh each time: a cached plan made while the tables were nearly empty (a
    // sequential scan of deliveries per event) kept costing ~1 s a claim once thousands of rows
    // arrived, until the next ANALYZE; planning costs ~1 ms.
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 2xx answer: done.
    Delivered,
    /// Try again after this delay.
    Retry(Duration),
    /// The schedule is exhausted.
    Dead,
}

/// One attempt, as it happened.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: i64,
    /// The claim's token.
    pub lease_token: String,
    /// Position in the schedule, 1-based.
    pub attempt: i32,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// The answer's HTTP status, if one arrived.
    pub http_status: Option<u16>,
    /// The transport error, or a short description of a non-2xx answer.
    pub error: Option<String>,
    /// At most 1 KiB of the answer's body.
    pub response_snippet: Option<String>,
    /// Which worker made it.
    pub worker: String,
    /// The resulting state.
    pub next: Next,
}

/// Appends the attempt and applies its outcome; see [`record_batch`].
pub async fn record(pool: &PgPool, a: &Attempt) -> Result<bool, sqlx::Error> {
    let mut held = record_batch(pool, std::slice::from_ref(a)).await?;
    Ok(held.pop().expect("one result per attempt"))
}

/// The delivery queue's writer: attempts finishing together recorded in one transaction
/// ([`record_batch`]).
pub struct AttemptWriter;

impl BatchWrite for AttemptWriter {
    type Item = Attempt;
    type Output = bool;
    const NAME: &'static str = "forward";

    async fn write(&self, pool: &PgPool, items: &[Attempt]) -> Result<Vec<bool>, StoreError> {
        Ok(record_batch(pool, items).await?)
    }
}

/// Appends every attempt to the history and applies each outcome, in ONE statement (one
/// transaction, one round trip). A state change applies only while its lease is current; the
/// result says, per attempt in input order, whether it did (the attempt is logged either way,
/// since the request was made).
pub async fn record_batch(pool: &PgPool, attempts: &[Attempt]) -> Result<Vec<bool>, sqlx::Error> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    // Text from the endpoint (errors, body snippets) is stored; Postgres text cannot hold U+0000.
    let clean = |t: &Option<String>| t.as_deref().map(|t| t.replace('\0', ""));
    let ids: Vec<i64> = attempts.iter().map(|a| a.delivery_id).collect();
    let tokens: Vec<&str> = attempts.iter().map(|a| a.lease_token.as_str()).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    let started: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.started_at).collect();
    let durations: Vec<i32> = attempts.iter().map(|a| a.duration.as_millis().min(i32::MAX as u128) as i32).collect();
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.http_status.map(i32::from)).collect();
    let errors: Vec<Option<String>> = attempts.iter().map(|a| clean(&a.error)).collect();
    let snippets: Vec<Option<String>> = attempts.iter().map(|a| clean(&a.response_snippet)).collect();
    let workers: Vec<&str> = attempts.iter().map(|a| a.worker.as_str()).collect();
    let (nexts, delays): (Vec<&str>, Vec<f64>) = attempts
        .iter()
        .map(|a| match a.next {
            Next::Delivered => (DeliveryStatus::Delivered.as_str(), 0.0),
            Next::Retry(d) => (DeliveryStatus::Pending.as_str(), d.as_millis() as f64),
            Next::Dead => (DeliveryStatus::Dead.as_str(), 0.0),
        })
        .unzip();
    let mut tx = super::begin_queue_tx(pool).await?;
    let updated: Vec<(i64, String)> = sqlx::query_as(
        r#"
        WITH a AS (
            SELECT * FROM unnest($1::int8[], $2::text[], $3::int4[], $4::timestamptz[], $5::int4[], $6::int4[],
                                 $7::text[], $8::text[], $9::text[], $10::text[], $11::float8[])
                AS a(delivery_id, lease_token, attempt, started_at, duration_ms, http_status, error,
                     response_snippet, worker, next_status, delay_ms)
        ), logged AS (
            INSERT INTO delivery_attempts
                (delivery_id, attempt, started_at, duration_ms, http_status, error, response_snippet, worker)
            SELECT delivery_id, attempt, started_at, duration_ms, http_status, error, response_snippet, worker FROM a
        )
        UPDATE deliveries d
           SET status = a.next_status,
               attempts = a.attempt,
               next_attempt_at = CASE WHEN a.next_status = 'pending'
                                      THEN now() + a.delay_ms * interval '1 millisecond'
                                      ELSE d.next_attempt_at END,
               delivered_at = CASE WHEN a.next_status = 'delivered' THEN now() ELSE d.delivered_at END,
               dead_at = CASE WHEN a.next_status = 'dead' THEN now() ELSE d.dead_at END,
               last_error = CASE WHEN a.next_status = 'delivered' THEN NULL ELSE a.error END,
               last_attempt_at = a.started_at,
               lease_token = NULL,
               lease_until = NULL,
               leased_by = NULL,
               updated_at = now()
          FROM a
         -- "Neither delivered nor dead" rather than `status = 'pending'` (the same rows, by the
         -- CHECK constraint): that condition is the predicate of the due indexes, and with
         -- statistics from a small table the planner walked every pending delivery for each
         -- batch (78 ms for 16 rows at 20,000 events, auto_explain) instead of using the key.
         WHERE d.id = a.delivery_id AND d.lease_token = a.lease_token::uuid
           AND d.status NOT IN ('delivered', 'dead')
        RETURNING d.id, a.lease_token
        "#,
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&numbers)
    .bind(&started)
    .bind(&durations)
    .bind(&statuses)
    .bind(&errors)
    .bind(&snippets)
    .bind(&workers)
    .bind(&nexts)
    .bind(&delays)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(attempts
        .iter()
        .map(|a| updated.iter().any(|(id, token)| *id == a.delivery_id && *token == a.lease_token))
        .collect())
}

/// Backlog figures of one endpoint.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EndpointStats {
    /// Target URL.
    pub endpoint: String,
    /// Deliveries not yet delivered nor dead.
    pub pending: i64,
    /// Age in seconds of the oldest pending delivery (0 when none).
    pub oldest_pending_age_secs: f64,
    /// Dead deliveries waiting for an operator.
    pub dead: i64,
}

/// Pending/dead counts and oldest pending age, per endpoint that has any.
pub async fn stats(pool: &PgPool) -> Result<Vec<EndpointStats>, sqlx::Error> {
    sqlx::query_as(
        "SELECT endpoint,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)::float8
                    AS oldest_pending_age_secs,
                count(*) FILTER (WHERE status = 'dead') AS dead
           FROM deliveries
          WHERE status IN ('pending', 'dead')
          GROUP BY endpoint
          ORDER BY endpoint",
    )
    .fetch_all(pool)
    .await
}
