//! IOTPay's general-API order query (`POST <v1 base>/query_order`): the request, signed in
//! IOTPay's own order and sent as the form field `params=<JSON>`, and the flat answer.
//! Facts: docs/iotpay/V1.md, "Order query".

use super::{classify_fail, kept_text, truncate, FoundOrder, QueriedOrder, QueryError};
use crate::domain::{ApiVersion, Cents, MchId, MerchantKey, PayOrderId};
use crate::params::Params;
use crate::sign::{self, SIGN_FIELD};

/// The path of the query under the v1 base URL.
pub const PATH: &str = "query_order";

/// The form body of a query for one order: `params=` and the percent-encoded signed JSON.
pub fn request_body(mch_id: &MchId, pay_order_id: &PayOrderId, key: &MerchantKey) -> String {
    request_body_by(mch_id, "payOrderId", pay_order_id.as_str(), key)
}

/// The form body of a query naming the order by `field` (`payOrderId` or `mchOrderNo`).
pub fn request_body_by(mch_id: &MchId, field: &str, value: &str, key: &MerchantKey) -> String {
    let pairs = [("mchId", mch_id.as_str()), (field, value)];
    let json = serde_json::json!({
        "mchId": mch_id.as_str(),
        field: value,
        "sign": sign::sign_pairs(pairs, key),
    });
    let json = json.to_string();
    format!("params={}", percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC))
}

/// Reads a `query_order` answer. `retCode` says whether the call worked, `resCode` whether the
/// business request did; only both `SUCCESS` carry an order, flat in the same object. Its
/// `sign`, when present, must verify under one of `keys` over every other field of the answer.
/// `asked` is the `payOrderId` queried: IOTPay's guide does not list `payOrderId` among the
/// answer's fields, so an answer without it is about the order asked for (one that names
/// another order contradicts the event).
pub fn parse_response(body: &[u8], keys: &[MerchantKey], asked: Option<&str>) -> Result<QueriedOrder, QueryError> {
    let (mut order, _) = parse_answer(body, keys)?;
    if order.pay_order_id.is_empty() {
        order.pay_order_id = asked.ok_or_else(|| QueryError::Unparseable("payOrderId missing".into()))?.to_owned();
    }
    Ok(order)
}

/// Reads a `query_order` answer to a query by `mchOrderNo` ([`FoundOrder`]): as
/// [`parse_response`], but an answer without `payOrderId` is kept with an empty one (nothing was
/// asked by id), so that its status still tells whether the order is paid.
pub fn parse_found(body: &[u8], keys: &[MerchantKey]) -> Result<FoundOrder, QueryError> {
    let (mut order, answer) = parse_answer(body, keys)?;
    order.pay_succ_time = kept_text(order.pay_succ_time.as_deref());
    let channel = crate::v1::channel(&answer).ok().flatten();
    Ok(FoundOrder { order, channel: kept_text(channel), channel_order_no: kept_text(answer.text("channelOrderNo")) })
}

/// The order of a `query_order` answer (`pay_order_id` empty when the answer does not name it),
/// and the answer's fields.
fn parse_answer(body: &[u8], keys: &[MerchantKey]) -> Result<(QueriedOrder, Params), QueryError> {
    let answer = Params::from_json(body).map_err(|e| QueryError::Unparseable(truncate(&e.to_string())))?;
    let message = |field: &str| truncate(answer.text(field).unwrap_or_default());
    match answer.text("retCode") {
        Some("SUCCESS") => {}
        Some("FAIL") => return Err(classify_fail(message("retMsg"))),
        Some(other) => return Err(QueryError::Unparseable(format!("retCode `{}`", truncate(other)))),
        None => return Err(QueryError::Unparseable("no retCode".into())),
    }
    match answer.text("resCode") {
        Some("SUCCESS") => {}
        Some("FAIL") => {
            let described = [message("errCodeDes"), message("retMsg"), message("errCode")];
            let text = described.into_iter().find(|m| !m.is_empty()).unwrap_or_default();
            return Err(classify_fail(text));
        }
        Some(other) => return Err(QueryError::Unparseable(format!("resCode `{}`", truncate(other)))),
        None => return Err(QueryError::Unparseable("retCode SUCCESS without resCode".into())),
    }
    let signed = match answer.text(SIGN_FIELD) {
        None => false,
        Some(s) => {
            if !sign::verify(&answer, s, keys) {
                return Err(QueryError::BadSign);
            }
            true
        }
    };
    let required = |name: &'static str| {
        answer.text(name).map(str::to_owned).ok_or_else(|| QueryError::Unparseable(format!("{name} missing")))
    };
    let amount = Cents::parse(&required("amount")?)
        .map_err(|_| QueryError::Unparseable("amount is not whole cents".into()))?
        .get();
    let status_text = required("status")?;
    if status_text.len() > 4 || !status_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::Unparseable("status is not a whole number".into()));
    }
    let order = QueriedOrder {
        api_version: ApiVersion::V1,
        pay_order_id: answer.text("payOrderId").unwrap_or_default().to_owned(),
        status: status_text.parse().map_err(|_| QueryError::Unparseable("status out of range".into()))?,
        // Every identity and money field is required, as for v3: an answer without one confirms nothing.
        mch_id: Some(required("mchId")?),
        mch_order_no: Some(required("mchOrderNo")?),
        amount: Some(amount),
        currency: Some(required("currency")?.to_ascii_uppercase()),
        pay_type: None,
        original_order_id: None,
        pay_succ_time: answer.text("paySuccTime").map(str::to_owned),
        signed,
    };
    Ok((order, answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn key() -> MerchantKey {
        MerchantKey::new("v1-test-key-Q7")
    }

    fn order() -> Value {
        json!({"retCode": "SUCCESS", "retMsg": "", "resCode": "SUCCESS", "errCode": "", "errCodeDes": "",
               "payOrderId": "WJ20240102030405000000000001", "mchId": "10000702", "mchOrderNo": "wx-1",
               "channelId": "WX_JSAPI", "currency": "cad", "amount": 2000, "clientIp": "", "device": "",
               "subject": "Café", "body": "", "param1": "", "param2": "", "extra": "",
               "paySuccTime": 1704164645000i64, "channelOrderNo": "4200002", "status": 2})
    }

    fn signed(mut answer: Value, key: &MerchantKey) -> Value {
        let params = Params::from_json(answer.to_string().as_bytes()).unwrap();
        answer["sign"] = json!(sign::sign_params(&params, key));
        answer
    }

    fn parse(answer: Value) -> Result<QueriedOrder, QueryError> {
        parse_response(answer.to_string().as_bytes(), &[MerchantKey::new("OLD"), key()], None)
    }

    #[test]
    fn request_is_a_form_field_holding_signed_json() {
        let mch = MchId::parse("10000702").unwrap();
        let id = PayOrderId::parse("WJ1").unwrap();
        let body = request_body(&mch, &id, &key());
        let form = Params::from_form(body.as_bytes()).unwrap();
        assert_eq!(form.iter().count(), 1, "one field, `params`");
        let inner = Params::from_json(form.text("params").unwrap().as_bytes()).unwrap();
        assert_eq!((inner.text("mchId"), inner.text("payOrderId")), (Some("10000702"), Some("WJ1")));
        let s = inner.text("sign").unwrap();
        assert_eq!(s, sign::sign_canonical("mchId=10000702&payOrderId=WJ1", &key()));
        assert!(sign::verify(&inner, s, &[key()]));
    }

    #[test]
    fn both_codes_success_yields_the_flat_order() {
        for answer in [order(), signed(order(), &key())] {
            let q = parse(answer.clone()).unwrap();
            assert_eq!(q.signed, answer.get("sign").is_some());
            assert_eq!(q.api_version, ApiVersion::V1);
            assert_eq!(q.pay_order_id, "WJ20240102030405000000000001");
            assert_eq!((q.mch_id.as_deref(), q.mch_order_no.as_deref()), (Some("10000702"), Some("wx-1")));
            assert_eq!((q.amount, q.currency.as_deref(), q.status), (Some(2000), Some("CAD"), 2));
            assert_eq!(q.pay_succ_time.as_deref(), Some("1704164645000"));
        }
    }

    #[test]
    fn an_answer_without_pay_order_id_is_about_the_order_asked_for() {
        let mut answer = order();
        answer.as_object_mut().unwrap().remove("payOrderId");
        assert!(matches!(parse(answer.clone()), Err(QueryError::Unparseable(_))));
        let q = parse_response(answer.to_string().as_bytes(), &[key()], Some("WJ9")).unwrap();
        assert_eq!(q.pay_order_id, "WJ9");
    }

    #[test]
    fn found_by_merchant_order_number_it_keeps_the_channel_and_may_lack_its_pay_order_id() {
        let found = parse_found(signed(order(), &key()).to_string().as_bytes(), &[key()]).unwrap();
        assert_eq!(found.order.pay_order_id, "WJ20240102030405000000000001");
        assert_eq!((found.channel.as_deref(), found.channel_order_no.as_deref()), (Some("WX_JSAPI"), Some("4200002")));
        assert_eq!(found.pay_succ_at(&jiff::tz::TimeZone::UTC).as_deref(), Some("2024-01-02T03:04:05Z"));

        // No payOrderId: nothing was asked by id, so the status is kept and the id left empty.
        let mut anonymous = order();
        anonymous.as_object_mut().unwrap().remove("payOrderId");
        anonymous["status"] = json!(0);
        let found = parse_found(anonymous.to_string().as_bytes(), &[key()]).unwrap();
        assert_eq!((found.order.pay_order_id.as_str(), found.order.status), ("", 0));

        // Descriptive text that is not short plain text is left out, never stored.
        let mut odd = order();
        odd["channelId"] = json!("WX\nJSAPI");
        odd["channelOrderNo"] = json!("9".repeat(129));
        odd["paySuccTime"] = json!("1\r2");
        let found = parse_found(odd.to_string().as_bytes(), &[key()]).unwrap();
        assert_eq!((found.channel, found.channel_order_no, found.order.pay_succ_time), (None, None, None));
    }

    #[test]
    fn a_wrong_or_tampered_sign_is_refused() {
        assert_eq!(parse(signed(order(), &MerchantKey::new("someone-else"))), Err(QueryError::BadSign));
        let mut tampered = signed(order(), &key());
        tampered["amount"] = json!(20000);
        assert_eq!(parse(tampered), Err(QueryError::BadSign));
    }

    #[test]
    fn either_code_fail_says_nothing_about_the_payment_unless_definitely_not_found() {
        assert_eq!(
            parse(json!({"retCode": "FAIL", "retMsg": "sign error"})),
            Err(QueryError::Fail("sign error".into()))
        );
        assert_eq!(
            parse(json!({"retCode": "SUCCESS", "resCode": "FAIL", "errCode": "1001", "errCodeDes": "system busy"})),
            Err(QueryError::Fail("system busy".into()))
        );
        assert_eq!(
            parse(json!({"retCode": "SUCCESS", "resCode": "FAIL", "errCode": "E9"})),
            Err(QueryError::Fail("E9".into()))
        );
        assert!(matches!(
            parse(json!({"retCode": "SUCCESS", "resCode": "FAIL", "errCodeDes": "order not exist"})),
            Err(QueryError::NotFound(_))
        ));
    }

    #[test]
    fn malformed_answers_are_unparseable() {
        let mut cases = vec![
            json!({"retMsg": "x"}),
            json!({"retCode": "MAYBE"}),
            json!({"retCode": "SUCCESS"}),
            json!({"retCode": "SUCCESS", "resCode": "PERHAPS"}),
            json!({"retCode": "SUCCESS", "resCode": "SUCCESS", "extra": {"nested": 1}}),
        ];
        for (field, bad) in
            [("amount", json!(15.5)), ("amount", json!("")), ("status", json!("-2")), ("status", json!("x"))]
        {
            let mut o = order();
            o[field] = bad;
            cases.push(o);
        }
        for field in ["mchId", "mchOrderNo", "amount", "currency", "status"] {
            let mut o = order();
            o.as_object_mut().unwrap().remove(field);
            cases.push(o);
        }
        for c in cases {
            assert!(matches!(parse(c.clone()), Err(QueryError::Unparseable(_))), "{c}");
        }
        assert!(matches!(parse_response(b"<html>", &[], None), Err(QueryError::Unparseable(_))));
    }

    #[test]
    fn a_query_by_merchant_order_number_is_a_signed_form_field_too() {
        let mch = MchId::parse("10000702").unwrap();
        let body = request_body_by(&mch, "mchOrderNo", "wx-1", &key());
        let form = Params::from_form(body.as_bytes()).unwrap();
        let inner = Params::from_json(form.text("params").unwrap().as_bytes()).unwrap();
        assert_eq!((inner.text("mchId"), inner.text("mchOrderNo")), (Some("10000702"), Some("wx-1")));
        assert_eq!(inner.text("payOrderId"), None);
        assert_eq!(inner.text(SIGN_FIELD).unwrap(), sign::sign_canonical("mchId=10000702&mchOrderNo=wx-1", &key()));
    }
}
