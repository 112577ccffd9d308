//! CPU cost of one notification before the database: parse + canonicalize + MD5 verify, and
//! normalization into an event.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use iotpay_notify::domain::MerchantKey;
use iotpay_notify::iotpay::{self, sign, Notification, Params};

fn typical_body(key: &MerchantKey) -> String {
    let serde_json::Value::Object(mut fields) = serde_json::json!({
        "payOrderId": "PC20240101005605740403580191", "mchId": "10000701", "mchOrderNo": "1234567890abc",
        "originalOrderId": "", "amount": 1500, "currency": "CAD", "payType": "pay", "refundable": 1500,
        "status": 2, "paySuccTime": "2021-04-07 19:44:51", "cardNum": "432567******2266",
        "expiryDate": "0725", "invoiceNum": "INV0001", "authNum": "A12345", "transNum": "T998877",
        "channel": "PF_CC"
    }) else {
        unreachable!("an object literal")
    };
    sign::sign_object(&mut fields, key);
    serde_json::Value::Object(fields).to_string()
}

fn cpu_path(c: &mut Criterion) {
    let key = MerchantKey::new("7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D");
    let keys = [key.clone()];
    let body = typical_body(&key);
    let params = Params::from_json(body.as_bytes()).unwrap();

    c.bench_function("parse_json", |b| b.iter(|| Params::from_json(black_box(body.as_bytes())).unwrap()));
    c.bench_function("verify_sign", |b| {
        b.iter(|| sign::verify(black_box(&params), params.text("sign").unwrap(), &keys))
    });
    c.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let p = Params::from_json(black_box(body.as_bytes())).unwrap();
            assert!(sign::verify(&p, p.text("sign").unwrap(), &keys));
        })
    });
    c.bench_function("normalize", |b| {
        b.iter(|| {
            let mut p = black_box(&params).clone();
            iotpay::mask_card_numbers(&mut p);
            Notification::from_params(&p).unwrap()
        })
    });
    c.bench_function("parse_verify_normalize", |b| {
        b.iter(|| {
            let mut p = Params::from_json(black_box(body.as_bytes())).unwrap();
            assert!(sign::verify(&p, p.text("sign").unwrap(), &keys));
            iotpay::mask_card_numbers(&mut p);
            (Notification::from_params(&p).unwrap(), p.to_json())
        })
    });
}

criterion_group!(benches, cpu_path);
criterion_main!(benches);
