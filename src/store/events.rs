//! `payment_events` and `notifications`: the idempotent write of one verified notification.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::StoreError;
use crate::domain::{Cents, EventId};
use crate::iotpay::Notification;

/// One verified notification, ready to store.
#[derive(Debug)]
pub struct NewNotification<'a> {
    /// The normalized content.
    pub notification: &'a Notification,
    /// Every received field (card numbers masked, `sign` included) as a JSON object.
    pub fields: serde_json::Value,
    /// The sender's address.
    pub remote_addr: Option<String>,
    /// `paySuccTime` resolved in the configured zone, RFC 3339.
    pub pay_succ_at: Option<String>,
}

/// What the store did with a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The event's id.
    pub event_id: EventId,
    /// True on first sight of the event; false for a repeat.
    pub inserted: bool,
    /// How many valid notifications of the event have arrived, this one included.
    pub notification_count: i32,
    /// True when a repeat carries money fields that differ from the stored event.
    pub differs_from_stored: bool,
}

/// Appends the notification and upserts its event, in one statement (one transaction):
/// created `pending` on first sight, `notification_count` incremented on every repeat.
pub async fn record_notification(pool: &PgPool, new: &NewNotification<'_>) -> Result<Recorded, StoreError> {
    let n = new.notification;
    let event_id = n.event_id();
    // ON CONFLICT only absorbs a race on its arbiter (event_id); two first sights of one event
    // racing can still trip the equivalent identity constraint. The loser's statement rolled back
    // whole; run once more, now as a repeat.
    let row = match upsert(pool, new, &event_id).await {
        Err(e) if is_unique_violation(&e) => upsert(pool, new, &event_id).await?,
        other => other?,
    };

    let inserted: bool = row.try_get("inserted")?;
    let differs_from_stored = !inserted
        && (row.try_get::<i64, _>("amount")? != n.amount.get()
            || row.try_get::<String, _>("currency")? != n.currency.as_str()
            || row.try_get::<String, _>("mch_order_no")? != n.mch_order_no.as_str()
            || row.try_get::<Option<String>, _>("original_order_id")?.as_deref()
                != n.original_order_id.as_ref().map(|o| o.as_str()));
    Ok(Recorded { event_id, inserted, notification_count: row.try_get("notification_count")?, differs_from_stored })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("23505"))
}

async fn upsert(pool: &PgPool, new: &NewNotification<'_>, event_id: &EventId) -> Result<PgRow, sqlx::Error> {
    let n = new.notification;
    sqlx::query(
        r#"
        WITH ev AS (
            INSERT INTO payment_events (
                event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, original_order_id,
                amount, currency, iotpay_status, pay_type, refundable, pay_succ_time_raw, pay_succ_at,
                card_num, card_type, expiry_date, channel, invoice_num, auth_num, trans_num)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::timestamptz,
                    $15, $16, $17, $18, $19, $20, $21)
            ON CONFLICT (event_id) DO UPDATE
               SET notification_count = payment_events.notification_count + 1,
                   last_notified_at = now(),
                   updated_at = now()
            RETURNING event_id, (xmax = 0) AS inserted, notification_count,
                      amount, currency, mch_order_no, original_order_id
        ), logged AS (
            INSERT INTO notifications (event_id, remote_addr, api_version, fields)
            SELECT event_id, $22, $3, $23 FROM ev
            RETURNING id
        )
        SELECT ev.*, logged.id AS notification_id FROM ev, logged
        "#,
    )
    .bind(event_id.as_str())
    .bind(n.event_type.as_str())
    .bind(n.api_version.as_str())
    .bind(n.mch_id.as_str())
    .bind(n.mch_order_no.as_str())
    .bind(n.pay_order_id.as_str())
    .bind(n.original_order_id.as_ref().map(|o| o.as_str()))
    .bind(n.amount.get())
    .bind(n.currency.as_str())
    .bind(n.iotpay_status as i32)
    .bind(n.pay_type.as_deref())
    .bind(n.refundable.map(Cents::get))
    .bind(n.pay_succ_time.as_deref())
    .bind(new.pay_succ_at.as_deref())
    .bind(n.card_num.as_deref())
    .bind(n.card_type.as_deref())
    .bind(n.expiry_date.as_deref())
    .bind(n.channel.as_deref())
    .bind(n.invoice_num.as_deref())
    .bind(n.auth_num.as_deref())
    .bind(n.trans_num.as_deref())
    .bind(new.remote_addr.as_deref())
    .bind(&new.fields)
    .fetch_one(pool)
    .await
}
