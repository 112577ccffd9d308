//! The confirmation queue over `payment_events`: claim due pending events with a lease, then
//! record one decision per check, guarded by the lease token.
//!
//! A claim is its own short transaction; the IOTPay query happens after it commits, with no row
//! lock held; the decision is a second transaction that applies only while the claim's token is
//! still on the row, so a worker whose lease expired (and whose event was re-claimed) cannot
//! overwrite a later decision.

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::{deliveries, StoreError};

/// Channel notified (by a trigger, migration 0003) when an event row is inserted.
pub const PENDING_CHANNEL: &str = "iotpay_events_pending";
/// Channel notified, at commit, when an event becomes `confirmed`.
pub const CONFIRMED_CHANNEL: &str = "payment_events_confirmed";

/// A pending event claimed for one check.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedEvent {
    /// The event's id.
    pub event_id: String,
    /// `payment.succeeded`, ...
    pub event_type: String,
    /// `v3` or `v2`.
    pub api_version: String,
    /// The merchant.
    pub mch_id: String,
    /// The merchant's order id.
    pub mch_order_no: String,
    /// IOTPay's id of the transaction.
    pub pay_order_id: String,
    /// The refunded payment (refunds).
    pub original_order_id: Option<String>,
    /// Amount in cents.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// v3 `payType` as notified.
    pub pay_type: Option<String>,
    /// Checks so far, this one included.
    pub confirm_attempts: i32,
    /// The claim's token: the decision applies only while it is still on the row.
    pub leased_by: String,
}

/// What to record after one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// IOTPay agrees: `confirmed`, and the forwarding outbox filled in the same transaction.
    Confirmed,
    /// IOTPay contradicts the notification: `rejected` with this reason.
    Rejected(String),
    /// Inconclusive: check again after `delay`, unless the give-up window has passed, in which
    /// case the event becomes `unconfirmed` with `give_up_reason`.
    Retry {
        /// Why this check was inconclusive (kept in `last_check_error`).
        reason: String,
        /// When to check again.
        delay: Duration,
        /// The `status_reason` if this was the last chance.
        give_up_reason: String,
    },
    /// Never confirmable: `unconfirmed` at once with this reason.
    Unconfirmed(String),
}

/// What the decision did to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Now `confirmed`; this many deliveries were enqueued.
    Confirmed {
        /// Deliveries created.
        deliveries: u64,
    },
    /// Now `rejected`.
    Rejected,
    /// Still `pending`, checked again later.
    Rescheduled,
    /// Now `unconfirmed`.
    Unconfirmed,
    /// The lease was lost (expired and re-claimed, or already decided): nothing written.
    LeaseLost,
}

/// Claims up to `limit` due pending events for `lease`, marking them with `token`.
/// One statement, so one short transaction: the locks are gone when this returns.
pub async fn claim_due(
    pool: &PgPool,
    limit: usize,
    lease: Duration,
    token: &str,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    let claimed = sqlx::query_as::<_, ClaimedEvent>(
        r#"
        WITH due AS (
            SELECT event_id FROM payment_events
             WHERE status = 'pending'
               AND next_check_at <= now()
               AND (lease_until IS NULL OR lease_until <= now())
             ORDER BY next_check_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
        )
        UPDATE payment_events p
           SET lease_until = now() + $2::float8 * interval '1 millisecond',
               leased_by = $3,
               confirm_attempts = p.confirm_attempts + 1,
               last_checked_at = now()
          FROM due
         WHERE p.event_id = due.event_id
        RETURNING p.event_id, p.event_type, p.api_version, p.mch_id, p.mch_order_no, p.pay_order_id,
                  p.original_order_id, p.amount, p.currency, p.pay_type, p.confirm_attempts, p.leased_by
        "#,
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(millis(lease))
    .bind(token)
    .fetch_all(pool)
    .await?;
    Ok(claimed)
}

/// Records the decision of one check in one transaction, only if `token` still holds the lease.
/// A confirmation enqueues one delivery per `forward_urls` entry and notifies
/// [`CONFIRMED_CHANNEL`] in that same transaction.
pub async fn apply(
    pool: &PgPool,
    event_id: &str,
    token: &str,
    verdict: &Verdict,
    give_up_after: Duration,
    forward_urls: &[String],
) -> Result<Applied, StoreError> {
    let mut tx = pool.begin().await?;
    let applied = match verdict {
        Verdict::Confirmed => {
            let updated = sqlx::query(
                "UPDATE payment_events
                    SET status = 'confirmed', status_reason = NULL, confirmed_at = now(), decided_at = now(),
                        last_check_error = NULL, lease_until = NULL, leased_by = NULL, updated_at = now()
                  WHERE event_id = $1 AND leased_by = $2 AND status = 'pending'",
            )
            .bind(event_id)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(Applied::LeaseLost);
            }
            let created = deliveries::enqueue(&mut tx, event_id, forward_urls).await?;
            sqlx::query("SELECT pg_notify($1, $2)").bind(CONFIRMED_CHANNEL).bind(event_id).execute(&mut *tx).await?;
            Applied::Confirmed { deliveries: created }
        }
        Verdict::Rejected(reason) | Verdict::Unconfirmed(reason) => {
            let (status, applied) = match verdict {
                Verdict::Rejected(_) => ("rejected", Applied::Rejected),
                _ => ("unconfirmed", Applied::Unconfirmed),
            };
            let updated = sqlx::query(
                "UPDATE payment_events
                    SET status = $3, status_reason = $4, decided_at = now(),
                        lease_until = NULL, leased_by = NULL, updated_at = now()
                  WHERE event_id = $1 AND leased_by = $2 AND status = 'pending'",
            )
            .bind(event_id)
            .bind(token)
            .bind(status)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(Applied::LeaseLost);
            }
            applied
        }
        Verdict::Retry { reason, delay, give_up_reason } => {
            // The database clock decides the give-up moment, so replicas with skewed clocks agree;
            // the last retry is scheduled at the deadline itself, never past it.
            let row = sqlx::query(
                "UPDATE payment_events
                    SET status = CASE WHEN now() >= created_at + $5::float8 * interval '1 millisecond'
                                      THEN 'unconfirmed' ELSE 'pending' END,
                        status_reason = CASE WHEN now() >= created_at + $5::float8 * interval '1 millisecond'
                                             THEN $4 END,
                        decided_at = CASE WHEN now() >= created_at + $5::float8 * interval '1 millisecond'
                                          THEN now() END,
                        last_check_error = $3,
                        next_check_at = LEAST(now() + $6::float8 * interval '1 millisecond',
                                              created_at + $5::float8 * interval '1 millisecond'),
                        lease_until = NULL, leased_by = NULL, updated_at = now()
                  WHERE event_id = $1 AND leased_by = $2 AND status = 'pending'
                  RETURNING status",
            )
            .bind(event_id)
            .bind(token)
            .bind(reason)
            .bind(give_up_reason)
            .bind(millis(give_up_after))
            .bind(millis(*delay))
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => return Ok(Applied::LeaseLost),
                Some(r) if r.try_get::<String, _>("status")? == "unconfirmed" => Applied::Unconfirmed,
                Some(_) => Applied::Rescheduled,
            }
        }
    };
    tx.commit().await?;
    Ok(applied)
}

/// The confirmation backlog, for metrics and for how long the worker may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PendingStats {
    /// Events still `pending`.
    pub pending: i64,
    /// Age of the oldest pending event, in seconds (0 when none).
    pub oldest_age_secs: f64,
    /// Time until the next pending event is due (due now = zero); `None` when none is pending.
    pub next_due_in: Option<Duration>,
}

/// Reads the backlog.
pub async fn pending_stats(pool: &PgPool) -> Result<PendingStats, StoreError> {
    let row = sqlx::query(
        "SELECT count(*) AS pending,
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_age,
                EXTRACT(EPOCH FROM min(GREATEST(next_check_at, COALESCE(lease_until, next_check_at))) - now())::float8
                    AS next_due_in
           FROM payment_events WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    let next_due_in: Option<f64> = row.try_get("next_due_in")?;
    Ok(PendingStats {
        pending: row.try_get("pending")?,
        oldest_age_secs: row.try_get("oldest_age")?,
        next_due_in: next_due_in.map(|s| Duration::from_secs_f64(s.max(0.0))),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
