//! The forwarded JSON body: `{"type", "timestamp", "data": {...}}` (CONTRACT.md), described by
//! `docs/forwarded-event.schema.json`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::forward::EventRow;

/// The body of one forwarded event. Identical on every attempt, so consumers may hash it.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardedEvent {
    /// The event type, e.g. `payment.succeeded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event was confirmed (RFC 3339, UTC).
    pub timestamp: String,
    /// The event's fields.
    pub data: EventData,
}

/// The event's fields, snake_case; absent optional values are `null`.
#[derive(Debug, Clone, Serialize)]
pub struct EventData {
    /// Stable id, equal to the `webhook-id` header.
    pub event_id: String,
    /// Same as the body's `type`.
    pub event_type: String,
    /// `v3`, `v2` or `v1`.
    pub api_version: String,
    /// Merchant id.
    pub mch_id: String,
    /// Merchant's order id.
    pub mch_order_no: String,
    /// IOTPay's order id.
    pub pay_order_id: String,
    /// The refunded payment's `pay_order_id` (refunds).
    pub original_order_id: Option<String>,
    /// Amount in cents.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Always `confirmed`.
    pub status: String,
    /// `notification`, or `reconciliation` when IOTPay's notification never arrived and the
    /// payment was found by querying IOTPay.
    pub source: String,
    /// IOTPay's numeric order status.
    pub iotpay_status: i32,
    /// IOTPay's `payType` (v3).
    pub pay_type: Option<String>,
    /// Refundable cents left (v3).
    pub refundable: Option<i64>,
    /// Masked card number (first 6 / last 4).
    pub card_num: Option<String>,
    /// Card brand (v2).
    pub card_type: Option<String>,
    /// Card expiry, MMYY.
    pub expiry_date: Option<String>,
    /// Payment channel.
    pub channel: Option<String>,
    /// Invoice number.
    pub invoice_num: Option<String>,
    /// Authorization number.
    pub auth_num: Option<String>,
    /// Processor transaction number (v3 `transNum`, v2 `transId`).
    pub trans_num: Option<String>,
    /// WeChat Pay's / Alipay's own transaction number (v1 `channelOrderNo`).
    pub channel_order_no: Option<String>,
    /// `paySuccTime` exactly as IOTPay sent it (v3/v2: no zone; v1: milliseconds since the epoch).
    pub pay_succ_time: Option<String>,
    /// `paySuccTime` as RFC 3339 UTC (v3/v2: resolved in `IOTPAY_TIME_ZONE`).
    pub pay_succ_at: Option<String>,
    /// When the first notification was stored.
    pub created_at: String,
    /// When IOTPay's query confirmed the event.
    pub confirmed_at: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl ForwardedEvent {
    /// Builds the body of a stored event.
    pub fn from_row(e: &EventRow) -> Self {
        let occurred = e.confirmed_at.unwrap_or(e.created_at);
        Self {
            kind: e.event_type.clone(),
            timestamp: rfc3339(occurred),
            data: EventData {
                event_id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                api_version: e.api_version.clone(),
                mch_id: e.mch_id.clone(),
                mch_order_no: e.mch_order_no.clone(),
                pay_order_id: e.pay_order_id.clone(),
                original_order_id: e.original_order_id.clone(),
                amount: e.amount,
                currency: e.currency.clone(),
                status: e.status.clone(),
                source: e.source.clone(),
                iotpay_status: e.iotpay_status,
                pay_type: e.pay_type.clone(),
                refundable: e.refundable,
                card_num: e.card_num.clone(),
                card_type: e.card_type.clone(),
                expiry_date: e.expiry_date.clone(),
                channel: e.channel.clone(),
                invoice_num: e.invoice_num.clone(),
                auth_num: e.auth_num.clone(),
                trans_num: e.trans_num.clone(),
                channel_order_no: e.channel_order_no.clone(),
                pay_succ_time: e.pay_succ_time_raw.clone(),
                pay_succ_at: e.pay_succ_at.map(rfc3339),
                created_at: rfc3339(e.created_at),
                confirmed_at: e.confirmed_at.map(rfc3339),
            },
        }
    }

    /// The exact bytes sent (and signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain strings and numbers always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> EventRow {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().to_utc();
        EventRow {
            event_id: "evt_1".into(),
            event_type: "refund.succeeded".into(),
            api_version: "v3".into(),
            mch_id: "10000701".into(),
            mch_order_no: "r-1".into(),
            pay_order_id: "R1".into(),
            original_order_id: Some("P1".into()),
            amount: 500,
            currency: "CAD".into(),
            status: "confirmed".into(),
            source: "notification".into(),
            iotpay_status: 2,
            pay_type: Some("refund".into()),
            refundable: None,
            pay_succ_time_raw: Some("2026-01-01 22:04:05".into()),
            pay_succ_at: Some(t),
            card_num: Some("432567******2266".into()),
            card_type: None,
            expiry_date: None,
            channel: Some("PF_CC".into()),
            invoice_num: None,
            auth_num: None,
            trans_num: Some("T2".into()),
            channel_order_no: None,
            created_at: t,
            confirmed_at: Some(t + chrono::Duration::seconds(2)),
        }
    }

    #[test]
    fn body_bytes_are_pinned() {
        // Field order and formatting included: a delivery retried across an upgrade carries the
        // same bytes, and consumers may hash them.
        let expected = concat!(
            r#"{"type":"refund.succeeded","timestamp":"2026-01-02T03:04:07.678Z","data":{"event_id":"evt_1","#,
            r#""event_type":"refund.succeeded","api_version":"v3","mch_id":"10000701","mch_order_no":"r-1","#,
            r#""pay_order_id":"R1","original_order_id":"P1","amount":500,"currency":"CAD","status":"confirmed","#,
            r#""source":"notification","iotpay_status":2,"pay_type":"refund","refundable":null,"#,
            r#""card_num":"432567******2266","card_type":null,"expiry_date":null,"channel":"PF_CC","#,
            r#""invoice_num":null,"auth_num":null,"trans_num":"T2","channel_order_no":null,"#,
            r#""pay_succ_time":"2026-01-01 22:04:05","pay_succ_at":"2026-01-02T03:04:05.678Z","#,
            r#""created_at":"2026-01-02T03:04:05.678Z","confirmed_at":"2026-01-02T03:04:07.678Z"}}"#
        );
        assert_eq!(String::from_utf8(ForwardedEvent::from_row(&row()).to_bytes()).unwrap(), expected);
    }

    #[test]
    fn body_has_the_contract_shape() {
        let v: serde_json::Value = serde_json::from_slice(&ForwardedEvent::from_row(&row()).to_bytes()).unwrap();
        assert_eq!(v["type"], "refund.succeeded");
        assert_eq!(v["timestamp"], "2026-01-02T03:04:07.678Z");
        let d = &v["data"];
        for key in [
            "event_id",
            "event_type",
            "api_version",
            "mch_id",
            "mch_order_no",
            "pay_order_id",
            "original_order_id",
            "amount",
            "currency",
            "status",
            "source",
        ] {
            assert!(d.get(key).is_some(), "missing {key}");
        }
        assert_eq!(d["original_order_id"], "P1");
        assert_eq!(d["amount"], 500);
        assert_eq!(d["refundable"], serde_json::Value::Null);
        assert_eq!(d["pay_succ_time"], "2026-01-01 22:04:05");
    }
}
