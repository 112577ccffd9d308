//! The card APIs' query (`POST <v3 or v2 base>/cc_query`): the signed JSON request, and the
//! answer's envelope around the order (`retData` for v3, `order` for v2).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{classify_fail, kept_text, truncate, FoundOrder, QueriedOrder, QueryError};
use crate::domain::{ApiVersion, Cents, MchId, MerchantKey};
use crate::params::Params;
use crate::sign::{self, SIGN_FIELD};

/// The request's content type.
pub(super) const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// The signed JSON body of a v3/v2 `cc_query` naming the order by `field`.
pub fn json_body(mch_id: &MchId, field: &str, value: &str, key: &MerchantKey) -> String {
    let pairs = [("mchId", mch_id.as_str()), (field, value)];
    serde_json::json!({
        "mchId": mch_id.as_str(),
        field: value,
        "sign": sign::sign_pairs(pairs, key),
    })
    .to_string()
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "retCode")]
    ret_code: Option<String>,
    #[serde(rename = "retMsg")]
    ret_msg: Option<String>,
    #[serde(rename = "retData")]
    ret_data: Option<Box<RawValue>>,
    order: Option<Box<RawValue>>,
}
/// Reads a `cc_query` answer: the envelope, then the order object (`retData` for v3, `order` for
/// v2), whose `sign`, when present, must verify under one of `keys`.
pub fn parse_response(version: ApiVersion, body: &[u8], keys: &[MerchantKey]) -> Result<QueriedOrder, QueryError> {
    parse_card(version, body, keys).map(|(order, _)| order)
}

/// Reads the answer to a query by `mchOrderNo` ([`FoundOrder`]): as [`parse_response`], keeping
/// the order's `channel`.
pub fn parse_found(version: ApiVersion, body: &[u8], keys: &[MerchantKey]) -> Result<FoundOrder, QueryError> {
    let (mut order, fields) = parse_card(version, body, keys)?;
    order.pay_succ_time = kept_text(order.pay_succ_time.as_deref());
    Ok(FoundOrder { order, channel: kept_text(fields.text("channel")), channel_order_no: None })
}

/// The v3/v2 `cc_query` answer: the order, and the order object's fields.
fn parse_card(version: ApiVersion, body: &[u8], keys: &[MerchantKey]) -> Result<(QueriedOrder, Params), QueryError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| QueryError::Unparseable(truncate(&e.to_string())))?;
    let message = truncate(envelope.ret_msg.as_deref().unwrap_or_default());
    match envelope.ret_code.as_deref() {
        Some("SUCCESS") => {}
        Some("FAIL") => return Err(classify_fail(message)),
        Some(other) => return Err(QueryError::Unparseable(format!("retCode `{}`", truncate(other)))),
        None => return Err(QueryError::Unparseable("no retCode".into())),
    }
    let (raw, member) = match version {
        ApiVersion::V3 => (envelope.ret_data, "retData"),
        ApiVersion::V2 | ApiVersion::V1 => (envelope.order, "order"),
    };
    let raw = raw.ok_or_else(|| QueryError::Unparseable(format!("retCode SUCCESS without {member}")))?;
    // Flat and free of duplicate names, like every IOTPay message: the sign covers each field.
    let order = Params::from_json(raw.get().as_bytes())
        .map_err(|e| QueryError::Unparseable(format!("{member}: {}", truncate(&e.to_string()))))?;
    let signed = match order.get(SIGN_FIELD) {
        None => false,
        Some(v) if v.as_text().is_empty() => false,
        Some(v) => {
            if !sign::verify(&order, v.as_text(), keys) {
                return Err(QueryError::BadSign);
            }
            true
        }
    };
    let text = |name: &str| order.text(name).map(str::to_owned);
    let required = |name: &'static str, value: Option<String>| {
        value.ok_or_else(|| QueryError::Unparseable(format!("{member}.{name} missing")))
    };
    let amount = match order.text("amount") {
        None => None,
        Some(a) => Some(
            Cents::parse(a).map_err(|_| QueryError::Unparseable(format!("{member}.amount is not whole cents")))?.get(),
        ),
    };
    let status = order.text("status").ok_or_else(|| QueryError::Unparseable(format!("{member}.status missing")))?;
    let status = match status.parse::<i64>() {
        Ok(s) if !status.starts_with(['+', '-']) => s,
        _ => return Err(QueryError::Unparseable(format!("{member}.status is not a whole number"))),
    };
    let queried = QueriedOrder {
        api_version: version,
        pay_order_id: required("payOrderId", text("payOrderId"))?,
        status,
        mch_id: text("mchId"),
        mch_order_no: text("mchOrderNo"),
        amount,
        currency: text("currency").map(|c| c.to_ascii_uppercase()),
        pay_type: text("payType"),
        original_order_id: text("originalOrderId"),
        pay_succ_time: text("paySuccTime"),
        signed,
    };
    if version == ApiVersion::V3 {
        // v3 documents all of these; an answer without one cannot confirm anything.
        required("mchId", queried.mch_id.clone())?;
        required("mchOrderNo", queried.mch_order_no.clone())?;
        required("amount", queried.amount.map(|a| a.to_string()))?;
        required("currency", queried.currency.clone())?;
        required("payType", queried.pay_type.clone())?;
    }
    Ok((queried, order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MerchantKey;
    use crate::query::is_order_not_found;
    use serde_json::{json, Value};

    fn key() -> MerchantKey {
        MerchantKey::new("K1")
    }

    fn signed(mut order: Value, key: &MerchantKey) -> Value {
        let body = order.to_string();
        let params = Params::from_json(body.as_bytes()).unwrap();
        order["sign"] = json!(sign::sign_params(&params, key));
        order
    }

    fn v3_order() -> Value {
        json!({"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o1", "originalOrderId": "",
               "currency": "cad", "amount": 1500, "payType": "pay", "refundable": 1500, "status": 2,
               "paySuccTime": "2021-04-07 19:44:51", "cardNum": "432567******2266", "channel": "PF_CC"})
    }

    fn parse(version: ApiVersion, body: Value) -> Result<QueriedOrder, QueryError> {
        parse_response(version, body.to_string().as_bytes(), &[MerchantKey::new("OLD"), key()])
    }

    #[test]
    fn v3_signed_order_parses_and_verifies_with_any_merchant_key() {
        let q =
            parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retMsg": "", "retData": signed(v3_order(), &key())}))
                .unwrap();
        assert!(q.signed);
        assert_eq!(q.pay_order_id, "PC1");
        assert_eq!(q.mch_id.as_deref(), Some("100"));
        assert_eq!(q.amount, Some(1500));
        assert_eq!(q.currency.as_deref(), Some("CAD"));
        assert_eq!(q.status, 2);
        assert_eq!(q.original_order_id, None, "empty originalOrderId is absent");
    }

    #[test]
    fn unsigned_order_is_accepted_but_marked_unsigned() {
        let q = parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": v3_order()})).unwrap();
        assert!(!q.signed);
    }

    #[test]
    fn wrong_or_tampered_sign_is_refused() {
        let mut order = signed(v3_order(), &MerchantKey::new("someone-else"));
        assert_eq!(
            parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": order.clone()})),
            Err(QueryError::BadSign)
        );
        order = signed(v3_order(), &key());
        order["amount"] = json!(1501);
        assert_eq!(parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": order})), Err(QueryError::BadSign));
    }

    #[test]
    fn not_found_is_definite_other_fail_is_not() {
        for msg in ["order not exist", "Order Not Found", "the ORDER does NOT EXIST"] {
            assert!(matches!(
                parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": msg})),
                Err(QueryError::NotFound(_))
            ));
        }
        assert_eq!(
            parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": "sign error"})),
            Err(QueryError::Fail("sign error".into()))
        );
        assert!(matches!(parse(ApiVersion::V3, json!({"retCode": "FAIL"})), Err(QueryError::Fail(_))));
        for msg in ["mchId not exist", "merchant not found", "Merchant order key not exist", "channel not exist"] {
            assert!(
                matches!(parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": msg})), Err(QueryError::Fail(_))),
                "{msg} is not about the order"
            );
        }
    }

    /// Only an answer about the order is "not found"; a merchant setup error, an ambiguous or an
    /// unreadable message is retried (audit of issue 11: `mchOrderNo not exist` was retried
    /// because it contains "mch").
    #[test]
    fn only_messages_about_the_order_are_not_found() {
        let cases: &[(&str, bool)] = &[
            ("order not exist", true),
            ("Order Not Found", true),
            ("the ORDER does NOT EXIST", true),
            ("order doesn't exist", true),
            ("Order is not found", true),
            ("orders not exists", true),
            ("mchOrderNo not exist", true),
            ("payOrderId not exist", true),
            ("mch_order_no not found", true),
            ("pay_order_id not exist", true),
            ("ORDER_ID_NOT_FOUND", true),
            ("ORDER_NOT_EXIST", true),
            ("merchant order not exist", true),
            ("Merchant order no not exist", true),
            ("order PC20240305 not exist", true),
            ("no such order", true),
            ("transaction not found", true),
            ("refund order not exist", true),
            // Merchant setup problems: never about the payment.
            ("mchId not exist", false),
            ("MCH_NOT_EXIST", false),
            ("mch_id not exist", false),
            ("mch not exist", false),
            ("merchant not found", false),
            ("Merchant order key not exist", false),
            ("channel not exist", false),
            ("channel order not exist", false),
            ("appId not exist", false),
            ("no such merchant", false),
            ("key not found", false),
            // Ambiguous: a setup word beside the order, or two absences of which one is not the order.
            ("order not exist, check your mchId", false),
            ("order not found or sign error", false),
            ("mchId not exist, order not exist", false),
            ("order not exist; merchant not exist", false),
            // No absence phrase, or none with a subject.
            ("not exist", false),
            ("order exists", false),
            ("order not paid", false),
            ("order found", false),
            ("sign error", false),
            ("system busy", false),
            ("", false),
            ("订单不存在", false),
        ];
        for (message, expected) in cases {
            assert_eq!(is_order_not_found(message), *expected, "{message:?}");
            let answer = parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": message}));
            if *expected {
                assert_eq!(answer, Err(QueryError::NotFound((*message).to_owned())), "{message:?}");
            } else {
                assert_eq!(answer, Err(QueryError::Fail((*message).to_owned())), "{message:?}");
            }
        }
    }

    #[test]
    fn malformed_answers_are_unparseable() {
        let cases = [
            json!({"retMsg": "x"}),
            json!({"retCode": "MAYBE"}),
            json!({"retCode": "SUCCESS"}),
            json!({"retCode": "SUCCESS", "order": v3_order()}),
            json!({"retCode": "SUCCESS", "retData": "text"}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "status": 2}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o", "currency": "CAD", "amount": 15.5, "payType": "pay", "status": 2}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o", "currency": "CAD", "amount": 1, "payType": "pay", "status": "-2"}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "nested": {"a": 1}}}),
        ];
        for c in cases {
            assert!(matches!(parse(ApiVersion::V3, c.clone()), Err(QueryError::Unparseable(_))), "{c}");
        }
        assert!(matches!(parse_response(ApiVersion::V3, b"<html>", &[]), Err(QueryError::Unparseable(_))));
    }

    #[test]
    fn v2_order_needs_only_its_documented_fields() {
        let q = parse(
            ApiVersion::V2,
            json!({"retCode": "SUCCESS", "retMsg": "", "order": {"payOrderId": "P2", "mchOrderNo": "m", "transid": "66",
                   "status": "3", "paySuccTime": "2021-04-07 19:44:51", "originalOrderId": null, "payType": ""}}),
        )
        .unwrap();
        assert_eq!(q.status, 3, "string digits are accepted for numbers");
        assert_eq!(
            (q.amount, q.mch_id.as_deref(), q.currency.as_deref(), q.pay_type.as_deref()),
            (None, None, None, None)
        );
        assert_eq!(q.mch_order_no.as_deref(), Some("m"));
    }

    #[test]
    fn found_by_merchant_order_number_a_card_order_keeps_its_channel_and_time() {
        let body = json!({"retCode": "SUCCESS", "retData": signed(v3_order(), &key())}).to_string();
        let found = parse_found(ApiVersion::V3, body.as_bytes(), &[key()]).unwrap();
        assert_eq!(found.order, parse(ApiVersion::V3, serde_json::from_str(&body).unwrap()).unwrap());
        assert_eq!((found.channel.as_deref(), found.channel_order_no.as_deref()), (Some("PF_CC"), None));
        let toronto = jiff::tz::TimeZone::get("America/Toronto").unwrap();
        assert_eq!(found.pay_succ_at(&toronto).as_deref(), Some("2021-04-07T23:44:51Z"));
        // v3 still requires every identity field, by number as by id.
        let mut thin = v3_order();
        thin.as_object_mut().unwrap().remove("payOrderId");
        let body = json!({"retCode": "SUCCESS", "retData": thin}).to_string();
        assert!(matches!(parse_found(ApiVersion::V3, body.as_bytes(), &[]), Err(QueryError::Unparseable(_))));
    }

    #[test]
    fn a_query_by_merchant_order_number_names_it_and_signs_it() {
        let mch = MchId::parse("100").unwrap();
        let body = json_body(&mch, "mchOrderNo", "shop-42", &key());
        let params = Params::from_json(body.as_bytes()).unwrap();
        assert_eq!((params.text("mchId"), params.text("mchOrderNo")), (Some("100"), Some("shop-42")));
        assert_eq!(params.text("payOrderId"), None, "only the merchant's number is sent");
        assert_eq!(params.text(SIGN_FIELD).unwrap(), sign::sign_canonical("mchId=100&mchOrderNo=shop-42", &key()));
    }
}
