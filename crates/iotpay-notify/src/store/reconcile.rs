//! The reconciliation queue over `expected_orders`: claim due orders with a lease (`FOR UPDATE
//! SKIP LOCKED`), query IOTPay outside any transaction, then record one decision guarded by the
//! lease token, exactly as the confirmation queue does.

use std::time::Duration;

use sqlx::PgPool;

use super::{confirm::CONFIRMED_CHANNEL, deliveries, StoreError};

/// An expected order claimed for one reconciliation query.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedOrder {
    /// The merchant.
    pub mch_id: String,
    /// The merchant's order number.
    pub mch_order_no: String,
    /// `v3`, `v2` or `v1`.
    pub api_version: String,
    /// Amount in cents.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// Queries so far, this one included.
    pub checks: i32,
    /// A notification for the order arrived (and was not rejected as contradicting IOTPay):
    /// never query it.
    pub notified: bool,
    /// `expires_at` has passed (database clock).
    pub expired: bool,
    /// The claim's token.
    pub leased_by: String,
}

/// A payment the reconciler found and verified against the order, to store as confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPayment {
    /// Derived exactly as for a notification of the same payment.
    pub event_id: String,
    /// IOTPay's id of the transaction.
    pub pay_order_id: String,
    /// IOTPay's status code.
    pub iotpay_status: i64,
    /// `payType` as reported.
    pub pay_type: Option<String>,
    /// `paySuccTime` as reported.
    pub pay_succ_time: Option<String>,
}

/// What to record after one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A notification arrived: the order is settled by its event; never query it again.
    Notified,
    /// Paid and every field agrees: store the event as confirmed and forward it.
    Paid(FoundPayment),
    /// A final state: `cancelled`, `expired` or `mismatch`, with the reason.
    Final(&'static str, String),
    /// Inconclusive: ask again after the delay.
    Retry(String, Duration),
}

/// Claims up to `limit` due expected orders for `lease`.
pub async fn claim_due(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedOrder>, StoreError> {
    let token = format!("{worker}:{}", uuid::Uuid::new_v4());
    let rows = sqlx::query_as::<_, ClaimedOrder>(
        "WITH due AS (
             SELECT mch_id, mch_order_no FROM expected_orders
              WHERE state = 'expected' AND next_check_at <= now()
                AND (lease_until IS NULL OR lease_until < now())
              ORDER BY next_check_at
              LIMIT $1
              FOR UPDATE SKIP LOCKED)
         UPDATE expected_orders o
            SET lease_until = now() + make_interval(secs => $2), leased_by = $3, checks = o.checks + 1
           FROM due
          WHERE o.mch_id = due.mch_id AND o.mch_order_no = due.mch_order_no
         RETURNING o.mch_id, o.mch_order_no, o.api_version, o.amount, o.currency, o.checks,
                   EXISTS (SELECT 1 FROM payment_events e
                            WHERE e.mch_id = o.mch_id AND e.mch_order_no = o.mch_order_no
                              AND e.source = 'notification' AND e.status <> 'rejected') AS notified,
                   o.expires_at <= now() AS expired, o.leased_by",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(&token)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Records `outcome` for a claimed order while its lease token is still on it. Returns false
/// when the lease was lost (another worker owns the order now): nothing changed.
pub async fn apply(
    pool: &PgPool,
    order: &ClaimedOrder,
    outcome: &Outcome,
    endpoints: &[String],
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let owned: Option<String> = sqlx::query_scalar(
        "SELECT state FROM expected_orders
          WHERE mch_id = $1 AND mch_order_no = $2 AND leased_by = $3 AND state = 'expected'
          FOR UPDATE",
    )
    .bind(&order.mch_id)
    .bind(&order.mch_order_no)
    .bind(&order.leased_by)
    .fetch_optional(&mut *tx)
    .await?;
    if owned.is_none() {
        return Ok(false);
    }
    let (state, event_id, next, error): (&str, Option<&str>, Option<f64>, Option<&str>) = match outcome {
        Outcome::Notified => ("expected", None, None, None),
        Outcome::Paid(p) => {
            // When a notification stored the same event meanwhile, its confirmation settles the
            // order (the API reads `paid` from the confirmed event); until then it is expected.
            let state = if store_paid(&mut tx, order, p, endpoints).await? { "paid" } else { "expected" };
            (state, Some(p.event_id.as_str()), None, None)
        }
        Outcome::Final(state, reason) => (state, None, None, Some(reason.as_str())),
        Outcome::Retry(reason, delay) => ("expected", None, Some(delay.as_secs_f64()), Some(reason.as_str())),
    };
    sqlx::query(
        "UPDATE expected_orders
            SET state = $3, event_id = COALESCE($4, event_id), lease_until = NULL, leased_by = NULL,
                last_checked_at = now(), last_error = $5,
                -- A settled or notified order is never due again.
                next_check_at = CASE WHEN $6::float8 IS NULL THEN 'infinity' ELSE now() + make_interval(secs => $6) END,
                decided_at = CASE WHEN $3 <> 'expected' THEN now() END
          WHERE mch_id = $1 AND mch_order_no = $2",
    )
    .bind(&order.mch_id)
    .bind(&order.mch_order_no)
    .bind(state)
    .bind(event_id)
    .bind(error)
    .bind(next)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Stores the found payment as the notification path would (same event id), but already
/// `confirmed` by the query and with `source = 'reconciliation'`, and enqueues its deliveries in
/// the same transaction. A notification that arrives later is a repeat of this event. False when
/// the event already existed (stored by a notification meanwhile): nothing changed.
async fn store_paid(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    order: &ClaimedOrder,
    p: &FoundPayment,
    endpoints: &[String],
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO payment_events (
             event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, amount, currency,
             iotpay_status, pay_type, pay_succ_time_raw, status, notification_count, source,
             confirm_attempts, confirmed_at, decided_at, last_checked_at, next_check_at)
         VALUES ($1, 'payment.succeeded', $2, $3, $4, $5, $6, $7, $8, $9, $10, 'confirmed', 0, 'reconciliation',
                 1, now(), now(), now(), now())
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&p.event_id)
    .bind(&order.api_version)
    .bind(&order.mch_id)
    .bind(&order.mch_order_no)
    .bind(&p.pay_order_id)
    .bind(order.amount)
    .bind(&order.currency)
    .bind(p.iotpay_status as i32)
    .bind(&p.pay_type)
    .bind(&p.pay_succ_time)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // A notification stored meanwhile owns the event: its confirmation forwards it.
    if inserted == 1 {
        deliveries::enqueue(tx, &p.event_id, endpoints).await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(CONFIRMED_CHANNEL).bind(&p.event_id).execute(&mut **tx).await?;
    }
    Ok(inserted == 1)
}

/// Expected orders by effective state, as the API shows it (for the metrics gauge): an order
/// settled by a notified, confirmed payment counts as `paid` (or `mismatch`).
pub async fn count_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT CASE WHEN p.agrees IS NULL THEN o.state WHEN p.agrees THEN 'paid' ELSE 'mismatch' END, count(*)
           FROM expected_orders o
           LEFT JOIN LATERAL (
               SELECT bool_or(e.amount = o.amount AND e.currency = o.currency) AS agrees FROM payment_events e
                WHERE e.mch_id = o.mch_id AND e.mch_order_no = o.mch_order_no
                  AND e.event_type = 'payment.succeeded' AND e.status = 'confirmed'
           ) p ON true
          GROUP BY 1",
    )
    .fetch_all(pool)
    .await?)
}
