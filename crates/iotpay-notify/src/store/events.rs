//! `payment_events` and `notifications`: the idempotent, set-based write of verified notifications.

use std::collections::HashMap;

use serde_json::json;
use sqlx::{PgPool, Row};

use super::group_commit::BatchWrite;
use super::StoreError;
use crate::domain::{Cents, EventId};
use crate::iotpay::Notification;

/// One verified notification, ready to store.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The normalized content.
    pub notification: Notification,
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

/// Stores one notification (a batch of one).
pub async fn record_notification(pool: &PgPool, new: &NewNotification) -> Result<Recorded, StoreError> {
    let mut out = record_batch(pool, std::slice::from_ref(new)).await?;
    Ok(out.pop().expect("one result per input"))
}

/// The ingest queue's writer: concurrent notifications stored in one transaction ([`record_batch`]).
pub struct NotificationWriter;

impl BatchWrite for NotificationWriter {
    type Item = NewNotification;
    type Output = Recorded;
    const NAME: &'static str = "ingest";

    async fn write(&self, pool: &PgPool, items: &[NewNotification]) -> Result<Vec<Recorded>, StoreError> {
        record_batch(pool, items).await
    }
}

/// Stores notifications in ONE statement (one transaction, one round trip): every notification
/// appended, every event upserted — created `pending` on first sight, `notification_count`
/// incremented by however many of its notifications arrived. Results are in input order.
///
/// Repeats of one event inside the batch are folded into one row first, since an upsert cannot
/// touch the same row twice in one statement; rows are written in `event_id` order so concurrent
/// batches lock shared rows in the same order and cannot deadlock.
pub async fn record_batch(pool: &PgPool, batch: &[NewNotification]) -> Result<Vec<Recorded>, StoreError> {
    let ids: Vec<EventId> = batch.iter().map(|n| n.notification.event_id()).collect();
    let mut repeats: HashMap<&str, i32> = HashMap::new();
    for id in &ids {
        *repeats.entry(id.as_str()).or_default() += 1;
    }
    let mut firsts: Vec<usize> = Vec::with_capacity(repeats.len());
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].iter().all(|earlier| earlier != id) {
            firsts.push(i);
        }
    }
    firsts.sort_by(|a, b| ids[*a].as_str().cmp(ids[*b].as_str()));
    let events: Vec<serde_json::Value> =
        firsts.iter().map(|&i| event_row(&ids[i], &batch[i], repeats[ids[i].as_str()])).collect();
    let notifications: Vec<serde_json::Value> = batch
        .iter()
        .zip(&ids)
        .map(|(n, id)| {
            json!({
                "event_id": id.as_str(),
                "remote_addr": n.remote_addr,
                "api_version": n.notification.api_version.as_str(),
                "fields": n.fields,
            })
        })
        .collect();

    let rows = sqlx::query(
        r#"
        WITH ev AS (
            INSERT INTO payment_events (
                event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, original_order_id,
                amount, currency, iotpay_status, pay_type, refundable, pay_succ_time_raw, pay_succ_at,
                card_num, card_type, expiry_date, channel, invoice_num, auth_num, trans_num, channel_order_no,
                notification_count)
            SELECT event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, original_order_id,
                   amount, currency, iotpay_status, pay_type, refundable, pay_succ_time_raw, pay_succ_at,
                   card_num, card_type, expiry_date, channel, invoice_num, auth_num, trans_num, channel_order_no,
                   repeats
            FROM jsonb_to_recordset($1) AS r(
                event_id text, event_type text, api_version text, mch_id text, mch_order_no text,
                pay_order_id text, original_order_id text, amount bigint, currency text,
                iotpay_status integer, pay_type text, refundable bigint, pay_succ_time_raw text,
                pay_succ_at timestamptz, card_num text, card_type text, expiry_date text, channel text,
                invoice_num text, auth_num text, trans_num text, channel_order_no text, repeats integer)
            ORDER BY event_id
            ON CONFLICT (event_id) DO UPDATE
               SET notification_count = payment_events.notification_count + EXCLUDED.notification_count,
                   last_notified_at = now(),
                   updated_at = now()
            RETURNING event_id, (xmax = 0) AS inserted, notification_count,
                      amount, currency, mch_order_no, original_order_id, api_version, pay_type
        ), logged AS (
            INSERT INTO notifications (event_id, remote_addr, api_version, fields)
            SELECT event_id, remote_addr, api_version, fields
            FROM jsonb_to_recordset($2) AS n(event_id text, remote_addr text, api_version text, fields jsonb)
        )
        SELECT * FROM ev
        "#,
    )
    .bind(serde_json::Value::Array(events))
    .bind(serde_json::Value::Array(notifications))
    .fetch_all(pool)
    .await?;

    let mut stored: HashMap<String, sqlx::postgres::PgRow> = HashMap::with_capacity(rows.len());
    for row in rows {
        stored.insert(row.try_get("event_id")?, row);
    }
    let mut seen: HashMap<&str, i32> = HashMap::new();
    let mut out = Vec::with_capacity(batch.len());
    for (new, id) in batch.iter().zip(&ids) {
        let row = stored.get(id.as_str()).ok_or_else(|| sqlx::Error::RowNotFound)?;
        let nth = seen.entry(id.as_str()).or_default();
        *nth += 1;
        let total: i32 = row.try_get("notification_count")?;
        // The k-th of n repeats in this batch sees the count as if they had arrived one by one.
        let notification_count = total - repeats[id.as_str()] + *nth;
        let inserted = row.try_get::<bool, _>("inserted")? && *nth == 1;
        let n = &new.notification;
        let differs_from_stored = !inserted
            && (row.try_get::<i64, _>("amount")? != n.amount.get()
                || row.try_get::<String, _>("currency")? != n.currency.as_str()
                || row.try_get::<String, _>("mch_order_no")? != n.mch_order_no.as_str()
                || row.try_get::<Option<String>, _>("original_order_id")?.as_deref()
                    != n.original_order_id.as_ref().map(|o| o.as_str())
                // The event id does not cover them: a v2 repeat of a v3 event, or another
                // payType mapping to the same event type, is a different message.
                || row.try_get::<String, _>("api_version")? != n.api_version.as_str()
                || row.try_get::<Option<String>, _>("pay_type")?.as_deref() != n.pay_type.as_deref());
        out.push(Recorded { event_id: id.clone(), inserted, notification_count, differs_from_stored });
    }
    Ok(out)
}

fn event_row(id: &EventId, new: &NewNotification, repeats: i32) -> serde_json::Value {
    let n = &new.notification;
    json!({
        "event_id": id.as_str(),
        "event_type": n.event_type.as_str(),
        "api_version": n.api_version.as_str(),
        "mch_id": n.mch_id.as_str(),
        "mch_order_no": n.mch_order_no.as_str(),
        "pay_order_id": n.pay_order_id.as_str(),
        "original_order_id": n.original_order_id.as_ref().map(|o| o.as_str()),
        "amount": n.amount.get(),
        "currency": n.currency.as_str(),
        "iotpay_status": n.iotpay_status,
        "pay_type": n.pay_type,
        "refundable": n.refundable.map(Cents::get),
        "pay_succ_time_raw": n.pay_succ_time,
        "pay_succ_at": new.pay_succ_at,
        "card_num": n.card_num,
        "card_type": n.card_type,
        "expiry_date": n.expiry_date,
        "channel": n.channel,
        "invoice_num": n.invoice_num,
        "auth_num": n.auth_num,
        "trans_num": n.trans_num,
        "channel_order_no": n.channel_order_no,
        "repeats": repeats,
    })
}
