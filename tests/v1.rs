//! IOTPay's general API (v1: WeChat Pay, Alipay, UnionPay), black-box: notifications as IOTPay
//! sends them (form body, query string, `channeId`, milliseconds, `openid`), the `success`
//! answer, storage, and hostile variants. What happens after (confirmation through
//! `query_order`, forwarding): tests/v1_flow.rs.

mod common;

use common::*;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::domain::MerchantKey;
use iotpay_notify::iotpay::sign;
use serde_json::Value;
use sqlx::Row;

const FORM: &str = "application/x-www-form-urlencoded";
const V1_MCH: &str = "10000702";

/// A vector of tests/data/sign-vectors.json by name.
fn vector(name: &str) -> Value {
    let text = include_str!("../crates/iotpay/tests/data/sign-vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned().expect("vector exists")
}

/// The vector's form body with its sign appended, as IOTPay posts it.
fn vector_body(v: &Value) -> String {
    format!("{}&sign={}", v["form"].as_str().unwrap(), v["sign"].as_str().unwrap())
}

/// An app whose merchants include the v1 vectors' merchant with both vector keys.
async fn app(db: &TestDatabase) -> TestApp {
    let merchants = format!(
        "{},{V1_MCH}:{},{V1_MCH}:{}",
        merchants_env(),
        vector("v1-wechat-notify-form")["key"].as_str().unwrap(),
        vector("v1-natural-order")["key"].as_str().unwrap()
    );
    TestApp::spawn_with(db.pool.clone(), &db.url(), &[("IOTPAY_MERCHANTS", &merchants)]).await
}

async fn post_with_query(app: &TestApp, query: &str, body: &str) -> (u16, String) {
    let resp = app
        .client
        .post(format!("{}?{query}", app.url("/iotpay/notify")))
        .header("content-type", FORM)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Re-signs form pairs (values decoded) with `key`, in IOTPay's order; returns the form body.
fn signed_pairs(pairs: &[(&str, &str)], key: &str) -> String {
    let s = sign::sign_pairs(pairs.iter().copied(), &MerchantKey::new(key));
    let enc = |t: &str| percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut body: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    body.push(format!("sign={s}"));
    body.join("&")
}

fn wechat_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("payOrderId", "WJ20240305000000000000000042"),
        ("mchId", V1_MCH),
        ("mchOrderNo", "wx-42"),
        ("channeId", "WX_NATIVE"),
        ("currency", "CAD"),
        ("amount", "990"),
        ("status", "2"),
        ("device", ""),
        ("channelOrderNo", "4200000000000042"),
        ("paySuccTime", "1709651472000"),
        ("backType", "2"),
        ("openid", "oPayerOpenIdSecret42"),
    ]
}

fn key1() -> String {
    vector("v1-wechat-notify-form")["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_wechat_notification_as_iotpay_sends_it_is_answered_success_and_stored_once() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let v = vector("v1-wechat-notify-form");
    let body = vector_body(&v);
    assert_eq!(app.post(body.clone().into_bytes(), Some(FORM)).await, (200, "success".into()));
    // IOTPay re-sends until it reads `success`: a repeat is acknowledged the same and counted.
    assert_eq!(app.post(body.into_bytes(), Some(FORM)).await, (200, "success".into()));

    let e = sqlx::query("SELECT *, row_to_json(payment_events)::text AS whole FROM payment_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(e.get::<String, _>("api_version"), "v1");
    assert_eq!(e.get::<String, _>("event_type"), "payment.succeeded");
    assert_eq!(e.get::<String, _>("status"), "pending");
    assert_eq!(e.get::<String, _>("pay_order_id"), "WJ20240305101112131415161718");
    assert_eq!(e.get::<String, _>("mch_order_no"), "wx-order-0001");
    assert_eq!((e.get::<i64, _>("amount"), e.get::<String, _>("currency")), (2000, "CAD".into()));
    assert_eq!(e.get::<Option<String>, _>("channel").as_deref(), Some("WX_JSAPI"), "from `channeId`");
    assert_eq!(e.get::<Option<String>, _>("channel_order_no").as_deref(), Some("4200002024030512345678901234"));
    assert_eq!(e.get::<Option<String>, _>("pay_succ_time_raw").as_deref(), Some("1709651472000"));
    let at: chrono::DateTime<chrono::Utc> = e.get("pay_succ_at");
    assert_eq!(at.to_rfc3339(), "2024-03-05T15:11:12+00:00", "milliseconds since the epoch, not local time");
    assert_eq!(e.get::<i32, _>("notification_count"), 2);
    assert!(!e.get::<String, _>("whole").contains("oVtest_payer_openid"), "openid never in payment_events");
    assert_eq!(count(&db.pool, "payment_events").await, 1);

    let logged: Vec<Value> =
        sqlx::query_scalar("SELECT fields FROM notifications ORDER BY id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0]["openid"], "oVtest_payer_openid_not_real", "the raw log keeps what IOTPay signed");
    assert_eq!(logged[0]["subject"], "Café crème 咖啡");
    let api: String =
        sqlx::query_scalar("SELECT api_version FROM notifications LIMIT 1").fetch_one(&db.pool).await.unwrap();
    assert_eq!(api, "v1");

    // The card APIs keep their upper-case answer.
    assert_eq!(app.post_json(&signed(v3_pay("PC1", 1500), KEY)).await, (200, "SUCCESS".into()));
}

#[tokio::test]
async fn query_string_pairs_are_read_alone_or_with_an_identical_body() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let body = vector_body(&vector("v1-wechat-notify-form"));
    assert_eq!(post_with_query(&app, &body, &body).await, (200, "success".into()), "both, identical");

    let other = signed_pairs(&wechat_pairs(), &key1());
    assert_eq!(post_with_query(&app, &other, "").await, (200, "success".into()), "query string only");
    let stored: i32 = sqlx::query_scalar("SELECT notification_count FROM payment_events WHERE pay_order_id = $1")
        .bind("WJ20240305000000000000000042")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Part in the query string, the rest (with the sign) in the body: one signed set.
    let (head, tail) = other.split_at(other.find("&currency=").unwrap());
    assert_eq!(post_with_query(&app, head, &tail[1..]).await, (200, "success".into()));
    assert_eq!(count(&db.pool, "payment_events").await, 2);
}

#[tokio::test]
async fn a_sign_in_iotpays_natural_order_or_in_byte_order_is_accepted() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let v = vector("v1-natural-order");
    assert_ne!(v["canonical_without_key"], v["natural_canonical_without_key"], "the orders must differ");
    assert_eq!(app.post(vector_body(&v).into_bytes(), Some(FORM)).await, (200, "success".into()));

    // The same fields signed in byte order (what IOTPay's guide describes) verify too.
    let key = MerchantKey::new(v["key"].as_str().unwrap());
    let by_byte = sign::sign_canonical(v["canonical_without_key"].as_str().unwrap(), &key);
    assert_ne!(by_byte, v["sign"].as_str().unwrap());
    let body = format!("{}&sign={by_byte}", v["form"].as_str().unwrap());
    assert_eq!(app.post(body.into_bytes(), Some(FORM)).await, (200, "success".into()));
    let n: i32 = sqlx::query_scalar("SELECT notification_count FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 2);

    // Tampered, in either order: refused, nothing more stored.
    let tampered = vector_body(&v).replace("amount=1234", "amount=1235");
    assert_eq!(app.post(tampered.into_bytes(), Some(FORM)).await.0, 401);
    assert_eq!(count(&db.pool, "notifications").await, 2);
}

#[tokio::test]
async fn bad_v1_input_is_refused_with_400_and_nothing_is_stored() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let key = key1();
    let without = |field: &str| -> String {
        let pairs: Vec<_> = wechat_pairs().into_iter().filter(|(k, _)| *k != field).collect();
        signed_pairs(&pairs, &key)
    };
    let with = |field: &str, value: &'static str| -> String {
        let pairs: Vec<_> =
            wechat_pairs().into_iter().map(|(k, v)| if k == field { (k, value) } else { (k, v) }).collect();
        signed_pairs(&pairs, &key)
    };
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    for field in ["payOrderId", "mchOrderNo", "amount", "status"] {
        cases.push((without(field), String::new(), "missing"));
        cases.push((with(field, ""), String::new(), "empty"));
    }
    for bad in ["2024-03-05 10:11:12", "1709651472000.0", "soon", "-1"] {
        cases.push((with("paySuccTime", bad), String::new(), "paySuccTime"));
    }
    cases.push((with("amount", "9.90"), String::new(), "fractional amount"));
    let mut two_channels = wechat_pairs();
    two_channels.push(("channelId", "ALIPAY_WAP"));
    cases.push((signed_pairs(&two_channels, &key), String::new(), "two different channels"));
    let good = signed_pairs(&wechat_pairs(), &key);
    // The query string gives a signed field another value than the body.
    cases.push((good.clone(), "amount=99000".into(), "query/body conflict"));
    cases.push((good.clone(), "device=x".into(), "an empty body value against a query value"));
    for (body, query, what) in cases {
        let (status, answer) = post_with_query(&app, &query, &body).await;
        assert_eq!((status, answer.as_str()), (400, "FAIL"), "{what}: {body} ? {query}");
    }
    assert_eq!(count(&db.pool, "payment_events").await, 0);
    assert_eq!(count(&db.pool, "notifications").await, 0);
    // The untouched notification is fine, with or without an identical query string.
    assert_eq!(post_with_query(&app, "amount=990", &good).await, (200, "success".into()));
}
