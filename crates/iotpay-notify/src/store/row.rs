//! The stored event as every reader sees it: one typed row of `payment_events`. Queues and
//! lists that need more columns (a lease, delivery counts) wrap it with `#[sqlx(flatten)]`, so
//! the event's fields are declared here and nowhere else in the service.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::EventStatus;
use crate::domain::{ApiVersion, Currency, EventType, InvalidValue, IotpayStatus, MchId, PayOrderId};

/// One event as stored, read through [`event_columns!`].
///
/// It serializes as the `data` object of the forwarded body (CONTRACT.md,
/// `docs/forwarded-event.schema.json`): its fields in this order, `pay_succ_time_raw` named
/// `pay_succ_time`, times in RFC 3339 UTC with milliseconds, and without `status_reason` and
/// `notification_count`, which are not part of the contract. Other documents pick their fields.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct StoredEvent {
    /// Stable id (the `webhook-id`), derived from mch_id, pay_order_id and event_type.
    pub event_id: String,
    /// `payment.succeeded`, ...
    #[sqlx(try_from = "String")]
    pub event_type: EventType,
    /// Which IOTPay API the event came from.
    #[sqlx(try_from = "String")]
    pub api_version: ApiVersion,
    /// The merchant.
    #[sqlx(try_from = "String")]
    pub mch_id: MchId,
    /// The merchant's order number. Plain text: an order registered through the API, and so a
    /// payment reconciliation found for it, may carry text a notification's `mchOrderNo` may not.
    pub mch_order_no: String,
    /// IOTPay's id of the transaction.
    #[sqlx(try_from = "String")]
    pub pay_order_id: PayOrderId,
    /// The refunded payment (refunds).
    #[sqlx(try_from = "NullableText")]
    pub original_order_id: Option<PayOrderId>,
    /// Amount in cents.
    pub amount: i64,
    /// ISO 4217 code.
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// Where the event is in confirmation.
    pub status: EventStatus,
    /// Why rejected or unconfirmed.
    #[serde(skip)]
    pub status_reason: Option<String>,
    /// Valid notifications received (0 for a payment found by reconciliation).
    #[serde(skip)]
    pub notification_count: i32,
    /// `notification`, or `reconciliation` (no notification arrived; found by querying IOTPay).
    pub source: String,
    /// IOTPay's numeric order status as sent.
    #[sqlx(try_from = "i32")]
    pub iotpay_status: IotpayStatus,
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
    #[serde(rename = "pay_succ_time")]
    pub pay_succ_time_raw: Option<String>,
    /// `paySuccTime` as an instant (v3/v2: resolved in `IOTPAY_TIME_ZONE`).
    #[serde(serialize_with = "optional_millis")]
    pub pay_succ_at: Option<DateTime<Utc>>,
    /// When the first notification was stored.
    #[serde(serialize_with = "millis")]
    pub created_at: DateTime<Utc>,
    /// When IOTPay's query confirmed the event.
    #[serde(serialize_with = "optional_millis")]
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// The columns [`StoredEvent`] reads, each qualified by the table alias given, as one string
/// literal (for `concat!`): queries name the event's columns through this list only.
macro_rules! event_columns {
    ($alias:literal) => {
        $crate::store::row::qualified!(
            $alias; event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id, original_order_id,
            amount, currency, status, status_reason, notification_count, source, iotpay_status, pay_type,
            refundable, card_num, card_type, expiry_date, channel, invoice_num, auth_num, trans_num,
            channel_order_no, pay_succ_time_raw, pay_succ_at, created_at, confirmed_at
        )
    };
}
pub(crate) use event_columns;

/// `LEFT JOIN LATERAL` of the delivery counts (`d.deliveries`, `d.delivered`, `d.dead`) of each
/// event of a page aliased `e`: the page first, then the counts of just those rows, which stays
/// cheap on a large table. For the event lists of the admin API and of `events list`.
macro_rules! delivery_counts_of_page {
    () => {
        "LEFT JOIN LATERAL (
                SELECT count(*) AS deliveries,
                       count(*) FILTER (WHERE status = 'delivered') AS delivered,
                       count(*) FILTER (WHERE status = 'dead') AS dead
                  FROM deliveries WHERE deliveries.event_id = e.event_id) AS d ON true"
    };
}
pub(crate) use delivery_counts_of_page;

/// Serializes the named fields of `$from` into the struct serializer `$out`, in the order given:
/// documents other than the forwarded body pick the event's fields with it.
macro_rules! serialize_fields {
    ($out:ident, $from:expr; $($field:ident),+ $(,)?) => {
        $( serde::ser::SerializeStruct::serialize_field(&mut $out, stringify!($field), &$from.$field)?; )+
    };
}
pub(crate) use serialize_fields;

/// `alias.first, alias.second, ...` as one literal.
macro_rules! qualified {
    ($alias:literal; $first:ident $(, $column:ident)*) => {
        concat!($alias, ".", stringify!($first) $(, ", ", $alias, ".", stringify!($column))*)
    };
}
pub(crate) use qualified;

/// RFC 3339 UTC with milliseconds, as the forwarded body writes times.
pub fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn millis<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_millis(*t))
}

fn optional_millis<S: Serializer>(t: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => millis(t, serializer),
        None => serializer.serialize_none(),
    }
}

/// A nullable text column, read so that an optional typed field can be converted with
/// `#[sqlx(try_from)]` (which needs a type of this crate to convert from).
#[derive(Debug, sqlx::Type)]
#[sqlx(transparent)]
pub struct NullableText(Option<String>);

impl TryFrom<NullableText> for Option<PayOrderId> {
    type Error = InvalidValue;

    fn try_from(text: NullableText) -> Result<Self, InvalidValue> {
        text.0.map(PayOrderId::try_from).transpose()
    }
}

#[cfg(test)]
impl StoredEvent {
    /// A confirmed v3 refund, as notified, for tests to adjust.
    pub(crate) fn example() -> Self {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().to_utc();
        let id = |s: &str| PayOrderId::parse(s).unwrap();
        StoredEvent {
            event_id: "evt_1".into(),
            event_type: EventType::RefundSucceeded,
            api_version: ApiVersion::V3,
            mch_id: MchId::parse("10000701").unwrap(),
            mch_order_no: "r-1".into(),
            pay_order_id: id("R1"),
            original_order_id: Some(id("P1")),
            amount: 500,
            currency: Currency::parse("CAD").unwrap(),
            status: EventStatus::Confirmed,
            status_reason: None,
            notification_count: 1,
            source: "notification".into(),
            iotpay_status: IotpayStatus::SUCCEEDED,
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_column_list_is_qualified_and_comma_separated() {
        let columns = event_columns!("e");
        assert!(columns.starts_with("e.event_id, e.event_type, "), "{columns}");
        assert!(columns.ends_with(", e.created_at, e.confirmed_at"), "{columns}");
        assert_eq!(columns.split(", ").count(), 28);
        assert!(columns.split(", ").all(|c| c.starts_with("e.") && !c.contains(' ')));
    }
}
