//! Hostile input and abuse: every malformed request gets a clear status and stores nothing;
//! floods of failures are limited per source; slow senders time out; overload is shed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

fn without(field: &str) -> Vec<u8> {
    let mut v = v3_pay("PM", 100);
    v.as_object_mut().unwrap().remove(field);
    signed(v, KEY).into_bytes()
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut v = v3_pay("PM", 100);
    v[field] = value;
    signed(v, KEY).into_bytes()
}

/// A correctly signed body, then edited without re-signing.
fn edited(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&signed(v3_pay("PM", 100), KEY)).unwrap();
    edit(v.as_object_mut().unwrap());
    v.to_string().into_bytes()
}

/// Rewrites the (correct) `sign` of `m` with `f`.
fn pad_sign(m: &mut serde_json::Map<String, Value>, f: impl FnOnce(&str) -> String) {
    let sign = m["sign"].as_str().unwrap().to_owned();
    m.insert("sign".into(), json!(f(&sign)));
}

/// A correctly signed body with `raw` spliced in before the closing brace.
fn spliced(raw: &str) -> Vec<u8> {
    let body = signed(v3_pay("PM", 100), KEY);
    format!("{},{raw}}}", body.trim_end_matches('}')).into_bytes()
}

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[tokio::test]
async fn malformed_requests_get_clear_statuses_and_store_nothing() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let many_fields: String = (0..150).map(|i| format!("f{i}=1&")).collect();
    let deep = format!("{{\"mchId\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, Vec<u8>, Option<&str>, u16)> = vec![
        ("empty body", vec![], JSON, 400),
        ("whitespace body", b"   \n".to_vec(), JSON, 400),
        ("empty object", b"{}".to_vec(), JSON, 400),
        ("not json", b"{not json".to_vec(), JSON, 400),
        ("truncated json", b"{\"mchId\":\"1".to_vec(), JSON, 400),
        ("trailing garbage", b"{\"a\":1} x".to_vec(), JSON, 400),
        ("json array", b"[1,2]".to_vec(), JSON, 400),
        ("json string", b"\"SUCCESS\"".to_vec(), JSON, 400),
        ("byte order mark", [&b"\xef\xbb\xbf"[..], &signed(v3_pay("PM", 100), KEY).into_bytes()].concat(), JSON, 400),
        ("invalid utf-8", b"{\"mchId\":\"\xff\"}".to_vec(), JSON, 400),
        ("nested object", br#"{"mchId":{"a":1}}"#.to_vec(), JSON, 400),
        ("nested array", with("cardNum", json!(["4111"])), JSON, 400),
        ("deeply nested", deep.into_bytes(), JSON, 400),
        ("duplicate keys", spliced(r#""amount":999999"#), JSON, 400),
        ("NUL in a value", with("invoiceNum", json!("a\u{0000}b")), JSON, 400),
        ("control char in id", with("payOrderId", json!("P\u{0007}1")), JSON, 400),
        ("no sign", edited(|m| drop(m.remove("sign"))), JSON, 400),
        ("short sign", edited(|m| drop(m.insert("sign".into(), json!("ABC")))), JSON, 400),
        ("non-hex sign", edited(|m| drop(m.insert("sign".into(), json!("Z".repeat(32))))), JSON, 400),
        ("numeric sign", edited(|m| drop(m.insert("sign".into(), json!(12345)))), JSON, 400),
        ("sign padded with spaces", edited(|m| pad_sign(m, |s| format!(" {s} "))), JSON, 400),
        ("sign one digit too long", edited(|m| pad_sign(m, |s| format!("{s}0"))), JSON, 400),
        ("sign with an inner space", edited(|m| pad_sign(m, |s| format!("{} {}", &s[..16], &s[17..]))), JSON, 400),
        ("missing mchId", without("mchId"), JSON, 400),
        ("missing amount", without("amount"), JSON, 400),
        ("missing payOrderId", without("payOrderId"), JSON, 400),
        ("missing mchOrderNo", without("mchOrderNo"), JSON, 400),
        ("missing currency", without("currency"), JSON, 400),
        ("missing status", without("status"), JSON, 400),
        ("no api version fields", without("payType"), JSON, 400),
        ("negative amount", with("amount", json!(-5)), JSON, 400),
        ("zero amount", with("amount", json!(0)), JSON, 400),
        ("fractional amount", with("amount", json!(1.5)), JSON, 400),
        ("exponent amount", spliced_amount("1e3"), JSON, 400),
        ("string amount", with("amount", json!("100")), JSON, 400),
        ("boolean amount", with("amount", json!(true)), JSON, 400),
        ("huge amount", with("amount", json!(u64::MAX)), JSON, 400),
        ("enormous number", spliced_amount(&"9".repeat(400)), JSON, 400),
        ("string status", with("status", json!("2")), JSON, 400),
        ("bad currency", with("currency", json!("CANADIAN")), JSON, 400),
        ("overlong id", with("payOrderId", json!("P".repeat(200))), JSON, 400),
        ("overlong field", with("cardNum", json!("4".repeat(300))), JSON, 400),
        ("refund without original", with("payType", json!("refund")), JSON, 400),
        ("too many fields", many_fields.into_bytes(), FORM, 400),
        ("bad percent-encoding", b"mchId=%ff&sign=x".to_vec(), FORM, 400),
        ("form duplicate key", b"mchId=1&mchId=2".to_vec(), FORM, 400),
        ("text/plain", signed(v3_pay("PM", 100), KEY).into_bytes(), Some("text/plain"), 415),
        ("xml", b"<xml/>".to_vec(), Some("application/xml"), 415),
        ("multipart", b"--x--".to_vec(), Some("multipart/form-data; boundary=x"), 415),
        ("too large", vec![b' '; 70 * 1024], JSON, 413),
        ("wrong key", signed(v3_pay("PM", 100), OTHER_KEY).into_bytes(), JSON, 401),
        ("unknown merchant", with("mchId", json!("99999999")), JSON, 401),
        ("field added after signing", edited(|m| drop(m.insert("x".into(), json!(1)))), JSON, 401),
    ];
    assert!(cases.len() >= 30);
    for (name, body, ct, expected) in cases {
        let (status, text) = app.post(body, ct).await;
        assert_eq!(status, expected, "{name}: {text}");
        if expected != 413 {
            assert_eq!(text, "FAIL", "{name}");
        }
    }
    assert_eq!(count(&db.pool, "payment_events").await, 0);
    assert_eq!(count(&db.pool, "notifications").await, 0);
    // And the service still works.
    assert_eq!(app.post_json(&signed(v3_pay("PGOOD", 100), KEY)).await.0, 200);
}

/// A sign is hex: its case carries nothing, so a correct sign in lower case is accepted (and the
/// same notification in upper case is the same event).
#[tokio::test]
async fn a_correct_sign_in_lower_case_is_accepted() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let lower = edited(|m| pad_sign(m, str::to_ascii_lowercase));
    assert_eq!(app.post(lower, JSON).await, (200, "SUCCESS".to_owned()));
    assert_eq!(app.post(edited(|_| {}), JSON).await, (200, "SUCCESS".to_owned()));
    assert_eq!(count(&db.pool, "payment_events").await, 1);
    assert_eq!(count(&db.pool, "notifications").await, 2);
}

/// A signed body whose `amount` is replaced by raw JSON text (re-signed over that text).
fn spliced_amount(raw: &str) -> Vec<u8> {
    let mut v = v3_pay("PM", 100);
    v.as_object_mut().unwrap().remove("amount");
    let mut fields: Vec<(String, String)> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .collect();
    fields.push(("amount".into(), raw.into()));
    let s = iotpay_notify::iotpay::sign::sign_pairs(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &iotpay_notify::domain::MerchantKey::new(KEY),
    );
    let body = v.to_string();
    format!("{},\"amount\":{raw},\"sign\":\"{s}\"}}", body.trim_end_matches('}')).into_bytes()
}

#[tokio::test]
async fn forged_flood_is_limited_per_source_without_starving_real_notifications() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("NOTIFY_TRUSTED_PROXIES", "127.0.0.1/32"), ("NOTIFY_FAILURES_PER_MINUTE", "20")],
    )
    .await;
    let attacker = "203.0.113.9";
    let iotpay = "198.51.100.7";
    let mut statuses = Vec::new();
    for i in 0..100 {
        statuses.push(app.post_forwarded(attacker, signed(v3_pay(&format!("F{i}"), 100), "FORGEDKEY")).await);
        if i % 10 == 0 {
            assert_eq!(app.post_forwarded(iotpay, signed(v3_pay(&format!("R{i}"), 100), KEY)).await, 200);
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 20, "the budget is spent on 401s");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 80, "then the source is refused");
    let stored: Vec<String> = sqlx::query_scalar("SELECT pay_order_id FROM payment_events ORDER BY pay_order_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 10, "only real notifications are stored: {stored:?}");
    assert!(stored.iter().all(|p| p.starts_with('R')));
    // The client address behind the proxy is what is recorded.
    let remote: String =
        sqlx::query_scalar("SELECT remote_addr FROM notifications LIMIT 1").fetch_one(&db.pool).await.unwrap();
    assert_eq!(remote, iotpay);
}

#[tokio::test]
async fn allowlist_refuses_other_networks_and_ignores_untrusted_forwarded_for() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("NOTIFY_ALLOWED_CIDRS", "198.51.100.0/24"), ("NOTIFY_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    assert_eq!(app.post_forwarded("203.0.113.9", signed(v3_pay("PA", 100), KEY)).await, 403);
    assert_eq!(app.post_forwarded("198.51.100.20", signed(v3_pay("PB", 100), KEY)).await, 200);

    // Without a trusted proxy, X-Forwarded-For is ignored: the loopback peer is not allowed.
    let direct = TestApp::spawn_with(db.pool.clone(), &db.url(), &[("NOTIFY_ALLOWED_CIDRS", "198.51.100.0/24")]).await;
    assert_eq!(direct.post_forwarded("198.51.100.20", signed(v3_pay("PC", 100), KEY)).await, 403);
    assert_eq!(count(&db.pool, "payment_events").await, 1);
}

#[tokio::test]
async fn slow_drip_body_times_out_and_overload_is_shed() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("NOTIFY_REQUEST_TIMEOUT_MS", "1000"), ("NOTIFY_MAX_CONCURRENT_REQUESTS", "1")],
    )
    .await;
    // A sender that announces a body and then drips it.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(
        b"POST /iotpay/notify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The only slot is taken: a second request is shed at once, not queued.
    let started = Instant::now();
    assert_eq!(app.post_json(&signed(v3_pay("PS", 100), KEY)).await, (503, "FAIL".into()));
    assert!(started.elapsed() < Duration::from_millis(500));

    // The dripping request is answered 408 when its time is up.
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut slow, &mut answer))
        .await
        .expect("answered before the client gave up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Once the slot is free, notifications are accepted again.
    assert_eq!(app.post_json(&signed(v3_pay("PS", 100), KEY)).await.0, 200);
    assert_eq!(count(&db.pool, "payment_events").await, 1);
}
