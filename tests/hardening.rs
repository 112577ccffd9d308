//! Issue 11: the holes an audit found in the notify path, each as the attack that used it.
//! Client address behind proxies, refusing before reading, the failure budget never refusing a
//! correctly signed notification, one signed string meaning one set of fields, the bounded
//! limiter.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROXY: (&str, &str) = ("NOTIFY_TRUSTED_PROXIES", "127.0.0.1/32");

async fn stored_remote(db: &TestDatabase, pay_order_id: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT n.remote_addr FROM notifications n JOIN payment_events e USING (event_id) WHERE e.pay_order_id = $1",
    )
    .bind(pay_order_id)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

/// Item 1: `X-Forwarded-For` is walked right to left; only trusted proxies are skipped; an
/// unparseable entry is an unknown, refused source; `ip:port` and `[v6]:port` are read.
#[tokio::test]
async fn forwarded_for_is_walked_right_to_left_and_garbage_is_refused() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("NOTIFY_ALLOWED_CIDRS", "198.51.100.0/24, 2001:db8::/32"), PROXY],
    )
    .await;
    let cases: [(&str, &str, u16); 7] = [
        // The attacker wrote the allowed address and garbage; the proxy appended the real one.
        ("A1", "198.51.100.7, x, 6.6.6.6", 403),
        ("A2", "198.51.100.7, garbage", 403),
        ("A3", "198.51.100.7, 6.6.6.6", 403),
        ("A4", "6.6.6.6, 198.51.100.7:4711", 200),
        ("A5", "[2001:db8::1]:443", 200),
        ("A6", "::ffff:198.51.100.8", 200),
        ("A7", "198.51.100.7, unknown", 403),
    ];
    for (order, xff, expected) in cases {
        assert_eq!(app.post_forwarded(xff, signed(v3_pay(order, 100), KEY)).await, expected, "XFF {xff}");
    }
    assert_eq!(stored_remote(&db, "A4").await.as_deref(), Some("198.51.100.7"), "port dropped");
    assert_eq!(stored_remote(&db, "A5").await.as_deref(), Some("2001:db8::1"));
    assert_eq!(stored_remote(&db, "A6").await.as_deref(), Some("198.51.100.8"), "canonical IPv4");
    assert_eq!(count(&db.pool, "payment_events").await, 3);
}

/// Item 1: on a `[::]` listener an IPv4 client arrives as `::ffff:a.b.c.d`; it must still match
/// IPv4 allowlist entries and trusted proxies, and be recorded as plain IPv4.
#[tokio::test]
async fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("LISTEN_ADDR", "[::]:0"), ("NOTIFY_ALLOWED_CIDRS", "127.0.0.1/32, 198.51.100.0/24"), PROXY],
    )
    .await;
    let url = format!("http://127.0.0.1:{}/iotpay/notify", app.addr.port());
    let post = |order: &str, xff: Option<&str>| {
        let mut req = app.client.post(&url).header("content-type", "application/json");
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.body(signed(v3_pay(order, 100), KEY)).send()
    };
    assert_eq!(post("D1", None).await.unwrap().status().as_u16(), 200, "direct IPv4 client is allowed");
    assert_eq!(post("D2", Some("198.51.100.9")).await.unwrap().status().as_u16(), 200, "the proxy is trusted");
    assert_eq!(stored_remote(&db, "D1").await.as_deref(), Some("127.0.0.1"));
    assert_eq!(stored_remote(&db, "D2").await.as_deref(), Some("198.51.100.9"));
}

/// Sends a request head announcing a body that never comes; returns the stream.
async fn announce_body(app: &TestApp, xff: &str, length: usize) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /iotpay/notify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-forwarded-for: {xff}\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn status_line(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()),
        _ => None,
    }
}

/// Item 2: a refused source is answered from its address and headers, before its body is read,
/// and holds none of the route's request slots meanwhile.
#[tokio::test]
async fn refused_sources_are_answered_before_their_body_and_hold_no_slot() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[
            ("NOTIFY_ALLOWED_CIDRS", "198.51.100.0/24"),
            PROXY,
            ("NOTIFY_MAX_CONCURRENT_REQUESTS", "2"),
            ("NOTIFY_REQUEST_TIMEOUT_MS", "10000"),
            ("NOTIFY_FAILURES_PER_MINUTE", "1"),
        ],
    )
    .await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(announce_body(&app, "203.0.113.9", 1000).await);
    }
    for s in &mut idle {
        assert_eq!(status_line(s, Duration::from_secs(2)).await.as_deref(), Some("HTTP/1.1 403 Forbidden"));
    }
    assert!(started.elapsed() < Duration::from_secs(3), "answered at once, not after the request timeout");
    // An allowed address out of failure budget announcing a large body: 429 at once.
    assert_eq!(app.post_forwarded("198.51.100.66", "{}".into()).await, 400);
    let mut big = announce_body(&app, "198.51.100.66", 60_000).await;
    assert_eq!(status_line(&mut big, Duration::from_secs(2)).await.as_deref(), Some("HTTP/1.1 429 Too Many Requests"));
    // The idle connections are still open, and a genuine notification is not shed.
    assert_eq!(app.post_forwarded("198.51.100.7", signed(v3_pay("G1", 100), KEY)).await, 200);
    drop(idle);
}

/// Item 3: a notification whose sign verifies under a configured key is never refused by the
/// failure budget, whatever others did from its address.
#[tokio::test]
async fn a_correctly_signed_notification_is_never_refused_by_the_failure_budget() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[PROXY, ("NOTIFY_FAILURES_PER_MINUTE", "3")]).await;
    let iotpay = "198.51.100.7";

    // Someone pointed their notifyUrl here: IOTPay sends us another merchant's notifications.
    let mut foreign = v3_pay("X1", 100);
    foreign["mchId"] = json!("99999999");
    for _ in 0..5 {
        let s = app.post_forwarded(iotpay, signed(foreign.clone(), "THEIRKEY")).await;
        assert!(s == 401 || s == 429, "{s}");
    }
    assert_eq!(app.post_forwarded(iotpay, signed(v3_pay("R1", 100), KEY)).await, 200);

    // Forged signs from a shared address spend its budget, but not the genuine sender's way in.
    let shared = "198.51.100.8";
    let mut forged = Vec::new();
    for i in 0..8 {
        forged.push(app.post_forwarded(shared, signed(v3_pay(&format!("F{i}"), 100), "FORGEDKEY")).await);
    }
    assert_eq!(forged, [401, 401, 401, 429, 429, 429, 429, 429]);
    assert_eq!(app.post_forwarded(shared, signed(v3_pay("R2", 100), KEY)).await, 200);
    // A correctly signed notification that fails a field check is answered 400, spends nothing,
    // and is never turned into a 429.
    let fresh = "198.51.100.9";
    let mut bad_currency = v3_pay("B1", 100);
    bad_currency["currency"] = json!("CANADIAN");
    for _ in 0..6 {
        assert_eq!(app.post_forwarded(fresh, signed(bad_currency.clone(), KEY)).await, 400);
    }
    assert_eq!(app.post_forwarded(fresh, signed(v3_pay("F9", 100), "FORGEDKEY")).await, 401, "budget untouched");
    assert_eq!(app.post_forwarded(fresh, signed(v3_pay("R3", 100), KEY)).await, 200);
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT pay_order_id FROM payment_events ORDER BY 1").fetch_all(&db.pool).await.unwrap();
    assert_eq!(stored, ["R1", "R2", "R3"]);
}

/// A JSON body from `(name, raw JSON value)` pairs, in order.
fn raw_body(fields: &[(String, String)]) -> String {
    let members: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", Value::String(k.clone()))).collect();
    format!("{{{}}}", members.join(","))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Item 4: a signed v3 refund re-cut so that `&payType=refund` sits inside `paySuccTime`, plus an
/// empty `transId`, keeps the same sign: it must be refused, not stored as a v2 payment.
#[tokio::test]
async fn one_signed_string_means_one_set_of_fields() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let refund: Value = serde_json::from_str(&signed(v3_refund("RF1", "PAY1", 500), KEY)).unwrap();
    let mut recut: Vec<(String, String)> = Vec::new();
    for (k, v) in refund.as_object().unwrap() {
        match k.as_str() {
            "payType" => {}
            "paySuccTime" => recut.push((k.clone(), Value::String(format!("{}&payType=refund", text(v))).to_string())),
            _ => recut.push((k.clone(), v.to_string())),
        }
    }
    recut.push(("transId".into(), "\"\"".into()));
    let (status, _) = app.post_json(&raw_body(&recut)).await;
    assert_eq!(status, 400, "re-cut refund");

    // Field names outside [A-Za-z0-9_] are refused, even when the sign covers them.
    let signed_pay: Value = serde_json::from_str(&signed(v3_pay("N1", 100), KEY)).unwrap();
    for name in ["x=1&y", "a&b", "a b", "a-b", "é"] {
        let mut fields: Vec<(String, String)> =
            signed_pay.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        fields.push((name.to_owned(), "\"v\"".into()));
        assert_eq!(app.post_json(&raw_body(&fields)).await.0, 400, "name {name:?}");
    }
    // Separators in a value parsed as an id or time are refused even when correctly signed.
    let mut id = v3_pay("N2&payType=refund", 100);
    id["mchOrderNo"] = json!("o");
    assert_eq!(app.post_json(&signed(id, KEY)).await.0, 400, "id with separators");
    // Conflicting API version markers (non-empty payType and transId) are refused.
    let mut both = v3_pay("N3", 100);
    both["transId"] = json!("660012345678");
    assert_eq!(app.post_json(&signed(both, KEY)).await.0, 400, "v3 and v2 markers");
    // Empty markers do not count: an empty payType with a v2 transId is v2, not unrecognized v3.
    let mut v2 = v2_pay("N4", 100);
    v2["payType"] = json!("");
    assert_eq!(app.post_json(&signed(v2, KEY)).await.0, 200);
    let version: String = sqlx::query_scalar("SELECT api_version FROM payment_events WHERE pay_order_id = 'N4'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(version, "v2");
    assert_eq!(count(&db.pool, "payment_events").await, 1, "nothing else stored");
}

/// Item 4 (audit): `&` and `=` are refused in every value kept on the event, not only in the ids,
/// `payType` and `paySuccTime`: the channel, card and authorization fields too (v3, v2 and v1).
#[tokio::test]
async fn separators_are_refused_in_every_value_kept_on_the_event() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let v1 = |id: &str| {
        json!({"payOrderId": id, "mchId": MCH, "mchOrderNo": format!("wx-{id}"), "channeId": "WX_NATIVE",
               "currency": "CAD", "amount": 990, "status": 2, "channelOrderNo": "4200000000000042",
               "paySuccTime": "1709651472000", "backType": "2"})
    };
    let cases = [
        ("S1", v3_pay("S1", 100), "authNum", "A1&payType=refund"),
        ("S2", v3_pay("S2", 100), "invoiceNum", "INV=1"),
        ("S3", v3_pay("S3", 100), "channel", "PF_CC&transId=1"),
        ("S4", v3_pay("S4", 100), "expiryDate", "07=25"),
        ("S5", v3_pay("S5", 100), "cardNum", "432567******2266&a=b"),
        ("S6", v2_pay("S6", 100), "cardType", "V&payType=refund"),
        ("S7", v2_pay("S7", 100), "expirationDate", "0725&x=1"),
        ("S8", v1("S8"), "channelOrderNo", "42&payType=refund"),
        ("S9", v1("S9"), "channeId", "WX_NATIVE=1"),
    ];
    for (id, fields, field, value) in cases {
        let post = |fields: Value| async {
            if fields.get("channeId").is_some() {
                app.post(signed_form(fields, KEY).into_bytes(), Some("application/x-www-form-urlencoded")).await
            } else {
                app.post_json(&signed(fields, KEY)).await
            }
        };
        let mut bad = fields.clone();
        bad[field] = json!(value);
        let (status, _) = post(bad).await;
        assert_eq!(status, 400, "{field} = {value:?}");
        // The same notification without the separator is stored: the refusal is the separator's.
        let (status, _) = post(fields).await;
        assert_eq!(status, 200, "{id} as sent");
    }
    assert_eq!(count(&db.pool, "payment_events").await, 9);
}

async fn mismatches(app: &TestApp) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("iotpay_notification_mismatches_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Item 4: a repeat whose `api_version` or `pay_type` differs from the stored event is counted as
/// a mismatch, like an amount change.
#[tokio::test]
async fn a_repeat_with_another_api_version_or_pay_type_is_a_mismatch() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let before = mismatches(&app).await;
    let mut v3 = v3_pay("M1", 100);
    v3["mchOrderNo"] = json!("m-M1");
    let mut v2 = v2_pay("M1", 100);
    v2["mchOrderNo"] = json!("m-M1");
    assert_eq!(app.post_json(&signed(v3.clone(), KEY)).await.0, 200);
    assert_eq!(app.post_json(&signed(v3, KEY)).await.0, 200);
    assert_eq!(mismatches(&app).await - before, 0.0, "an identical repeat is no mismatch");
    assert_eq!(app.post_json(&signed(v2, KEY)).await.0, 200);
    assert_eq!(mismatches(&app).await - before, 1.0, "v2 repeat of a v3 event");
    // Two unknown payTypes map to the same event (transaction.unrecognized).
    let mut void = v3_pay("M2", 100);
    void["payType"] = json!("void");
    let mut preauth = void.clone();
    preauth["payType"] = json!("preauth");
    assert_eq!(app.post_json(&signed(void, KEY)).await.0, 200);
    assert_eq!(app.post_json(&signed(preauth, KEY)).await.0, 200);
    assert_eq!(mismatches(&app).await - before, 2.0, "another payType");
    let counts: Vec<i32> = sqlx::query_scalar("SELECT notification_count FROM payment_events ORDER BY pay_order_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(counts, [3, 2], "the stored events are kept, the repeats counted");
}

/// Item 7: IPv6 clients share one failure budget per /64, so one host cannot mint budgets.
#[tokio::test]
async fn ipv6_clients_share_a_failure_budget_per_64() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[PROXY, ("NOTIFY_FAILURES_PER_MINUTE", "3")]).await;
    let mut statuses = Vec::new();
    for i in 1..=6 {
        let from = format!("2001:db8:1:2::{i:x}");
        statuses.push(app.post_forwarded(&from, signed(v3_pay("F", 100), "FORGEDKEY")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    assert_eq!(app.post_forwarded("2001:db8:1:3::1", signed(v3_pay("F", 100), "FORGEDKEY")).await, 401);
}

/// Item 7: the limiter's map is bounded whatever the arrival rate of new addresses.
#[test]
fn the_failure_budget_map_is_bounded() {
    use iotpay_notify::ingest::guard::{Guard, GuardSettings};
    let guard = Guard::new(GuardSettings { failures_per_minute: 5, ..Default::default() });
    for i in 0..100_000u32 {
        guard.record_failure(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
    }
    assert!(guard.tracked_addresses() <= iotpay_notify::ingest::limiter::MAX_TRACKED, "{}", guard.tracked_addresses());
    assert!(guard.tracked_addresses() >= iotpay_notify::ingest::limiter::MAX_TRACKED / 2);
}

/// Item 7: the limiter evicts the least recently used bucket, not the oldest: an address that
/// keeps failing stays out of budget however many new addresses churn past it.
#[test]
fn an_address_in_use_outlives_a_churn_of_new_addresses() {
    use iotpay_notify::ingest::guard::{Guard, GuardSettings};
    use std::net::{IpAddr, Ipv4Addr};
    let guard = Guard::new(GuardSettings { failures_per_minute: 1, ..Default::default() });
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    guard.record_failure(attacker);
    for i in 0..(iotpay_notify::ingest::limiter::MAX_TRACKED as u32 * 2) {
        guard.record_failure(IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)));
        assert!(!guard.has_budget(attacker), "the attacker's bucket was evicted after {i} new addresses");
    }
}
