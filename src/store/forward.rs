//! The delivery worker's SQL: claim due deliveries under a lease, record each attempt, backlog stats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The confirmed event a delivery carries, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Stable id (the `webhook-id`).
    pub event_id: String,
    /// `payment.succeeded`, ...
    pub event_type: String,
    /// `v3` or `v2`.
    pub api_version: String,
    /// Merchant id.
    pub mch_id: String,
    /// Merchant's order id.
    pub mch_order_no: String,
    /// IOTPay's order id.
    pub pay_order_id: String,
    /// Refunded payment's order id.
    pub original_order_id: Option<String>,
    /// Cents.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Always `confirmed` here (the claim checks it).
    pub status: String,
    /// IOTPay's numeric status.
    pub iotpay_status: i32,
    /// IOTPay's `payType`.
    pub pay_type: Option<String>,
    /// Refundable cents left.
    pub refundable: Option<i64>,
    /// `paySuccTime` as sent.
    pub pay_succ_time_raw: Option<String>,
    /// `paySuccTime` resolved.
    pub pay_succ_at: Option<DateTime<Utc>>,
    /// Masked card number.
    pub card_num: Option<String>,
    /// Card brand (v2).
    pub card_type: Option<String>,
    /// Card expiry (MMYY).
    pub expiry_date: Option<String>,
    /// Payment channel.
    pub channel: Option<String>,
    /// Invoice number.
    pub invoice_num: Option<String>,
    /// Authorization number.
    pub auth_num: Option<String>,
    /// Processor transaction number.
    pub trans_num: Option<String>,
    /// First stored.
    pub created_at: DateTime<Utc>,
    /// Confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A delivery claimed by this worker until its lease expires.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delivery id.
    pub delivery_id: i64,
    /// Target URL.
    pub endpoint: String,
    /// Attempts already made in the current schedule.
    pub attempts: i32,
    /// Proof of the claim, required to record the result.
    pub lease_token: String,
    /// The event to send.
    pub event: EventRow,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    delivery_id: i64,
    endpoint: String,
    attempts: i32,
    lease_token: String,
    #[sqlx(flatten)]
    event: EventRow,
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
    let rows: Vec<ClaimedRow> = sqlx::query_as(
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
             ORDER BY d.next_attempt_at, d.id
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
        RETURNING d.id AS delivery_id, d.endpoint, d.attempts, d.lease_token::text AS lease_token,
                  e.event_id, e.event_type, e.api_version, e.mch_id, e.mch_order_no, e.pay_order_id,
                  e.original_order_id, e.amount, e.currency, e.status, e.iotpay_status, e.pay_type,
                  e.refundable, e.pay_succ_time_raw, e.pay_succ_at, e.card_num, e.card_type,
                  e.expiry_date, e.channel, e.invoice_num, e.auth_num, e.trans_num, e.created_at,
                  e.confirmed_at
        "#,
    )
    .bind(endpoint)
    .bind(limit as i64)
    .bind(lease.as_millis() as f64)
    .bind(worker)
    // Planned afresh each time: a cached plan made while the tables were nearly empty (a
    // sequential scan of deliveries per event) kept costing ~1 s a claim once thousands of rows
    // arrived, until the next ANALYZE; planning costs ~1 ms.
    .persistent(false)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            delivery_id: r.delivery_id,
            endpoint: r.endpoint,
            attempts: r.attempts,
            lease_token: r.lease_token,
            event: r.event,
        })
        .collect())
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
pub struct Attempt<'a> {
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
    pub error: Option<&'a str>,
    /// At most 1 KiB of the answer's body.
    pub response_snippet: Option<&'a str>,
    /// Which worker made it.
    pub worker: &'a str,
    /// The resulting state.
    pub next: Next,
}

/// Appends the attempt and applies its outcome in one transaction. The state change applies
/// only while this worker's lease is current; returns false when the lease was lost (the attempt
/// is still logged, since the request was made).
pub async fn record(pool: &PgPool, a: &Attempt<'_>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO delivery_attempts
            (delivery_id, attempt, started_at, duration_ms, http_status, error, response_snippet, worker)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.delivery_id)
    .bind(a.attempt)
    .bind(a.started_at)
    .bind(a.duration.as_millis().min(i32::MAX as u128) as i32)
    .bind(a.http_status.map(i32::from))
    .bind(a.error)
    .bind(a.response_snippet)
    .bind(a.worker)
    .execute(&mut *tx)
    .await?;
    let (status, delay_ms) = match a.next {
        Next::Delivered => ("delivered", 0.0),
        Next::Retry(d) => ("pending", d.as_millis() as f64),
        Next::Dead => ("dead", 0.0),
    };
    let updated = sqlx::query(
        "UPDATE deliveries
            SET status = $3,
                attempts = $4,
                next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + $5 * interval '1 millisecond'
                                       ELSE next_attempt_at END,
                delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END,
                dead_at = CASE WHEN $3 = 'dead' THEN now() ELSE dead_at END,
                last_error = CASE WHEN $3 = 'delivered' THEN NULL ELSE $6 END,
                last_attempt_at = $7,
                lease_token = NULL,
                lease_until = NULL,
                leased_by = NULL,
                updated_at = now()
          WHERE id = $1 AND lease_token = $2::uuid AND status = 'pending'",
    )
    .bind(a.delivery_id)
    .bind(&a.lease_token)
    .bind(status)
    .bind(a.attempt)
    .bind(delay_ms)
    .bind(a.error)
    .bind(a.started_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(updated == 1)
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
