//! The forwarded JSON body: `{"type", "timestamp", "data": {...}}` (CONTRACT.md), described by
//! `docs/forwarded-event.schema.json`. `data` is the stored event itself ([`StoredEvent`]'s
//! serialization is the contract's).

use serde::Serialize;

use crate::domain::EventType;
use crate::store::row::rfc3339_millis;
use crate::store::StoredEvent;

/// The body of one forwarded event. Identical on every attempt, so consumers may hash it.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardedEvent<'a> {
    /// The event type, e.g. `payment.succeeded`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the event was confirmed (RFC 3339, UTC).
    pub timestamp: String,
    /// The event's fields, snake_case; absent optional values are `null`.
    pub data: &'a StoredEvent,
}

impl<'a> ForwardedEvent<'a> {
    /// Builds the body of a stored event.
    pub fn from_row(e: &'a StoredEvent) -> Self {
        Self { kind: e.event_type, timestamp: rfc3339_millis(e.confirmed_at.unwrap_or(e.created_at)), data: e }
    }

    /// The exact bytes sent (and signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain strings and numbers always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> StoredEvent {
        StoredEvent::example()
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
