//! Payments found by reconciliation, stored as confirmed events: the one write the reconciler
//! makes to `payment_events`, with the deliveries and the check it entails.

use std::collections::HashMap;

use serde_json::json;
use sqlx::Row;

use super::{FoundPayment, OrderDecision};
use crate::store::{confirm::CONFIRMED_CHANNEL, deliveries::DELIVERIES_CHANNEL, StoreError};

/// Stores found payments as the notification path would (same event id), but already
/// `confirmed` by the query and with `source = 'reconciliation'`, enqueues their deliveries and
/// logs the check, all in the caller's transaction. Returns, for each event written, how many
/// deliveries it got.
///
/// An event a notification stored first is left alone while `pending` (its confirmation
/// decides) or `confirmed`. One that is `rejected` or `unconfirmed` becomes this payment: a
/// notification IOTPay contradicted (or never confirmed) says nothing about whether the order
/// was paid, and the query just verified the payment against the order the merchant registered,
/// so the query's fields replace everything the notification had claimed.
pub(super) async fn store_found(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    found: &[(&OrderDecision, &FoundPayment)],
    endpoints: &[String],
) -> Result<HashMap<String, u64>, StoreError> {
    if found.is_empty() {
        return Ok(HashMap::new());
    }
    // Written in event id order, as ingest writes its batches, so that the two cannot deadlock.
    // Sorted here rather than by an ORDER BY: in a queue transaction (sorting disabled, see
    // `begin_queue_tx`) a sort node's cost set off JIT compilation, half a second per decision.
    let mut found = found.to_vec();
    found.sort_by(|a, b| a.1.event_id.cmp(&b.1.event_id));
    let rows: Vec<serde_json::Value> = found
        .iter()
        .map(|(d, p)| {
            json!({
                "event_id": p.event_id, "mch_id": d.mch_id, "mch_order_no": d.mch_order_no,
                "pay_order_id": p.pay_order_id, "iotpay_status": p.iotpay_status, "pay_type": p.pay_type,
                "pay_succ_time_raw": p.pay_succ_time, "pay_succ_at": p.pay_succ_at, "channel": p.channel,
                "channel_order_no": p.channel_order_no,
            })
        })
        .collect();
    let written = sqlx::query(
        r#"
        WITH r AS (
            -- Amount, currency and API version are the registered order's, which IOTPay's
            -- answer was just shown to equal.
            SELECT r.*, o.api_version, o.amount, o.currency
              FROM jsonb_to_recordset($1) AS r(
                   event_id text, mch_id text, mch_order_no text, pay_order_id text, iotpay_status integer,
                   pay_type text, pay_succ_time_raw text, pay_succ_at timestamptz, channel text,
                   channel_order_no text)
              JOIN expected_orders o ON o.mch_id = r.mch_id AND o.mch_order_no = r.mch_order_no
        ), written AS (
            INSERT INTO payment_events (
                event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, amount, currency,
                iotpay_status, pay_type, pay_succ_time_raw, pay_succ_at, channel, channel_order_no,
                status, notification_count, source, confirm_attempts, confirmed_at, decided_at,
                last_checked_at, next_check_at)
            SELECT event_id, 'payment.succeeded', api_version, mch_id, mch_order_no, pay_order_id, amount, currency,
                   iotpay_status, pay_type, pay_succ_time_raw, pay_succ_at, channel, channel_order_no,
                   'confirmed', 0, 'reconciliation', 1, now(), now(), now(), now()
              FROM r
            ON CONFLICT (event_id) DO UPDATE
               SET api_version = EXCLUDED.api_version, mch_order_no = EXCLUDED.mch_order_no,
                   amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                   iotpay_status = EXCLUDED.iotpay_status, pay_type = EXCLUDED.pay_type,
                   pay_succ_time_raw = EXCLUDED.pay_succ_time_raw, pay_succ_at = EXCLUDED.pay_succ_at,
                   channel = EXCLUDED.channel, channel_order_no = EXCLUDED.channel_order_no,
                   original_order_id = NULL, refundable = NULL, card_num = NULL, card_type = NULL,
                   expiry_date = NULL, invoice_num = NULL, auth_num = NULL, trans_num = NULL,
                   status = 'confirmed', status_reason = NULL, source = 'reconciliation',
                   confirm_attempts = payment_events.confirm_attempts + 1, confirmed_at = now(),
                   decided_at = now(), last_checked_at = now(), last_check_error = NULL,
                   lease_until = NULL, leased_by = NULL, updated_at = now()
             WHERE payment_events.status IN ('rejected', 'unconfirmed')
            RETURNING event_id, confirm_attempts
        ), logged AS (
            -- The event's timeline (`events show`): the check that confirmed it.
            INSERT INTO confirmation_checks (event_id, attempt, started_at, result)
            SELECT event_id, confirm_attempts, now(), 'confirmed' FROM written
        ), enqueued AS (
            INSERT INTO deliveries (event_id, endpoint)
            SELECT written.event_id, endpoint FROM written, unnest($2::text[]) AS endpoint
            ON CONFLICT ON CONSTRAINT deliveries_event_endpoint DO NOTHING
            RETURNING event_id
        ), wake AS (
            SELECT pg_notify($4, '') FROM (SELECT 1 FROM enqueued LIMIT 1) AS any_enqueued
        )
        SELECT written.event_id,
               (SELECT count(*) FROM enqueued WHERE enqueued.event_id = written.event_id) AS deliveries,
               pg_notify($3, written.event_id) AS notified,
               (SELECT count(*) FROM wake) AS woken
          FROM written
        "#,
    )
    .bind(serde_json::Value::Array(rows))
    .bind(endpoints)
    .bind(CONFIRMED_CHANNEL)
    .bind(DELIVERIES_CHANNEL)
    .fetch_all(&mut **tx)
    .await?;
    written
        .iter()
        .map(|row| Ok((row.try_get::<String, _>("event_id")?, row.try_get::<i64, _>("deliveries")? as u64)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
