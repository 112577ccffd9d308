//! A verified IOTPay notification, normalized into one shape for v3, v2 and v1.

use serde::Serialize;

use super::params::{ParamValue, Params};
use super::v1;
use crate::domain::{
    is_card_number_field, is_success_status, mask_pan, ApiVersion, Cents, Currency, EventId, EventType, InvalidValue,
    MchId, MchOrderNo, PayOrderId,
};

/// The fields that mark each API version. Only a **non-empty** marker counts: empty fields are
/// unsigned in effect (an empty value adds `name=` or nothing to the sign string, depending on
/// the sender), so an attacker could add or drop them without changing the sign.
const VERSION_MARKERS: &[(ApiVersion, &[&str])] = &[
    (ApiVersion::V3, &["payType"]),
    (ApiVersion::V2, &["transId", "cardType", "expirationDate"]),
    (ApiVersion::V1, &v1::MARKERS),
];

/// Why a notification's fields are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    /// A required field is absent or empty.
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
    /// A field is present but malformed.
    #[error("field `{field}` is malformed: {reason}")]
    Malformed {
        /// The field's name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No version's marker fields (payType for v3; transId/cardType/expirationDate for v2;
    /// channelId/channeId/channelOrderNo/backType for v1) are present with a value.
    #[error("cannot tell the API version: no payType, no transId/cardType/expirationDate, no channelId/channeId/channelOrderNo/backType")]
    UnknownVersion,
    /// Markers of more than one API version are present: which one was signed is ambiguous.
    #[error("conflicting API version fields: {0} and {1}")]
    ConflictingVersion(&'static str, &'static str),
}

/// Which API a message is from, told by its non-empty marker fields ([`VERSION_MARKERS`]):
/// exactly one version's markers must be present.
pub fn detect_version(params: &Params) -> Result<ApiVersion, NotificationError> {
    let mut found: Option<(ApiVersion, &'static str)> = None;
    for (version, fields) in VERSION_MARKERS {
        let Some(field) = fields.iter().find(|f| params.text(f).is_some()) else { continue };
        match found {
            Some((v, first)) if v != *version => return Err(NotificationError::ConflictingVersion(first, field)),
            _ => found = Some((*version, field)),
        }
    }
    found.map(|(v, _)| v).ok_or(NotificationError::UnknownVersion)
}

/// The normalized content of one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// v3, v2 or v1.
    pub api_version: ApiVersion,
    /// The merchant.
    pub mch_id: MchId,
    /// IOTPay's id of this transaction.
    pub pay_order_id: PayOrderId,
    /// The merchant's order id.
    pub mch_order_no: MchOrderNo,
    /// The refunded payment (refunds only).
    pub original_order_id: Option<PayOrderId>,
    /// Amount in cents.
    pub amount: Cents,
    /// Currency code.
    pub currency: Currency,
    /// IOTPay's numeric status as sent.
    pub iotpay_status: i64,
    /// v3 `payType` as sent.
    pub pay_type: Option<String>,
    /// The normalized event type.
    pub event_type: EventType,
    /// v3 amount still refundable, in cents.
    pub refundable: Option<Cents>,
    /// `paySuccTime` as sent (v3/v2: no zone; v1: milliseconds since the epoch).
    pub pay_succ_time: Option<String>,
    /// Card number, masked.
    pub card_num: Option<String>,
    /// v2 card brand letter.
    pub card_type: Option<String>,
    /// Card expiry `MMYY` (v3 `expiryDate`, v2 `expirationDate`).
    pub expiry_date: Option<String>,
    /// Channel: v3 `channel` (`PF_CC`, `UPI_EX`), v1 `channelId`/`channeId` (`WX_JSAPI`, `ALIPAY_WAP`).
    pub channel: Option<String>,
    /// v1 `channelOrderNo`: WeChat Pay's / Alipay's own transaction number.
    pub channel_order_no: Option<String>,
    /// v3 invoice number.
    pub invoice_num: Option<String>,
    /// v3 authorization number.
    pub auth_num: Option<String>,
    /// Bank transaction number (v3 `transNum`, v2 `transId`).
    pub trans_num: Option<String>,
}

impl Notification {
    /// The stable id of the event this notification reports.
    pub fn event_id(&self) -> EventId {
        EventId::derive(&self.mch_id, &self.pay_order_id, self.event_type)
    }

    /// Normalizes verified parameters. Card numbers are already masked by [`mask_card_numbers`].
    pub fn from_params(params: &Params) -> Result<Self, NotificationError> {
        let api_version = detect_version(params)?;
        let mch_id = id(params, "mchId", MchId::parse)?;
        let pay_order_id = id(params, "payOrderId", PayOrderId::parse)?;
        let mch_order_no = id(params, "mchOrderNo", MchOrderNo::parse)?;
        let amount = cents(params, "amount")?.ok_or(NotificationError::Missing("amount"))?;
        if amount.get() == 0 {
            return Err(malformed("amount", InvalidValue("must be positive".into())));
        }
        let currency =
            required(params, "currency").and_then(|c| Currency::parse(c).map_err(|e| malformed("currency", e)))?;
        let iotpay_status = integer(params, "status")?;
        let success = is_success_status(iotpay_status);

        let pay_type = match api_version {
            ApiVersion::V3 => Some(structured(params, "payType")?.unwrap_or_default()),
            ApiVersion::V2 | ApiVersion::V1 => None,
        };
        // v2 and v1 notifications are always payments (neither API documents refund notifications).
        let event_type = match (api_version, pay_type.as_deref(), success) {
            (ApiVersion::V2 | ApiVersion::V1, _, true) | (ApiVersion::V3, Some("pay"), true) => {
                EventType::PaymentSucceeded
            }
            (ApiVersion::V2 | ApiVersion::V1, _, false) | (ApiVersion::V3, Some("pay"), false) => {
                EventType::PaymentFailed
            }
            (ApiVersion::V3, Some("refund"), true) => EventType::RefundSucceeded,
            (ApiVersion::V3, Some("refund"), false) => EventType::RefundFailed,
            _ => EventType::Unrecognized,
        };
        if pay_type.as_deref().is_some_and(|p| p.len() > 32) {
            return Err(malformed("payType", InvalidValue("longer than 32 bytes".into())));
        }

        let original_order_id = match params.text("originalOrderId") {
            Some(s) => Some(PayOrderId::parse(s).map_err(|e| malformed("originalOrderId", e))?),
            None => None,
        };
        if matches!(event_type, EventType::RefundSucceeded | EventType::RefundFailed) && original_order_id.is_none() {
            return Err(NotificationError::Missing("originalOrderId"));
        }

        let (expiry_field, trans_field) = match api_version {
            ApiVersion::V3 => ("expiryDate", "transNum"),
            ApiVersion::V2 => ("expirationDate", "transId"),
            ApiVersion::V1 => ("expiryDate", "transNum"),
        };
        let pay_succ_time = structured(params, "paySuccTime")?;
        let (channel, channel_order_no) = match api_version {
            ApiVersion::V1 => {
                if let Some(raw) = &pay_succ_time {
                    v1::check_millis(raw).map_err(|e| malformed("paySuccTime", e))?;
                }
                let channel = v1::channel(params).map_err(|e| malformed("channelId", e))?;
                (
                    separator_free("channelId", checked_text("channelId", channel)?)?,
                    structured(params, "channelOrderNo")?,
                )
            }
            ApiVersion::V3 | ApiVersion::V2 => (structured(params, "channel")?, None),
        };
        Ok(Notification {
            api_version,
            mch_id,
            pay_order_id,
            mch_order_no,
            original_order_id,
            amount,
            currency,
            iotpay_status,
            pay_type,
            event_type,
            refundable: cents(params, "refundable")?,
            pay_succ_time,
            card_num: structured(params, "cardNum")?.map(|c| mask_pan(&c).into_owned()),
            card_type: structured(params, "cardType")?,
            expiry_date: structured(params, expiry_field)?,
            channel,
            channel_order_no,
            invoice_num: structured(params, "invoiceNum")?,
            auth_num: structured(params, "authNum")?,
            trans_num: structured(params, trans_field)?,
        })
    }
}

impl Notification {
    /// `paySuccTime` as RFC 3339 UTC: v1 sends milliseconds since the epoch; v3/v2 send a
    /// zone-less local time, read in `zone`. `None` when absent or not in that form.
    pub fn pay_succ_at(&self, zone: &jiff::tz::TimeZone) -> Option<String> {
        let raw = self.pay_succ_time.as_deref()?;
        match self.api_version {
            ApiVersion::V1 => v1::millis_to_rfc3339(raw),
            ApiVersion::V3 | ApiVersion::V2 => resolve_time(raw, zone),
        }
    }
}

/// Masks every full card number in card-number fields, so no PAN is stored or logged anywhere.
pub fn mask_card_numbers(params: &mut Params) {
    let masked: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| is_card_number_field(name))
        .filter_map(|(name, value)| match mask_pan(value.as_text()) {
            std::borrow::Cow::Owned(m) => Some((name.to_owned(), m)),
            std::borrow::Cow::Borrowed(_) => None,
        })
        .collect();
    for (name, m) in masked {
        params.replace_text(&name, m);
    }
}

/// Resolves IOTPay's zone-less `YYYY-MM-DD HH:MM:SS` in the configured zone, as RFC 3339.
/// `None` when the text is not in that form (the raw text is stored regardless).
pub fn resolve_time(raw: &str, zone: &jiff::tz::TimeZone) -> Option<String> {
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", raw).ok()?;
    let zoned = civil.to_zoned(zone.clone()).ok()?;
    Some(zoned.timestamp().to_string())
}

/// Longest free-text field kept.
const MAX_TEXT_LEN: usize = 128;

fn malformed(field: &'static str, e: InvalidValue) -> NotificationError {
    NotificationError::Malformed { field, reason: e.0 }
}

fn required<'a>(params: &'a Params, field: &'static str) -> Result<&'a str, NotificationError> {
    params.text(field).ok_or(NotificationError::Missing(field))
}

fn id<T>(
    params: &Params,
    field: &'static str,
    parse: fn(&str) -> Result<T, InvalidValue>,
) -> Result<T, NotificationError> {
    parse(required(params, field)?).map_err(|e| malformed(field, e))
}

fn optional(params: &Params, field: &'static str) -> Result<Option<String>, NotificationError> {
    checked_text(field, params.text(field))
}

fn checked_text(field: &'static str, text: Option<&str>) -> Result<Option<String>, NotificationError> {
    match text {
        Some(s) if s.len() > MAX_TEXT_LEN => {
            Err(malformed(field, InvalidValue(format!("longer than {MAX_TEXT_LEN} bytes"))))
        }
        Some(s) if s.chars().any(char::is_control) => Err(malformed(field, InvalidValue("control characters".into()))),
        Some(s) => Ok(Some(s.to_owned())),
        None => Ok(None),
    }
}

/// A value the service keeps as a field of the event (an id, code, status, time, card detail):
/// as [`optional`], and never holding `&` or `=`, the sign string's separators, so it cannot be a
/// re-cut of other signed fields. Every field of [`Notification`] is read this way.
fn structured(params: &Params, field: &'static str) -> Result<Option<String>, NotificationError> {
    separator_free(field, optional(params, field)?)
}

fn separator_free(field: &'static str, value: Option<String>) -> Result<Option<String>, NotificationError> {
    if value.as_deref().is_some_and(|v| v.contains(['&', '='])) {
        return Err(malformed(field, InvalidValue("contains `&` or `=`".into())));
    }
    Ok(value)
}

/// An amount: a JSON integer, or digits in a form body. A JSON string amount is refused,
/// since IOTPay documents amounts as Int.
fn cents(params: &Params, field: &'static str) -> Result<Option<Cents>, NotificationError> {
    match params.get(field) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::Text(s)) if s.is_empty() => Ok(None),
        Some(ParamValue::Number(n)) => Cents::parse(n).map(Some).map_err(|e| malformed(field, e)),
        Some(ParamValue::Text(s)) if params.is_form() => Cents::parse(s).map(Some).map_err(|e| malformed(field, e)),
        Some(_) => Err(malformed(field, InvalidValue("not a JSON integer".into()))),
    }
}

fn integer(params: &Params, field: &'static str) -> Result<i64, NotificationError> {
    let text = match params.get(field) {
        None | Some(ParamValue::Null) => return Err(NotificationError::Missing(field)),
        Some(ParamValue::Number(n)) => n.as_str(),
        Some(ParamValue::Text(s)) if params.is_form() => s.as_str(),
        Some(_) => return Err(malformed(field, InvalidValue("not a JSON integer".into()))),
    };
    if text.is_empty() {
        return Err(NotificationError::Missing(field));
    }
    if text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(field, InvalidValue("not a small whole number".into())));
    }
    text.parse().map_err(|_| malformed(field, InvalidValue("not a whole number".into())))
}

#[cfg(test)]
mod tests;
