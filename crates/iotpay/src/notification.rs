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
            // Issue 11 audit: every other field kept on the event, too.
            (r#""payType":"pay","authNum":"A1&payType=refund""#, "authNum"),
            (r#""payType":"pay","invoiceNum":"INV=2""#, "invoiceNum"),
            (r#""payType":"pay","channel":"PF_CC&transId=1""#, "channel"),
            (r#""payType":"pay","expiryDate":"07=25""#, "expiryDate"),
            (r#""payType":"pay","cardNum":"432567******2266&x=1""#, "cardNum"),
            (r#""transId":"T","cardType":"V&payType=refund""#, "cardType"),
            (r#""transId":"T","expirationDate":"0725&a=b""#, "expirationDate"),
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

    /// A WeChat Pay notification as IOTPay's general API sends it (form body; see tests/data/sign-vectors.json).
    const V1_FORM: &str = "payOrderId=WJ20240305101112131415161718&mchId=10000702&mchOrderNo=wx-order-0001\
        &channeId=WX_JSAPI&currency=CAD&amount=2000&status=2&clientIp=&device=&subject=Caf%C3%A9+cr%C3%A8me\
        &body=&channelOrderNo=4200002024030512345678901234&param1=&param2=&paySuccTime=1709651472000\
        &backType=2&openid=oVtest_payer_openid_not_real";

    fn v1(replace: &[(&str, Option<&str>)]) -> Params {
        let mut pairs: Vec<(String, String)> =
            V1_FORM.split('&').map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap()).collect();
        for (name, value) in replace {
            pairs.retain(|(k, _)| k != name);
            if let Some(v) = value {
                pairs.push((name.to_string(), v.to_string()));
            }
        }
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Params::from_form(body.join("&").as_bytes()).unwrap()
    }

    #[test]
    fn v1_wechat_payment_normalizes_without_the_payer() {
        let n = Notification::from_params(&v1(&[])).unwrap();
        assert_eq!(n.api_version, ApiVersion::V1);
        assert_eq!(n.event_type, EventType::PaymentSucceeded);
        assert_eq!((n.amount.get(), n.currency.as_str(), n.iotpay_status), (2000, "CAD", 2));
        assert_eq!(n.channel.as_deref(), Some("WX_JSAPI"));
        assert_eq!(n.channel_order_no.as_deref(), Some("4200002024030512345678901234"));
        assert_eq!(n.pay_succ_time.as_deref(), Some("1709651472000"));
        assert_eq!(n.pay_succ_at(&jiff::tz::TimeZone::UTC).as_deref(), Some("2024-03-05T15:11:12Z"));
        assert_eq!((n.pay_type.as_deref(), n.card_num.as_deref(), n.trans_num.as_deref()), (None, None, None));
        let serialized = serde_json::to_string(&n).unwrap();
        assert!(!serialized.contains("oVtest_payer_openid"), "the payer's openid is not part of the event");
    }

    #[test]
    fn v1_statuses_and_channel_spellings() {
        for (status, expected) in [
            ("2", EventType::PaymentSucceeded),
            ("3", EventType::PaymentSucceeded),
            ("4", EventType::PaymentFailed),
            ("9", EventType::PaymentFailed),
            ("0", EventType::PaymentFailed),
        ] {
            let n = Notification::from_params(&v1(&[("status", Some(status))])).unwrap();
            assert_eq!(n.event_type, expected, "status {status}");
        }
        let documented = v1(&[("channeId", None), ("channelId", Some("ALIPAY_WAP"))]);
        assert_eq!(Notification::from_params(&documented).unwrap().channel.as_deref(), Some("ALIPAY_WAP"));
        let conflicting = v1(&[("channelId", Some("ALIPAY_WAP"))]);
        assert!(matches!(
            Notification::from_params(&conflicting),
            Err(NotificationError::Malformed { field: "channelId", .. })
        ));
    }

    #[test]
    fn v1_fields_refuse_separators() {
        type Replace<'a> = &'a [(&'a str, Option<&'a str>)];
        let cases: [(Replace, &str); 3] = [
            (&[("channelOrderNo", Some("4200002024%26payType%3Drefund"))], "channelOrderNo"),
            (&[("channeId", Some("WX_JSAPI%26x%3D1"))], "channelId"),
            (&[("channeId", None), ("channelId", Some("ALIPAY%3DWAP"))], "channelId"),
        ];
        for (replace, field) in cases {
            let r = Notification::from_params(&v1(replace));
            assert!(
                matches!(r, Err(NotificationError::Malformed { field: f, .. }) if f == field),
                "{replace:?}: {r:?}"
            );
        }
    }

    #[test]
    fn v1_required_fields_and_pay_time() {
        for field in ["payOrderId", "mchOrderNo", "amount", "status"] {
            for value in [None, Some("")] {
                let r = Notification::from_params(&v1(&[(field, value)]));
                assert_eq!(r, Err(NotificationError::Missing(field)), "{field} = {value:?}");
            }
        }
        for bad in ["2024-03-05 10:11:12", "1709651472000.5", "-1", "abc", "1e12"] {
            let r = Notification::from_params(&v1(&[("paySuccTime", Some(bad))]));
            assert!(matches!(r, Err(NotificationError::Malformed { field: "paySuccTime", .. })), "{bad}: {r:?}");
        }
        let absent = Notification::from_params(&v1(&[("paySuccTime", None)])).unwrap();
        assert_eq!(absent.pay_succ_at(&jiff::tz::TimeZone::UTC), None);
    }

    #[test]
    fn v1_is_told_by_non_empty_v1_fields_never_mixed_with_card_ones() {
        assert_eq!(detect_version(&v1(&[])), Ok(ApiVersion::V1));
        assert_eq!(detect_version(&v1(&[("channeId", None), ("channelOrderNo", None)])), Ok(ApiVersion::V1));
        let no_marker = v1(&[("channeId", Some("")), ("channelOrderNo", Some("")), ("backType", None)]);
        assert_eq!(
            detect_version(&no_marker),
            Err(NotificationError::UnknownVersion),
            "empty v1 fields are not signed and prove nothing"
        );
        assert_eq!(Notification::from_params(&no_marker), Err(NotificationError::UnknownVersion));
        assert!(
            matches!(detect_version(&v1(&[("payType", Some("pay"))])), Err(NotificationError::ConflictingVersion(..))),
            "v1 and v3 fields together"
        );
        assert!(
            matches!(detect_version(&v1(&[("transId", Some("T"))])), Err(NotificationError::ConflictingVersion(..))),
            "v1 and v2 fields together"
        );
    }
}
