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
        let body = format!(r#"{{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":1,"currency":"CAD",{fields}}}"#);
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
    assert_eq!(resolve_time("2021-04-07 19:44:51", &jiff::tz::TimeZone::UTC).as_deref(), Some("2021-04-07T19:44:51Z"));
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
        format!(r#"{{"mchId":"1","payOrderId":"P","mchOrderNo":"o","amount":1,"currency":"CAD","status":2,{extra}}}"#)
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
    let body =
        r#"{"mchId":"1","payOrderId":"R","mchOrderNo":"o","amount":1,"currency":"CAD","payType":"refund","status":2}"#;
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
    let p =
        Params::from_form(b"mchId=1&payOrderId=P&mchOrderNo=o&amount=2000&currency=CAD&status=3&transId=T&cardType=V")
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
        assert!(matches!(r, Err(NotificationError::Malformed { field: f, .. }) if f == field), "{replace:?}: {r:?}");
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
