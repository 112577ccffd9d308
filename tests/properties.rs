//! Property tests over body parsing + sign verification + normalization: no input panics, a
//! signed notification always verifies, and any single change to a signed field is caught.

use iotpay_notify::domain::MerchantKey;
use iotpay_notify::iotpay::{self, sign, Notification, Params};
use proptest::prelude::*;

const KEY: &str = "7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D";

/// What the notify route does with a body, minus the database.
fn pipeline(body: &[u8], form: bool) {
    let parsed = if form { Params::from_form(body) } else { Params::from_json(body) };
    if let Ok(mut params) = parsed {
        let received = params.text("sign").unwrap_or("").to_owned();
        let _ = sign::verify(&params, &received, &[MerchantKey::new(KEY)]);
        iotpay::mask_card_numbers(&mut params);
        if let Ok(n) = Notification::from_params(&params) {
            // Whatever is accepted is within the documented bounds.
            assert!(n.amount.get() > 0);
            assert!(
                n.event_type.is_success() == (n.iotpay_status == 2 || n.iotpay_status == 3)
                    || !n.event_type.is_success()
            );
            if let Some(card) = &n.card_num {
                assert_eq!(iotpay_notify::domain::mask_pan(card), card.as_str(), "no full PAN survives");
            }
        }
        let _ = params.to_json();
    }
}

fn scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<String>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mchId".to_owned()),
        Just("payOrderId".to_owned()),
        Just("mchOrderNo".to_owned()),
        Just("amount".to_owned()),
        Just("currency".to_owned()),
        Just("status".to_owned()),
        Just("payType".to_owned()),
        Just("originalOrderId".to_owned()),
        Just("transId".to_owned()),
        Just("cardNum".to_owned()),
        Just("sign".to_owned()),
        "[a-zA-Z_]{1,12}",
    ]
}

fn signed_notification() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    (
        "[A-Z0-9]{1,30}",
        "[a-z0-9-]{1,30}",
        1i64..1_000_000_000,
        prop_oneof![Just("pay"), Just("refund")],
        prop_oneof![Just(2i64), Just(3), Just(9), Just(0)],
        proptest::option::of("[ -~]{0,40}"),
    )
        .prop_map(|(pay_order_id, mch_order_no, amount, pay_type, status, extra)| {
            let mut m = serde_json::Map::new();
            m.insert("mchId".into(), "10000701".into());
            m.insert("payOrderId".into(), pay_order_id.into());
            m.insert("mchOrderNo".into(), mch_order_no.into());
            m.insert("amount".into(), amount.into());
            m.insert("currency".into(), "CAD".into());
            m.insert("payType".into(), pay_type.into());
            m.insert("status".into(), status.into());
            m.insert("originalOrderId".into(), if pay_type == "refund" { "PC0".into() } else { "".into() });
            if let Some(extra) = extra {
                m.insert("newField".into(), extra.into());
            }
            sign::sign_object(&mut m, &MerchantKey::new(KEY));
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), form in any::<bool>()) {
        pipeline(&body, form);
    }

    #[test]
    fn arbitrary_flat_objects_never_panic(fields in proptest::collection::btree_map(field_name(), scalar(), 0..20)) {
        let body = serde_json::to_vec(&fields).unwrap();
        pipeline(&body, false);
        let form: String = fields.iter().map(|(k, v)| format!("{k}={}&", v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect();
        pipeline(form.as_bytes(), true);
    }

    #[test]
    fn signed_notifications_verify_and_normalize(fields in signed_notification()) {
        let body = serde_json::to_vec(&fields).unwrap();
        let params = Params::from_json(&body).unwrap();
        prop_assert!(sign::verify(&params, params.text("sign").unwrap(), &[MerchantKey::new(KEY)]));
        let n = Notification::from_params(&params).unwrap();
        prop_assert_eq!(n.amount.get(), fields["amount"].as_i64().unwrap());
        let success = matches!(fields["status"].as_i64(), Some(2) | Some(3));
        prop_assert_eq!(n.event_type.is_success(), success);
    }

    #[test]
    fn any_changed_signed_field_fails_verification(fields in signed_notification(), pick in any::<prop::sample::Index>(), suffix in "[a-zA-Z0-9]{1,4}") {
        let names: Vec<String> = fields.keys().filter(|k| *k != "sign").cloned().collect();
        let name = &names[pick.index(names.len())];
        let mut tampered = fields.clone();
        let old = tampered[name].clone();
        let changed = match old {
            serde_json::Value::Number(n) => serde_json::Value::from(n.as_i64().unwrap_or(0) + 1),
            serde_json::Value::String(s) => serde_json::Value::from(format!("{s}{suffix}")),
            other => other,
        };
        tampered.insert(name.clone(), changed);
        let body = serde_json::to_vec(&tampered).unwrap();
        let params = Params::from_json(&body).unwrap();
        prop_assert!(!sign::verify(&params, params.text("sign").unwrap(), &[MerchantKey::new(KEY)]));
    }
}
