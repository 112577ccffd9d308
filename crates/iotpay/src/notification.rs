//! A verified IOTPay notification, normalized into one shape for v3 and v2.

use serde::Serialize;

use super::params::{ParamValue, Params};
use crate::domain::{
    is_card_number_field, is_success_status, mask_pan, ApiVersion, Cents, Currency, EventId, EventType, InvalidValue,
    MchId, MchOrderNo, PayOrderId,
};

/// The fields that mark each API version. Only a **non-empty** marker counts: empty fields are
/// unsigned in effect (an empty value adds `name=` or nothing to the sign string, depending on
/// the sender), so an attacker could add or drop them without changing the sign.
const VERSION_MARKERS: &[(ApiVersion, &[&str])] =
    &[(ApiVersion::V3, &["payType"]), (ApiVersion::V2, &["transId", "cardType", "expirationDate"])];

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
    /// Neither `payType` (v3) nor a v2 field is present and non-empty.
    #[error("cannot tell the API version: no payType and no transId/cardType/expirationDate")]
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
    /// v3 or v2.
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
    /// `paySuccTime` as sent (no zone).
    pub pay_succ_time: Option<String>,
    /// Card number, masked.
    pub card_num: Option<String>,
    /// v2 card brand letter.
    pub card_type: Option<String>,
    /// Card expiry `MMYY` (v3 `expiryDate`, v2 `expirationDate`).
    pub expiry_date: Option<String>,
    /// v3 channel (`PF_CC`, `UPI_EX`).
    pub channel: Option<String>,
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
            ApiVersion::V2 => None,
        };
        let event_type = match (api_version, pay_type.as_deref(), success) {
            (ApiVersion::V2, _, true) | (ApiVersion::V3, Some("pay"), true) => EventType::PaymentSucceeded,
            (ApiVersion::V2, _, false) | (ApiVersion::V3, Some("pay"), false) => EventType::PaymentFailed,
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
            pay_succ_time: structured(params, "paySuccTime")?,
            card_num: optional(params, "cardNum")?.map(|c| mask_pan(&c).into_owned()),
            card_type: optional(params, "cardType")?,
            expiry_date: optional(params, expiry_field)?,
            channel: optional(params, "channel")?,
            invoice_num: optional(params, "invoiceNum")?,
            auth_num: optional(params, "authNum")?,
            trans_num: structured(params, trans_field)?,
        })
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
    match params.text(field) {
        Some(s) if s.len() > MAX_TEXT_LEN => {
            Err(malformed(field, InvalidValue(format!("longer than {MAX_TEXT_LEN} bytes"))))
        }
        Some(s) if s.chars().any(char::is_control) => Err(malformed(field, InvalidValue("control characters".into()))),
        Some(s) => Ok(Some(s.to_owned())),
        None => Ok(None),
    }
}

/// A value parsed as an id, status or time: as [`optional`], and never holding `&` or `=`, the
/// sign string's separators, so it cannot be a re-cut of other signed fields.
fn structured(params: &Params, field: &'static str) -> Result<Option<String>, NotificationError> {
    let value = optional(params, field)?;
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
mod tests {
    use super::*;

    fn json(s: &str) -> Params {
        Params::from_json(s.as_bytes()).unwrap()
    }

    const V3_PAY: &str = r#"{"payOrderId":"PC1","mchId":"10000701","mchOrderNo":"o1","originalOrderId":"",
        "amount":1500,"currency":"CAD","payType":"pay","refundable":1500,"status":2,
        "paySuccTime":"2021-04-07 19:44:51","cardNum":"432567******2266","expiryDate":"0725",
        "invoiceNum":"","authNum":"A1","transNum":"T1","channel":"PF_CC","sign":"X"}"#;

    #[test]
    fn v3_payment_normalizes() {
        let n = Notification::from_params(&json(V3_PAY)).unwrap();
        assert_eq!(n.api_version, ApiVersion::V3);
        assert_eq!(n.event_type, EventType::PaymentSucceeded);
        assert_eq!(n.amount.get(), 1500);
        assert_eq!(n.original_order_id, None);
        assert_eq!(n.trans_num.as_deref(), Some("T1"));
        assert_eq!(n.expiry_date.as_deref(), Some("0725"));
        assert_eq!(n.invoice_num, None);
    }

    #[test]
    fn event_type_mapping() {
        let cases = [
            (r#""payType":"pay","status":2"#, EventType::PaymentSucceeded),
            (r#""payType":"pay","status":3"#, EventType::PaymentSucceeded),
            (r#""payType":"pay","status":9"#, EventType::PaymentFailed),
            (r#""payType":"pay","status":0"#, EventType::PaymentFailed),
            (r#""payType":"refund","status":2,"originalOrderId":"PC0""#, EventType::RefundSucceeded),
            (r#""payType":"refund","status":9,"originalOrderId":"PC0""#, EventType::RefundFailed),
            (r#""payType":"void","status":2"#, EventType::Unrecognized),
            (r#""transId":"T","status":3"#, EventType::PaymentSucceeded),
            (r#""cardType":"V","status":1"#, EventType::PaymentFailed),
            (r#""payType":"pay","transId":"","status":2"#, EventType::PaymentSucceeded),
            (r#""payType":"","transId":"T","status":2"#, EventType::PaymentSucceeded),
        ];
        for (fields, expected) in cases {
            let body =
                format!(r#"{{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":1,"currency":"CAD",{fields}}}"#);
            let n = Notification::from_params(&json(&body)).unwrap();
            assert_eq!(n.event_type, expected, "{fields}");
            assert_eq!(
                n.event_type.is_success(),
                is_success_status(n.iotpay_status) && expected != EventType::Unrecognized
            );
        }
    }

    #[test]
    fn pay_time_resolves_in_configured_zone() {
        let toronto = jiff::tz::TimeZone::get("America/Toronto").unwrap();
        assert_eq!(resolve_time("2021-04-07 19:44:51", &toronto).as_deref(), Some("2021-04-07T23:44:51Z"));
        assert_eq!(resolve_time("2021-01-07 19:44:51", &toronto).as_deref(), Some("2021-01-08T00:44:51Z"));
        assert_eq!(
            resolve_time("2021-04-07 19:44:51", &jiff::tz::TimeZone::UTC).as_deref(),
            Some("2021-04-07T19:44:51Z")
        );
        assert_eq!(resolve_time("07/04/2021", &toronto), None);
    }

    #[test]
    fn version_detection() {
        use NotificationError::{ConflictingVersion, UnknownVersion};
        assert_eq!(detect_version(&json(r#"{"payType":"pay"}"#)), Ok(ApiVersion::V3));
        assert_eq!(detect_version(&json(r#"{"payType":"pay","transId":""}"#)), Ok(ApiVersion::V3));
        assert_eq!(detect_version(&json(r#"{"transId":"1"}"#)), Ok(ApiVersion::V2));
        assert_eq!(detect_version(&json(r#"{"transId":"1","payType":""}"#)), Ok(ApiVersion::V2));
        assert_eq!(detect_version(&json(r#"{"expirationDate":"0725"}"#)), Ok(ApiVersion::V2));
        assert_eq!(detect_version(&json(r#"{"cardType":""}"#)), Err(UnknownVersion), "empty markers do not count");
        assert_eq!(detect_version(&json(r#"{"payType":""}"#)), Err(UnknownVersion));
        assert_eq!(detect_version(&json(r#"{"mchId":"1"}"#)), Err(UnknownVersion));
        assert_eq!(
            detect_version(&json(r#"{"payType":"pay","transId":"1"}"#)),
            Err(ConflictingVersion("payType", "transId"))
        );
    }

    #[test]
    fn separators_are_refused_in_parsed_values() {
        let base = |extra: &str| {
            format!(
                r#"{{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":1,"currency":"CAD","status":2,{extra}}}"#
            )
        };
        for (extra, field) in [
            (r#""payType":"pay","paySuccTime":"2021-04-07 19:44:51&payType=refund""#, "paySuccTime"),
            (r#""payType":"pay&x=1""#, "payType"),
            (r#""payType":"pay","transNum":"T&a""#, "transNum"),
            (r#""transId":"T=1""#, "transId"),
        ] {
            let r = Notification::from_params(&json(&base(extra)));
            assert!(matches!(r, Err(NotificationError::Malformed { field: f, .. }) if f == field), "{extra}: {r:?}");
        }
        let id = r#"{"mchId":"1","payOrderId":"P&payType=refund","mchOrderNo":"o","amount":1,"currency":"CAD","status":2,"payType":"pay"}"#;
        assert!(matches!(
            Notification::from_params(&json(id)),
            Err(NotificationError::Malformed { field: "payOrderId", .. })
        ));
    }

    #[test]
    fn refund_requires_original_order() {
        let body = r#"{"mchId":"1","payOrderId":"R","mchOrderNo":"o","amount":1,"currency":"CAD","payType":"refund","status":2}"#;
        assert_eq!(Notification::from_params(&json(body)), Err(NotificationError::Missing("originalOrderId")));
    }

    #[test]
    fn malformed_amounts_and_fields() {
        let base = |amount: &str| {
            format!(
                r#"{{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":{amount},"currency":"CAD","payType":"pay","status":2}}"#
            )
        };
        for bad in ["0", "-1", "1.5", "\"100\"", "1e2", "99999999999999999999", "true", "null"] {
            let r = Notification::from_params(&json(&base(bad)));
            assert!(r.is_err(), "amount {bad} must be refused, got {r:?}");
        }
        let no_currency = r#"{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":1,"payType":"pay","status":2}"#;
        assert_eq!(Notification::from_params(&json(no_currency)), Err(NotificationError::Missing("currency")));
        let long_id = format!(
            r#"{{"mchId":"1","payOrderId":"{}","mchOrderNo":"o","amount":1,"currency":"CAD","payType":"pay","status":2}}"#,
            "P".repeat(65)
        );
        assert!(matches!(
            Notification::from_params(&json(&long_id)),
            Err(NotificationError::Malformed { field: "payOrderId", .. })
        ));
    }

    #[test]
    fn form_values_parse_as_numbers() {
        let p = Params::from_form(
            b"mchId=1&payOrderId=P&mchOrderNo=o&amount=2000&currency=CAD&status=3&transId=T&cardType=V",
        )
        .unwrap();
        let n = Notification::from_params(&p).unwrap();
        assert_eq!((n.api_version, n.amount.get(), n.iotpay_status), (ApiVersion::V2, 2000, 3));
        assert_eq!(n.trans_num.as_deref(), Some("T"));
    }

    #[test]
    fn full_card_numbers_are_masked_everywhere() {
        let mut p =
            json(r#"{"cardNum":"4111111111111111","cardNumber":"4111 1111 1111 1111","transNum":"4111111111111111"}"#);
        mask_card_numbers(&mut p);
        assert_eq!(p.text("cardNum"), Some("411111******1111"));
        assert_eq!(p.text("cardNumber"), Some("411111******1111"));
        assert_eq!(p.text("transNum"), Some("4111111111111111"), "non-card fields untouched");
    }
}
